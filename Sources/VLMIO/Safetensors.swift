// Safetensors reader: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}, then the data section.
// Format: https://github.com/huggingface/safetensors (README, "Format"). Everything the header
// claims is checked against the file before any tensor is read; tensors are read from a memory
// mapping and converted to Float32 on request.

import Foundation
import VLMCore

public enum DType: String, CaseIterable, Sendable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL
    case F8_E4M3, F8_E5M2

    public var byteSize: Int {
        switch self {
        case .F64, .I64, .U64: return 8
        case .F32, .I32, .U32: return 4
        case .F16, .BF16, .I16, .U16: return 2
        case .I8, .U8, .BOOL, .F8_E4M3, .F8_E5M2: return 1
        }
    }

    /// Dtypes that convert to Float32 losslessly enough to run a model.
    public var isFloat: Bool { self == .F32 || self == .F16 || self == .BF16 || self == .F64 }
}

public struct TensorInfo: Equatable, Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range inside the data section.
    public let begin: Int, end: Int
    public var count: Int { shape.reduce(1, *) }
}

public enum SafetensorsError: VLMError, Equatable {
    case truncated(path: String, size: Int)
    case headerPastEnd(path: String, headerLength: UInt64, fileSize: Int)
    case headerNotJSON(path: String, reason: String)
    case badEntry(path: String, tensor: String, reason: String)
    case unknownDType(path: String, tensor: String, dtype: String)
    case byteRangeMismatch(path: String, tensor: String, dtype: DType, shape: [Int], expected: Int, got: Int)
    case outOfBounds(path: String, tensor: String, begin: Int, end: Int, dataSize: Int)
    case overlap(path: String, tensor: String, other: String)
    case notFloat(path: String, tensor: String, dtype: DType)
    case noSuchTensor(path: String, tensor: String)

    public var description: String {
        switch self {
        case let .truncated(p, s):
            return "\(p): not a safetensors file: \(s) bytes is too short for the 8-byte header length"
        case let .headerPastEnd(p, h, s):
            return "\(p): safetensors header length \(h) runs past the end of the file (\(s) bytes); the file is truncated or not safetensors"
        case let .headerNotJSON(p, r):
            return "\(p): safetensors header is not a JSON object of tensors: \(r)"
        case let .badEntry(p, t, r):
            return "\(p): tensor '\(t)': \(r)"
        case let .unknownDType(p, t, d):
            return "\(p): tensor '\(t)': unknown dtype '\(d)' (known: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))"
        case let .byteRangeMismatch(p, t, d, shape, e, g):
            return "\(p): tensor '\(t)': shape \(shape) of \(d.rawValue) needs \(e) bytes but data_offsets span \(g)"
        case let .outOfBounds(p, t, b, e, s):
            return "\(p): tensor '\(t)': data_offsets [\(b), \(e)) lie outside the \(s)-byte data section; the file is truncated"
        case let .overlap(p, t, o):
            return "\(p): tensor '\(t)' overlaps tensor '\(o)' in the data section"
        case let .notFloat(p, t, d):
            return "\(p): tensor '\(t)' has dtype \(d.rawValue); only F32, F16, BF16 and F64 load as Float32"
        case let .noSuchTensor(p, t):
            return "\(p): no tensor named '\(t)'"
        }
    }
}

public final class SafetensorsFile {
    public let path: String
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    private let file: MappedFile
    private let dataStart: Int

    /// Tensor names in the order their data appears in the file.
    public var names: [String] { tensors.values.sorted { ($0.begin, $0.name) < ($1.begin, $1.name) }.map(\.name) }

