// Feature rows as files: .npy, raw little-endian float32 (.f32), JSON lines and TSV, each row
// with its id. Ids are bytes (file names need not be UTF-8); TSV and ids.txt carry them in the
// escaped one-line form of `RawPath.escape`, JSON lines as a plain JSON string, or — only for
// a name that is not valid UTF-8 — the escaped form with "id_escaped": true.

import Foundation
import VLMCore

public enum RowFormat: String, CaseIterable, Sendable {
    case npy, jsonl, tsv, f32

    /// The format a path's extension implies, if any.
    public static func inferred(from path: String) -> RowFormat? {
        switch (path as NSString).pathExtension.lowercased() {
        case "npy": return .npy
        case "f32": return .f32
        case "jsonl", "ndjson": return .jsonl
        case "tsv", "txt": return .tsv
        default: return nil
        }
    }

    /// npy and f32 are binary, with the ids in a sidecar `<output>.ids.txt`.
    public var isBinary: Bool { self == .npy || self == .f32 }
}

public enum RowText {
    /// jsonl or tsv lines for `ids.count` rows of `dim` floats.
    public static func render(_ rows: UnsafeBufferPointer<Float>, dim: Int, ids: [[UInt8]], format: RowFormat) -> Data {
        precondition(rows.count == ids.count * dim && !format.isBinary)
        var s = ""
        s.reserveCapacity(ids.count * (dim * 12 + 40))
        for (i, id) in ids.enumerated() {
            let row = rows[(i * dim)..<((i + 1) * dim)]
            if format == .jsonl {
                s += "{" + jsonID(id) + ",\"vector\":"
                VectorText.appendJSON(row, to: &s)
                s += "}\n"
            } else {
                s += RawPath.escape(id)
                for v in row { s += "\t"; s += "\(v)" }
                s += "\n"
            }
        }
        return Data(s.utf8)
    }

    /// `"id":"…"`, with `,"id_escaped":true` after it when the bytes are not valid UTF-8.
    public static func jsonID(_ id: [UInt8]) -> String {
        if let s = String(validating: id, as: UTF8.self) { return "\"id\":" + jsonString(s) }
        return "\"id\":" + jsonString(RawPath.escape(id)) + ",\"id_escaped\":true"
    }

    /// One ids.txt line (escaped, newline-terminated).
    public static func idLine(_ id: [UInt8]) -> String { RawPath.escape(id) + "\n" }
}

extension String {
    /// Right-aligned in `n` columns (tables of numbers).
    public func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
