// The engine a command runs on — backend and threads, from flags or the environment (read
// here and nowhere else) — and where models are found and how they load.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMModels

extension BackendKind: ExpressibleByArgument {}
extension RowFormat: ExpressibleByArgument {}

struct EngineOptions: ParsableArguments {
    @Option(help: "Compute backend: blas (OpenBLAS) or naive (plain loops). Default: $VLM_BACKEND, else blas.")
    var backend: BackendKind?

    @Option(parsing: .unconditional,
            help: "Threads for the engine (it splits each large product into single-threaded sgemm calls). Default: $VLM_THREADS, else $OMP_NUM_THREADS, else all cores.")
    var threads: Int?

    @Flag(help: "Load weights holding NaN or infinity instead of refusing them, and write vectors holding NaN or infinity instead of recording them as non_finite errors.")
    var allowNonfinite = false

    func validate() throws {
        if let threads { try Limits.check("--threads", threads, 1...Limits.maxThreads) }
    }

    /// Applies the thread count and returns the backend, checking the VLM_* variables.
    func configure() throws -> any Backend {
        let env = ProcessInfo.processInfo.environment
        Threads.set(try threads ?? Self.threadsFromEnvironment(env) ?? Threads.defaultCount())
        return try Self.makeBackend(backend)
    }

    /// The backend `kind` names, else VLM_BACKEND's, else blas; VLM_WINOGRAD=0 turns Winograd off.
    static func makeBackend(_ explicit: BackendKind?) throws -> any Backend {
        let env = ProcessInfo.processInfo.environment
        var kind = BackendKind.blas
        if let explicit { kind = explicit } else if let v = env["VLM_BACKEND"], !v.isEmpty {
            guard let k = BackendKind(rawValue: v.lowercased()) else {
                throw OptionError("VLM_BACKEND=\(v): unknown backend; use blas or naive")
            }
            kind = k
        }
        switch env["VLM_WINOGRAD"] {
        case nil, "", "1": break
        case "0": if kind == .blas { return BLASBackend(winograd: false) }
        case let v?: throw OptionError("VLM_WINOGRAD=\(v): use 0 (off) or 1 (on, the default)")
        }
        return kind.make()
    }

    /// VLM_THREADS, else OMP_NUM_THREADS (which Ray, Spark and schedulers set per worker).
    static func threadsFromEnvironment(_ env: [String: String]) throws -> Int? {
        for name in ["VLM_THREADS", "OMP_NUM_THREADS"] {
            guard let v = env[name], !v.isEmpty else { continue }
            // OpenMP also allows a list per nesting level ("4,2"): the first is this process's.
            let first = v.split(separator: ",", omittingEmptySubsequences: false).first.map(String.init) ?? v
            guard let n = Int(first.trimmingCharacters(in: .whitespaces)), (1...Limits.maxThreads).contains(n) else {
                throw OptionError("\(name)=\(v): expected a whole number of threads from 1 to \(Limits.maxThreads)")
            }
            return n
        }
        return nil
    }

    /// What changes the last bits of a row, for a job's fingerprint.
    static func fingerprint(_ backend: any Backend) -> [String: String] {
        var e = backend.settings
        e["threads"] = "\(Threads.count)"
        e["openblas"] = OpenBLASCore.coreName
        e["kernels"] = kernelInstructionSet
        return e
    }
}

// MARK: - Where models are

/// Finds `name` (a model folder, registry.json, imagenet_classes.txt), in this order:
/// $VLM_MODELS/name; beside the binary — ../share/vlm/name for an installed vlm, models/name up
/// the checkout a built binary sits in; the cache fetches fall back to ($XDG_CACHE_HOME/vlm,
/// else ~/.cache/vlm); models/name under the working folder. The first that exists wins; when
/// none does, the first candidate is named in messages.
func resolveModelsFolder(_ name: String) -> String {
    let candidates = modelsFolders().map { ($0 as NSString).appendingPathComponent(name) }
    return candidates.first { FileStatus.of($0) != nil } ?? candidates[0]
}

