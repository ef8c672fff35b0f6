// --draft as a user passes it (issue 29): preprocess, embed-image, fuse and the worker each decode
// at Pillow's draft scale — checked against the exported Pillow-draft + torchvision tensors — and
// a resumed job refuses a change of the setting.

import Foundation
import XCTest
import VLMCore
import VLMIO

final class DraftCLITests: XCTestCase {
    var dir: URL!
    let tinyResNet = fixtures.appendingPathComponent("resnet/bottleneck_f32").path
    let tinyBERT = fixtures.appendingPathComponent("bert/tiny").path
    /// Large JPEGs (phone-sized, CMYK, gray, progressive): each is decoded at 1/2–1/8 scale.
    let names = ["large_4032x3024.jpg", "large_cmyk_1999x1201.jpg", "large_gray_2050x1537.jpg", "large_progressive_3024x4032.jpg",
                 "medium_1100x700.jpg"]
    var files: [String] { names.map { imageFixtures.appendingPathComponent($0).path } }

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-draft-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ n: String) -> String { dir.appendingPathComponent(n).path }

    func rows(_ args: [String], _ name: String, stdin: Data? = nil) throws -> Tensor {
        let r = try runVLM(args + ["-o", path(name)] + (args[0] == "preprocess" ? [] : ["--quiet"]), stdin: stdin)
        XCTAssertEqual(r.status, 0, r.stderr)
        return try NPY.read(path: path(name))
    }

    func maxDiff(_ a: ArraySlice<Float>, _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max()! }

    func testDraftReachesEveryCommandAndEqualsPillowDraft() throws {
        // preprocess --draft: within one uint8 step of Pillow's draft + torchvision, for every file;
        // without --draft the same files are further from that reference (the test can tell).
        let drafted = try rows(["preprocess", "--draft"] + files, "pre-draft.npy")
        let full = try rows(["preprocess"] + files, "pre-full.npy")
        XCTAssertEqual(drafted.shape, [names.count, 3, 224, 224])
        let n = 3 * 224 * 224
        var distinguishable = 0
        for (i, name) in names.enumerated() {
            let ref = try NPY.read(path: imageFixtures.appendingPathComponent(name.replacingOccurrences(of: ".", with: "_") + ".draft.tensor.npy").path)
            XCTAssertLessThanOrEqual(maxDiff(drafted.data[(i * n)..<((i + 1) * n)], ref.data), 0.0176, "\(name): one uint8 step of Pillow's draft")
            if maxDiff(full.data[(i * n)..<((i + 1) * n)], ref.data) > 0.0176 { distinguishable += 1 }
        }
        XCTAssertGreaterThanOrEqual(distinguishable, 3, "without --draft the tensors differ from the draft reference")

        // embed-image --draft: the rows of exactly those tensors; and not the full-decode rows.
        let embedded = try rows(["embed-image", "--draft", "--model", tinyResNet] + files, "emb-draft.npy")
        let fromTensors = try rows(["embed-image", "--input-npy", path("pre-draft.npy"), "--model", tinyResNet], "emb-tensors.npy")
        let fullRows = try rows(["embed-image", "--model", tinyResNet] + files, "emb-full.npy")
        let d = embedded.shape[1]
        for i in 0..<names.count {
            let row = Array(embedded.data[(i * d)..<((i + 1) * d)])
            XCTAssertLessThanOrEqual(relativeError(row, Array(fromTensors.data[(i * d)..<((i + 1) * d)])), 1e-6, names[i])
        }
        XCTAssertGreaterThan(relativeError(embedded.data, fullRows.data), 1e-4, "--draft changed the rows")

        // fuse --draft: its image part is embed-image --draft's row.
        let pairs = files.map { "\($0)\ta photo\n" }.joined()
        let fused = try rows(["fuse", "--draft", "--pairs", "-", "--image-model", tinyResNet, "--text-model", tinyBERT], "fused.npy",
                             stdin: Data(pairs.utf8))
        let fd = fused.shape[1]
        for i in 0..<names.count {
            XCTAssertLessThanOrEqual(relativeError(Array(fused.data[(i * fd)..<(i * fd + d)]), Array(embedded.data[(i * d)..<((i + 1) * d)])), 1e-6)
        }

        // The worker with --draft answers embed-image --draft's row.
        let requests = files.map { "{\"id\": \"x\", \"image\": \"\($0)\"}\n" }.joined()
        let w = try runVLM(["worker", "--draft", "--image-model", tinyResNet, "--text-model", tinyBERT, "--vectors", "json"], stdin: Data(requests.utf8))
        XCTAssertEqual(w.status, 0, w.stderr)
        let answers = w.out.split(separator: "\n")
        XCTAssertEqual(answers.count, names.count, w.out)
        for (i, line) in answers.enumerated() {
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let v = (obj["vector"] as! [NSNumber]).map(\.floatValue)
            XCTAssertLessThanOrEqual(relativeError(v, Array(embedded.data[(i * d)..<((i + 1) * d)])), 1e-6, names[i])
        }

        // A partial made without --draft is not resumed with it.
        let args = ["embed-image", "--model", tinyResNet, "--batch-size", "1", "-o", path("resume.npy")] + files
        try killPaused(args, afterUnits: 1)
        let other = try runVLM(args + ["--draft", "--resume"])
        XCTAssertEqual(other.status, 1, other.stderr)
        XCTAssertTrue(other.stderr.contains("holds a different job") && other.stderr.contains("draft"), other.stderr)
    }
}
