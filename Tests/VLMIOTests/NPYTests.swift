// .npy reading and writing: round trips, files numpy wrote (the committed fixtures), and the
// errors for other dtypes, Fortran order, truncation and non-npy bytes.

import Foundation
import XCTest
import VLMCore
import VLMIO

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

final class NPYTests: XCTestCase {
    func header(_ dict: String, version: UInt8 = 1) -> Data {
        var d = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0])
        let text = Array((dict + "\n").utf8)
        if version == 1 {
            d.append(contentsOf: [UInt8(text.count & 0xFF), UInt8(text.count >> 8)])
        } else {
            d.append(contentsOf: [UInt8(text.count & 0xFF), UInt8(text.count >> 8), 0, 0])
        }
        d.append(contentsOf: text)
        return d
    }

    func parse(_ d: Data) throws -> Tensor { try d.withUnsafeBytes { try NPY.parse($0, path: "x.npy") } }

    func testRoundTripShapes() throws {
        for shape in [[3], [2, 3], [1, 3, 2, 2], [0, 4], []] {
            let t = Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { Float($0) * 0.5 - 1 })
            let bytes = NPY.encode(t)
            XCTAssertEqual((bytes.count - t.count * 4) % 64, 0, "header is padded to 64 bytes")
            XCTAssertEqual(try parse(bytes), t)
        }
    }

    func testReadsNumpyWrittenFixture() throws {
        let t = try NPY.read(path: fixtures.appendingPathComponent("resnet/bottleneck_f32/input.npy").path)
        XCTAssertEqual(t.shape, [3, 3, 61, 47])
        XCTAssertTrue(t.data.allSatisfy(\.isFinite))
    }

    func testVersion2Header() throws {
        var d = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", version: 2)
        d.append(contentsOf: floatBytes([1, 2]))
        XCTAssertEqual(try parse(d).data, [1, 2])
    }

    func testWrongDTypeFortranTruncatedAndGarbage() {
        var f8 = header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }")
        f8.append(contentsOf: [UInt8](repeating: 0, count: 8))
        XCTAssertThrowsError(try parse(f8)) { XCTAssertEqual($0 as? NPYError, .unsupportedDType(path: "x.npy", descr: "<f8")) }

        var fortran = header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }")
        fortran.append(contentsOf: [UInt8](repeating: 0, count: 16))
        XCTAssertThrowsError(try parse(fortran)) { XCTAssertEqual($0 as? NPYError, .fortranOrder(path: "x.npy")) }

        var short = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }")
        short.append(contentsOf: [UInt8](repeating: 0, count: 10))
        XCTAssertThrowsError(try parse(short)) { XCTAssertEqual($0 as? NPYError, .truncated(path: "x.npy", expected: 24, got: 10)) }

        XCTAssertThrowsError(try parse(Data("hello world, not numpy".utf8))) {
            guard case .notNPY? = $0 as? NPYError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try parse(Data())) { guard case .notNPY? = $0 as? NPYError else { return XCTFail("\($0)") } }
    }
}

final class OutputTests: XCTestCase {
    func testFormats() throws {
        let t = Tensor(shape: [2, 2], data: [1, -0.5, .nan, 3e-8])
        XCTAssertEqual(String(decoding: FeatureWriter.encode(t, ids: nil, format: .jsonl), as: UTF8.self),
                       "{\"index\":0,\"vector\":[1.0,-0.5]}\n{\"index\":1,\"vector\":[null,3e-08]}\n")
        XCTAssertEqual(String(decoding: FeatureWriter.encode(t, ids: ["a\tb", "c\"d"], format: .tsv), as: UTF8.self),
                       "a b\t1.0\t-0.5\nc\"d\tnan\t3e-08\n")
        let jl = String(decoding: FeatureWriter.encode(t, ids: ["a\tb", "c\"d"], format: .jsonl), as: UTF8.self)
        XCTAssertTrue(jl.hasPrefix("{\"id\":\"a\\tb\",\"vector\""))
        let back = try FeatureWriter.encode(t, ids: nil, format: .npy).withUnsafeBytes { try NPY.parse($0, path: "-") }
        XCTAssertEqual(back.shape, [2, 2])
        XCTAssertEqual(OutputFormat.inferred(from: "a/b.NPY"), .npy)
        XCTAssertEqual(OutputFormat.inferred(from: "x.jsonl"), .jsonl)
        XCTAssertNil(OutputFormat.inferred(from: "-"))
    }

    func testAtomicWriteReplacesAndLeavesNoTemporary() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-out-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = dir.appendingPathComponent("f.tsv").path
        try writeAtomically(Data("old".utf8), to: p)
        try writeAtomically(Data("new".utf8), to: p)
        XCTAssertEqual(try String(contentsOfFile: p, encoding: .utf8), "new")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["f.tsv"])
        XCTAssertThrowsError(try writeAtomically(Data(), to: dir.appendingPathComponent("no/such/dir.tsv").path))
    }
}

final class SHA256Tests: XCTestCase {
    func testKnownVectors() throws {
        func hex(_ s: String) -> String { var h = SHA256(); h.update(Array(s.utf8)); return h.finalizeHex() }
        XCTAssertEqual(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Fed in uneven pieces: a million 'a'.
        var h = SHA256()
        var left = 1_000_000
        var step = 1
        while left > 0 { let n = min(step, left); h.update([UInt8](repeating: 0x61, count: n)); left -= n; step = step * 3 % 9973 + 1 }
        XCTAssertEqual(h.finalizeHex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        let file = fixtures.appendingPathComponent("tokenizer/vocab.txt").path
        // As `sha256sum` reports it.
        XCTAssertEqual(try SHA256.hexDigest(ofFile: file), "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3")
    }
}
