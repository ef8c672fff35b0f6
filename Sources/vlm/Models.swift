// `vlm models list|fetch`: the registry in models/registry.json, and downloads from the hub
// ($VLM_HUB_URL) with a progress bar, sha256 verification, and atomic placement.

import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import VLMIO

struct RegistryFile: Codable {
    var path: String
    var size: Int?
    var sha256: String?
}

struct RegistryEntry: Codable {
    var name: String
    var kind: String
    var repo: String
    var revision: String
    var note: String?
    var files: [RegistryFile]
}

struct Registry: Codable {
    var models: [RegistryEntry]

    /// $VLM_REGISTRY, else models/registry.json (beside the working folder or the checkout).
    static func load(_ override: String?) throws -> (Registry, String) {
        let path = override ?? ProcessInfo.processInfo.environment["VLM_REGISTRY"] ?? resolveModelsFolder("registry.json")
        guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("\(path): cannot read the model registry") }
        do {
            return (try JSONDecoder().decode(Registry.self, from: data), path)
        } catch {
            throw CLIError("\(path): not a valid registry (\(error))")
        }
    }
}

struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List the known models, or fetch one into models/.",
        subcommands: [List.self, Fetch.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Known models, their source and whether they are on disk.")
        @Option(help: "A registry file instead of models/registry.json.")
        var registry: String?
        @Option(help: "Where models live. Default: models/ ($VLM_MODELS).")
        var modelsDir: String?

        func run() throws {
            let (reg, _) = try Registry.load(registry)
            var out = "name\tkind\tsource\tstatus\n"
            for m in reg.models {
                let dir = ((modelsDir ?? modelsRoot()) as NSString).appendingPathComponent(m.name)
                let present = m.files.allSatisfy { FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent($0.path)) }
                let pinned = m.files.allSatisfy { $0.sha256 != nil }
                out += "\(m.name)\t\(m.kind)\t\(m.repo)@\(m.revision)\t\(present ? "present" : "not fetched")\(pinned ? "" : " (checksums not all pinned)")\n"
            }
            FileHandle.standardOutput.write(Data(out.utf8))
        }
    }

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download a model's files from the hub ($VLM_HUB_URL), verify each sha256, and place them atomically.")
        @Argument(help: "A name from `vlm models list`.")
        var name: String
        @Option(help: "A registry file instead of models/registry.json.")
        var registry: String?
        @Option(help: "Where models live. Default: models/ ($VLM_MODELS).")
        var modelsDir: String?
        @Flag(help: "Accept files whose sha256 the registry does not pin (prints the digest measured).")
        var allowUnpinned = false
        @Flag(help: "No progress bar.")
        var quiet = false

        func run() throws {
            let (reg, regPath) = try Registry.load(registry)
            guard let m = reg.models.first(where: { $0.name == name }) else {
                throw CLIError("\(regPath): no model named '\(name)' (known: \(reg.models.map(\.name).joined(separator: ", ")))")
            }
            let unpinned = m.files.filter { $0.sha256 == nil }.map(\.path)
            if !unpinned.isEmpty && !allowUnpinned {
                throw CLIError("\(regPath): \(name) has files without a pinned sha256 (\(unpinned.joined(separator: ", "))); pass --allow-unpinned to fetch them anyway")
            }
            let hub = (ProcessInfo.processInfo.environment["VLM_HUB_URL"] ?? "https://huggingface.co").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            let dir = ((modelsDir ?? modelsRoot()) as NSString).appendingPathComponent(m.name)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for f in m.files {
                let dest = (dir as NSString).appendingPathComponent(f.path)
                if let sha = f.sha256, FileManager.default.fileExists(atPath: dest), (try? SHA256.hexDigest(ofFile: dest)) == sha {
                    if !quiet { note("vlm: \(f.path): already present and verified") }
                    continue
                }
                let url = "\(hub)/\(m.repo)/resolve/\(m.revision)/\(f.path)"
                try FileManager.default.createDirectory(atPath: (dest as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                let tmp = dest + ".download"
                let digest = try download(url, to: tmp, expectedSize: f.size, label: f.path, quiet: quiet)
                if let sha = f.sha256, sha != digest {
                    try? FileManager.default.removeItem(atPath: tmp)
                    throw CLIError("\(url): sha256 mismatch: got \(digest), the registry pins \(sha); nothing was placed")
                }
                if f.sha256 == nil { note("vlm: note: \(f.path): sha256 \(digest) (not pinned in the registry)") }
                if rename(tmp, dest) != 0 { throw IOError.cannotWrite(path: dest, reason: String(cString: strerror(errno))) }
            }
            if !quiet { note("vlm: \(m.name) is in \(dir)") }
        }
    }
}

