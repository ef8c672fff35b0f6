// Downloads for `vlm models fetch`: streamed into an atomic writer, hashed as they arrive, with
// progress; and the folders a fetch made, removed again when it fails.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import VLMCore
import VLMIO

/// Folders a fetch created, so a failed one can remove those it left empty.
/// `vlm models fetch`: a registry model's files downloaded (from the hub, $VLM_HUB_URL, or their
/// own URL, $VLM_URL_MIRROR), each sha256 verified, placed atomically, with the model's
/// preprocessing written beside them; a failed fetch removes the folders it made.
public struct ModelFetch {
    public let allowUnpinned: Bool
    public let timeout: Double
    public let quiet: Bool

    public init(allowUnpinned: Bool, timeout: Double, quiet: Bool) { (self.allowUnpinned, self.timeout, self.quiet) = (allowUnpinned, timeout, quiet) }

public func run(name: String, registry: String?, modelsDir: String?) throws {
        let (reg, regPath) = try Registry.load(registry)
        guard let m = reg.models.first(where: { $0.name == name }) else {
            throw InputError("\(regPath): no model named '\(name)' (known: \(reg.models.map(\.name).joined(separator: ", ")))\n")
        }
        // A registry names files inside the model's folder: nothing may climb out of it.
        func confined(_ p: String, oneComponent: Bool) -> Bool {
            let parts = p.split(separator: "/", omittingEmptySubsequences: false)
            return !p.isEmpty && !p.hasPrefix("/") && !parts.contains { $0.isEmpty || $0 == "." || $0 == ".." }
                && (!oneComponent || parts.count == 1)
        }
        guard confined(m.name, oneComponent: true) else {
            throw InputError("\(regPath): model name '\(m.name)' is not a plain folder name\n")
        }
        if let bad = m.files.first(where: { !confined($0.path, oneComponent: false) }) {
            throw InputError("\(regPath): \(m.name): file path '\(bad.path)' leaves the model's folder (absolute, or with . or ..)\n")
        }
        let unpinned = m.files.filter { $0.sha256 == nil && $0.hashPrefix == nil }.map(\.path)
        if !unpinned.isEmpty && !allowUnpinned {
            throw InputError("\(regPath): \(name) has files without a pinned sha256 (\(unpinned.joined(separator: ", "))); pass --allow-unpinned to fetch them anyway\n")
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
        try created.make(parentPath(dest))
        let writer = try AtomicFileWriter(path: dest, mayReplaceRead: true)
        defer { writer.discard() }   // after a commit, nothing is left to discard
        let digest = try download(url, to: writer, expectedSize: f.size, label: f.path, quiet: quiet, timeout: timeout,
                                  hostVariable: f.url == nil ? "VLM_HUB_URL" : "VLM_URL_MIRROR")
        if let sha = f.sha256, sha != digest {
            throw InputError("\(url): sha256 mismatch: got \(digest), the registry pins \(sha); nothing was placed\n")
        }
        if f.sha256 == nil, let prefix = f.hashPrefix {
            guard digest.hasPrefix(prefix) else {
                throw InputError("\(url): sha256 \(digest) does not start with \(prefix), the hash prefix in the file's name; nothing was placed\n")
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

public final class Folders {
    private var made: [String] = []

    public func make(_ path: String) throws {
        var missing: [String] = []
        var p = path
        while !p.isEmpty, p != "/", FileStatus.of(p) == nil {
            missing.append(p)
            p = parentPath(p)
        }
        for d in missing.reversed() {
            if mkdir(d, 0o755) != 0 && errno != EEXIST { throw IOError.cannotWrite(path: d, reason: errnoMessage()) }
            made.append(d)
        }
    }

    public func removeEmpty() {
        for d in made.reversed() { rmdir(d) }   // rmdir removes only empty folders
    }
}

/// Streams `url` into `writer`, hashing as it goes; returns the sha256. The writer is not
/// committed here: the caller verifies first.
/// `hostVariable`: the variable that chose this URL's host (VLM_HUB_URL for the hub's files,
/// VLM_URL_MIRROR for a file's own URL), named when the host cannot be found.
public func download(_ url: String, to writer: AtomicFileWriter, expectedSize: Int?, label: String, quiet: Bool, timeout: Double,
                     hostVariable: String = "VLM_HUB_URL") throws -> String {
    guard let u = URL(string: url), u.scheme == "http" || u.scheme == "https" else { throw InputError("\(url): not an http(s) URL") }
    let delegate = DownloadDelegate(writer: writer, label: label, expected: expectedSize, quiet: quiet)
    delegate.hostVariable = hostVariable
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

public final class DownloadDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    public let writer: AtomicFileWriter
    public let progress: ProgressReporter
    public var hasher = SHA256()
    public var received = 0
    public var status: Int?
    public var failure: String?
    public let done = DispatchSemaphore(value: 0)
    public var hostVariable = "VLM_HUB_URL"

    public init(writer: AtomicFileWriter, label: String, expected: Int?, quiet: Bool) {
        self.writer = writer
        let mb = { (n: Int) in String(format: "%.1f MB", Double(n) / 1e6) }
        progress = ProgressReporter(total: expected, quiet: quiet,
                            describe: { done in "\(label): \(mb(done))" + (expected.map { " of \(mb($0))" } ?? "") },
                            rate: { String(format: "%.1f MB/s", $0 / 1e6) })
        progress.start(at: 0)
    }

    public func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        status = (response as? HTTPURLResponse)?.statusCode
        completionHandler(status == 200 ? .allow : .cancel)
    }

    public func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
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

    public func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        if let error, failure == nil, status == nil || status == 200 {
            let code = (error as NSError).code
            failure = code == NSURLErrorTimedOut ? "timed out (nothing received for the timeout; --timeout)"
                : code == NSURLErrorCannotConnectToHost ? "cannot connect to the server"
                : code == NSURLErrorCannotFindHost ? "cannot find the host (no network, or a wrong $\(hostVariable)?)"
                : error.localizedDescription
        }
        done.signal()
    }
}