    /// The header limit of the reference reader (safetensors' MAX_HEADER_SIZE).
    public static let maxHeaderBytes: UInt64 = 100_000_000
    /// The most tensors one file may hold; the largest published checkpoints hold ~100,000.
    public static let maxTensors = ShardedCheckpoint.maxTensors

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        let size = file.size
        guard size >= 8 else { throw SafetensorsError.truncated(path: path, size: size) }
        let headerLength: UInt64 = file.withBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian }
        guard headerLength <= UInt64(size - 8) else {
            throw SafetensorsError.headerPastEnd(path: path, headerLength: headerLength, fileSize: size)
        }
        guard headerLength <= SafetensorsFile.maxHeaderBytes else {
            throw SafetensorsError.headerNotJSON(path: path, reason: "its \(headerLength)-byte header is over the \(SafetensorsFile.maxHeaderBytes) bytes the format allows (safetensors' own reader refuses it too)")
        }
        // About 6 + rank JSON values a tensor (its object, dtype, shape, offsets): at most 10 on
        // average, counted before
        // anything is decoded.
        let withinLimit = file.withBytes { b in
            StrictJSON.hasAtMost(10 * SafetensorsFile.maxTensors, valuesIn: UnsafeRawBufferPointer(rebasing: b[8..<(8 + Int(headerLength))]))
        }
        guard withinLimit else {
            throw SafetensorsError.headerNotJSON(path: path, reason: "its header holds more entries than the \(SafetensorsFile.maxTensors) tensors a checkpoint may hold (or a __metadata__ as large)")
        }
        let headerData = file.withBytes { Data($0[8..<(8 + Int(headerLength))]) }
        dataStart = 8 + Int(headerLength)
        let dataSize = size - dataStart

        guard let root = JSONValue.parse(headerData) else {
            throw SafetensorsError.headerNotJSON(path: path, reason: "the \(headerLength)-byte header does not parse as JSON")
        }
        guard let entries = root.objectValue else {
            throw SafetensorsError.headerNotJSON(path: path, reason: "the top level is not an object")
        }
        guard entries.count <= SafetensorsFile.maxTensors + 1 else {
            throw SafetensorsError.headerNotJSON(path: path, reason: "its header lists \(entries.count) entries, over the \(SafetensorsFile.maxTensors) tensors a checkpoint may hold")
        }
        var infos: [String: TensorInfo] = [:]
        var meta: [String: String] = [:]
        for (name, value) in entries {
            if name == "__metadata__" {
                guard let m = value.objectValue else {
                    throw SafetensorsError.headerNotJSON(path: path, reason: "__metadata__ is not an object")
                }
                for (k, v) in m { meta[k] = v.stringValue ?? v.jsonText }
                continue
            }
            infos[name] = try SafetensorsFile.parseEntry(path: path, name: name, value: value, dataSize: dataSize)
        }
        // Ranges must not overlap (zero-length tensors take no room and cannot overlap).
        let sorted = infos.values.filter { $0.end > $0.begin }.sorted { ($0.begin, $0.name) < ($1.begin, $1.name) }
        for (prev, next) in zip(sorted, sorted.dropFirst()) where next.begin < prev.end {
            throw SafetensorsError.overlap(path: path, tensor: next.name, other: prev.name)
        }
        tensors = infos
        metadata = meta
    }

    private static func parseEntry(path: String, name: String, value: JSONValue, dataSize: Int) throws -> TensorInfo {
        guard let obj = value.objectValue else {
            throw SafetensorsError.badEntry(path: path, tensor: name, reason: "entry is not an object")
        }
        guard let dtypeName = obj["dtype"]?.stringValue else {
            throw SafetensorsError.badEntry(path: path, tensor: name, reason: "missing or non-string 'dtype'")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw SafetensorsError.unknownDType(path: path, tensor: name, dtype: dtypeName)
        }
        guard let shape = intArray(obj["shape"]), shape.allSatisfy({ $0 >= 0 }) else {
            throw SafetensorsError.badEntry(path: path, tensor: name, reason: "'shape' is not a list of non-negative integers")
        }
        guard let offs = intArray(obj["data_offsets"]), offs.count == 2, offs[0] >= 0, offs[1] >= offs[0] else {
            throw SafetensorsError.badEntry(path: path, tensor: name, reason: "'data_offsets' is not [begin, end] with 0 <= begin <= end")
        }
        var count = 1
        for d in shape {
            let (p, o) = count.multipliedReportingOverflow(by: d)
            if o { throw SafetensorsError.badEntry(path: path, tensor: name, reason: "shape \(shape) overflows") }
            count = p
        }
        let (expected, o) = count.multipliedReportingOverflow(by: dtype.byteSize)
        if o || expected != offs[1] - offs[0] {
            throw SafetensorsError.byteRangeMismatch(path: path, tensor: name, dtype: dtype, shape: shape,
                                                     expected: o ? Int.max : expected, got: offs[1] - offs[0])
        }
        if offs[1] > dataSize {
            throw SafetensorsError.outOfBounds(path: path, tensor: name, begin: offs[0], end: offs[1], dataSize: dataSize)
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, begin: offs[0], end: offs[1])
    }

    /// A JSON array of integers (exactly representable, below 2^53).
    private static func intArray(_ v: JSONValue?) -> [Int]? {
        guard case .array(let a)? = v else { return nil }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for e in a {
            switch e {
            case .integer(let i) where abs(i) < 1 << 53: out.append(Int(i))
            case .number(let d) where d == d.rounded() && abs(d) < 9.0e15: out.append(Int(d))
            default: return nil
            }
        }
        return out
    }

    /// The tensor `name` converted to Float32.
    public func floatTensor(_ name: String) throws -> Tensor {
        guard let info = tensors[name] else { throw SafetensorsError.noSuchTensor(path: path, tensor: name) }
        return try floatTensor(info)
    }

    public func floatTensor(_ info: TensorInfo) throws -> Tensor {
        guard info.dtype.isFloat else { throw SafetensorsError.notFloat(path: path, tensor: info.name, dtype: info.dtype) }
        // Every element is written by the conversion: no zero-fill pass first (a tenth of the
        // time `vlm embed-text "…"` takes from start to vector, measured: BENCHMARKS.md §3).
        let out = [Float](unsafeUninitializedCapacity: info.count) { buffer, count in
            file.withBytes { raw in info.dtype.convertToFloat(raw.baseAddress! + dataStart + info.begin, into: buffer) }
            count = info.count
        }
        return Tensor(shape: info.shape, data: out)
    }

    /// The tensor's bytes as stored (little-endian `dtype`).
    public func storedBytes(_ name: String) throws -> Data {
        guard let info = tensors[name] else { throw SafetensorsError.noSuchTensor(path: path, tensor: name) }
        return file.withBytes { Data($0[(dataStart + info.begin)..<(dataStart + info.end)]) }
    }
}

extension DType {
    /// Converts `dst.count` little-endian values of this float dtype at `src` to Float32: exact
    /// for F16 and BF16, rounded to nearest for F64. The one conversion every checkpoint reader
    /// uses, so the same stored bits give the same floats whatever the file format.
    public func convertToFloat(_ src: UnsafeRawPointer, into dst: UnsafeMutableBufferPointer<Float>) {
        let n = dst.count
        guard n > 0 else { return }
        switch self {
        case .F32:
            memcpy(dst.baseAddress!, src, n * 4)
            for i in 0..<n { dst[i] = Float(bitPattern: UInt32(littleEndian: dst[i].bitPattern)) }
        case .F16:
            for i in 0..<n {
                let bits = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                dst[i] = Float(Float16(bitPattern: bits))
            }
        case .BF16:
            for i in 0..<n {
                let bits = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                dst[i] = Float(bitPattern: UInt32(bits) << 16)
            }
        case .F64:
            for i in 0..<n {
                let bits = UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                dst[i] = Float(Double(bitPattern: bits))
            }
        default:
            preconditionFailure("convertToFloat on \(self), not a float dtype")
        }
    }
}
