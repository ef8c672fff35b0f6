// NumPy .npy files (format versions 1–3): little-endian float32, C order, read and written.
// Format: numpy/lib/format.py — magic "\x93NUMPY", version, header length, a Python dict literal
// {'descr': '<f4', 'fortran_order': False, 'shape': (…), } padded with spaces to a 64-byte boundary.

import Foundation
import VLMCore

public enum NPYError: VLMError, Equatable {
    case notNPY(path: String, reason: String)
    case unsupportedDType(path: String, descr: String)
    case fortranOrder(path: String)
    case truncated(path: String, expected: Int, got: Int)

    public var description: String {
        switch self {
        case let .notNPY(p, r): return "\(p): not a .npy file: \(r)"
        case let .unsupportedDType(p, d):
            return "\(p): .npy dtype '\(d)' is not float32 ('<f4'); convert it with x.astype(numpy.float32)"
        case let .fortranOrder(p): return "\(p): .npy array is in Fortran order; save it with numpy.ascontiguousarray(x)"
        case let .truncated(p, e, g): return "\(p): .npy data is \(g) bytes, the header's shape needs \(e); the file is truncated"
        }
    }
}

public enum NPY {
    /// Reads a float32 C-order array.
    /// A command-line argument: a file (mapped), or "-" (stdin), a FIFO or another stream, read
    /// whole.
    public static func read(argument path: String) throws -> Tensor {
        guard path == "-" || (FileStatus.of(path).map { $0.kind != .regular } ?? false) else { return try read(path: path) }
        let file = try InputFile(path, what: "the array")
        let data = try file.readAll()
        return try data.withUnsafeBytes { try parse($0, path: file.name) }
    }

    public static func read(path: String) throws -> Tensor {
        let file = try MappedFile(path: path)
        return try file.withBytes { try parse($0, path: path) }
    }

    public static func parse(_ raw: UnsafeRawBufferPointer, path: String) throws -> Tensor {
        let layout = try self.layout(raw, path: path, fileSize: raw.count)
        let count = layout.count
        var data = [Float](repeating: 0, count: count)
        data.withUnsafeMutableBytes { dst in
            if count > 0 { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[layout.dataOffset..<(layout.dataOffset + count * 4)])) }
        }
        return Tensor(shape: layout.shape, data: data)
    }

    /// Where a float32 C-order array's values are: its shape and the offset of its data.
    public struct Layout: Equatable, Sendable {
        public let shape: [Int]
        public let dataOffset: Int
        public var count: Int { shape.reduce(1, *) }
    }

    /// The layout from a file's first bytes (`raw`: at least the header), checked against its
    /// size: a float32, C-order array whose data the file holds.
    public static func layout(_ raw: UnsafeRawBufferPointer, path: String, fileSize: Int) throws -> Layout {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard raw.count >= 10, Array(raw[0..<6]) == magic else {
            throw NPYError.notNPY(path: path, reason: "missing the \\x93NUMPY magic")
        }
        let major = raw[6]
        let headerLen: Int, headerStart: Int
        switch major {
        case 1:
            headerLen = Int(raw[8]) | Int(raw[9]) << 8
            headerStart = 10
        case 2, 3:
            guard raw.count >= 12 else { throw NPYError.notNPY(path: path, reason: "header is cut short") }
            headerLen = Int(raw[8]) | Int(raw[9]) << 8 | Int(raw[10]) << 16 | Int(raw[11]) << 24
            headerStart = 12
        default:
            throw NPYError.notNPY(path: path, reason: "unknown format version \(major)")
        }
        guard headerStart + headerLen <= raw.count else {
            throw NPYError.notNPY(path: path, reason: "header length \(headerLen) runs past the end of the file")
        }
        guard let header = String(bytes: raw[headerStart..<(headerStart + headerLen)], encoding: .utf8) else {
            throw NPYError.notNPY(path: path, reason: "header is not text")
        }
        let (descr, fortran, shape) = try parseHeader(header, path: path)
        guard descr == "<f4" || descr == "=f4" || descr == "f4" else { throw NPYError.unsupportedDType(path: path, descr: descr) }
        if fortran { throw NPYError.fortranOrder(path: path) }
        var count = 1
        for d in shape {
            let (p, o) = count.multipliedReportingOverflow(by: d)
            guard !o, p <= Int.max / 4 else { throw NPYError.notNPY(path: path, reason: "shape \(shape) holds more values than any file can") }
            count = p
        }
        let dataStart = headerStart + headerLen
        let available = fileSize - dataStart
        guard available >= count * 4 else { throw NPYError.truncated(path: path, expected: count * 4, got: available) }
        return Layout(shape: shape, dataOffset: dataStart)
    }

    /// Pulls descr, fortran_order and shape out of the dict literal.
    static func parseHeader(_ h: String, path: String) throws -> (String, Bool, [Int]) {
        func value(after key: String) -> Substring? {
            guard let r = h.range(of: "'\(key)'") ?? h.range(of: "\"\(key)\"") else { return nil }
            var rest = h[r.upperBound...].drop { $0 == " " }
            guard rest.first == ":" else { return nil }
            rest = rest.dropFirst().drop { $0 == " " }
            return rest
        }
        guard let d = value(after: "descr"), let q = d.first, q == "'" || q == "\"",
              let end = d.dropFirst().firstIndex(of: q) else {
            throw NPYError.notNPY(path: path, reason: "header has no 'descr'")
        }
        let descr = String(d[d.index(after: d.startIndex)..<end])
        guard let f = value(after: "fortran_order") else { throw NPYError.notNPY(path: path, reason: "header has no 'fortran_order'") }
        let fortran = f.hasPrefix("True")
        guard let s = value(after: "shape"), s.first == "(", let close = s.firstIndex(of: ")") else {
            throw NPYError.notNPY(path: path, reason: "header has no 'shape' tuple")
        }
        var shape: [Int] = []
        for part in s[s.index(after: s.startIndex)..<close].split(separator: ",") {
            let t = part.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "L", with: "")
            if t.isEmpty { continue }
            guard let v = Int(t), v >= 0 else { throw NPYError.notNPY(path: path, reason: "bad shape entry '\(t)'") }
            shape.append(v)
        }
        return (descr, fortran, shape)
    }

    /// The bytes of a version-1.0 .npy holding `t` as little-endian float32.
    public static func encode(_ t: Tensor) -> Data {
        var out = header(shape: t.shape)
        t.data.withUnsafeBytes { out.append(contentsOf: $0) }
        return out
    }

    /// The header of a version-1.0 .npy of little-endian float32 with this shape, padded to a
    /// multiple of 64 bytes (128 bytes for any 2-D shape a file can hold), so a job can reserve
    /// it before it knows its row count.
    public static func header(shape: [Int]) -> Data {
        let dims = shape.map(String.init)
        let shapeText = dims.count == 1 ? "(\(dims[0]),)" : "(\(dims.joined(separator: ", ")))"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeText), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        let len = UInt16(header.utf8.count)
        out.append(contentsOf: [UInt8(len & 0xFF), UInt8(len >> 8)])
        out.append(contentsOf: Array(header.utf8))
        return out
    }
}
