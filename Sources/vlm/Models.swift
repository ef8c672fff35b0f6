// `vlm models list|fetch`: the registry (registry.json beside the models), and downloads — from
// the hub ($VLM_HUB_URL: <hub>/<repo>/resolve/<revision>/<path>) or from a file's direct URL
// ($VLM_URL_MIRROR replaces its scheme and host) — with progress, sha256 verification and atomic
// placement: a file appears whole and verified, or not at all, and a failed fetch leaves no
// folder behind. An entry may declare its preprocessing (resize, crop, mean, std); fetch writes
// it to preprocess.json in the model's folder, and every image command uses it for the options
// not given.

import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import VLMCore
import VLMIO
import VLMJobs

struct RegistryFile: Codable {
    var path: String
    var size: Int?
    var sha256: String?
    /// A direct download (torchvision's weights); without it the file comes from the hub repo.
    var url: String?

    /// torch.hub's check: the hex digits after the last '-' of the URL's file name, before its
    /// extension ("resnet50-11ad3fa6.pth" → "11ad3fa6"), are a prefix of the file's sha256.
    var hashPrefix: String? {
        guard let url else { return nil }
        let name = (url as NSString).lastPathComponent
        guard let dash = name.lastIndex(of: "-") else { return nil }
        let hex = name[name.index(after: dash)...].prefix { $0 != "." }
        return hex.count >= 8 && hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) ? String(hex) : nil
    }
}

/// What a model declares about its input; every field is optional (the rest keep the defaults).
struct ModelPreprocess: Codable, Equatable {
    var resize: Int?
    var crop: Int?
    var mean: [Float]?
    var std: [Float]?

    func validated(_ source: String) throws -> ModelPreprocess {
        for (name, v) in [("resize", resize), ("crop", crop)] {
            if let v, !(1...Limits.maxSide).contains(v) { throw InputError("\(source): preprocess \(name) \(v) is not from 1 to \(Limits.maxSide)") }
        }
        for (name, v) in [("mean", mean), ("std", std)] {
            if let v, v.count != 3 || !v.allSatisfy({ $0.isFinite }) { throw InputError("\(source): preprocess \(name) is not three finite numbers") }
        }
        if let std, std.contains(where: { abs($0) < 1e-6 }) { throw InputError("\(source): preprocess std values must be at least 1e-6 in size") }
        return self
    }
}

struct RegistryEntry: Codable {
    var name: String
    var kind: String
    var repo: String?
    var revision: String?
    var note: String?
    var preprocess: ModelPreprocess?
    var files: [RegistryFile]

    var source: String {
        if let repo { return "\(repo)@\(revision ?? "main")" }
        return files.first?.url ?? "?"
    }
}

struct Registry: Codable {
    var models: [RegistryEntry]

