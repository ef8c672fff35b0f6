// Where a job's rows go, decided before any work starts: a regular file (or a new path) is
// written atomically and may be resumed; "-" and anything that is not a regular file (a FIFO,
// a character device such as /dev/null, a terminal) is written as a stream — never replaced,
// nothing created beside it. A symbolic link is followed and its final target written.

import Foundation
import VLMCore
import VLMIO

#if canImport(Glibc)
import Glibc
#endif

public enum OutputTarget {
    /// Written as it comes: stdout ("-"), or an existing non-regular file opened for writing.
    case stream(FileSink, kind: FileKind?)
    /// A FIFO: opened only when the first rows are written (opening one blocks until a reader
    /// comes), so every check and refusal comes first.
    case fifo(path: String)
    /// A regular file or a new path: `path` as given, `target` with symbolic links resolved.
    case file(path: String, target: String)

    /// Checks `path` and opens a stream target; a regular-file target is only checked (its
    /// folder exists and it is not a folder itself).
    public static func resolve(_ path: String) throws -> OutputTarget {
        if path == "-" { return .stream(.standardOutput, kind: nil) }
        if path.isEmpty { throw IOError.cannotWrite(path: "\"\"", reason: "an empty path is not an output file; use -o FILE or -o - for stdout") }
        if path.hasSuffix("/") {
            throw IOError.cannotWrite(path: path, reason: "names a folder (it ends in /); name a file, e.g. -o \(path)features.npy")
        }
        let target = try resolveSymlinks(path)
        if let st = FileStatus.of(target) {
            switch st.kind {
            case .regular: break
            case .directory:
                throw IOError.cannotWrite(path: path, reason: "is a folder; name a file in it, e.g. -o \((path as NSString).appendingPathComponent("features.npy"))")
            case .fifo:
                return .fifo(path: path)
            default:
                let fd = open(target, O_WRONLY | O_CLOEXEC | O_NOCTTY)
                if fd < 0 { throw IOError.cannotWrite(path: path, reason: errnoMessage()) }
                return .stream(FileSink(fd: fd, name: path), kind: st.kind)
            }
        } else if errno != ENOENT {
            throw IOError.cannotWrite(path: path, reason: errnoMessage())
        }
        let dir = (target as NSString).deletingLastPathComponent
        let folder = dir.isEmpty ? "." : dir
        guard let d = FileStatus.of(folder), d.kind == .directory else {
            throw IOError.cannotWrite(path: path, reason: "the folder \(folder) does not exist")
        }
        if access(folder, W_OK) != 0 { throw IOError.cannotWrite(path: path, reason: "the folder \(folder) is not writable") }
        return .file(path: path, target: target)
    }

    /// Writing binary rows to a terminal is refused.
    public var isTerminal: Bool {
        if case .stream(let s, _) = self { return isatty(s.fd) != 0 }
        return false
    }

    /// The sink of a stream target, opening a FIFO now; nil for a file target.
    public func openStream() throws -> FileSink? {
        switch self {
        case .stream(let s, _): return s
        case .fifo(let path):
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            if fd < 0 { throw IOError.cannotWrite(path: path, reason: errnoMessage()) }
            return FileSink(fd: fd, name: path)
        case .file: return nil
        }
    }
}

/// Refuses an output that is one of the job's own input files (the finished output would
/// replace it: an input lost with exit 0) — or, with `sidecars`, whose `.ids.txt` or
/// `.errors.jsonl` beside it is. Only a regular file is replaced: `-` and anything else (a
/// FIFO, a terminal, /dev/null) is written as a stream and never refused.
public func refuseOutput(_ output: String, overwriting inputs: [String], sidecars: Bool = true) throws {
    guard output != "-" else { return }
    for target in [output] + (sidecars ? [output + ".ids.txt", output + ".errors.jsonl"] : [])
    where FileStatus.of(target)?.kind == .regular {
        for input in inputs where input != "-" && FileStatus.sameFile(input, target) {
            let what = target == output ? "-o is" : "-o's \((target as NSString).lastPathComponent) beside it is"
            throw OptionError("\(output): \(what) \(input == target ? "" : "the same file as ")\(input), an input of this job, which the output would replace; choose another -o")
        }
    }
}

/// An exclusive lock on a job's output: flock(2) on `<folder>/.<name>.lock` beside the final
/// target (so `-o link` and `-o target` take the same lock). The kernel releases it when the
/// process ends, SIGKILL included, so a stale lock cannot exist; the file is never unlinked
/// (unlinking it would let a second job lock a new file while the first holds the old one).
public final class OutputLock {
    public let path: String
    private let fd: Int32

    public init(target: String, output: String) throws {
        let dir = (target as NSString).deletingLastPathComponent
        path = ((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent("." + (target as NSString).lastPathComponent + ".lock")
        let f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if f < 0 { throw IOError.cannotWrite(path: output, reason: "cannot create the job's lock file \(path) beside it: \(errnoMessage())") }
        if flock(f, LOCK_EX | LOCK_NB) != 0 {
            let busy = errno == EWOULDBLOCK
            close(f)
            if busy {
                throw InputError("\(output): another vlm job is writing this output (it holds \(path)); wait for it to finish or choose another -o")
            }
            throw IOError.cannotWrite(path: output, reason: "cannot lock \(path): \(errnoMessage())")
        }
        fd = f
    }

    deinit { close(fd) }
}
