// What a batch job is made of: items, each with an id (bytes: a file name, a line number, a
// field of a record), the bytes that identify its input (hashed into each batch's record, so
// a resumed job notices an input changed in place), and either a value to encode, a failure
// found while reading it, or nothing (a blank line of a JSON-lines file).

import Foundation
import VLMCore
import VLMIO
import VLMEmbed

/// One item of a job as its source reads it.
public struct JobItem<Value> {
    public enum Content {
        case value(Value)
        case failed(ItemError)
        /// No row and no error (a blank line where records are expected).
        case blank
    }
    public var id: [UInt8]
    /// Bytes that change when the item's input changes (a file's path, size and mtime; a line's text).
    public var identity: [UInt8]
    public var content: Content

    public init(id: [UInt8], identity: [UInt8], content: Content) { (self.id, self.identity, self.content) = (id, identity, content) }
}

/// Where a job's items come from: a fixed, indexable sequence (the shard already applied).
public protocol ItemSource: AnyObject {
    associatedtype Value
    /// Items in the job.
    var count: Int { get }
    /// Items `range`, in order.
    func items(_ range: Range<Int>) throws -> [JobItem<Value>]
    /// What defines the whole list (hashed into the job's fingerprint): the paths, or the
    /// input file and its line count.
    var definition: [UInt8] { get }
}

/// `--shard i/n`: the i-th (0-based `index`) contiguous slice of `count` items.
public struct Shard: Equatable, Sendable, CustomStringConvertible {
    public var index: Int, count: Int

    /// "i/n" with 1 <= i <= n.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 1, i <= n else { return nil }
        (index, count) = (i - 1, n)
    }

    public func range(of total: Int) -> Range<Int> {
        // In 128-bit-safe arithmetic: total · index / count without overflow.
        let lo = Int((Int128(total) * Int128(index)) / Int128(count))
        let hi = Int((Int128(total) * Int128(index + 1)) / Int128(count))
        return lo..<hi
    }

    public var description: String { "\(index + 1)/\(count)" }
}

// MARK: - A compact list of paths

/// Paths held in one byte buffer: a job of ten million files keeps ~60 bytes each, not a
/// String object per path. Each path also records whether it was found by walking a folder
/// (then only regular files are opened) or named explicitly (read whatever it is).
public final class PathList {
    private var blob: [UInt8] = []
    private var ends: [Int] = []
    private var walked: [Bool] = []

    public init() {}

    public var count: Int { ends.count }

    public func append(_ path: RawPath, walked w: Bool) {
        blob += path.bytes
        ends.append(blob.count)
        walked.append(w)
    }

    public subscript(i: Int) -> RawPath {
        RawPath(bytes: Array(blob[(i == 0 ? 0 : ends[i - 1])..<ends[i]]))
    }

    public func wasWalked(_ i: Int) -> Bool { walked[i] }

    /// Entries `range` as a new list.
    public func slice(_ range: Range<Int>) -> PathList {
        let out = PathList()
        for i in range { out.append(self[i], walked: walked[i]) }
        return out
    }

    /// SHA-256 of every path (length-prefixed), for the job's fingerprint.
    public var digest: [UInt8] {
        var h = SHA256()
        var start = 0
        for e in ends {
            var n = UInt64(e - start).littleEndian
            withUnsafeBytes(of: &n) { h.update($0) }
            blob[start..<e].withUnsafeBytes { h.update($0) }
            start = e
        }
        return h.finalize()
    }
}

/// (size, mtime) of a path as identity bytes; a path that cannot be examined gives its errno.
public func fileIdentity(_ path: RawPath) -> [UInt8] {
    var out = path.bytes
    out.append(0)
    if let st = FileStatus.of(path) {
        withUnsafeBytes(of: st.size.littleEndian) { out += $0 }
        withUnsafeBytes(of: st.mtimeNanoseconds.littleEndian) { out += $0 }
    } else {
        withUnsafeBytes(of: Int64(errno).littleEndian) { out += $0 }
    }
    return out
}

// MARK: - Listing image files

/// File extensions taken from folders (paths named explicitly are taken whatever their name).
public let imageExtensions: Set<String> = ["jpg", "jpeg", "jpe", "png"]