/// The folders models are looked for in, in order (see `resolveModelsFolder`).
func modelsFolders() -> [String] {
    let env = ProcessInfo.processInfo.environment
    if let m = env["VLM_MODELS"], !m.isEmpty { return [m] }
    var out: [String] = []
    let exe = (try? resolveSymlinks("/proc/self/exe")) ?? CommandLine.arguments[0]
    let bin = URL(fileURLWithPath: exe).deletingLastPathComponent()
    out.append(bin.deletingLastPathComponent().appendingPathComponent("share/vlm").path)
    var dir = bin
    for _ in 0..<4 {
        out.append(dir.appendingPathComponent("models").path)
        dir = dir.deletingLastPathComponent()
    }
    out.append(cacheFolder())
    out.append("models")
    return out
}

/// Where fetched models go when the registry's folder is not writable: $XDG_CACHE_HOME/vlm,
/// else ~/.cache/vlm.
func cacheFolder() -> String {
    let env = ProcessInfo.processInfo.environment
    let base = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((env["HOME"] ?? NSHomeDirectory()) as NSString).appendingPathComponent(".cache")
    return (base as NSString).appendingPathComponent("vlm")
}

let defaultResNetName = "resnet50"
let defaultTextModelName = "all-MiniLM-L6-v2"

// MARK: - Loading

/// A ResNet from a folder holding model.safetensors, a .safetensors file, or seeded synthetic
/// weights ("synthetic:resnet50[:SEED]", any depth) for demos and benchmarks; nil spec: the
/// default model.
func loadResNet(_ spec: String?, backend: any Backend, quiet: Bool = false, allowNonFinite: Bool = false) throws -> ResNet {
    let spec = resolveModelSpec(spec, defaultName: defaultResNetName)
    if spec.hasPrefix("synthetic:") {
        let parts = spec.split(separator: ":").map(String.init)
        guard parts.count >= 2, parts.count <= 3, parts[1].hasPrefix("resnet"), let depth = Int(parts[1].dropFirst(6)),
              let seed = parts.count > 2 ? UInt64(parts[2]) : 0,
              let source = Synthetic.resnet(depth: depth, seed: seed) else {
            throw InputError("\(spec): unknown synthetic model; use synthetic:resnet18|34|50|101|152[:SEED]")
        }
        if !quiet { note("vlm: note: \(spec) has seeded random weights (synthetic): its features mean nothing") }
        return try ResNet(source: source, backend: backend, allowNonFinite: allowNonFinite)
    }
    let file = try weightsFile(spec, defaultName: defaultResNetName)
    return try ResNet(source: try openWeights(file), backend: backend, allowNonFinite: allowNonFinite)
}

/// A model argument's weights: the file itself, or the folder's weights (`weightsInFolder`).
func weightsFile(_ path: String, defaultName: String? = nil) throws -> String {
    guard let st = FileStatus.of(path) else {
        let code = errno
        if let defaultName, path == resolveModelsFolder(defaultName) {
            throw InputError("\(path): no such folder; run `vlm models fetch \(defaultName)`, or pass --model DIR|FILE (.safetensors, .pth, .pt or .bin: torchvision or timm ResNet weights), or --model synthetic:resnet50")
        }
        throw IOError.cannotOpen(path: path, reason: code == ENOENT ? "no such file or folder" : errnoMessage(code))
    }
    if st.kind == .directory {
        return try weightsInFolder(path)
    }
    return path
}

func defaultTextModel() -> String { resolveModelsFolder(defaultTextModelName) }

func loadTextEncoder(_ folder: String?, backend: any Backend, quiet: Bool = false, allowNonFinite: Bool = false) throws -> TextEncoder {
    let path = resolveModelSpec(folder, defaultName: defaultTextModelName)
    if folder == nil && FileStatus.of(path) == nil {
        throw InputError("\(path): the default text model is not there; run `make models`, or pass --model DIR")
    }
    let enc = try TextEncoder(folder: path, backend: backend, allowNonFinite: allowNonFinite)
    let heads = enc.model.ignoredHeads
    if !heads.isEmpty && !quiet {
        note("vlm: note: \(path): ignoring \(heads.count) task-head tensors (\(heads.prefix(3).joined(separator: ", "))\(heads.count > 3 ? ", …" : "")); using the encoder only")
    }
    return enc
}
