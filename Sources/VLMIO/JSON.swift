// JSON as vlm reads and writes it: any value of an input line as a typed `JSONValue` (never
// `[String: Any]`), records written with JSONEncoder, and the hand-written fast path for the
// vector rows, where a float's shortest round-trip text matters for speed.

import Foundation
import VLMCore

/// A JSON value, decoded without losing its type.
public enum JSONValue: Codable, Equatable, Sendable {
    case null
    case bool(Bool)
    /// A number written without fraction or exponent that fits 64 bits, kept exactly (ids such
    /// as 9007199254740993 must not pass through a Double).
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .integer(i) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .integer(let i): try c.encode(i)
        case .number(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// One JSON text; nil when `data` is not JSON.
    public static func parse(_ data: Data) -> JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: data) }

    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }

    /// A short name of the type, for messages ("a number", "an object").
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .integer, .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    /// The value written back as JSON text (numbers as integers when they are integral).
    public var jsonText: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .integer(let i): return String(i)
        case .number(let d):
            if d == d.rounded(), abs(d) < 9.0e15 { return String(Int64(d)) }
            return "\(d)"
        case .string(let s): return jsonString(s)
        case .array(let a): return "[" + a.map(\.jsonText).joined(separator: ",") + "]"
        case .object(let o): return "{" + o.keys.sorted().map { jsonString($0) + ":" + o[$0]!.jsonText }.joined(separator: ",") + "}"
        }
    }
}

/// Records as JSON lines: JSONEncoder with sorted keys (the same bytes on every run, which a
/// resumed job's files depend on), "/" unescaped.
public enum JSONLines {
    public static func encode<T: Encodable>(_ value: T) -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        // Encoding plain records of strings and numbers cannot fail.
        var data = (try? e.encode(value)) ?? Data("{}".utf8)
        data.append(0x0A)
        return data
    }
}

/// A JSON number; non-finite values become null, as JSON has no NaN or infinity.
@inline(__always)
public func jsonNumber(_ v: Float) -> String {
    v.isFinite ? "\(v)" : "null"
}

/// A JSON string literal (the vector rows' fast path; records go through `JSONLines`).
public func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20:
            out += String(format: "\\u%04x", u.value)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// The one writer of vectors as text, for every front end: JSON number arrays (batch jobs'
/// JSON lines, the worker's "json" vectors, the server's answers) and base64 of little-endian
/// float32 (the worker's default, OpenAI's encoding_format "base64"). Not JSONEncoder: for an
/// answer of 256 vectors of 384 floats it took 93 ms against this writer's 21–24 ms (the same
/// bytes; Emerald Rapids, one core, swiftc -O, 2026-12-07).
public enum VectorText {
    /// Appends `[x,y,…]` to `s`: Swift's shortest round-trip form of each float, null for NaN
    /// and infinity (JSON has neither).
    public static func appendJSON<C: Collection>(_ row: C, to s: inout String) where C.Element == Float {
        s += "["
        var first = true
        for x in row {
            if !first { s += "," }
            first = false
            s += jsonNumber(x)
        }
        s += "]"
    }

    public static func json<C: Collection>(_ row: C) -> String where C.Element == Float {
        var s = ""
        s.reserveCapacity(row.count * 12 + 2)
        appendJSON(row, to: &s)
        return s
    }

    /// `[[…],[…],…]`: `rows` of `dim` floats each.
    public static func jsonRows(_ rows: [Float], dim: Int) -> String {
        var s = "["
        s.reserveCapacity(rows.count * 12 + 8)
        for r in 0..<(dim == 0 ? 0 : rows.count / dim) {
            if r > 0 { s += "," }
            appendJSON(rows[(r * dim)..<((r + 1) * dim)], to: &s)
        }
        return s + "]"
    }

    /// The floats as little-endian float32 bytes, in base64.
    public static func base64<C: Collection>(_ row: C) -> String where C.Element == Float {
        var bytes = [UInt8]()
        bytes.reserveCapacity(row.count * 4)
        for x in row { withUnsafeBytes(of: x.bitPattern.littleEndian) { bytes += $0 } }
        return Data(bytes).base64EncodedString()
    }
}
