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

    func testResumeOnACompleteOutputDoesNothingUnlessSomethingChanged() throws {
        let fm = FileManager.default
        let bad = path("bad.jpg"), mine = path("rocket.jpg")
        XCTAssertTrue(fm.createFile(atPath: bad, contents: Data("not an image".utf8)))
        try fm.copyItem(atPath: rocket, toPath: mine)
        let out = path("x.npy")
        func job(_ extra: [String] = []) throws -> RunResult {
            try runVLM(["embed-image", photo, mine, bad, "--model", tinyResNet, "-o", out] + extra)
        }
        func marks() throws -> [String] {
            try [out, out + ".ids.txt", out + ".errors.jsonl", out + ".meta.json"].map { p in
                let a = try fm.attributesOfItem(atPath: p)
                return "\(a[.systemFileNumber]!):\(a[.modificationDate]!)"
            }
        }
        XCTAssertEqual(try job().status, 2)
        let description = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + ".meta.json"))) as! [String: Any]
        XCTAssertEqual(description["rows"] as? Int, 2)
        XCTAssertEqual(description["failures"] as? Int, 1)
        XCTAssertEqual(description["command"] as? String, "embed-image")
        let before = try marks()

        // Complete, nothing changed: no work, no file touched, no job folder left; the finished
        // job's outcome (exit 2: an item failed, and is not retried).
        let again = try job(["--resume"])
        XCTAssertEqual(again.status, 2, again.stderr)
        XCTAssertTrue(again.stderr.contains("x.npy is complete (2 rows, 1 failed item listed in"), again.stderr)
        XCTAssertTrue(again.stderr.contains("not retried"), again.stderr)
        XCTAssertEqual(try marks(), before)
        XCTAssertFalse(fm.fileExists(atPath: out + ".partial"))

        // Each change makes the job run again, saying why.
        let otherOption = try job(["--resume", "--batch-size", "2"])
        XCTAssertEqual(otherOption.status, 2, otherOption.stderr)
        XCTAssertTrue(otherOption.stderr.contains("made by another job (other batch size)"), otherOption.stderr)
        XCTAssertFalse(otherOption.stderr.contains("nothing to do"), otherOption.stderr)
        XCTAssertEqual(try job(["--resume"]).status, 2)  // back to the first job's options: it runs once more
        XCTAssertTrue(try job(["--resume"]).stderr.contains("is complete"))
        // --errors fail would have stopped at the failed item: the job runs, and stops.
        let failFast = try job(["--resume", "--errors", "fail"])
        XCTAssertEqual(failFast.status, 1, failFast.stderr)
        XCTAssertTrue(failFast.stderr.contains("--errors fail stops at the first"), failFast.stderr)
        XCTAssertEqual(try job(["--resume"]).status, 2)
        try fm.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 60)], ofItemAtPath: mine)
        let changedInput = try job(["--resume"])
        XCTAssertEqual(changedInput.status, 2, changedInput.stderr)
        XCTAssertTrue(changedInput.stderr.contains("its inputs changed since its job finished"), changedInput.stderr)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: out + ".ids.txt"))
        try h.seekToEnd(); try h.write(contentsOf: Data("extra\n".utf8)); try h.close()
        let changedOutput = try job(["--resume"])
        XCTAssertEqual(changedOutput.status, 2, changedOutput.stderr)
        XCTAssertTrue(changedOutput.stderr.contains("its ids.txt changed since its job finished"), changedOutput.stderr)
        XCTAssertEqual(try String(contentsOfFile: out + ".ids.txt", encoding: .utf8), "\(photo)\n\(mine)\n")

        // A text job from stdin: the same texts are complete, other texts are not.
        let texts = path("t.jsonl")
        let first = try runVLM(["embed-text", "--model", tinyBERT, "-o", texts, "--resume"], stdin: Data("a\nb\n".utf8))
        XCTAssertEqual(first.status, 0, first.stderr)
        let same = try runVLM(["embed-text", "--model", tinyBERT, "-o", texts, "--resume"], stdin: Data("a\nb\n".utf8))
        XCTAssertEqual(same.status, 0, same.stderr)
        XCTAssertTrue(same.stderr.contains("is complete (2 rows)"), same.stderr)
        let other = try runVLM(["embed-text", "--model", tinyBERT, "-o", texts, "--resume"], stdin: Data("a\nc\n".utf8))
        XCTAssertEqual(other.status, 0, other.stderr)
        XCTAssertFalse(other.stderr.contains("nothing to do"), other.stderr)
        XCTAssertTrue(other.stderr.contains("computing it anew"), other.stderr)

        // An image read from stdin: its changes cannot be seen, so it is never taken as complete.
        let piped = path("piped.npy")
        let jpeg = try Data(contentsOf: URL(fileURLWithPath: photo))
        for _ in 0..<2 {
            let r = try runVLM(["embed-image", "-", "--model", tinyResNet, "-o", piped, "--resume"], stdin: jpeg)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertFalse(r.stderr.contains("nothing to do"), r.stderr)
        }
        let other2 = try runVLM(["embed-image", "-", "--model", tinyResNet, "-o", piped, "--resume"], stdin: try Data(contentsOf: URL(fileURLWithPath: rocket)))
        XCTAssertEqual(other2.status, 0, other2.stderr)
        let single = try runVLM(["embed-image", rocket, "--model", tinyResNet, "-o", path("rocket.npy"), "--quiet"])
        XCTAssertEqual(single.status, 0, single.stderr)
        XCTAssertEqual(try NPY.read(path: piped).data, try NPY.read(path: path("rocket.npy")).data, "the new image's row, not the old one's")
        // A JSON-lines output: a stray .ids.txt beside it is not its own and changes nothing.
        let jl = path("t2.jsonl")
        XCTAssertEqual(try runVLM(["embed-text", "--model", tinyBERT, "-o", jl, "a", "b"]).status, 0)
        XCTAssertTrue(FileManager.default.createFile(atPath: jl + ".ids.txt", contents: Data("stray\n".utf8)))
        let jlAgain = try runVLM(["embed-text", "--model", tinyBERT, "-o", jl, "a", "b", "--resume"])
        XCTAssertEqual(jlAgain.status, 0, jlAgain.stderr)
        XCTAssertTrue(jlAgain.stderr.contains("is complete (2 rows)"), jlAgain.stderr)

        // The description is guarded as the other sidecars are.
        let onto = try runVLM(["embed-image", photo, "--model", tinyResNet, "-o", out + ".meta.json"])
        XCTAssertEqual(onto.status, 64, onto.stderr)
        XCTAssertTrue(onto.stderr.contains("meta.json of the output"), onto.stderr)
    }

    func testVLMKernelsChoosesALevelTheCPUHasAndRefusesOthers() throws {
        let bench = ["bench", "minilm", "--sentences", "4", "--backend", "blas", "--min-iterations", "1", "--min-time", "0"]
        let base = try runVLM(bench, env: ["VLM_KERNELS": "baseline"])
        XCTAssertEqual(base.status, 0, base.stderr)
        XCTAssertTrue((base.out + base.stderr).contains("vlm's C kernels: baseline"), base.out)
        let bad = try runVLM(["embed-text", "--model", tinyBERT, "hi"], env: ["VLM_KERNELS": "sse9"])
        XCTAssertEqual(bad.status, 64, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("VLM_KERNELS=sse9") && bad.stderr.contains("baseline"), bad.stderr)
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
