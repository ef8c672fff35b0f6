// Feature outputs: .npy, JSON lines and TSV, to a file (written to a temporary name beside it
// and renamed into place, so a reader never sees half a file) or to stdout ("-").

import Foundation
import VLMCore

public enum OutputFormat: String, CaseIterable, Sendable {
    case npy, jsonl, tsv

    /// The format a path's extension implies, if any.
    public static func inferred(from path: String) -> OutputFormat? {
        switch (path as NSString).pathExtension.lowercased() {
        case "npy": return .npy
        case "jsonl", "ndjson": return .jsonl
        case "tsv", "txt": return .tsv
        default: return nil
        }
    }
}

public enum FeatureWriter {
    /// rows is (N,D). ids, when given, has N entries and goes into each jsonl/tsv row.
    public static func encode(_ rows: Tensor, ids: [String]?, format: OutputFormat) -> Data {
        precondition(rows.rank == 2, "features must be (N,D), got \(rows.shape)")
        precondition(ids == nil || ids!.count == rows.shape[0])
        let n = rows.shape[0], d = rows.shape[1]
        switch format {
        case .npy:
            return NPY.encode(rows)
        case .jsonl:
            var s = ""
            s.reserveCapacity(n * d * 12)
            for i in 0..<n {
                s += ids.map { "{\"id\":\(jsonString($0[i])),\"vector\":[" } ?? "{\"index\":\(i),\"vector\":["
                for j in 0..<d {
                    if j > 0 { s += "," }
                    s += jsonNumber(rows.data[i * d + j])
                }
                s += "]}\n"
            }
            return Data(s.utf8)
        case .tsv:
            var s = ""
            s.reserveCapacity(n * d * 12)
            for i in 0..<n {
                if let ids { s += ids[i].replacingOccurrences(of: "\t", with: " ") + "\t" }
                for j in 0..<d {
                    if j > 0 { s += "\t" }
                    s += "\(rows.data[i * d + j])"
                }
                s += "\n"
            }
            return Data(s.utf8)
        }
    }

    /// Writes `data` to `path`, or to stdout when path is "-".
    public static func write(_ data: Data, to path: String) throws {
        if path == "-" {
            FileHandle.standardOutput.write(data)
            return
        }
        try writeAtomically(data, to: path)
    }
}

/// Writes to "<dir>/.<name>.tmp-<pid>" then renames onto `path`.
public func writeAtomically(_ data: Data, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    let tmp = (dir as NSString).appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
    guard FileManager.default.createFile(atPath: tmp, contents: data) else {
        throw IOError.cannotWrite(path: path, reason: "cannot create \(tmp) (does the folder exist and is it writable?)")
    }
    if rename(tmp, path) != 0 {
        let reason = errnoString()
        unlink(tmp)
        throw IOError.cannotWrite(path: path, reason: reason)
    }
}

/// A JSON number; non-finite values become null, as JSON has no NaN or infinity.
@inline(__always)
public func jsonNumber(_ v: Float) -> String {
    v.isFinite ? "\(v)" : "null"
}

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