/// Where model folders live: $VLM_MODELS, else models/ here or beside the checkout.
func modelsRoot() -> String {
    if let env = ProcessInfo.processInfo.environment["VLM_MODELS"] { return env }
    let reg = resolveModelsFolder("registry.json")
    return (reg as NSString).deletingLastPathComponent
}

/// Streams `url` into `path`, hashing as it goes; returns the sha256.
func download(_ url: String, to path: String, expectedSize: Int?, label: String, quiet: Bool) throws -> String {
    guard let u = URL(string: url) else { throw CLIError("\(url): not a URL") }
    _ = FileManager.default.createFile(atPath: path, contents: nil)
    guard let handle = FileHandle(forWritingAtPath: path) else { throw IOError.cannotWrite(path: path, reason: "cannot create") }
    let delegate = DownloadDelegate(handle: handle, label: label, expected: expectedSize, quiet: quiet)
    let session = URLSession(configuration: .ephemeral, delegate: delegate, delegateQueue: nil)
    session.dataTask(with: u).resume()
    delegate.done.wait()
    session.finishTasksAndInvalidate()
    try? handle.close()
    if !quiet && isTerminal(2) { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    if let error = delegate.error {
        try? FileManager.default.removeItem(atPath: path)
        throw CLIError("\(url): download failed: \(error)")
    }
    if let status = delegate.status, status != 200 {
        try? FileManager.default.removeItem(atPath: path)
        throw CLIError("\(url): HTTP \(status)")
    }
    if let expectedSize, delegate.received != expectedSize {
        try? FileManager.default.removeItem(atPath: path)
        throw CLIError("\(url): got \(delegate.received) bytes, expected \(expectedSize)")
    }
    return delegate.hasher.finalizeHex()
}

final class DownloadDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    let handle: FileHandle
    let label: String
    var expected: Int?
    let quiet: Bool
    var hasher = SHA256()
    var received = 0
    var status: Int?
    var error: String?
    let done = DispatchSemaphore(value: 0)
    private var lastDraw = Date.distantPast
    private let start = Date()

    init(handle: FileHandle, label: String, expected: Int?, quiet: Bool) {
        (self.handle, self.label, self.expected, self.quiet) = (handle, label, expected, quiet)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        status = (response as? HTTPURLResponse)?.statusCode
        if expected == nil, response.expectedContentLength > 0 { expected = Int(response.expectedContentLength) }
        completionHandler(status == 200 ? .allow : .cancel)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        handle.write(data)
        hasher.update(data)
        received += data.count
        if !quiet && isTerminal(2) && Date().timeIntervalSince(lastDraw) > 0.1 {
            lastDraw = Date()
            let mb = Double(received) / 1e6, rate = mb / max(Date().timeIntervalSince(start), 1e-3)
            let total = expected.map { String(format: " of %.1f MB (%.0f%%)", Double($0) / 1e6, 100 * Double(received) / Double(max($0, 1))) } ?? ""
            FileHandle.standardError.write(Data(String(format: "\r%@: %.1f MB%@, %.1f MB/s\u{1B}[K", label, mb, total, rate).utf8))
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        if let error, status == nil || status == 200 { self.error = error.localizedDescription }
        done.signal()
    }
}
