// Files as the command line meets them: paths held as the bytes the kernel knows them by,
// "a path, or - for stdin" read in one place, lines split in one place (LF and CRLF), and
// writes that report the real error (no space left on device, broken pipe) instead of trapping.

import Foundation
import VLMCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Paths as bytes

/// A file system path as bytes: any name a file system holds, valid UTF-8 or not. Its
/// `description` is the escaped form for messages (`RawPath.display`): one line, and no
/// control character reaches a terminal.
public struct RawPath: Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]

    public init(_ string: String) { bytes = Array(string.utf8) }
    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// The path as a String when it is valid UTF-8.
    public var string: String? { String(validating: bytes, as: UTF8.self) }
    public var description: String { RawPath.display(bytes) }
    public var isEmpty: Bool { bytes.isEmpty }

    public func appending(_ component: [UInt8]) -> RawPath {
        if bytes.isEmpty { return RawPath(bytes: component) }
        return RawPath(bytes: bytes.last == 0x2F ? bytes + component : bytes + [0x2F] + component)
    }

    /// The last path component's extension, lowercased ("" when there is none).
    public var pathExtension: String {
        let name = bytes.split(separator: 0x2F, omittingEmptySubsequences: true).last ?? []
        guard let dot = name.lastIndex(of: 0x2E), dot > name.startIndex else { return "" }
        return String(decoding: name[(dot + 1)...], as: UTF8.self).lowercased()
    }

    /// body with the path as a NUL-terminated C string (a path holding a NUL byte cannot exist:
    /// it is passed cut at the NUL and the kernel reports what it finds there).
    public func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        var z = bytes.prefix { $0 != 0 }.map { CChar(bitPattern: $0) }
        z.append(0)
        return try z.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }

    // MARK: Escaping ids

    /// The one-line text form of a name, used in ids.txt, TSV and messages: a backslash is
    /// `\\`, newline `\n`, carriage return `\r`, tab `\t`, and each byte that is not part of
    /// valid UTF-8 `\xNN`; everything else is kept. `unescape` inverts it exactly.
    public static func escape(_ bytes: [UInt8]) -> String {
        if !bytes.contains(where: { $0 == 0x5C || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }),
           let s = String(validating: bytes, as: UTF8.self) { return s }
        var out = ""
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            switch b {
            case 0x5C: out += "\\\\"; i += 1; continue
            case 0x0A: out += "\\n"; i += 1; continue
            case 0x0D: out += "\\r"; i += 1; continue
            case 0x09: out += "\\t"; i += 1; continue
            default: break
            }
            let n = utf8SequenceLength(bytes, at: i)
            if n > 0 {
                out += String(decoding: bytes[i..<(i + n)], as: UTF8.self)
                i += n
            } else {
                out += String(format: "\\x%02X", b)
                i += 1
            }
        }
        return out
    }

    /// `escape`, and every other control character (C0, DEL) as `\xNN` too: the form of a name
    /// in messages on stderr, so a file name cannot move a terminal's cursor or change its
    /// colours. `unescape` inverts it as well.
    public static func display(_ bytes: [UInt8]) -> String {
        let e = escape(bytes)
        guard e.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return e }
        var out = ""
        for u in e.unicodeScalars {
            if u.value < 0x20 || u.value == 0x7F { out += String(format: "\\x%02X", u.value) } else { out.unicodeScalars.append(u) }
        }
        return out
    }

    /// The bytes `escape` wrote `text` from; nil when `text` holds an escape it never writes.
    public static func unescape(_ text: String) -> [UInt8]? {
        let u = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(u.count)
        var i = 0
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        while i < u.count {
            guard u[i] == 0x5C else { out.append(u[i]); i += 1; continue }
            guard i + 1 < u.count else { return nil }
            switch u[i + 1] {
            case 0x5C: out.append(0x5C); i += 2
            case 0x6E: out.append(0x0A); i += 2
            case 0x72: out.append(0x0D); i += 2
            case 0x74: out.append(0x09); i += 2
            case 0x78:
                guard i + 3 < u.count, let h = hex(u[i + 2]), let l = hex(u[i + 3]) else { return nil }
                out.append(h << 4 | l); i += 4
            default: return nil
            }
        }
        return out
    }

    /// Length of the valid UTF-8 sequence starting at `i`, or 0 when the byte there does not
    /// start one (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
    static func utf8SequenceLength(_ b: [UInt8], at i: Int) -> Int {
        let c = b[i]
        if c < 0x80 { return 1 }
        func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool { i + k < b.count && b[i + k] >= lo && b[i + k] <= hi }
        switch c {
        case 0xC2...0xDF: return cont(1) ? 2 : 0
        case 0xE0: return cont(1, 0xA0) && cont(2) ? 3 : 0
        case 0xE1...0xEC, 0xEE, 0xEF: return cont(1) && cont(2) ? 3 : 0
        case 0xED: return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0
        case 0xF0: return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0
        case 0xF1...0xF3: return cont(1) && cont(2) && cont(3) ? 4 : 0
        case 0xF4: return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0
        default: return 0
        }
    }
}

