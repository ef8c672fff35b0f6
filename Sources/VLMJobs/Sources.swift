// Item sources: image files (a compact list of paths), rows of a preprocessed tensor, and lines
// of a text file — texts, JSON records, or image–text pairs. A text input is never held in
// memory: a first pass counts its lines and keeps the byte offset of every 1024th, and each
// unit reads just its lines. stdin (or a FIFO) is first spooled to a file, inside the job's
// partial folder when there is one, so a resumed job reads exactly the texts the first run did.

import Foundation
import VLMCore
import VLMEmbed
import VLMIO

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Images

public final class ImageFileSource: ItemSource {
    public let paths: PathList

    public init(paths: PathList) { self.paths = paths }

    public var count: Int { paths.count }
    public var definition: [UInt8] { paths.digest }

    public func items(_ range: Range<Int>) throws -> [JobItem<ImageInput>] {
        range.map { i in
            let p = paths[i]
            return JobItem(id: p.bytes, identity: fileIdentity(p), content: .value(.file(p, walked: paths.wasWalked(i))))
        }
    }
}

/// Rows `rows` of a preprocessed (N, 3, H, W) tensor; ids are the 0-based row numbers.
public final class TensorRowSource: ItemSource {
    public let rows: Range<Int>
    let fileIdentity: [UInt8]

    public init(rows: Range<Int>, fileIdentity: [UInt8]) { (self.rows, self.fileIdentity) = (rows, fileIdentity) }

    public var count: Int { rows.count }
    public var definition: [UInt8] { fileIdentity + Array("\(rows)".utf8) }

    public func items(_ range: Range<Int>) throws -> [JobItem<Int>] {
        range.map { i in
            let row = rows.lowerBound + i
            return JobItem(id: Array(String(row).utf8), identity: Array(String(row).utf8), content: .value(row))
        }
    }
}

// MARK: - Lines of a text input

/// The lines of arguments, a file or stdin, readable by range.
public final class TextLines {
    /// The name messages use: the path, "<stdin>" or "<arguments>".
    public let name: String
    /// The file read (the spool for stdin); nil for arguments.
    let path: String?
    private let arguments: [[UInt8]]
    /// Lines in the input, and the byte offset of lines 0, 1024, 2048, ….
    public private(set) var lineCount = 0
    private var checkpoints: [UInt64] = []
    private var ownedTemporary: String?
    static let stride = 1024

    public init(arguments: [String]) {
        name = "<arguments>"
        path = nil
        self.arguments = arguments.map { Array($0.utf8) }
        lineCount = arguments.count
    }

    /// `input` is a path or "-". A regular file is read in place; stdin and other streams are
    /// copied first — to `spool` (kept for a resumed job; reused when `reuseSpool` and it is
    /// there), else to a temporary file removed when this is released.
    public init(_ input: String, spool: String?, reuseSpool: Bool, quiet: Bool) throws {
        arguments = []
        let file = try InputFile(input, what: "the texts")
        name = file.name
        if file.status?.kind == .regular && input != "-" {
            path = input
        } else if let spool, reuseSpool, FileStatus.of(spool, followLinks: false)?.kind == .regular {
            if !quiet { writeStandardError("vlm: note: reading the texts the first run spooled to \(spool); \(file.name) is not read again\n") }
            path = spool
        } else {
            let destination = spool ?? (NSTemporaryDirectory() as NSString).appendingPathComponent("vlm-input-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).txt")
            let w = try AtomicFileWriter(path: destination)
            while true {
                let chunk = try file.read(upTo: 1 << 20)
                if chunk.isEmpty { break }
                try chunk.withUnsafeBytes { try w.write($0) }
            }
            try w.commit()
            path = destination
            if spool == nil { ownedTemporary = destination }
        }
        try index()
    }

    deinit { if let ownedTemporary { unlink(ownedTemporary) } }

