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
    func render(_ rows: [Float], dim: Int, ids: [[UInt8]], _ format: RowFormat) -> String {
        String(decoding: rows.withUnsafeBufferPointer { RowText.render($0, dim: dim, ids: ids, format: format) }, as: UTF8.self)
    }

    func testRowFormatsCarryEscapedIds() throws {
        let rows: [Float] = [1, -0.5, .nan, 3e-8, 2, 0]
        let ids: [[UInt8]] = [Array("a\tb\\c".utf8), Array("line\nbreak \"q\"".utf8), [0x66, 0xFF, 0x2E, 0x6A, 0x70, 0x67]]
        XCTAssertEqual(render(rows, dim: 2, ids: ids, .tsv),
                       "a\\tb\\\\c\t1.0\t-0.5\nline\\nbreak \"q\"\tnan\t3e-08\nf\\xFF.jpg\t2.0\t0.0\n")
        let jl = render(rows, dim: 2, ids: ids, .jsonl).split(separator: "\n").map(String.init)
        XCTAssertEqual(jl[0], #"{"id":"a\tb\\c","vector":[1.0,-0.5]}"#)
        XCTAssertEqual(jl[1], #"{"id":"line\nbreak \"q\"","vector":[null,3e-08]}"#)
        XCTAssertEqual(jl[2], #"{"id":"f\\xFF.jpg","id_escaped":true,"vector":[2.0,0.0]}"#)
        // Only the non-UTF-8 name is escaped in JSON; its escaped form round-trips to the bytes.
        let obj = try JSONSerialization.jsonObject(with: Data(jl[2].utf8)) as! [String: Any]
        XCTAssertEqual(RawPath.unescape(obj["id"] as! String), ids[2])
        XCTAssertEqual(RowFormat.inferred(from: "a/b.NPY"), .npy)
        XCTAssertEqual(RowFormat.inferred(from: "x.jsonl"), .jsonl)
        XCTAssertEqual(RowFormat.inferred(from: "x.f32"), .f32)
        XCTAssertNil(RowFormat.inferred(from: "-"))
        // The .npy header a job reserves is 128 bytes for any 2-D shape a file can hold.
        for shape in [[0, 1], [3, 2048], [Int(Int32.max), 2432], [Int.max / 8192, 4096]] {
            XCTAssertEqual(NPY.header(shape: shape).count, 128, "\(shape)")
        }
    }

    /// Every byte string escapes to one line and back.
    func testEscapeRoundTripsAnyBytes() {
        var rng = SeededRandom(seed: 5)
        for n in 0..<400 {
            let bytes = (0..<(n % 17)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let e = RawPath.escape(bytes)
            XCTAssertFalse(e.contains("\n") || e.contains("\r") || e.contains("\t"), e)
            XCTAssertEqual(RawPath.unescape(e), bytes, e)
        }
        XCTAssertEqual(RawPath.escape(Array("naïve 東京 😀".utf8)), "naïve 東京 😀")
        XCTAssertEqual(RawPath.escape([0xED, 0xA0, 0x80]), "\\xED\\xA0\\x80", "UTF-8 surrogates are not valid")
        XCTAssertNil(RawPath.unescape("bad\\q"))
    }

    func testLinesLFAndCRLFAndOffsets() throws {
        var r = LineReader(data: Data("a\r\nb\n\nc".utf8), name: "t")
        var got: [String] = [], offsets: [UInt64] = []
        while let l = try r.nextLine() { got.append(String(decoding: l, as: UTF8.self)); offsets.append(r.offset) }
        XCTAssertEqual(got, ["a", "b", "", "c"])
        XCTAssertEqual(offsets, [3, 5, 6, 7])
        var bad = LineReader(data: Data([0x6F, 0x0A, 0xFF, 0x0A]), name: "f")
        XCTAssertThrowsError(try bad.allLines()) { XCTAssertEqual("\($0)", "f:2: not valid UTF-8 (use --lossy to replace bad bytes)") }
        var lossy = LineReader(data: Data([0x6F, 0x0A, 0xFF, 0x0A]), name: "f")
        XCTAssertEqual(try lossy.allLines(lossy: true), ["o", "\u{FFFD}"])
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
        XCTAssertThrowsError(try writeAtomically(Data(), to: dir.appendingPathComponent("no/such/dir.tsv").path)) {
            XCTAssertTrue("\($0)".contains("does not exist"), "\($0)")
        }
        // A symbolic link is followed: its target is replaced, the link stays a link.
        let link = dir.appendingPathComponent("link.tsv").path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "f.tsv")
        try writeAtomically(Data("via link".utf8), to: link)
        XCTAssertEqual(try String(contentsOfFile: p, encoding: .utf8), "via link")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: link), "f.tsv")
        // A writer dropped before commit leaves the target untouched and no temporary.
        do { let w = try AtomicFileWriter(path: p); try w.write(Data("half".utf8)) }
        XCTAssertEqual(try String(contentsOfFile: p, encoding: .utf8), "via link")
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)), ["f.tsv", "link.tsv"])
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