// MARK: - What a path is

public enum FileKind: String, Sendable {
    case regular, directory, fifo, characterDevice, blockDevice, socket, symlink, other

    init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        case S_IFIFO: self = .fifo
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        case S_IFSOCK: self = .socket
        case S_IFLNK: self = .symlink
        default: self = .other
        }
    }

    /// "a FIFO", "a character device", … for messages.
    public var phrase: String {
        switch self {
        case .regular: return "a regular file"
        case .directory: return "a folder"
        case .fifo: return "a FIFO"
        case .characterDevice: return "a character device"
        case .blockDevice: return "a block device"
        case .socket: return "a socket"
        case .symlink: return "a symbolic link"
        case .other: return "not a regular file"
        }
    }
}

/// stat(2) of a path: its kind, size and modification time (nanoseconds since 1970).
public struct FileStatus: Equatable, Sendable {
    public var kind: FileKind
    public var size: UInt64
    public var mtimeNanoseconds: Int64
    public var device: UInt64
    public var inode: UInt64

    /// Follows symbolic links unless `followLinks` is false; nil with errno set when the path
    /// cannot be examined.
    public static func of(_ path: RawPath, followLinks: Bool = true) -> FileStatus? {
        var st = stat()
        let rc = path.withCString { followLinks ? stat($0, &st) : lstat($0, &st) }
        if rc != 0 { return nil }
        return FileStatus(st)
    }

    public static func of(_ path: String, followLinks: Bool = true) -> FileStatus? { of(RawPath(path), followLinks: followLinks) }

    /// Whether two paths name the same existing file (one device and inode, through links).
    public static func sameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }

    public static func of(fd: Int32) -> FileStatus? {
        var st = stat()
        if fstat(fd, &st) != 0 { return nil }
        return FileStatus(st)
    }

    init(_ st: stat) {
        kind = FileKind(mode: st.st_mode)
        size = UInt64(max(0, st.st_size))
        mtimeNanoseconds = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    /// Whether both name one file (device and inode).
    public func isSameFile(as other: FileStatus) -> Bool { device == other.device && inode == other.inode }
}

/// strerror(errno) in lower case, as messages here say it ("no such file or directory").
public func errnoMessage(_ code: Int32 = errno) -> String {
    let s = String(cString: strerror(code))
    return s.prefix(1).lowercased() + s.dropFirst()
}

// MARK: - Reading: a path, or - for stdin

/// An input opened for reading: a file, or stdin for "-". Reads are plain read(2) calls (no
/// mapping: a file that shrinks while it is read gives a short read, never a crash).
public final class InputFile {
    /// The name messages use: the path, or "<stdin>".
    public let name: String
    public let fd: Int32
    private let owned: Bool
    /// stat of what was opened.
    public let status: FileStatus?

