// Image commands as a user runs them: preprocess equals torchvision; embed-image over files,
// folders and lists; bad files skipped and recorded; shards; resume after SIGKILL.

import Foundation
import XCTest
import VLMCore
import VLMIO

let imageFixtures = fixtures.appendingPathComponent("generated/images")

final class PreprocessCLITests: XCTestCase {
    func testPreprocessEqualsTorchvisionTensors() throws {
        let names = ["astronaut.jpg", "cmyk.jpg", "palette.png", "gray16.png", "tiny_1x1.png"]
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("pre-\(UUID().uuidString).npy").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try runVLM(["preprocess"] + names.map { imageFixtures.appendingPathComponent($0).path } + ["-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let got = try NPY.read(path: out)
        XCTAssertEqual(got.shape, [names.count, 3, 224, 224])
        for (i, n) in names.enumerated() {
            let ref = try NPY.read(path: imageFixtures.appendingPathComponent(n.replacingOccurrences(of: ".", with: "_") + ".tensor.npy").path)
            XCTAssertLessThanOrEqual(relativeError(got.rows(i..<(i + 1)).data, ref.data), 1e-3, n)
        }
        let bad = try runVLM(["preprocess", "/nonexistent.jpg", "-o", out])
        XCTAssertEqual(bad.status, 1)
        XCTAssertEqual(bad.stderr, "vlm: error: /nonexistent.jpg: cannot read: No such file or directory\n")
    }
}
