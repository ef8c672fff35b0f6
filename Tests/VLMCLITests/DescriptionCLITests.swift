// Outputs say what made them: <output>.meta.json names each model by the SHA-256 of its files and
// every option that changes a vector; `vlm inspect` shows it; `vlm pca` refuses feature files
// from different vector spaces in one line and only notes what does not define a space; the
// digests are computed once per file version and cached.

import Foundation
import XCTest
import VLMCore
import VLMIO

final class DescriptionCLITests: XCTestCase {
    var dir: URL!
    let tinyResNet = fixtures.appendingPathComponent("resnet/bottleneck_f32").path
    let tinyBert = fixtures.appendingPathComponent("bert/tiny").path
    let texts = ["A cat sitting on a couch.", "a dog", "naïve café 東京", "Hello, world!", "one more", "and the last"]

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-desc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func embedTexts(_ out: String, model: String? = nil, _ flags: [String] = [], env: [String: String] = [:]) throws -> RunResult {
        let r = try runVLM(["embed-text", "--model", model ?? tinyBert, "-o", path(out), "--quiet"] + flags + texts, env: env)
        XCTAssertEqual(r.status, 0, r.stderr)
        return r
    }

    /// One line on stderr mentioning each of `mentions`.
    func assertOneLine(_ r: RunResult, _ mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr, file: file, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "\(m) not in: \(r.stderr)", file: file, line: line) }
    }

    func space(_ out: String) throws -> [String: Any] {
        let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path(out) + ".meta.json"))) as! [String: Any]
        return (meta["definition"] as! [String: Any])["space"] as! [String: Any]
    }

    func testTheDescriptionNamesModelsByDigestAndInspectShowsIt() throws {
        try embedTexts("a.npy", ["--normalize", "--max-length", "16"])
        let s = try space("a.npy")
        XCTAssertEqual(s["kind"] as? String, "text")
        XCTAssertEqual(s["dim"] as? Int, 32)
        let model = (s["models"] as! [[String: Any]])[0]
        let weights = try SHA256.hexDigest(ofFile: tinyBert + "/model.safetensors")
        XCTAssertEqual(model["sha256"] as? String, weights)
        XCTAssertEqual(model["name"] as? String, "tiny")
        let files = model["files"] as! [String: String]
        XCTAssertEqual(files["config.json"], try SHA256.hexDigest(ofFile: tinyBert + "/config.json"))
        XCTAssertNotNil(files["vocab.txt"] ?? files["tokenizer.json"])
        XCTAssertEqual(s["options"] as? [String: String], ["pooling": "mean", "normalize": "true", "max_length": "16"])
        // Images: the resolved preprocessing and layer; pairs both, with the parts' options.
        let image = imageFixtures.appendingPathComponent("astronaut.jpg").path
        XCTAssertEqual(try runVLM(["embed-image", image, "--model", tinyResNet, "--crop", "160", "-o", path("i.npy"), "--quiet"]).status, 0)
        let i = try space("i.npy")
        XCTAssertEqual((i["options"] as! [String: String])["crop"], "160")
        XCTAssertEqual((i["options"] as! [String: String])["layer"], "pooled")
        XCTAssertEqual((i["models"] as! [[String: Any]])[0]["sha256"] as? String, try SHA256.hexDigest(ofFile: tinyResNet + "/model.safetensors"))
        // vlm inspect shows it, from the feature file or its description.
        for target in [path("a.npy"), path("a.npy") + ".meta.json"] {
            let r = try runVLM(["inspect", target, "--summary"])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.out.contains("text model: tiny, weights sha256 \(weights)"), r.out)
            XCTAssertTrue(r.out.contains("max_length 16, normalize true, pooling mean"), r.out)
            XCTAssertTrue(r.out.contains("rows: 6 of 6 items (0 failed), dimension 32"), r.out)
        }
        XCTAssertTrue(try runVLM(["inspect", path("a.npy")]).out.contains("\"sha256\" : \"\(weights)\""))
        // A stream gets no description, and hashes nothing.
        let cache = path("cache-stream")
        let r = try runVLM(["embed-text", "--model", tinyBert, "--format", "jsonl", "-o", "-", "--quiet", "a text"], env: ["VLM_CACHE_DIR": cache])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertNil(FileStatus.of(cache))
    }

    func testPCARefusesFeatureFilesFromAnotherSpaceAndNotesTheRest() throws {
        try embedTexts("a.npy", ["--normalize"])
        try embedTexts("b.npy", ["--no-normalize"])
        // The same space with other batch limits and threads: accepted, with a note.
        try embedTexts("c.npy", ["--normalize", "--batch-size", "2", "--threads", "1"])
        // Other weights: one float of a copy of the model changed.
        let copy = path("tiny-copy")
        try FileManager.default.copyItem(atPath: tinyBert, toPath: copy)
        let weights = try Data(contentsOf: URL(fileURLWithPath: copy + "/model.safetensors"))
        var changed = weights
        changed[changed.count - 2] ^= 0x01
        try changed.write(to: URL(fileURLWithPath: copy + "/model.safetensors"))
        try embedTexts("d.npy", model: copy, ["--normalize"])

        let refused = try runVLM(["pca", "fit", path("a.npy"), path("b.npy"), "--dim", "2", "-o", path("p.safetensors")])
        XCTAssertEqual(refused.status, 1)
        assertOneLine(refused, ["b.npy", "a.npy", "not in the vector space", "normalize: true vs false"])
        XCTAssertNil(FileStatus.of(path("p.safetensors")))
        let weightsDiffer = try runVLM(["pca", "fit", path("a.npy"), path("d.npy"), "--dim", "2", "-o", path("p.safetensors")])
        XCTAssertEqual(weightsDiffer.status, 1)
        assertOneLine(weightsDiffer, ["d.npy", "text model weights", "tiny sha256", "tiny-copy sha256"])

        let noted = try runVLM(["pca", "fit", path("a.npy"), path("c.npy"), "--dim", "2", "-o", path("p.safetensors")])
        XCTAssertEqual(noted.status, 0, noted.stderr)
        XCTAssertTrue(noted.stderr.contains("share a vector space but differ in") && noted.stderr.contains("batch limits")
                      && noted.stderr.contains("engine"), noted.stderr)
        // A feature file without a description: accepted with a note.
        try FileManager.default.copyItem(atPath: path("b.npy"), toPath: path("plain.npy"))
        let plain = try runVLM(["pca", "fit", path("a.npy"), path("plain.npy"), "--dim", "2", "-o", path("q.safetensors")])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(plain.stderr.contains("plain.npy has no .meta.json"), plain.stderr)

        // pca apply: the same refusal; its output's space is the inputs', projected.
        let apply = try runVLM(["pca", "apply", path("p.safetensors"), path("a.npy"), path("b.npy"), "-o", path("x.npy")])
        XCTAssertEqual(apply.status, 1)
        assertOneLine(apply, ["b.npy", "not in the vector space"])
        XCTAssertEqual(try runVLM(["pca", "apply", path("p.safetensors"), path("a.npy"), "--normalize-output", "-o", path("y.npy"), "--quiet"]).status, 0)
        let y = try space("y.npy")
        XCTAssertEqual(y["dim"] as? Int, 2)
        XCTAssertEqual((y["options"] as! [String: String])["pca"], try SHA256.hexDigest(ofFile: path("p.safetensors")))
        XCTAssertEqual((y["options"] as! [String: String])["normalize_output"], "true")
        XCTAssertEqual((y["models"] as! [[String: Any]])[0]["sha256"] as? String, try SHA256.hexDigest(ofFile: tinyBert + "/model.safetensors"))
        // Steps in order: unit rows projected (not unit) are not rows projected then made unit.
        try embedTexts("u.npy", ["--normalize", "--normalize-output"])
        XCTAssertEqual(try runVLM(["pca", "apply", path("p.safetensors"), path("u.npy"), "-o", path("pu.npy"), "--quiet"]).status, 0)
        let pu = try space("pu.npy")["options"] as! [String: String]
        XCTAssertEqual(pu["pca"], "normalize_output → " + (try SHA256.hexDigest(ofFile: path("p.safetensors"))))
        XCTAssertNil(pu["normalize_output"])
        XCTAssertEqual(try runVLM(["embed-text", "--model", tinyBert, "--normalize", "--pca", path("p.safetensors"), "--normalize-output",
                                   "-o", path("pn.npy"), "--quiet"] + texts).status, 0)
        let mixed = try runVLM(["pca", "fit", path("pu.npy"), path("pn.npy"), "--dim", "1", "-o", path("r.safetensors")])
        XCTAssertEqual(mixed.status, 1)
        assertOneLine(mixed, ["pn.npy", "not in the vector space"])
        // A projection that overflows: the row is a non_finite error (exit 2), never written. The
        // PCA's one component is the all-ones direction (rows spread along it), so a row of 3e38
        // everywhere projects to ±3e38·√32, past Float's range.
        var train = NPY.header(shape: [100, 32])
        for r in 0..<100 { for j in 0..<32 { withUnsafeBytes(of: Float(r - 50) + Float(j % 3) * 0.01) { train += $0 } } }
        try train.write(to: URL(fileURLWithPath: path("ones.npy")))
        XCTAssertEqual(try runVLM(["pca", "fit", path("ones.npy"), "--dim", "1", "-o", path("ones.safetensors"), "--quiet"]).status, 0)
        var huge = NPY.header(shape: [2, 32])
        for r in 0..<2 { for _ in 0..<32 { withUnsafeBytes(of: r == 0 ? Float(0.5) : Float(3e38)) { huge += $0 } } }
        try huge.write(to: URL(fileURLWithPath: path("huge.npy")))
        let overflow = try runVLM(["pca", "apply", path("ones.safetensors"), path("huge.npy"), "-o", path("h.npy"), "--quiet"])
        XCTAssertEqual(overflow.status, 2, overflow.stderr)
        XCTAssertEqual(try NPY.read(path: path("h.npy")).shape, [1, 1])
        XCTAssertTrue(try String(contentsOfFile: path("h.npy") + ".errors.jsonl", encoding: .utf8).contains("\"kind\":\"non_finite\""))
    }

    /// Each weights file is hashed once per version: the digest is cached by path, size, mtime
    /// and inode, and a file changed in place is hashed anew.
    func testDigestsAreCachedByFileVersion() throws {
        let copy = path("tiny-copy")
        try FileManager.default.copyItem(atPath: tinyBert, toPath: copy)
        let cache = path("cache")
        try embedTexts("a.npy", model: copy, env: ["VLM_CACHE_DIR": cache])
        let entries = try FileManager.default.contentsOfDirectory(atPath: cache + "/sha256")
        XCTAssertGreaterThanOrEqual(entries.count, 3)   // weights, config, tokenizer
        // A cached digest is what the next job uses: plant a wrong one for the weights, unchanged.
        let weights = try SHA256.hexDigest(ofFile: copy + "/model.safetensors")
        var planted = 0
        for e in entries where try String(contentsOfFile: cache + "/sha256/" + e, encoding: .utf8).hasPrefix(weights) {
            try (String(repeating: "ab", count: 32) + "\n").write(toFile: cache + "/sha256/" + e, atomically: true, encoding: .utf8)
            planted += 1
        }
        XCTAssertEqual(planted, 1)
        try embedTexts("b.npy", model: copy, env: ["VLM_CACHE_DIR": cache])
        XCTAssertEqual((try space("b.npy")["models"] as! [[String: Any]])[0]["sha256"] as? String, String(repeating: "ab", count: 32))
        // The file rewritten (a new mtime): hashed again.
        let data = try Data(contentsOf: URL(fileURLWithPath: copy + "/model.safetensors"))
        try data.write(to: URL(fileURLWithPath: copy + "/model.safetensors"))
        try embedTexts("c.npy", model: copy, env: ["VLM_CACHE_DIR": cache])
        XCTAssertEqual((try space("c.npy")["models"] as! [[String: Any]])[0]["sha256"] as? String, weights)
    }
}