    /// Opens `path` ("-": stdin). A folder, a missing file or one without permission is an
    /// error naming the path; `what` says what the file was for ("the list", "the texts").
    public init(_ path: String, what: String = "the input") throws {
        if path == "-" {
            if standardStreamIsClosed(0) { throw IOError.cannotOpen(path: "<stdin>", reason: "bad file descriptor (stdin is closed)") }
            name = "<stdin>"
            fd = 0
            owned = false
            status = FileStatus.of(fd: 0)
            return
        }
        name = path
        if path.isEmpty { throw IOError.cannotOpen(path: "\"\"", reason: "an empty path is not a file (\(what))") }
        let f = open(path, O_RDONLY | O_CLOEXEC)
        if f < 0 { throw IOError.cannotOpen(path: path, reason: errnoMessage()) }
        let st = FileStatus.of(fd: f)
        if st?.kind == .directory {
            close(f)
            throw IOError.cannotOpen(path: path, reason: "is a folder, not a file (\(what))")
        }
        fd = f
        owned = true
        status = st
        if let st, st.kind == .regular { ReadFiles.record(path, st) }
    }

    /// Reads an already open descriptor (its own duplicate, from the start), named `name`.
    public init(duplicating other: Int32, name: String) throws {
        let f = dup(other)
        if f < 0 { throw IOError.cannotOpen(path: name, reason: errnoMessage()) }
        fd = f
        owned = true
        self.name = name
        status = FileStatus.of(fd: f)
        _ = lseek(f, 0, SEEK_SET)
    }

    deinit { if owned { close(fd) } }

    /// Up to `count` bytes (fewer only at the end of the input).
    public func read(upTo count: Int) throws -> [UInt8] {
        try filled(count) { buffer in
            var got = 0
            while got < count {
                let n = Glibc.read(fd, buffer + got, count - got)
                if n < 0 {
                    if errno == EINTR { continue }
                    return (got, errno)
                }
                if n == 0 { break }
                got += n
            }
            return (got, 0)
        }
    }

    /// What one read(2) gives, up to `count` bytes: at least one byte, or none at the end of
    /// the input. For pipes: returns as soon as a writer's line has arrived.
    public func readAvailable(upTo count: Int) throws -> [UInt8] {
        try filled(count) { buffer in
            while true {
                let n = Glibc.read(fd, buffer, count)
                if n >= 0 { return (n, 0) }
                if errno != EINTR { return (0, errno) }
            }
        }
    }

    /// An array of up to `count` bytes that `fill` writes (returning how many, and errno on a
    /// failure). Not zeroed first: callers read in 1 MiB pieces, and zero-filling every piece
    /// (page faults on fresh memory) was most of the time of reading a short file.
    private func filled(_ count: Int, _ fill: (UnsafeMutablePointer<UInt8>) -> (Int, Int32)) throws -> [UInt8] {
        guard count > 0 else { return [] }
        var failure: Int32 = 0
        let out = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            let (n, code) = fill(buffer.baseAddress!)
            (initialized, failure) = (n, code)
        }
        if failure != 0 { throw IOError.cannotRead(path: name, reason: "\(errnoMessage(failure))") }
        return out
    }

    /// Everything to the end; more than `limit` bytes is an error (at once for a regular file
    /// whose size says so).
    public func readAll(limit: Int = 1 << 34) throws -> Data {
        if let status, status.kind == .regular, status.size > UInt64(limit) {
            throw IOError.cannotOpen(path: name, reason: "\(status.size) bytes, over the \(byteCount(UInt64(limit))) a file of this kind may hold")
        }
        var data = Data()
        while true {
            let chunk = try read(upTo: 1 << 20)
            if chunk.isEmpty { return data }
            data.append(contentsOf: chunk)
            if data.count > limit { throw IOError.cannotOpen(path: name, reason: "over the \(byteCount(UInt64(limit))) a file of this kind may hold") }
        }
    }

    /// Exactly `count` bytes at `offset` of a regular file into `buffer` (pread: the file's
    /// position is untouched); fewer bytes there is an error.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError.cannotRead(path: name, reason: "\(errnoMessage())")
            }
            if n == 0 { throw IOError.cannotRead(path: name, reason: "ended early (was it changed while it was read?)") }
            done += n
        }
    }

    /// Seeks a regular file to `offset` from its start.
    public func seek(to offset: UInt64) throws {
        if lseek(fd, off_t(offset), SEEK_SET) < 0 { throw IOError.cannotOpen(path: name, reason: "seek failed: \(errnoMessage())") }
    }
}