    private func index() throws {
        let file = try InputFile(path!, what: "the texts")
        var offset: UInt64 = 0
        var count = 0
        var endsWithNewline = true
        checkpoints = [0]
        while true {
            let chunk = try file.read(upTo: 1 << 20)
            if chunk.isEmpty { break }
            for (i, b) in chunk.enumerated() where b == 0x0A {
                count += 1
                if count % Self.stride == 0 { checkpoints.append(offset + UInt64(i) + 1) }
            }
            endsWithNewline = chunk.last == 0x0A
            offset += UInt64(chunk.count)
        }
        lineCount = count + (offset > 0 && !endsWithNewline ? 1 : 0)
    }

    /// What defines the input: its name and line count (each unit's lines are checked on resume).
    public var definition: [UInt8] {
        if path == nil {
            var h = SHA256()
            for a in arguments { h.update(a); h.update([0]) }
            return h.finalize()
        }
        return Array("\(name)\u{0}\(lineCount)".utf8)
    }

    /// Lines `range` (0-based line indices) with their 1-based numbers.
    public func lines(_ range: Range<Int>) throws -> [(number: Int, bytes: [UInt8])] {
        if path == nil { return range.map { ($0 + 1, arguments[$0]) } }
        guard !range.isEmpty else { return [] }
        let file = try InputFile(path!, what: "the texts")
        let k = range.lowerBound / Self.stride
        try file.seek(to: checkpoints[k])
        var reader = LineReader(file, startingAt: checkpoints[k], firstLineNumber: k * Self.stride + 1)
        var out: [(Int, [UInt8])] = []
        out.reserveCapacity(range.count)
        while out.count < range.count {
            guard let line = try reader.nextLine() else {
                throw InputError("\(name): ended at line \(reader.lineNumber) while reading line \(range.upperBound); was it changed while the job ran?")
            }
            if reader.lineNumber > range.lowerBound { out.append((reader.lineNumber, line)) }
        }
        return out
    }
}

// MARK: - Texts

/// How text lines are read: one text per line, or JSON records with named fields.
public struct TextFormat: Sendable {
    public var jsonField: String?
    public var jsonPairField: String?
    public var jsonIdField: String?
    public var lossy: Bool

    public init(jsonField: String? = nil, jsonPairField: String? = nil, jsonIdField: String? = nil, lossy: Bool = false) {
        (self.jsonField, self.jsonPairField, self.jsonIdField, self.lossy) = (jsonField, jsonPairField, jsonIdField, lossy)
    }
}

public final class TextSource: ItemSource {
    public let lines: TextLines
    public let range: Range<Int>
    public let format: TextFormat

    /// Lines `range` of `lines` (a shard, or all).
    public init(lines: TextLines, range: Range<Int>, format: TextFormat) {
        (self.lines, self.range, self.format) = (lines, range, format)
    }

    public var count: Int { range.count }
    public var definition: [UInt8] {
        lines.definition + Array("\u{0}\(range)\u{0}\(format.jsonField ?? "")\u{0}\(format.jsonPairField ?? "")\u{0}\(format.jsonIdField ?? "")\u{0}\(format.lossy)".utf8)
    }

    public func items(_ r: Range<Int>) throws -> [JobItem<TextInput>] {
        try lines.lines((range.lowerBound + r.lowerBound)..<(range.lowerBound + r.upperBound)).map { parse($0.number, $0.bytes) }
    }