/// Expands arguments: a folder is walked recursively (symbolic links to files followed, to
/// folders not, so a loop cannot trap the walk), taking files with an image extension in byte
/// order; anything else is taken as named. Names are bytes throughout.
/// `emptyFoldersAsItems`: a folder holding no image becomes one item (an error row naming it)
/// instead of adding nothing — for the lines of a --list, where nothing else would say so.
public func expandImagePaths(_ args: [RawPath], into list: PathList, emptyFoldersAsItems: Bool = false) throws {
    for p in args {
        if let st = FileStatus.of(p), st.kind == .directory {
            var found: [RawPath] = []
            try walk(p, into: &found)
            found.sort { $0.bytes.lexicographicallyPrecedes($1.bytes) }
            for f in found { list.append(f, walked: true) }
            if found.isEmpty && emptyFoldersAsItems { list.append(p, walked: false) }
        } else {
            list.append(p, walked: false)   // missing or unreadable paths become item errors
        }
    }
}

private func walk(_ dir: RawPath, into found: inout [RawPath]) throws {
    guard let d = dir.withCString({ opendir($0) }) else {
        throw IOError.cannotOpen(path: dir.description, reason: "cannot list this folder: \(errnoMessage())")
    }
    defer { closedir(d) }
    var subdirs: [RawPath] = []
    while let entry = readdir(d) {
        let name: [UInt8] = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            Array(raw.prefix { $0 != 0 })
        }
        if name == [0x2E] || name == [0x2E, 0x2E] { continue }
        let path = dir.appending(name)
        var kind: FileKind
        switch Int32(entry.pointee.d_type) {
        case Int32(DT_DIR): kind = .directory
        case Int32(DT_REG): kind = .regular
        case Int32(DT_LNK):
            // A link to a folder is not followed; a link to anything else is listed by its name.
            kind = FileStatus.of(path)?.kind == .directory ? .symlink : .regular
        case Int32(DT_UNKNOWN): kind = FileStatus.of(path, followLinks: false)?.kind ?? .other
        default: kind = .other
        }
        if kind == .directory {
            subdirs.append(path)
            // A folder named like an image is listed too, and recorded as unreadable.
            if imageExtensions.contains(path.pathExtension) { found.append(path) }
        } else if kind != .symlink, imageExtensions.contains(path.pathExtension) {
            // FIFOs, sockets and devices with an image name are listed too: the job records
            // them as not_a_file without opening them.
            found.append(path)
        }
    }
    for s in subdirs { try walk(s, into: &found) }
}

/// The image paths of arguments (folders walked), a --list (one per line; blank lines
/// ignored) and a --list0 (NUL-separated). Names stay bytes throughout.
public func listImages(images: [String], list: String?, list0: String?) throws -> PathList {
    var listed: [RawPath] = []
    if let list {
        var reader = LineReader(try InputFile(list, what: "the list of images"))
        while let line = try reader.nextLine() {
            if !line.isEmpty { listed.append(RawPath(bytes: line)) }
        }
    }
    if let list0 {
        let data = try InputFile(list0, what: "the list of images").readAll()
        for name in data.split(separator: 0, omittingEmptySubsequences: true) { listed.append(RawPath(bytes: Array(name))) }
    }
    let paths = PathList()
    try expandImagePaths(images.map { RawPath($0) }, into: paths)
    try expandImagePaths(listed, into: paths, emptyFoldersAsItems: true)
    return paths
}

/// A preprocessed float32 (N, channels, H, W) array from a file or stdin.
public func readInputNPY(_ path: String, channels: Int) throws -> Tensor {
    // stdin, /dev/stdin, a FIFO, process substitution: read as a stream.
    let input = try NPY.read(argument: path)
    let name = path == "-" ? "<stdin>" : path
    guard input.rank == 4, input.shape[1] == channels else {
        throw InputError("\(name): expected a float32 array of shape (N, \(channels), H, W), got \(input.shape)")
    }
    guard input.shape[0] > 0, input.shape[2] > 0, input.shape[3] > 0 else {
        throw InputError("\(name): the array \(input.shape) holds no images")
    }
    return input
}