// MARK: - Lines

/// Lines of a byte stream, "\n" or "\r\n" ends (a final line without an end counts; a final
/// newline ends the last line, it does not start one). Each line comes with its 1-based
/// number and the byte offset after it, so a job can come back to any line.
public struct LineReader {
    private let next: (Int) throws -> [UInt8]
    private var buffer: [UInt8] = []
    private var start = 0
    private var eof = false
    public private(set) var lineNumber = 0
    /// Bytes consumed through the end of the last line returned.
    public private(set) var offset: UInt64
    /// Lines longer than this are an error (a file with no newlines is not a list of texts).
    public let maxLineBytes: Int
    let name: String

    public init(_ file: InputFile, startingAt offset: UInt64 = 0, firstLineNumber: Int = 1, maxLineBytes: Int = 1 << 28) {
        next = { try file.readAvailable(upTo: $0) }
        self.offset = offset
        lineNumber = firstLineNumber - 1
        self.maxLineBytes = maxLineBytes
        name = file.name
    }

    public init(data: Data, name: String, maxLineBytes: Int = 1 << 28) {
        final class Cursor { var at = 0 }
        let bytes = [UInt8](data), cursor = Cursor()
        next = { n in
            let k = min(n, bytes.count - cursor.at)
            defer { cursor.at += k }
            return Array(bytes[cursor.at..<(cursor.at + k)])
        }
        offset = 0
        self.maxLineBytes = maxLineBytes
        self.name = name
    }

    /// True when the next line is already in the buffer (nextLine will not read).
    public var hasBufferedLine: Bool { buffer[start...].contains(0x0A) }

    /// The next line's bytes without its end, or nil at the end of the input.
    public mutating func nextLine() throws -> [UInt8]? {
        var scanFrom = start
        while true {
            if let nl = buffer[scanFrom...].firstIndex(of: 0x0A) {
                var end = nl
                if end > start && buffer[end - 1] == 0x0D { end -= 1 }
                let line = Array(buffer[start..<end])
                offset += UInt64(nl + 1 - start)
                start = nl + 1
                lineNumber += 1
                return line
            }
            scanFrom = buffer.count
            if eof {
                guard start < buffer.count else { return nil }
                var end = buffer.count
                if buffer[end - 1] == 0x0D { end -= 1 }
                let line = Array(buffer[start..<end])
                offset += UInt64(buffer.count - start)
                start = buffer.count
                lineNumber += 1
                return line
            }
            if buffer.count - start > maxLineBytes {
                throw IOError.cannotOpen(path: "\(name):\(lineNumber + 1)", reason: "a line longer than \(maxLineBytes) bytes")
            }
            if start > 0 {
                buffer.removeFirst(start)
                scanFrom -= start
                start = 0
            }
            let chunk = try next(1 << 20)
            if chunk.isEmpty { eof = true } else { buffer += chunk }
        }
    }

    /// Every remaining line, as UTF-8 text; a line that is not UTF-8 is an error naming it,
    /// unless `lossy` (replacement characters).
    public mutating func allLines(lossy: Bool = false) throws -> [String] {
        var out: [String] = []
        while let line = try nextLine() {
            out.append(try LineReader.text(line, lossy: lossy, at: "\(name):\(lineNumber)"))
        }
        return out
    }

    public static func text(_ line: [UInt8], lossy: Bool, at place: String) throws -> String {
        if let s = String(validating: line, as: UTF8.self) { return s }
        if lossy { return String(decoding: line, as: UTF8.self) }
        throw InputError("\(place): not valid UTF-8 (use --lossy to replace bad bytes)")
    }
}

/// The lines of a file or of stdin ("-"), as text.
public func readLines(_ path: String, what: String, lossy: Bool = false) throws -> [String] {
    var reader = LineReader(try InputFile(path, what: what))
    return try reader.allLines(lossy: lossy)
}

