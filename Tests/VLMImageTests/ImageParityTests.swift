// Decoding and preprocessing against Pillow + torchvision: scripts/export_image_fixtures.py
// writes scikit-image's sample photos and edge cases (1×1, 3000×10, grayscale, palette, alpha,
// 16-bit, progressive and CMYK JPEG) with what Image.open(f).convert("RGB"), Resize(256) and
// the full ImageNet transform make of them, into Tests/Fixtures/generated/images/.

import Foundation
import XCTest
import VLMCore
import VLMIO
import VLMImage

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")
let imageFixtures = fixtures.appendingPathComponent("generated/images")

struct ImageCase: Decodable {
    let name: String, file: String, mode: String
    let decoded: [Int], resized: [Int], bicubic224: [Int]
}

func loadCases() throws -> [ImageCase] {
    let listing = imageFixtures.appendingPathComponent("cases.json")
    guard let data = FileManager.default.contents(atPath: listing.path) else {
        throw NSError(domain: "fixtures", code: 1, userInfo: [NSLocalizedDescriptionKey: "fixture missing: \(listing.path) — run `make fixtures`"])
    }
    return try JSONDecoder().decode([ImageCase].self, from: data)
}

final class ImageParityTests: XCTestCase {
    func testDecodingEqualsPillowConvertRGB() throws {
        let cases = try loadCases()
        XCTAssertGreaterThanOrEqual(cases.count, 20)
        for c in cases {
            let img = try ImageDecoder.decode(path: imageFixtures.appendingPathComponent(c.file).path)
            XCTAssertEqual([img.height, img.width, 3], c.decoded, c.name)
            let ref = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("\(c.name).decoded.u8")))
            let diff = zip(img.pixels, ref).filter { $0 != $1 }.count
            let maxDiff = zip(img.pixels, ref).map { abs(Int($0) - Int($1)) }.max() ?? 0
            XCTAssertEqual(diff, 0, "\(c.name) (\(c.mode)): \(diff) of \(ref.count) values differ, max \(maxDiff)")
        }
    }

    func testResizeWithinOneOfPillowAndMostlyIdentical() throws {
        for c in try loadCases() {
            // Start from Pillow's own decoding, so this measures the resize alone.
            let decoded = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("\(c.name).decoded.u8")))
            let src = RGBImage(width: c.decoded[1], height: c.decoded[0], pixels: decoded)
            let out = resizeShorterSide(src, to: 256)
            XCTAssertEqual([out.height, out.width, 3], c.resized, c.name)
            let ref = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("\(c.name).resized.u8")))
            var same = 0, maxDiff = 0
            for (a, b) in zip(out.pixels, ref) {
                if a == b { same += 1 }
                maxDiff = max(maxDiff, abs(Int(a) - Int(b)))
            }
            XCTAssertLessThanOrEqual(maxDiff, 1, "\(c.name): max difference \(maxDiff)")
            XCTAssertGreaterThanOrEqual(Double(same) / Double(ref.count), 0.99, "\(c.name): \(same) of \(ref.count) identical")
        }
    }

    /// CLIP's resize (shorter side 224, Pillow's bicubic: Keys' cubic kernel, negative lobes
    /// clipped) equals Pillow's byte for byte, from Pillow's own decoding.
    func testBicubicResizeEqualsPillow() throws {
        for c in try loadCases() {
            let decoded = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("\(c.name).decoded.u8")))
            let src = RGBImage(width: c.decoded[1], height: c.decoded[0], pixels: decoded)
            let out = resizeShorterSide(src, to: 224, filter: .bicubic)
            XCTAssertEqual([out.height, out.width, 3], c.bicubic224, c.name)
            let ref = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("\(c.name).bicubic224.u8")))
            let differing = zip(out.pixels, ref).filter { $0 != $1 }.count
            XCTAssertTrue(out.pixels == ref, "\(c.name): \(differing) of \(ref.count) values differ from Pillow's")
        }
        // Not the bilinear kernel under another name: the two resizes differ on these images.
        let c = try loadCases()[0]
        let decoded = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("\(c.name).decoded.u8")))
        let src = RGBImage(width: c.decoded[1], height: c.decoded[0], pixels: decoded)
        XCTAssertNotEqual(resizeShorterSide(src, to: 224, filter: .bicubic).pixels, resizeShorterSide(src, to: 224).pixels)
    }

    func testFullTransformMatchesTorchvision() throws {
        let pre = Preprocessing()
        for c in try loadCases() {
            let img = try ImageDecoder.decode(path: imageFixtures.appendingPathComponent(c.file).path)
            let got = pre.tensor(img)
            let ref = try NPY.read(path: imageFixtures.appendingPathComponent("\(c.name).tensor.npy").path)
            XCTAssertEqual(ref.shape, [3, 224, 224])
            // One uint8 step is 1/255/std ≈ 0.0175; allow that, and require near-identity overall.
            let maxDiff = zip(got, ref.data).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(maxDiff, 0.0176, c.name)
            XCTAssertLessThanOrEqual(relativeError(got, ref.data), 1e-3, c.name)
        }
    }
}