    /// --registry, else $VLM_REGISTRY, else registry.json beside the models (`resolveModelsFolder`).
    static func load(_ override: String?) throws -> (Registry, String) {
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
func resolveModelSpec(_ spec: String?, defaultName: String) -> String {
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
func declaredPreprocess(_ spec: String?) throws -> (ModelPreprocess, String)? {
    let path = resolveModelSpec(spec, defaultName: defaultResNetName)
    guard !path.hasPrefix("synthetic:"), let st = FileStatus.of(path) else { return nil }
    var folder = st.kind == .directory ? path : (path as NSString).deletingLastPathComponent
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
func modelsRoot() -> String {
    if let env = ProcessInfo.processInfo.environment["VLM_MODELS"], !env.isEmpty { return env }
    let dir = (resolveModelsFolder("registry.json") as NSString).deletingLastPathComponent
    return access(dir, W_OK) == 0 ? dir : cacheFolder()
}

struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List the known models, or fetch one into the models folder.",
        subcommands: [List.self, Fetch.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Known models, their source and whether they are on disk.")
        @Option(help: "A registry file instead of registry.json beside the models ($VLM_REGISTRY).")
        var registry: String?
        @Option(help: "Where models live. Default: $VLM_MODELS, else beside the registry.")
        var modelsDir: String?

        func run() throws {
            let (reg, _) = try Registry.load(registry)
            var out = "name\tkind\tsource\tstatus\n"
            for m in reg.models {
                let dir = modelsDir.map { ($0 as NSString).appendingPathComponent(m.name) } ?? resolveModelsFolder(m.name)
                let present = m.files.allSatisfy { FileStatus.of((dir as NSString).appendingPathComponent($0.path)) != nil }
                let pinned = m.files.allSatisfy { $0.sha256 != nil }
                let prefixed = m.files.allSatisfy { $0.sha256 != nil || $0.hashPrefix != nil }
                out += "\(m.name)\t\(m.kind)\t\(m.source)\t\(present ? "present" : "not fetched")"
                out += pinned ? "\n" : prefixed ? " (checked by sha256 prefix, as torch.hub)\n" : " (checksums not all pinned)\n"
            }
            try FileSink.standardOutput.write(out)
        }
    }

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download a model's files (from the hub, $VLM_HUB_URL, or their own URL, $VLM_URL_MIRROR), verify each sha256, and place them atomically.")
        @Argument(help: "A name from `vlm models list`.")
        var name: String
        @Option(help: "A registry file instead of registry.json beside the models ($VLM_REGISTRY).")
        var registry: String?
        @Option(help: "Where models live. Default: $VLM_MODELS, else beside the registry.")
        var modelsDir: String?
        @Flag(help: "Accept files whose sha256 the registry does not pin (prints the digest measured).")
        var allowUnpinned = false
        @Option(parsing: .unconditional, help: "Give up on a download that receives nothing for this many seconds.")
        var timeout: Double = 60

        func validate() throws {
            if !(timeout >= 1 && timeout <= 86_400) { throw ValidationError("--timeout must be from 1 to 86400 seconds, got \(timeout)") }
        }
        @Flag(help: "No progress bar.")
        var quiet = false

        func run() throws {
            let (reg, regPath) = try Registry.load(registry)
            guard let m = reg.models.first(where: { $0.name == name }) else {
                throw InputError("\(regPath): no model named '\(name)' (known: \(reg.models.map(\.name).joined(separator: ", ")))")
            }
            // A registry names files inside the model's folder: nothing may climb out of it.
            func confined(_ p: String, oneComponent: Bool) -> Bool {
                let parts = p.split(separator: "/", omittingEmptySubsequences: false)
                return !p.isEmpty && !p.hasPrefix("/") && !parts.contains { $0.isEmpty || $0 == "." || $0 == ".." }
                    && (!oneComponent || parts.count == 1)
            }
            guard confined(m.name, oneComponent: true) else {
                throw InputError("\(regPath): model name '\(m.name)' is not a plain folder name")
            }
            if let bad = m.files.first(where: { !confined($0.path, oneComponent: false) }) {
                throw InputError("\(regPath): \(m.name): file path '\(bad.path)' leaves the model's folder (absolute, or with . or ..)")
            }
            let unpinned = m.files.filter { $0.sha256 == nil && $0.hashPrefix == nil }.map(\.path)
            if !unpinned.isEmpty && !allowUnpinned {
                throw InputError("\(regPath): \(name) has files without a pinned sha256 (\(unpinned.joined(separator: ", "))); pass --allow-unpinned to fetch them anyway")
            }
            let env = ProcessInfo.processInfo.environment["VLM_HUB_URL"].flatMap { $0.isEmpty ? nil : $0 }
            let hub = (env ?? "https://huggingface.co").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            let dir = ((modelsDir ?? modelsRoot()) as NSString).appendingPathComponent(m.name)
            let created = Folders()
            do {
                for f in m.files { try fetch(f, of: m, hub: hub, into: dir, created: created) }
                if let pre = m.preprocess {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.sortedKeys]
                    var data = try encoder.encode(pre)
                    data.append(0x0A)
                    try writeAtomically(data, to: (dir as NSString).appendingPathComponent("preprocess.json"))
                }
            } catch {
                created.removeEmpty()
                throw error
            }
            if !quiet { note("vlm: \(m.name) is in \(dir)") }
        }

        func fetch(_ f: RegistryFile, of m: RegistryEntry, hub: String, into dir: String, created: Folders) throws {
            let dest = (dir as NSString).appendingPathComponent(f.path)
            if FileStatus.of(dest) != nil, let have = try? SHA256.hexDigest(ofFile: dest),
               f.sha256.map({ $0 == have }) ?? f.hashPrefix.map({ have.hasPrefix($0) }) ?? false {
                if !quiet { note("vlm: \(f.path): already present and verified") }
                return
            }
            let url = try f.url.map(mirrored) ?? "\(hub)/\(m.repo!)/resolve/\(m.revision ?? "main")/\(f.path)"
            try created.make((dest as NSString).deletingLastPathComponent)
            let writer = try AtomicFileWriter(path: dest)
            defer { writer.discard() }   // after a commit, nothing is left to discard
            let digest = try download(url, to: writer, expectedSize: f.size, label: f.path, quiet: quiet, timeout: timeout)
            if let sha = f.sha256, sha != digest {
                throw InputError("\(url): sha256 mismatch: got \(digest), the registry pins \(sha); nothing was placed")
            }
            if f.sha256 == nil, let prefix = f.hashPrefix {
                guard digest.hasPrefix(prefix) else {
                    throw InputError("\(url): sha256 \(digest) does not start with \(prefix), the hash prefix in the file's name; nothing was placed")
                }
                if !quiet { note("vlm: note: \(f.path): sha256 \(digest) starts with \(prefix), as its name says (torch.hub's check; no full digest is pinned)") }
            } else if f.sha256 == nil {
                note("vlm: note: \(f.path): sha256 \(digest) (not pinned in the registry)")
            }
            try writer.commit()
        }

        /// A direct URL with its scheme and host replaced by $VLM_URL_MIRROR when that is set
        /// ("https://download.pytorch.org/models/x.pth" → "<mirror>/models/x.pth").
        func mirrored(_ url: String) throws -> String {
            guard let env = ProcessInfo.processInfo.environment["VLM_URL_MIRROR"], !env.isEmpty else { return url }
            guard let c = URLComponents(string: url), c.host != nil else { throw InputError("\(url): not a URL with a host") }
            return env.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + (c.percentEncodedPath.hasPrefix("/") ? "" : "/") + c.percentEncodedPath
        }
    }
}

/// Folders a fetch created, so a failed one can remove those it left empty.
final class Folders {
    private var made: [String] = []