// MARK: - Writing

/// A file descriptor written with write(2): short writes are continued, EINTR retried, and a
/// failure is an `IOError` naming the output and the system's reason (ENOSPC: "no space left
/// on device"; EPIPE when SIGPIPE is ignored: "broken pipe").
public struct FileSink {
    public let fd: Int32
    /// The name messages use: the path, or "<stdout>".
    public let name: String

    public init(fd: Int32, name: String) { (self.fd, self.name) = (fd, name) }

    public static let standardOutput = FileSink(fd: 1, name: "<stdout>")

    public func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write($0) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if fd == 1 && name == "<stdout>" && standardStreamIsClosed(1) {
            throw IOError.cannotWrite(path: name, reason: "bad file descriptor (stdout is closed)")
        }
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError.cannotWrite(path: name, reason: errnoMessage())
            }
            done += n
        }
    }

    public func write(_ string: String) throws { try write(Data(string.utf8)) }

    public func sync() throws {
        if fsync(fd) != 0 && errno != EINVAL && errno != EROFS {
            throw IOError.cannotWrite(path: name, reason: errnoMessage())
        }
    }
}

// MARK: - Closed standard streams

/// Which of stdin, stdout and stderr the process started with closed.
nonisolated(unsafe) private var closedStandardStreams: Set<Int32> = []

/// Call first thing in main: each of fds 0, 1, 2 that is closed is held by /dev/null, so no
/// file the process opens later can land on it (rows meant for stdout written into a job's
/// partial files, say). Reading a closed stdin or writing a closed stdout stays an error.
public func guardStandardStreams() {
    for fd: Int32 in 0...2 where fcntl(fd, F_GETFD) == -1 && errno == EBADF {
        closedStandardStreams.insert(fd)
        let null = open("/dev/null", O_RDWR)
        if null >= 0 && null != fd { dup2(null, fd); close(null) }
    }
}

func standardStreamIsClosed(_ fd: Int32) -> Bool { closedStandardStreams.contains(fd) }

