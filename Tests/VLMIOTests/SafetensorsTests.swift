// The safetensors reader on files built here byte by byte: every dtype that loads, and every
// way a header can lie about the file (each a distinct error naming the file and the tensor).

import Foundation
import XCTest
import VLMCore
import VLMIO

/// Builds a safetensors file from a header object and a data section.
func safetensorsBytes(header: String, data: [UInt8], headerLength: UInt64? = nil) -> Data {
    var out = Data()
    let h = Array(header.utf8)
    var len = (headerLength ?? UInt64(h.count)).littleEndian
    withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
    out.append(contentsOf: h)
    out.append(contentsOf: data)
    return out
}

func floatBytes(_ v: [Float]) -> [UInt8] { v.withUnsafeBytes { Array($0) } }

final class SafetensorsTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func write(_ name: String, _ data: Data) -> String {
        let p = dir.appendingPathComponent(name).path
        FileManager.default.createFile(atPath: p, contents: data)
        return p
    }

    func expectError(_ path: String, _ check: (SafetensorsError) -> Bool, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try SafetensorsFile(path: path)
            XCTFail("expected an error", file: file, line: line)
        } catch let e as SafetensorsError {
            XCTAssertTrue(check(e), "unexpected error: \(e)", file: file, line: line)
            XCTAssertTrue(e.description.hasPrefix(path), "message must name the file: \(e)", file: file, line: line)
            XCTAssertFalse(e.description.contains("\n"), file: file, line: line)
        } catch {
            XCTFail("unexpected error type \(error)", file: file, line: line)
        }
    }

    func testReadsEveryFloatDType() throws {
        let f32: [Float] = [1.5, -2, 0.25]
        let f16: [Float16] = [1.5, -2, 65504]
        let bf16: [UInt16] = [0x3FC0, 0xC000, 0x4049]  // 1.5, -2, 3.140625
        let f64: [Double] = [0.1, -3]
        var data = floatBytes(f32)
        let o16 = data.count; data += f16.withUnsafeBytes { Array($0) }
        let obf = data.count; data += bf16.withUnsafeBytes { Array($0) }
        let o64 = data.count; data += f64.withUnsafeBytes { Array($0) }
        let oi = data.count; data += [Int64(7)].withUnsafeBytes { Array($0) }
        let header = """
        {"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},
        "h":{"dtype":"F16","shape":[1,3],"data_offsets":[\(o16),\(obf)]},
        "b":{"dtype":"BF16","shape":[3],"data_offsets":[\(obf),\(o64)]},
        "d":{"dtype":"F64","shape":[2],"data_offsets":[\(o64),\(oi)]},
        "n":{"dtype":"I64","shape":[],"data_offsets":[\(oi),\(oi + 8)]}}
        """
        let path = write("ok.safetensors", safetensorsBytes(header: header, data: data))
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.metadata["format"], "pt")
        XCTAssertEqual(f.names, ["a", "h", "b", "d", "n"])
        XCTAssertEqual(try f.floatTensor("a").data, f32)
        XCTAssertEqual(try f.floatTensor("h").shape, [1, 3])
        XCTAssertEqual(try f.floatTensor("h").data, [1.5, -2, 65504])
        XCTAssertEqual(try f.floatTensor("b").data, [1.5, -2, 3.140625])
        XCTAssertEqual(try f.floatTensor("d").data, [Float(0.1), -3])
        XCTAssertThrowsError(try f.floatTensor("n")) { XCTAssertEqual($0 as? SafetensorsError, .notFloat(path: path, tensor: "n", dtype: .I64)) }
        XCTAssertThrowsError(try f.floatTensor("zz")) { XCTAssertEqual($0 as? SafetensorsError, .noSuchTensor(path: path, tensor: "zz")) }
    }

    func testUnalignedDataSection() throws {
        // A 13-byte header puts the data at an odd offset.
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let padded = header + String(repeating: " ", count: 3)
        let path = write("odd.safetensors", safetensorsBytes(header: padded, data: floatBytes([3, 4])))
        XCTAssertEqual(try SafetensorsFile(path: path).floatTensor("a").data, [3, 4])
    }

    func testTruncatedBeforeHeaderLength() {
        let path = write("short.safetensors", Data([1, 2, 3]))
        expectError(path) { if case .truncated(_, 3) = $0 { return true }; return false }
        let empty = write("empty.safetensors", Data())
        expectError(empty) { if case .truncated(_, 0) = $0 { return true }; return false }
    }

    func testHeaderLengthPastEndOfFile() {
        let path = write("past.safetensors", safetensorsBytes(header: "{}", data: [], headerLength: 1 << 40))
        expectError(path) { if case .headerPastEnd = $0 { return true }; return false }
    }

    func testHeaderNotJSON() {
        let path = write("notjson.safetensors", safetensorsBytes(header: "{not json at all", data: []))
        expectError(path) { if case .headerNotJSON = $0 { return true }; return false }
        let arr = write("array.safetensors", safetensorsBytes(header: "[1,2]", data: []))
        expectError(arr) { if case .headerNotJSON = $0 { return true }; return false }
    }

    func testUnknownDType() {
        let path = write("dtype.safetensors", safetensorsBytes(header: #"{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}}"#, data: [0, 0]))
        expectError(path) { $0 == .unknownDType(path: path, tensor: "w", dtype: "Q4") }
    }

    func testShapeDisagreesWithByteRange() {
        let path = write("shape.safetensors", safetensorsBytes(header: #"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#,
                                                              data: [UInt8](repeating: 0, count: 20)))
        expectError(path) { $0 == .byteRangeMismatch(path: path, tensor: "w", dtype: .F32, shape: [2, 3], expected: 24, got: 20) }
    }

    func testDataPastEndIsTruncation() {
        // The header promises 24 bytes, the file holds 10: a cut-off download.
        let path = write("cut.safetensors", safetensorsBytes(header: #"{"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}}"#,
                                                            data: [UInt8](repeating: 0, count: 10)))
        expectError(path) { if case .outOfBounds(_, "w", 0, 24, 10) = $0 { return true }; return false }
    }

    func testOverlappingRanges() {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        let path = write("overlap.safetensors", safetensorsBytes(header: h, data: [UInt8](repeating: 0, count: 12)))
        expectError(path) { $0 == .overlap(path: path, tensor: "b", other: "a") }
    }

    func testMalformedEntries() {
        for (i, h) in [#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#,
                       #"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                       #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                       #"{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#,
                       #"{"a":3}"#].enumerated() {
            let path = write("bad\(i).safetensors", safetensorsBytes(header: h, data: [0, 0, 0, 0]))
            expectError(path) { if case .badEntry(_, "a", _) = $0 { return true }; return false }
        }
    }

    func testMissingFileAndDirectory() {
        XCTAssertThrowsError(try SafetensorsFile(path: dir.appendingPathComponent("nope").path)) {
            guard case .cannotOpen? = $0 as? IOError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try SafetensorsFile(path: dir.path)) {
            XCTAssertEqual($0 as? IOError, .cannotOpen(path: self.dir.path, reason: "is a directory"))
        }
    }
}
