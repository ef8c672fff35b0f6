// Writing safetensors files (https://github.com/huggingface/safetensors, "Format"): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
// {string: string}} padded with spaces to a multiple of 8 bytes, then the tensors' bytes.

import Foundation
import VLMCore

public enum SafetensorsWriter {
    public struct Entry {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        /// Little-endian bytes of `dtype`, shape.reduce(1, *) of them.
        public var data: Data

        public init(name: String, dtype: DType, shape: [Int], data: Data) {
            precondition(data.count == shape.reduce(1, *) * dtype.byteSize, "\(name): \(data.count) bytes for \(shape) \(dtype)")
            (self.name, self.dtype, self.shape, self.data) = (name, dtype, shape, data)
        }

        /// float32 values.
        public init(name: String, shape: [Int], floats: [Float]) {
            self.init(name: name, dtype: .F32, shape: shape, data: floats.withUnsafeBytes { Data($0) })
        }
    }

    /// The file's bytes: tensors in the order given, each right after the one before.
    public static func encode(_ entries: [Entry], metadata: [String: String] = [:]) -> Data {
        var out = header(entries.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata)
        for e in entries { out.append(e.data) }
        return out
    }

    /// The length and JSON header for tensors written in this order right after it (each
    /// `shape.reduce(1, *) * dtype.byteSize` bytes), for writers that stream the data.
    public static func header(_ tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String] = [:]) -> Data {
        var header: [String: JSONValue] = [:]
        if !metadata.isEmpty { header["__metadata__"] = .object(metadata.mapValues { .string($0) }) }
        var offset = 0
        for t in tensors {
            let bytes = t.shape.reduce(1, *) * t.dtype.byteSize
            header[t.name] = .object(["dtype": .string(t.dtype.rawValue), "shape": .array(t.shape.map { .integer(Int64($0)) }),
                                      "data_offsets": .array([.integer(Int64(offset)), .integer(Int64(offset + bytes))])])
            offset += bytes
        }
        var json = Array(JSONValue.object(header).jsonText.utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        return out
    }
}

extension SafetensorsWriter {
    /// `source` as a safetensors file, piece by piece to `write`: the header, then each tensor's
    /// bytes — as stored, or its floats converted to `dtype` (F32, F16, BF16) when one is given.
    public static func convert(_ source: any Checkpoint, to dtype: DType?, write: (Data) throws -> Void) throws {
        let names = source.tensorNames
        func outType(_ d: DType) -> DType { (dtype != nil && d.isFloat) ? dtype! : d }
        try write(header(names.map { ($0, outType(source.dtype(of: $0)!), source.shape(of: $0)!) }, metadata: ["format": "pt"]))
        for name in names {
            let from = source.dtype(of: name)!
            let to = outType(from)
            try write(to == from ? try source.storedBytes(name) : converted(try source.floatTensor(name).data, to: to))
        }
    }

    /// Float32 values as little-endian `to` (F32, F16 or BF16), rounded to nearest even.
    public static func converted(_ values: [Float], to: DType) -> Data {
        switch to {
        case .F32:
            return values.withUnsafeBytes { Data($0) }
        case .F16:
            let h = values.map { Float16($0).bitPattern.littleEndian }
            return h.withUnsafeBytes { Data($0) }
        case .BF16:
            let h = values.map { bfloat16Bits($0).littleEndian }
            return h.withUnsafeBytes { Data($0) }
        default:
            preconditionFailure("convert to \(to)")
        }
    }
}

/// bfloat16 by round-to-nearest-even of the float32 bits, NaN as 0x7FC0 — what PyTorch's
/// c10::BFloat16(float) does (c10/util/BFloat16.h, round_to_nearest_even).
public func bfloat16Bits(_ f: Float) -> UInt16 {
    if f.isNaN { return 0x7FC0 }
    let bits = f.bitPattern
    return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
}