/// Writes to stderr, ignoring failures (a closed stderr must not end a job).
public func writeStandardError(_ text: String) {
    var data = Array(text.utf8)
    data.withUnsafeMutableBytes { b in
        var done = 0
        while done < b.count {
            let n = Glibc.write(2, b.baseAddress! + done, b.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            done += n
        }
    }
}

/// The final target of `path`: symbolic links followed through every hop (a dangling link
/// names the file it would create); a relative link resolves against the link's folder.
public func resolveSymlinks(_ path: String) throws -> String {
    var current = path
    for _ in 0..<40 {
        var st = stat()
        guard lstat(current, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK else { return current }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(current, &buf, buf.count - 1)
        if n < 0 { throw IOError.cannotOpen(path: current, reason: errnoMessage()) }
        let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        current = target.hasPrefix("/") ? target : (parentPath(current) as NSString).appendingPathComponent(target)
    }
    throw IOError.cannotOpen(path: path, reason: "too many levels of symbolic links")
}

/// A file written under a temporary name beside its target and renamed onto it when
/// `commit()` is called, so a reader sees the old file or the whole new one, never half;
/// until then (or if the writer is dropped) the target is untouched. A symbolic link as target
/// is followed: its final target is replaced, the link stays.
public final class AtomicFileWriter {
    /// The target as given, for messages.
    public let path: String
    /// Where the bytes go when committed (symbolic links resolved).
    public let target: String
    private let temporary: String
    private var sink: FileSink?
    /// Whether the target may be a file this process read (`ReadFiles`): only a download that
    /// replaces a file it checksummed. Otherwise such a target is refused at `commit()`, so no
    /// command can destroy its own model, vocabulary or input with an output.
    private let mayReplaceRead: Bool

    public init(path: String, mayReplaceRead: Bool = false) throws {
        self.path = path
        self.mayReplaceRead = mayReplaceRead
        target = try resolveSymlinks(path)
        let dir = parentPath(target)
        let name = (target as NSString).lastPathComponent
        temporary = ((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent(".\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 {
            let reason = errno == ENOENT ? "the folder \(dir.isEmpty ? "." : dir) does not exist" : errnoMessage()
            throw IOError.cannotWrite(path: path, reason: reason)
        }
        sink = FileSink(fd: fd, name: path)
    }

    deinit { discard() }

    /// Drops what was written: the temporary file is removed, the target stays as it was.
    public func discard() {
        if let sink {
            close(sink.fd)
            unlink(temporary)
            self.sink = nil
        }
    }

    public func write(_ data: Data) throws { try sink!.write(data) }
    public func write(_ bytes: UnsafeRawBufferPointer) throws { try sink!.write(bytes) }

    /// fsync, then rename onto the target.
    public func commit() throws {
        guard let s = sink else { return }
        try s.sync()
        close(s.fd)
        sink = nil
        if !mayReplaceRead, let st = FileStatus.of(target), let read = ReadFiles.matching(st).first {
            unlink(temporary)
            throw IOError.cannotWrite(path: path, reason: "is \(read == path ? "" : "the same file as \(read), ")a file this command read; it is left as it was (choose another output)")
        }
        if rename(temporary, target) != 0 {
            let reason = errnoMessage()
            unlink(temporary)
            throw IOError.cannotWrite(path: path, reason: reason)
        }
    }
}

/// Writes `data` to `path` atomically (`AtomicFileWriter`).
public func writeAtomically(_ data: Data, to path: String) throws {
    let w = try AtomicFileWriter(path: path)
    try w.write(data)
    try w.commit()
}

// MARK: - Whole files into a reused buffer

/// Reads whole files into a buffer kept per thread (grown, never shrunk), so reading many
/// files allocates — and page-faults — once, not per file.
public enum FileBytes {
    final class Buffer { var bytes: UnsafeMutableRawPointer?; var capacity = 0; deinit { bytes?.deallocate() } }
    private static let key = "vlm.filebytes"

    /// body(the file's bytes), valid only inside body. More than `limit` bytes is an error.
    public static func read<R>(_ path: RawPath, limit: Int, name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let fd = path.withCString { open($0, O_RDONLY | O_CLOEXEC) }
        if fd < 0 { throw IOError.cannotOpen(path: name, reason: errnoMessage()) }
        defer { close(fd) }
        // The size on the opened descriptor first: a file over the limit (a huge sparse one,
        // say) is refused before a byte of memory is taken for it.
        let status = FileStatus.of(fd: fd)
        if let status, status.kind == .regular, status.size > UInt64(limit) {
            throw IOError.cannotOpen(path: name, reason: "\(status.size) bytes, larger than \(limit) bytes")
        }
        let dict = Thread.current.threadDictionary
        let buffer: Buffer
        if let b = dict[key] as? Buffer { buffer = b } else { buffer = Buffer(); dict[key] = buffer }
        // A buffer grown past 64 MiB for one large file is not kept for the next.
        defer {
            if buffer.capacity > 64 << 20 {
                buffer.bytes?.deallocate()
                (buffer.bytes, buffer.capacity) = (nil, 0)
            }
        }
        var size = 0
        while true {
            if size == buffer.capacity {
                if buffer.capacity >= limit + 1 { throw IOError.cannotOpen(path: name, reason: "larger than \(limit) bytes") }
                let hint = size == 0 ? Int(status?.size ?? 0) + 1 : 0
                let grown = min(limit + 1, max(buffer.capacity * 2, hint, 1 << 20))
                let p = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 64)
                if let old = buffer.bytes { p.copyMemory(from: old, byteCount: size); old.deallocate() }
                buffer.bytes = p
                buffer.capacity = grown
            }
            let n = Glibc.read(fd, buffer.bytes! + size, buffer.capacity - size)
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError.cannotOpen(path: name, reason: errnoMessage())
            }
            if n == 0 { break }
            size += n
            if size > limit { throw IOError.cannotOpen(path: name, reason: "larger than \(limit) bytes") }
        }
        return try body(UnsafeRawBufferPointer(start: buffer.bytes, count: size))
    }
}
