// SHA-256 digests of large files (model weights), computed once per file version: a digest is
// kept in memory for the process and on disk across processes, keyed by the file's real path,
// size, modification time, device and inode — so a one-sentence shell call does not hash a 1 GB
// checkpoint again, and a file replaced or rewritten in place is hashed anew.
//
// The cache is a folder of small files (`$VLM_CACHE_DIR`, else `$XDG_CACHE_HOME/vlm`, else
// `~/.cache/vlm`, then `sha256/`), each named by the SHA-256 of its key and holding the digest,
// written atomically (temporary file, rename): many processes (a Ray or Spark job's workers)
// may fill it at once without a lock, the worst case being the same digest computed twice. A
// cache that cannot be written is not an error: the digest is computed each time.

import Foundation

public enum DigestCache {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var memory: [String: String] = [:]
    /// Files hashed (not found in a cache) by this process, for tests.
    nonisolated(unsafe) public private(set) static var computed = 0

    /// The cache folder, or nil when none can be named.
    public static func folder(environment env: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let d = env["VLM_CACHE_DIR"], !d.isEmpty { return d + "/sha256" }
        if let d = env["XDG_CACHE_HOME"], !d.isEmpty, d.hasPrefix("/") { return d + "/vlm/sha256" }
        if let h = env["HOME"], !h.isEmpty { return h + "/.cache/vlm/sha256" }
        return nil
    }

    /// The hex SHA-256 of the file at `path` (symbolic links followed).
    public static func sha256(ofFile path: String, cache: String? = folder()) throws -> String {
        let real = (try? resolveRealPath(path)) ?? path
        guard let before = FileStatus.of(real) else { return try SHA256.hexDigest(ofFile: path) }
        let key = "\(real)\u{0}\(before.size)\u{0}\(before.mtimeNanoseconds)\u{0}\(before.device)\u{0}\(before.inode)"
        let name = SHA256.hexDigest(Array(key.utf8))
        lock.lock()
        let known = memory[name]
        lock.unlock()
        if let known { return known }
        let entry = cache.map { $0 + "/" + name }
        if let entry, let text = try? String(contentsOfFile: entry, encoding: .utf8) {
            let digest = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if digest.count == 64, digest.allSatisfy(\.isHexDigit) {
                remember(name, digest)
                return digest
            }
        }
        let digest = try SHA256.hexDigest(ofFile: real)
        lock.lock(); computed += 1; lock.unlock()
        // Kept only when the file did not change while it was read.
        guard FileStatus.of(real) == before else { return digest }
        remember(name, digest)
        if let cache, let entry {
            try? FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
            try? writeAtomically(Data((digest + "\n").utf8), to: entry)
        }
        return digest
    }

    private static func remember(_ name: String, _ digest: String) {
        lock.lock(); memory[name] = digest; lock.unlock()
    }

    /// Forgets the digests held in memory (the on-disk cache stays), for tests.
    public static func forgetInMemory() {
        lock.lock(); memory = [:]; computed = 0; lock.unlock()
    }
}

/// The path with every symbolic link and `.`/`..` resolved.
func resolveRealPath(_ path: String) throws -> String {
    guard let r = realpath(path, nil) else { throw IOError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
    defer { free(r) }
    return String(cString: r)
}