    func parse(_ number: Int, _ bytes: [UInt8]) -> JobItem<TextInput> {
        let place = lines.name == "<arguments>" ? "text \(number)" : "\(lines.name):\(number)"
        var id = Array(String(number).utf8)
        func failed(_ kind: String, _ message: String) -> JobItem<TextInput> {
            JobItem(id: id, identity: bytes, content: .failed(ItemError(id: id, kind: kind, message: "\(place): \(message)")))
        }
        guard let text = String(validating: bytes, as: UTF8.self) ?? (format.lossy ? String(decoding: bytes, as: UTF8.self) : nil) else {
            return failed("not_utf8", "not valid UTF-8 (use --lossy to replace bad bytes)")
        }
        guard let field = format.jsonField else { return JobItem(id: id, identity: bytes, content: .value(TextInput(text))) }
        if text.allSatisfy(\.isWhitespace) { return JobItem(id: id, identity: bytes, content: .blank) }
        guard let record = JSONValue.parse(Data(text.utf8))?.objectValue else { return failed("bad_record", "not a JSON object") }
        if let idField = format.jsonIdField {
            switch record[idField] {
            case .string(let s)?: id = Array(s.utf8)
            case .integer?, .number?, .bool?: id = Array(record[idField]!.jsonText.utf8)
            default: return failed("bad_record", "no string or number field '\(idField)' for the id")
            }
        }
        guard let value = record[field]?.stringValue else { return failed("bad_record", "no string field '\(field)'") }
        var pair: String?
        if let pf = format.jsonPairField {
            switch record[pf] {
            case nil: return failed("bad_record", "no field '\(pf)' for the second segment (null for none)")
            case .null?: pair = nil
            case .string(let s)?: pair = s
            default: return failed("bad_record", "field '\(pf)' is not a string")
            }
        }
        return JobItem(id: id, identity: bytes, content: .value(TextInput(value, pair: pair)))
    }
}

// MARK: - Image–text pairs

/// Lines of TSV (image path, tab, text) or JSON records {"image": …, "text": …}, chosen per
/// line by its first character; or one pair given on the command line. The id is the image path.
public final class PairSource: ItemSource {
    let lines: TextLines?
    let single: (image: String, text: String)?
    public let range: Range<Int>

    public init(lines: TextLines, range: Range<Int>) { (self.lines, single, self.range) = (lines, nil, range) }
    public init(image: String, text: String) { (lines, single, range) = (nil, (image, text), 0..<1) }

    public var count: Int { range.count }
    public var definition: [UInt8] {
        if let single { return Array("\(single.image)\u{0}\(single.text)".utf8) }
        return lines!.definition + Array("\u{0}\(range)".utf8)
    }

    public func items(_ r: Range<Int>) throws -> [JobItem<(image: ImageInput, text: TextInput)>] {
        if let single {
            let p = RawPath(single.image)
            return [JobItem(id: p.bytes, identity: fileIdentity(p) + Array(single.text.utf8),
                            content: .value((.file(p, walked: false), TextInput(single.text))))]
        }
        return try lines!.lines((range.lowerBound + r.lowerBound)..<(range.lowerBound + r.upperBound)).map { parse($0.number, $0.bytes) }
    }

    func parse(_ number: Int, _ bytes: [UInt8]) -> JobItem<(image: ImageInput, text: TextInput)> {
        let place = "\(lines!.name):\(number)"
        func failed(_ kind: String, _ message: String) -> JobItem<(image: ImageInput, text: TextInput)> {
            let id = Array(String(number).utf8)
            return JobItem(id: id, identity: bytes, content: .failed(ItemError(id: id, kind: kind, message: "\(place): \(message)")))
        }
        guard let line = String(validating: bytes, as: UTF8.self) else { return failed("not_utf8", "not valid UTF-8") }
        if line.allSatisfy(\.isWhitespace) { return JobItem(id: [], identity: bytes, content: .blank) }
        let image: String, text: String
        let record = line.first == "{" ? JSONValue.parse(Data(line.utf8))?.objectValue : nil
        if let record {
            guard let i = record["image"]?.stringValue, let t = record["text"]?.stringValue else {
                return failed("bad_record", "expected a JSON object with string fields \"image\" and \"text\"")
            }
            (image, text) = (i, t)
        } else if line.first == "{" && !line.contains("\t") {
            return failed("bad_record", "expected a JSON object with string fields \"image\" and \"text\"")
        } else {
            guard let tab = line.firstIndex(of: "\t") else { return failed("bad_record", "expected an image path, a tab, then the text") }
            (image, text) = (String(line[..<tab]), String(line[line.index(after: tab)...]))
        }
        let p = RawPath(image)
        return JobItem(id: p.bytes, identity: fileIdentity(p) + bytes, content: .value((.file(p, walked: false), TextInput(text))))
    }
}