final class DraftParityTests: XCTestCase {
    /// --draft against Pillow's Image.draft("RGB", (256, 256)) + torchvision, on every case and
    /// on phone-sized JPEGs (baseline, progressive, gray, CMYK): the same scale and size, the
    /// same decoded pixels (libjpeg's scaled IDCT), the tensor within one uint8 step.
    func testDraftEqualsPillowDraft() throws {
        struct DraftCase: Decodable { let name: String, file: String, decoded: [Int] }
        let data = try Data(contentsOf: imageFixtures.appendingPathComponent("draft_cases.json"))
        let cases = try JSONDecoder().decode([DraftCase].self, from: data)
        XCTAssertGreaterThanOrEqual(cases.count, 25)
        let pre = Preprocessing()
        var scaled = 0
        for c in cases {
            let path = imageFixtures.appendingPathComponent(c.file).path
            let (img, tensor) = try ImageDecoder.withDecoded(path: RawPath(path), draft: 256) { ($0.copy(), pre.tensor($0)) }
            XCTAssertEqual([img.height, img.width, 3], c.decoded, c.name)
            let ref = [UInt8](try Data(contentsOf: imageFixtures.appendingPathComponent("\(c.name).draft.decoded.u8")))
            let maxPixelDiff = zip(img.pixels, ref).map { abs(Int($0) - Int($1)) }.max() ?? 0
            XCTAssertLessThanOrEqual(maxPixelDiff, 1, "\(c.name): decoded pixels differ by up to \(maxPixelDiff)")
            let t = try NPY.read(path: imageFixtures.appendingPathComponent("\(c.name).draft.tensor.npy").path)
            XCTAssertLessThanOrEqual(zip(tensor, t.data).map { abs($0 - $1) }.max()!, 0.0176, "\(c.name): one uint8 step")
            if c.file.hasSuffix(".jpg"), let full = try? ImageDecoder.decode(path: path), full.width > img.width { scaled += 1 }
        }
        XCTAssertGreaterThanOrEqual(scaled, 6, "the large JPEGs really were decoded at a reduced scale")
        // Pillow's rule: the largest of 8, 4, 2 not above min(w // size, h // size).
        XCTAssertEqual(ImageDecoder.draftScale(width: 4032, height: 3024, size: 256), 8)
        XCTAssertEqual(ImageDecoder.draftScale(width: 4032, height: 3024, size: 232), 8)
        XCTAssertEqual(ImageDecoder.draftScale(width: 2047, height: 3000, size: 256), 4)
        XCTAssertEqual(ImageDecoder.draftScale(width: 511, height: 600, size: 256), 1)
        XCTAssertEqual(ImageDecoder.draftScale(width: 512, height: 513, size: 256), 2)
    }
}

final class ImageDecodeErrorTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-img-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func write(_ name: String, _ data: Data) -> String {
        let p = dir.appendingPathComponent(name).path
        FileManager.default.createFile(atPath: p, contents: data)
        return p
    }

    func testEachBadFileIsATypedError() throws {
        let jpeg = try Data(contentsOf: imageFixtures.appendingPathComponent("chelsea.jpg"))
        let png = try Data(contentsOf: imageFixtures.appendingPathComponent("chelsea.png"))
        let cases: [(String, Data, String)] = [
            ("empty.jpg", Data(), "empty"),
            ("text.jpg", Data("not an image at all".utf8), "not_an_image"),
            ("cut.jpg", jpeg.prefix(jpeg.count / 2), "corrupt"),
            ("cut.png", png.prefix(png.count / 2), "corrupt"),
            ("header.jpg", jpeg.prefix(20), "corrupt"),
            ("garbage.png", png.prefix(16) + Data(repeating: 0x41, count: 500), "corrupt"),
        ]
        for (name, data, kind) in cases {
            let p = write(name, data)
            XCTAssertThrowsError(try ImageDecoder.decode(path: p), name) {
                let e = $0 as? ImageError
                XCTAssertEqual(e?.kind, kind, "\(name): \($0)")
                XCTAssertTrue("\($0)".hasPrefix(p), "\($0)")
                XCTAssertFalse("\($0)".contains("\n"))
            }
        }
        XCTAssertThrowsError(try ImageDecoder.decode(path: dir.appendingPathComponent("missing.png").path)) {
            XCTAssertEqual(($0 as? ImageError)?.kind, "unreadable")
        }
        // Over the pixel limit: refused from the header, before decoding.
        let big = imageFixtures.appendingPathComponent("hubble.jpg").path
        XCTAssertThrowsError(try ImageDecoder.decode(path: big, maxPixels: 100_000)) {
            XCTAssertEqual($0 as? ImageError, .tooLarge(path: big, width: 1000, height: 872, limit: 100_000))
        }
        XCTAssertNoThrow(try ImageDecoder.decode(path: big, maxPixels: 872_000))
    }

    func testCenterCropPadsSmallImagesAndRoundsHalfToEven() {
        // 3×1 image, crop 2×1: left = round(0.5) = 0 (half to even).
        let img = RGBImage(width: 3, height: 1, pixels: [1, 1, 1, 2, 2, 2, 3, 3, 3])
        XCTAssertEqual(centerCrop(img, width: 2, height: 1).pixels, [1, 1, 1, 2, 2, 2])
        // 5×1, crop 2×1: left = round(1.5) = 2.
        let img5 = RGBImage(width: 5, height: 1, pixels: (1...5).flatMap { [UInt8($0), UInt8($0), UInt8($0)] })
        XCTAssertEqual(centerCrop(img5, width: 2, height: 1).pixels, [3, 3, 3, 4, 4, 4])
        // 1×1, crop 3×3: zero padding around.
        let one = RGBImage(width: 1, height: 1, pixels: [9, 9, 9])
        let padded = centerCrop(one, width: 3, height: 3)
        XCTAssertEqual(padded.pixels.filter { $0 == 9 }.count, 3)
        XCTAssertEqual(Array(padded.pixels[12..<15]), [9, 9, 9])
    }
}
