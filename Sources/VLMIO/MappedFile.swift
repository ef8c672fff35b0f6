// A read-only memory mapping of a whole file. Owns the mapping; raw pointers never leave
// `withBytes`.

import VLMCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public final class MappedFile {
    public let path: String
    public let size: Int
    private let base: UnsafeMutableRawPointer?

    /// Maps `path`; throws `IOError` for a missing, unreadable or non-regular file.
    public init(path: String) throws {
        self.path = path
        // O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 { throw IOError.cannotOpen(path: path, reason: errnoString()) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw IOError.cannotOpen(path: path, reason: errnoString()) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw IOError.cannotOpen(path: path, reason: "is a directory") }
        if (st.st_mode & S_IFMT) != S_IFREG { throw IOError.cannotOpen(path: path, reason: "not a regular file") }
        size = Int(st.st_size)
        ReadFiles.record(path, FileStatus(st))
        if size == 0 {
            base = nil
        } else {
            let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
            if p == MAP_FAILED || p == nil { throw IOError.cannotOpen(path: path, reason: "mmap failed: \(errnoString())") }
            base = p
        }
    }

    deinit {
        if let base { munmap(base, size) }
    }

    /// The file's bytes, valid only inside `body`.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base.map { UnsafeRawPointer($0) }, count: size))
    }
}

func errnoString() -> String { String(cString: strerror(errno)) }

/// File-level failures shared by the readers and writers.
public enum IOError: VLMError, Equatable {
    case cannotOpen(path: String, reason: String)
    /// Opened, but reading it failed or it ended before the bytes it said it holds.
    case cannotRead(path: String, reason: String)
    case cannotWrite(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason): return "\(path): cannot open: \(reason)"
        case let .cannotRead(path, reason): return "\(path): cannot read: \(reason)"
        case let .cannotWrite(path, reason): return "\(path): cannot write: \(reason)"
        }
    }
}