    func make(_ path: String) throws {
        var missing: [String] = []
        var p = path
        while !p.isEmpty, p != "/", FileStatus.of(p) == nil {
            missing.append(p)
            p = (p as NSString).deletingLastPathComponent
        }
        for d in missing.reversed() {
            if mkdir(d, 0o755) != 0 && errno != EEXIST { throw IOError.cannotWrite(path: d, reason: errnoMessage()) }
            made.append(d)
        }
    }

    func removeEmpty() {
        for d in made.reversed() { rmdir(d) }   // rmdir removes only empty folders
    }
}

/// Streams `url` into `writer`, hashing as it goes; returns the sha256. The writer is not
/// committed here: the caller verifies first.
func download(_ url: String, to writer: AtomicFileWriter, expectedSize: Int?, label: String, quiet: Bool, timeout: Double) throws -> String {
    guard let u = URL(string: url), u.scheme == "http" || u.scheme == "https" else { throw InputError("\(url): not an http(s) URL") }
    let delegate = DownloadDelegate(writer: writer, label: label, expected: expectedSize, quiet: quiet)
    let config = URLSessionConfiguration.ephemeral
    config.timeoutIntervalForRequest = timeout
    let session = URLSession(configuration: config, delegate: delegate, delegateQueue: nil)
    session.dataTask(with: u).resume()
    delegate.done.wait()
    session.finishTasksAndInvalidate()
    delegate.progress.finish(summary: nil)
    if let error = delegate.failure { throw InputError("\(url): download failed: \(error)") }
    if let status = delegate.status, status != 200 { throw InputError("\(url): HTTP \(status)") }
    if let expectedSize, delegate.received != expectedSize {
        throw InputError("\(url): got \(delegate.received) bytes, expected \(expectedSize)")
    }
    return delegate.hasher.finalizeHex()
}

final class DownloadDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    let writer: AtomicFileWriter
    let progress: ProgressReporter
    var hasher = SHA256()
    var received = 0
    var status: Int?
    var failure: String?
    let done = DispatchSemaphore(value: 0)

    init(writer: AtomicFileWriter, label: String, expected: Int?, quiet: Bool) {
        self.writer = writer
        let mb = { (n: Int) in String(format: "%.1f MB", Double(n) / 1e6) }
        progress = ProgressReporter(total: expected, quiet: quiet,
                            describe: { done in "\(label): \(mb(done))" + (expected.map { " of \(mb($0))" } ?? "") },
                            rate: { String(format: "%.1f MB/s", $0 / 1e6) })
        progress.start(at: 0)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        status = (response as? HTTPURLResponse)?.statusCode
        completionHandler(status == 200 ? .allow : .cancel)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard failure == nil else { return }
        do {
            try writer.write(data)
        } catch {
            failure = "\(error)"
            dataTask.cancel()
            return
        }
        hasher.update(data)
        received += data.count
        progress.update(done: received)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        if let error, failure == nil, status == nil || status == 200 {
            let code = (error as NSError).code
            failure = code == NSURLErrorTimedOut ? "timed out (nothing received for the timeout; --timeout)"
                : code == NSURLErrorCannotConnectToHost ? "cannot connect to the server"
                : code == NSURLErrorCannotFindHost ? "cannot find the host (no network, or a wrong $VLM_HUB_URL?)"
                : error.localizedDescription
        }
        done.signal()
    }
}
