// Where a job's rows go, decided before any work starts: a regular file (or a new path) is
// written atomically and may be resumed; "-" and anything that is not a regular file (a FIFO,
// a character device such as /dev/null, a terminal) is written as a stream — never replaced,
// nothing created beside it. A symbolic link is followed and its final target written.

import Foundation
import VLMCore
import VLMEmbed
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
    /// folder exists and it is not a folder itself). `example`: a file name to suggest.
    public static func resolve(_ path: String, example: String = "features.npy") throws -> OutputTarget {
        if path == "-" { return .stream(.standardOutput, kind: nil) }
        if path.isEmpty { throw IOError.cannotWrite(path: "\"\"", reason: "an empty path is not an output file; use -o FILE or -o - for stdout") }
        if path.hasSuffix("/") {
            throw IOError.cannotWrite(path: path, reason: "names a folder (it ends in /); name a file, e.g. -o \(path)\(example)")
        }
        let target = try resolveSymlinks(path)
        if let st = FileStatus.of(target) {
            switch st.kind {
            case .regular: break
            case .directory:
                throw IOError.cannotWrite(path: path, reason: "is a folder; name a file in it, e.g. -o \((path as NSString).appendingPathComponent(example))")
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
        let dir = parentPath(target)
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

/// The files written beside a regular-file output.
public let outputSidecars = [".ids.txt", ".errors.jsonl", OutputDescription.suffix]

/// Refuses an output that would replace a file this job reads — one of `inputs`, or any file
/// the process has read so far (`ReadFiles`: model weights, shards, configs, vocabularies,
/// PCA and label files) — or, with `sidecars`, whose `.ids.txt`, `.errors.jsonl` or `.meta.json` beside it
/// is one; an output inside another job's partial folder; and an output that is another
/// output's sidecar (`-o A.npy.ids.txt` beside `A.npy` or its running job). Only a regular
/// file is replaced: `-` and anything else (a FIFO, a terminal, /dev/null) is written as a
/// stream and never refused. Jobs call it again once their models are loaded.
public func refuseOutput(_ output: String, overwriting inputs: [String], sidecars: Bool = true) throws {
    guard output != "-" else { return }
    if let st = FileStatus.of(output), st.kind != .regular { return }
    let target = (try? resolveSymlinks(output)) ?? output
    try refuseJobFolder(output, target: target)
    for path in [output] + (sidecars ? outputSidecars.map { output + $0 } : []) {
        guard let st = FileStatus.of(path), st.kind == .regular else { continue }
        let named = inputs.filter { $0 != "-" && FileStatus.of($0).map { $0.isSameFile(as: st) } == true }
        guard let input = named.first ?? ReadFiles.matching(st).first else { continue }
        let what = path == output ? "-o is" : "-o's \((path as NSString).lastPathComponent) beside it is"
        let role = named.isEmpty ? "a file this job reads" : "an input of this job"
        throw OptionError("\(output): \(what) \(input == path ? "" : "the same file as ")\(input), \(role), which the output would replace; choose another -o")
    }
}

/// Refuses an output that is one of the job's images (`vlm embed-image photo.jpg -o photo.jpg`),
/// through a link too. Only entries with the output's own file name are examined.
public func refuseOutput(_ output: String, amongImages paths: PathList) throws {
    guard output != "-", let st = FileStatus.of(output), st.kind == .regular else { return }
    let name = Array(((try? resolveSymlinks(output)) ?? output).utf8.split(separator: 0x2F).last ?? [])
    let given = Array(output.utf8.split(separator: 0x2F).last ?? [])
    for i in 0..<paths.count {
        let p = paths[i]
        guard p.bytes.suffix(name.count).elementsEqual(name) || p.bytes.suffix(given.count).elementsEqual(given) else { continue }
        if let s = FileStatus.of(p), s.isSameFile(as: st) {
            throw OptionError("\(output): -o is the image \(p.description), an input of this job, which the output would replace; choose another -o")
        }
    }
}

/// The same for a source of image–text pairs (`vlm fuse --pairs`): its image paths are read,
/// a few thousand at a time, only when `-o` names an existing file.
public func refuseOutput<S: ItemSource>(_ output: String, amongPairsOf source: S) throws where S.Value == (image: ImageInput, text: TextInput) {
    guard output != "-", let st = FileStatus.of(output), st.kind == .regular else { return }
    var start = 0
    while start < source.count {
        let end = min(source.count, start + 4096)
        let paths = PathList()
        for item in try source.items(start..<end) {
            if case .value(let v) = item.content, case .file(let p, _) = v.image { paths.append(p, walked: false) }
        }
        try refuseOutput(output, amongImages: paths)
        start = end
    }
}

/// `-o` inside a job's partial folder, or onto the sidecar of another output (finished or
/// being written), would replace that job's files under it.
private func refuseJobFolder(_ output: String, target: String) throws {
    let absolute = target.hasPrefix("/") ? target : FileManager.default.currentDirectoryPath + "/" + target
    // The folder with its links resolved: a link to a partial folder leads inside it too.
    var dir = parentPath(absolute)
    if let real = realpath(dir, nil) {
        dir = String(cString: real)
        free(real)
    }
    let name = target.split(separator: "/").last.map(String.init) ?? target
    if name.hasPrefix(".") && name.hasSuffix(".lock") && name.count > 6 {
        // Another output's lock file (`.<name>.lock`): replacing it would let two jobs write one output.
        let owner = (dir as NSString).appendingPathComponent(String(name.dropFirst().dropLast(5)))
        if FileStatus.of(owner) != nil || FileStatus.of(owner + ".partial", followLinks: false) != nil {
            throw OptionError("\(output): is the lock file of the output \(owner), which keeps two jobs from writing it at once; choose another -o")
        }
    }
    while !dir.isEmpty && dir != "/" {
        if dir.hasSuffix(".partial"), FileStatus.of(dir + "/job.json", followLinks: false) != nil {
            throw OptionError("\(output): is inside \(dir), the partial state of another vlm job's output, which it would corrupt; choose another -o")
        }
        dir = parentPath(dir)
    }
    for suffix in outputSidecars where target.hasSuffix(suffix) {
        let owner = String(target.dropLast(suffix.count))
        guard !owner.isEmpty else { continue }
        if FileStatus.of(owner)?.kind == .regular || FileStatus.of(owner + ".partial", followLinks: false) != nil {
            throw OptionError("\(output): is the \(suffix.dropFirst()) of the output \(owner), which this job would replace; choose another -o")
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
        let dir = parentPath(target)
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
