// `vlm models list|fetch`: the registry (registry.json beside the models), and downloads — from
// the hub ($VLM_HUB_URL: <hub>/<repo>/resolve/<revision>/<path>) or from a file's direct URL
// ($VLM_URL_MIRROR replaces its scheme and host) — with progress, sha256 verification and atomic
// placement: a file appears whole and verified, or not at all, and a failed fetch leaves no
// folder behind. An entry may declare its preprocessing (resize, crop, mean, std); fetch writes
// it to preprocess.json in the model's folder, and every image command uses it for the options
// not given.

import Foundation
import VLMCore
import VLMIO

public struct RegistryFile: Codable {
    public var path: String
    public var size: Int?
    public var sha256: String?
    /// A direct download (torchvision's weights); without it the file comes from the hub repo.
    public var url: String?

    /// torch.hub's check: the hex digits after the last '-' of the URL's file name, before its
    /// extension ("resnet50-11ad3fa6.pth" → "11ad3fa6"), are a prefix of the file's sha256.
    public var hashPrefix: String? {
        guard let url else { return nil }
        let name = (url as NSString).lastPathComponent
        guard let dash = name.lastIndex(of: "-") else { return nil }
        let hex = name[name.index(after: dash)...].prefix { $0 != "." }
        return hex.count >= 8 && hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) ? String(hex) : nil
    }
}

/// What a model declares about its input; every field is optional (the rest keep the defaults).
public struct ModelPreprocess: Codable, Equatable {
    /// The largest resize or crop (as the commands' --resize and --crop).
    public static let maxSide = 1 << 16

    public var resize: Int?
    public var crop: Int?
    public var mean: [Float]?
    public var std: [Float]?

    public func validated(_ source: String) throws -> ModelPreprocess {
        for (name, v) in [("resize", resize), ("crop", crop)] {
            if let v, !(1...ModelPreprocess.maxSide).contains(v) { throw InputError("\(source): preprocess \(name) \(v) is not from 1 to \(ModelPreprocess.maxSide)") }
        }
        for (name, v) in [("mean", mean), ("std", std)] {
            if let v, v.count != 3 || !v.allSatisfy({ $0.isFinite }) { throw InputError("\(source): preprocess \(name) is not three finite numbers") }
        }
        if let std, std.contains(where: { abs($0) < 1e-6 }) { throw InputError("\(source): preprocess std values must be at least 1e-6 in size") }
        return self
    }
}

public struct RegistryEntry: Codable {
    public var name: String
    public var kind: String
    public var repo: String?
    public var revision: String?
    public var note: String?
    public var preprocess: ModelPreprocess?
    public var files: [RegistryFile]

    public var source: String {
        if let repo { return "\(repo)@\(revision ?? "main")" }
        return files.first?.url ?? "?"
    }
}

public struct Registry: Codable {
    public var models: [RegistryEntry]

    /// --registry, else $VLM_REGISTRY, else registry.json beside the models (`resolveModelsFolder`).
    public static func load(_ override: String?) throws -> (Registry, String) {
        let env = ProcessInfo.processInfo.environment["VLM_REGISTRY"].flatMap { $0.isEmpty ? nil : $0 }
        let path = override ?? env ?? resolveModelsFolder("registry.json")
        let data = try InputFile(path, what: "the model registry").readAll(limit: 64 << 20)
        do {
            let reg = try JSONDecoder().decode(Registry.self, from: data)
            for m in reg.models {
                if m.repo == nil, let f = m.files.first(where: { $0.url == nil }) {
                    throw InputError("\(path): \(m.name): file '\(f.path)' has no url and the model no hub repo")
                }
                _ = try m.preprocess?.validated("\(path): \(m.name)")
            }
            return (reg, path)
        } catch let e as InputError {
            throw e
        } catch {
            throw InputError("\(path): not a valid registry (a JSON object with a \"models\" list of name, kind, repo and revision or file urls, files)")
        }
    }
}

/// A --model value that names a registry model ("resnet50") and is not a path: that model's
/// folder. nil: the default model's folder. Anything else as given.
public func resolveModelSpec(_ spec: String?, defaultName: String) -> String {
    guard let spec else { return resolveModelsFolder(defaultName) }
    if !spec.contains("/"), !spec.hasPrefix("synthetic:"), FileStatus.of(spec) == nil,
       let (reg, _) = try? Registry.load(nil), reg.models.contains(where: { $0.name == spec }) {
        return resolveModelsFolder(spec)
    }
    return spec
}

/// The preprocessing the image model at `spec` declares, and where it was found: preprocess.json
/// in its folder (what `models fetch` writes), else its registry entry when the folder is the
/// one the registry's model of that name lives in. nil when it declares none.
public func declaredPreprocess(_ spec: String?) throws -> (ModelPreprocess, String)? {
    let path = resolveModelSpec(spec, defaultName: defaultResNetName)
    guard !path.hasPrefix("synthetic:"), let st = FileStatus.of(path) else { return nil }
    var folder = st.kind == .directory ? path : parentPath(path)
    if folder.isEmpty { folder = "." }
    let file = (folder as NSString).appendingPathComponent("preprocess.json")
    if FileStatus.of(file) != nil {
        let data = try InputFile(file, what: "the model's preprocessing").readAll(limit: 1 << 20)
        guard let pre = try? JSONDecoder().decode(ModelPreprocess.self, from: data) else {
            throw InputError("\(file): not a preprocessing file (a JSON object of resize, crop, mean, std)")
        }
        return (try pre.validated(file), file)
    }
    let name = ((folder as NSString).standardizingPath as NSString).lastPathComponent
    guard let (reg, regPath) = try? Registry.load(nil), let m = reg.models.first(where: { $0.name == name }), let pre = m.preprocess else { return nil }
    let canonical = { (p: String) in (try? resolveSymlinks((p as NSString).standardizingPath)) ?? p }
    return canonical(resolveModelsFolder(m.name)) == canonical(folder) ? (pre, "\(regPath): \(m.name)") : nil
}

/// Where fetched models go: $VLM_MODELS, else the folder registry.json was found in when it is
/// writable (a checkout's models/), else the cache folder ($XDG_CACHE_HOME/vlm).
public func modelsRoot() -> String {
    if let env = ProcessInfo.processInfo.environment["VLM_MODELS"], !env.isEmpty { return env }
    let dir = parentPath(resolveModelsFolder("registry.json"))
    return access(dir, W_OK) == 0 ? dir : cacheFolder()
}

