// SHA-256 digests of large files (model weights), computed once per file version: a digest is
// kept in memory for the process and on disk across processes, keyed by the file's real path,
// size, modification time, device and inode — so a one-sentence shell call does not hash a 1 GB
// checkpoint again, and a file replaced or rewritten in place is hashed anew.
//
// The cache is a folder of small files (`$VLM_CACHE_DIR`, else `$XDG_CACHE_HOME/vlm`, else
// `~/.cache/vlm`, then `sha256/`), each named by the SHA-256 of its key and holding the digest,
// written atomically (temporary file, rename): many processes (a Ray or Spark job's workers)
// may fill it at once without a lock, the worst case being the same digest computed twice. A
// cache that cannot be written is not an error: the digest is computed each time. Entries are
// read only when they are regular files of a digest's size (never through a link, never a FIFO
// that would block), and written as a new file renamed into place (a link of that name is
// replaced, never followed). A relative VLM_CACHE_DIR or XDG_CACHE_HOME is ignored, as the XDG
// rules say, so workers started in different folders do not scatter caches.

import Foundation

public enum DigestCache {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var memory: [String: String] = [:]
    /// Files hashed (not found in a cache) by this process, for tests.
    nonisolated(unsafe) public private(set) static var computed = 0

    /// The cache folder, or nil when none can be named.
    public static func folder(environment env: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let d = env["VLM_CACHE_DIR"], d.hasPrefix("/") { return d + "/sha256" }
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
        if let entry, let digest = readEntry(entry) {
            remember(name, digest)
            return digest
        }
        let digest = try SHA256.hexDigest(ofFile: real)
        lock.lock(); computed += 1; lock.unlock()
        // Kept only when the file did not change while it was read.
        guard FileStatus.of(real) == before else { return digest }
        remember(name, digest)
        if let cache, let entry {
            try? FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            writeEntry(digest, to: entry, in: cache)
        }
        return digest
    }

    /// The digest an entry holds: a regular file (not followed through a link, not a FIFO) of
    /// 64 hex digits and a newline.
    static func readEntry(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let st = FileStatus.of(fd: fd), st.kind == .regular, st.size <= 128 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 128)
        let n = read(fd, &buffer, 128)
        guard n > 0 else { return nil }
        let digest = String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return digest.count == 64 && digest.allSatisfy(\.isHexDigit) ? digest : nil
    }

    /// A new file in the cache folder, renamed onto the entry.
    static func writeEntry(_ digest: String, to entry: String, in folder: String) {
        let temporary = folder + "/.tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        let bytes = Array((digest + "\n").utf8)
        let written = write(fd, bytes, bytes.count)
        close(fd)
        if written != bytes.count || rename(temporary, entry) != 0 { unlink(temporary) }
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
