// Issue 28: what a new user meets in the first minutes — messages that say what to do, outputs
// that name their rows, counts that count records, and one exit code for one mistake.

import Foundation
import XCTest
import VLMCore
import VLMIO

final class FirstMinutesCLITests: XCTestCase {
    var dir: URL!
    let tinyResNet = fixtures.appendingPathComponent("resnet/bottleneck_f32").path
    let tinyBERT = fixtures.appendingPathComponent("bert/tiny").path
    let photo = imageFixtures.appendingPathComponent("coffee.jpg").path
    let rocket = imageFixtures.appendingPathComponent("rocket.jpg").path

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-first-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ n: String) -> String { dir.appendingPathComponent(n).path }

    func testAModelFolderWithoutWeightsSaysHowToGetThem() throws {
        // The registry's folder before `vlm models fetch` (a fresh clone's models/resnet50).
        let models = path("models")
        try FileManager.default.createDirectory(atPath: models + "/resnet50", withIntermediateDirectories: true)
        for args in [["embed-image", photo, "-o", path("x.npy")], ["fuse", "--image", photo, "--text", "a cat", "--text-model", tinyBERT]] {
            let r = try runVLM(args, env: ["VLM_MODELS": models])
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("vlm models fetch resnet50") && r.stderr.contains("--model synthetic:resnet50"), r.stderr)
        }
    }

    func testModelOnAPairCommandNamesTheTwoModelOptions() throws {
        for (model, suggested) in [(tinyResNet, "--image-model " + tinyResNet), (tinyBERT, "--text-model " + tinyBERT)] {
            for args in [["fuse", "--image", photo, "--text", "a cat", "--model", model], ["worker", "--model", model]] {
                let r = try runVLM(args, stdin: Data())
                XCTAssertEqual(r.status, 64, r.stderr)
                XCTAssertTrue(r.stderr.contains("--image-model") && r.stderr.contains("--text-model") && r.stderr.contains(suggested), r.stderr)
            }
        }
    }

    func testNoInputIsAUsageErrorForTextsAsForImages() throws {
        XCTAssertEqual(try runVLM(["embed-image", "--model", tinyResNet]).status, 64)
        let texts = try runVLM(["embed-text", "--model", tinyBERT], stdin: Data())
        XCTAssertEqual(texts.status, 64, texts.stderr)
        XCTAssertTrue(texts.stderr.contains("no input"), texts.stderr)
        // A named file with no text in it is bad input, not a usage error.
        XCTAssertTrue(FileManager.default.createFile(atPath: path("empty.txt"), contents: Data()))
        XCTAssertEqual(try runVLM(["embed-text", "--model", tinyBERT, "--file", path("empty.txt")]).status, 1)
    }

    func testBlankLinesAreNoItemsInTheCounts() throws {
        let jl = "{\"t\": \"a cat\"}\n\n{\"t\": 5}\n\n\n"
        let r = try runVLM(["embed-text", "--model", tinyBERT, "--file", "-", "--jsonl-field", "t", "-o", path("x.npy")], stdin: Data(jl.utf8))
        XCTAssertEqual(r.status, 2, r.stderr)
        XCTAssertTrue(r.stderr.contains("1 of 2 items skipped"), r.stderr)
    }

    func testPreprocessNamesItsRowsAndSimilarityUsesThem() throws {
        let pre = try runVLM(["preprocess", photo, rocket, "-o", path("x.npy")])
        XCTAssertEqual(pre.status, 0, pre.stderr)
        XCTAssertEqual(try String(contentsOfFile: path("x.npy.ids.txt"), encoding: .utf8), "\(photo)\n\(rocket)\n")
        let emb = try runVLM(["embed-image", photo, rocket, "--model", tinyResNet, "-o", path("f.npy"), "--quiet"])
        XCTAssertEqual(emb.status, 0, emb.stderr)
        let table = try runVLM(["similarity", path("f.npy"), "--width", "40"])
        XCTAssertEqual(table.status, 0, table.stderr)
        XCTAssertTrue(table.out.contains("coffee.jpg") && table.out.contains("rocket.jpg") && !table.out.contains("#0"), table.out)
        // From stdin, with no ids beside it: row numbers.
        let piped = try runVLM(["similarity", "-"], stdin: try Data(contentsOf: URL(fileURLWithPath: path("f.npy"))))
        XCTAssertEqual(piped.status, 0, piped.stderr)
        XCTAssertTrue(piped.out.contains("#1"), piped.out)
        // Checkpoints and pca's feature files must be files: refused saying so.
        let inspect = try runVLM(["inspect", "-"])
        XCTAssertEqual(inspect.status, 64, inspect.stderr)
        XCTAssertTrue(inspect.stderr.contains("not from stdin"), inspect.stderr)
        let fit = try runVLM(["pca", "fit", "-", "--dim", "2", "-o", path("p.safetensors")], stdin: try Data(contentsOf: URL(fileURLWithPath: path("f.npy"))))
        XCTAssertEqual(fit.status, 1, fit.stderr)
        XCTAssertTrue(fit.stderr.contains("must be files"), fit.stderr)
    }
}
