// Issue 27: what a hostile or careless user found on the landed main — checkpoints that recurse,
// outputs that replace the files a command reads or another job's files, checkpoints saved
// inside a wrapper module, files of formats vlm does not read, and hostile sizes. Each case
// ends in one line and the documented exit code with every input as it was, or in the right rows.

import Foundation
import XCTest
import VLMCore
import VLMIO
import VLMModels

final class HardeningCLITests: XCTestCase {
    var dir: URL!
    let tinyResNet = fixtures.appendingPathComponent("resnet/bottleneck_f32").path
    let tinyBERT = fixtures.appendingPathComponent("bert/tiny").path
    let photo = imageFixtures.appendingPathComponent("coffee.jpg").path

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-hard-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ n: String) -> String { dir.appendingPathComponent(n).path }

    func copy(_ from: String, _ to: String) throws -> String {
        try FileManager.default.copyItem(atPath: from, toPath: path(to))
        return path(to)
    }

    func digest(_ p: String) throws -> String { try SHA256.hexDigest(ofFile: p) }

    func assertRefused(_ r: RunResult, status: Int32, _ mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, status, r.stderr, file: file, line: line)
        let lines = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("vlm: note:") && !$0.hasPrefix("vlm: warning:") }
        XCTAssertEqual(lines.count, 1, r.stderr, file: file, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "stderr should mention \(m): \(r.stderr)", file: file, line: line) }
        XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr, file: file, line: line)
    }

    // MARK: - 1. Indexes naming indexes

    func testShardIndexNamingItselfOrAnotherIndexIsRefused() throws {
        try FileManager.default.createDirectory(atPath: path("d"), withIntermediateDirectories: true)
        try Data(#"{"weight_map":{"w":"model.safetensors.index.json"}}"#.utf8).write(to: URL(fileURLWithPath: path("d/model.safetensors.index.json")))
        assertRefused(try runVLM(["inspect", path("d")]), status: 1, ["model.safetensors.index.json", "a shard must be a weights file"])
        // Two that name each other, under names that do not end in .index.json.
        try FileManager.default.createDirectory(atPath: path("e"), withIntermediateDirectories: true)
        try Data(#"{"weight_map":{"w":"b.safetensors"}}"#.utf8).write(to: URL(fileURLWithPath: path("e/model.safetensors.index.json")))
        try Data(#"{"weight_map":{"w":"model.safetensors.index.json"}}"#.utf8).write(to: URL(fileURLWithPath: path("e/b.safetensors")))
        let r = try runVLM(["inspect", path("e")])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("b.safetensors"), r.stderr)
    }

    func testHugeIndexAndHeaderAreRefusedByTheirLimits() throws {
        // A safetensors header over safetensors' own 100,000,000-byte limit (a sparse file).
        let big = path("big.safetensors")
        var header = Data()
        var len = UInt64(100_000_001).littleEndian
        withUnsafeBytes(of: &len) { header.append(contentsOf: $0) }
        header.append(contentsOf: Array("{".utf8))
        FileManager.default.createFile(atPath: big, contents: header)
        XCTAssertEqual(truncate(big, 100_000_100), 0)
        assertRefused(try runVLM(["inspect", big]), status: 1, ["100000001-byte header", "100000000"])
        // An index naming more tensors than any checkpoint holds.
        try FileManager.default.createDirectory(atPath: path("idx"), withIntermediateDirectories: true)
        var text = "{\"weight_map\":{"
        for k in 0..<(ShardedCheckpoint.maxTensors + 1) { text += (k > 0 ? "," : "") + "\"t\(k)\":\"a.safetensors\"" }
        text += "}}"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path("idx/model.safetensors.index.json")))
        assertRefused(try runVLM(["inspect", path("idx")]), status: 1, ["262144"])
    }

    // MARK: - 2. -o may not replace a file the command reads

    func testOutputOntoTheModelsOwnFilesIsRefused() throws {
        let m = path("m")
        try FileManager.default.copyItem(atPath: tinyBERT, toPath: m)
        for victim in ["vocab.txt", "model.safetensors", "config.json"] {
            let before = try digest(m + "/" + victim)
            for out in [m + "/" + victim, m + "/./" + victim] {
                let r = try runVLM(["embed-text", "--model", m, "hello", "-o", out])
                assertRefused(r, status: 64, ["a file this job reads", victim])
            }
            XCTAssertEqual(try digest(m + "/" + victim), before, victim)
        }
        // Through a symbolic link.
        try FileManager.default.createSymbolicLink(atPath: path("link.npy"), withDestinationPath: m + "/vocab.txt")
        assertRefused(try runVLM(["embed-text", "--model", m, "hello", "-o", path("link.npy")]), status: 64, ["vocab.txt"])

        let weights = try copy(tinyResNet + "/model.safetensors", "r.safetensors")
        let before = try digest(weights)
        assertRefused(try runVLM(["embed-image", "--model", weights, photo, "-o", weights]), status: 64, ["r.safetensors"])
        XCTAssertEqual(try digest(weights), before)
    }

    func testConvertNeverReplacesItsInput() throws {
        let weights = try copy(tinyResNet + "/model.safetensors", "r.safetensors")
        try FileManager.default.createDirectory(atPath: path("f"), withIntermediateDirectories: true)
        let inFolder = try copy(tinyResNet + "/model.safetensors", "f/model.safetensors")
        try FileManager.default.createSymbolicLink(atPath: path("link.safetensors"), withDestinationPath: weights)
        let digests = (try digest(weights), try digest(inFolder))
        for (input, out) in [(weights, weights), (weights, path("link.safetensors")), (path("f"), inFolder)] {
            let r = try runVLM(["convert", input, "-o", out, "--dtype", "f16"])
            assertRefused(r, status: 64, ["a file this job reads"])
        }
        XCTAssertEqual(try digest(weights), digests.0)
        XCTAssertEqual(try digest(inFolder), digests.1)
        // -o naming a folder suggests a checkpoint's name, not a feature file's.
        assertRefused(try runVLM(["convert", weights, "-o", path("f")]), status: 1, ["model.safetensors"])
    }

    // MARK: - 3. Another job's partial state and sidecars

    func testOutputInsideARunningJobsPartialFolderOrOntoItsSidecarsIsRefused() throws {
        try FileManager.default.createDirectory(atPath: path("imgs"), withIntermediateDirectories: true)
        for k in 0..<8 { _ = try copy(photo, "imgs/\(k).jpg") }
        let a = path("A.npy")
        let job = try startPaused(["embed-image", path("imgs"), "--model", tinyResNet, "--batch-size", "2", "-o", a], afterUnits: 1)
        defer { kill(job.processIdentifier, SIGKILL); job.waitUntilExit() }
        for out in [a + ".partial/rows.f32", a + ".partial/x.npy", a + ".ids.txt", a + ".errors.jsonl"] {
            let r = try runVLM(["embed-text", "--model", tinyBERT, "hello", "-o", out])
            assertRefused(r, status: 64, [out])
        }
        XCTAssertNotNil(FileStatus.of(a + ".partial/rows.f32"))
        XCTAssertNil(FileStatus.of(a + ".ids.txt"))
    }

    // MARK: - 12. A checkpoint saved inside a wrapper module

    /// The fixture's safetensors with every key renamed by `rename` (the data section as it is).
    func renamedCheckpoint(_ rename: (String) -> String?, to out: String, from source: String? = nil) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: (source ?? tinyResNet) + "/model.safetensors"))
        let n = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
        let header = try XCTUnwrap(JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as? [String: Any])
        var renamed: [String: Any] = [:]
        for (k, v) in header {
            if k == "__metadata__" { renamed[k] = v } else if let n = rename(k) { renamed[n] = v }
        }
        let h = try JSONSerialization.data(withJSONObject: renamed)
        var out8 = UInt64(h.count).littleEndian
        var bytes = Data(bytes: &out8, count: 8)
        bytes.append(h)
        bytes.append(data.subdata(in: (8 + n)..<data.count))
        try bytes.write(to: URL(fileURLWithPath: out))
    }

    func testWrapperPrefixIsStrippedWhenTheRestIsAKnownModel() throws {
        try renamedCheckpoint({ "backbone." + $0 }, to: path("wrapped.safetensors"))
        let plain = try runVLM(["embed-image", "--model", tinyResNet, photo, "-o", path("plain.npy"), "--quiet"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let wrapped = try runVLM(["embed-image", "--model", path("wrapped.safetensors"), photo, "-o", path("wrapped.npy")])
        XCTAssertEqual(wrapped.status, 0, wrapped.stderr)
        XCTAssertTrue(wrapped.stderr.contains("'backbone.'"), wrapped.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("plain.npy"))), try Data(contentsOf: URL(fileURLWithPath: path("wrapped.npy"))))
        // Nested wrappers too.
        try renamedCheckpoint({ "model.backbone." + $0 }, to: path("nested.safetensors"))
        XCTAssertEqual(try runVLM(["embed-image", "--model", path("nested.safetensors"), photo, "-o", path("nested.npy"), "--quiet"]).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("plain.npy"))), try Data(contentsOf: URL(fileURLWithPath: path("nested.npy"))))
        // convert writes the names without the prefix.
        XCTAssertEqual(try runVLM(["convert", path("wrapped.safetensors"), "-o", path("conv.safetensors"), "--quiet"]).status, 0)
        let original = try SafetensorsFile(path: tinyResNet + "/model.safetensors")
        XCTAssertEqual(Set(try SafetensorsFile(path: path("conv.safetensors")).names), Set(original.names))
        // A shared prefix over keys that are no model vlm knows is refused, naming the prefix.
        try renamedCheckpoint({ "backbone." + $0.replacingOccurrences(of: "conv1", with: "stem") }, to: path("other.safetensors"))
        assertRefused(try runVLM(["embed-image", "--model", path("other.safetensors"), photo, "-o", path("o.npy")]), status: 1, ["'backbone.'"])
    }

    // MARK: - 13. Formats vlm does not read

    func testForeignFormatsAreNamed() throws {
        let h5 = Data([0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) + Data(count: 600)
        try h5.write(to: URL(fileURLWithPath: path("tf_model.h5")))
        assertRefused(try runVLM(["inspect", path("tf_model.h5")]), status: 1, ["HDF5"])
        let onnx = Data([0x08, 0x08, 0x12, 0x07] + Array("pytorch".utf8) + [0x1A, 0x03] + Array("2.0".utf8)) + Data(count: 100)
        try onnx.write(to: URL(fileURLWithPath: path("model.bin")))
        assertRefused(try runVLM(["inspect", path("model.bin")]), status: 1, ["ONNX"])
        try FileManager.default.createDirectory(atPath: path("tf"), withIntermediateDirectories: true)
        try h5.write(to: URL(fileURLWithPath: path("tf/tf_model.h5")))
        assertRefused(try runVLM(["embed-image", "--model", path("tf"), photo, "-o", path("x.npy")]), status: 1, ["tf_model.h5", "TensorFlow"])
    }

    // MARK: - 11. A --list line naming a folder with no images

    func testListedFolderWithNoImagesIsAnErrorRow() throws {
        try FileManager.default.createDirectory(atPath: path("empty"), withIntermediateDirectories: true)
        try Data("\(photo)\n\(path("empty"))\n".utf8).write(to: URL(fileURLWithPath: path("list.txt")))
        let r = try runVLM(["embed-image", "--list", path("list.txt"), "--model", tinyResNet, "-o", path("out.npy")])
        XCTAssertEqual(r.status, 2, r.stderr)
        let errors = try String(contentsOfFile: path("out.npy.errors.jsonl"), encoding: .utf8)
        XCTAssertTrue(errors.contains("empty"), errors)
        XCTAssertEqual(try String(contentsOfFile: path("out.npy.ids.txt"), encoding: .utf8).split(separator: "\n").count, 1)
    }
}

extension HardeningCLITests {
    func testOutputOntoOneOfTheImagesIsRefused() throws {
        try FileManager.default.createDirectory(atPath: path("imgs"), withIntermediateDirectories: true)
        let victim = try copy(photo, "imgs/a.jpg")
        let before = try digest(victim)
        for (args, out) in [([victim], victim), ([path("imgs")], victim), ([path("imgs")], path("imgs/./a.jpg"))] {
            let r = try runVLM(["embed-image"] + args + ["--model", tinyResNet, "-o", out])
            assertRefused(r, status: 64, ["a.jpg", "an input of this job"])
        }
        XCTAssertEqual(try digest(victim), before)
    }
}

// MARK: - 11. Config files as transformers reads them, and messages in their own words

extension HardeningCLITests {
    func config(_ edit: (String) -> String) throws -> String {
        let m = path("m-\(UUID().uuidString.prefix(8))")
        try FileManager.default.copyItem(atPath: tinyBERT, toPath: m)
        let text = try String(contentsOfFile: m + "/config.json", encoding: .utf8)
        try edit(text).write(toFile: m + "/config.json", atomically: true, encoding: .utf8)
        return m
    }

    func testADuplicatedConfigKeyTakesTheLastValueAsPythonDoes() throws {
        let reference = try runVLM(["embed-text", "--model", tinyBERT, "hello world", "-o", "-", "--format", "jsonl", "--quiet"])
        XCTAssertEqual(reference.status, 0, reference.stderr)
        // A bogus value first, the real one last: transformers reads the real one, and so does vlm.
        let good = try config { $0.replacingOccurrences(of: "\"hidden_act\": \"gelu_new\",", with: "\"hidden_act\": \"bogus\", \"hidden_act\": \"gelu_new\",") }
        let r = try runVLM(["embed-text", "--model", good, "hello world", "-o", "-", "--format", "jsonl", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, reference.stdout)
        // The other way round: the bogus value is the one in force.
        let bad = try config { $0.replacingOccurrences(of: "\"hidden_act\": \"gelu_new\",", with: "\"hidden_act\": \"gelu_new\", \"hidden_act\": \"bogus\",") }
        assertRefused(try runVLM(["embed-text", "--model", bad, "hello", "-o", "-"]), status: 1, ["hidden_act 'bogus'"])
        // Not an object at all.
        let list = try config { _ in "[1]" }
        assertRefused(try runVLM(["embed-text", "--model", list, "hello", "-o", "-"]), status: 1, ["not a JSON object of BERT settings"])
    }
}

extension HardeningCLITests {
    /// A vocabulary far larger than any real one (the largest: ~250,000 tokens, ~5 MB) is refused
    /// by its size before it is read, naming the limit.
    func testAnOversizedVocabularyIsRefusedByItsSize() throws {
        let m = path("m")
        try FileManager.default.copyItem(atPath: tinyBERT, toPath: m)
        let vocab = try String(contentsOfFile: m + "/vocab.txt", encoding: .utf8)
        try (vocab + String(repeating: "a", count: 33 << 20)).write(toFile: m + "/vocab.txt", atomically: true, encoding: .utf8)
        assertRefused(try runVLM(["embed-text", "--model", m, "hello", "-o", "-"]), status: 1, ["vocab.txt", "32 MiB"])
    }
}

extension HardeningCLITests {
    /// A DistilBERT config's problems in its own key names (dim, n_heads, n_layers), not BERT's.
    func testDistilBERTSettingsAreNamedAsItsConfigNamesThem() throws {
        func distil(_ heads: Int, layers: Int) throws -> String {
            let m = path("d-\(heads)-\(layers)")
            try FileManager.default.copyItem(atPath: tinyBERT, toPath: m)
            let cfg = "{\"model_type\": \"distilbert\", \"dim\": 32, \"n_heads\": \(heads), \"n_layers\": \(layers), \"hidden_dim\": 64, \"vocab_size\": 30522, \"max_position_embeddings\": 128}"
            try cfg.write(toFile: m + "/config.json", atomically: true, encoding: .utf8)
            return m
        }
        assertRefused(try runVLM(["embed-text", "--model", try distil(3, layers: 2), "hi", "-o", "-"]), status: 1, ["dim 32 is not a multiple of n_heads 3"])
        assertRefused(try runVLM(["embed-text", "--model", try distil(4, layers: 0), "hi", "-o", "-"]), status: 1, ["n_layers must be positive"])
        // A DistilBERT checkpoint of 2 layers (the tiny BERT's, under DistilBERT's names) with a
        // config saying 3: the missing tensor by the file's own name, the setting by its name.
        let m = try distil(4, layers: 3)
        let renames = [("attention.self.query.", "attention.q_lin."), ("attention.self.key.", "attention.k_lin."),
                       ("attention.self.value.", "attention.v_lin."), ("attention.output.dense.", "attention.out_lin."),
                       ("attention.output.LayerNorm.", "sa_layer_norm."), ("intermediate.dense.", "ffn.lin1."),
                       ("output.dense.", "ffn.lin2."), ("output.LayerNorm.", "output_layer_norm.")]
        try renamedCheckpoint({ key in
            if key.hasPrefix("pooler.") || key.contains("token_type") || key.hasPrefix("classifier.") || key.contains("position_ids") { return nil }
            guard key.hasPrefix("encoder.layer.") else { return key }
            let rest = key.dropFirst("encoder.layer.".count), n = rest.prefix { $0 != "." }, tail = String(rest.dropFirst(n.count + 1))
            for (from, to) in renames where tail.hasPrefix(from) { return "transformer.layer.\(n)." + to + tail.dropFirst(from.count) }
            return nil
        }, to: m + "/model.safetensors", from: tinyBERT)
        assertRefused(try runVLM(["embed-text", "--model", m, "hi", "-o", "-"]), status: 1, ["transformer.layer.2.attention.q_lin.weight", "n_layers 3"])
    }
}

// MARK: - Found by the second probe of this issue's fixes

extension HardeningCLITests {
    /// Foundation's deletingLastPathComponent trapped on a one-character name: `-o q` crashed.
    func testAOneCharacterOutputNameIsWritten() throws {
        let r = try runProcess("/bin/sh", ["-c", "cd '\(dir.path)' && '\(vlmBinary().path)' embed-text --model '\(tinyBERT)' hi -o q --format jsonl --quiet && '\(vlmBinary().path)' convert '\(tinyResNet)' -o z --quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertNotNil(FileStatus.of(path("q")))
        XCTAssertNotNil(FileStatus.of(path("z")))
    }

    func testFuseNeverReplacesItsImage() throws {
        try FileManager.default.createDirectory(atPath: path("img"), withIntermediateDirectories: true)
        let image = try copy(photo, "img/a.jpg")
        let before = try digest(image)
        try "\(image)\ta caption\n".write(toFile: path("pairs.tsv"), atomically: true, encoding: .utf8)
        for args in [["--image", image, "--text", "hi"], ["--pairs", path("pairs.tsv")]] {
            let r = try runVLM(["fuse"] + args + ["--image-model", tinyResNet, "--text-model", tinyBERT, "-o", image])
            assertRefused(r, status: 64, ["a.jpg", "an input of this job"])
        }
        XCTAssertEqual(try digest(image), before)
    }

    func testAnotherJobsPartialFolderAndLockAreRefusedThroughLinksToo() throws {
        try FileManager.default.createDirectory(atPath: path("imgs"), withIntermediateDirectories: true)
        for k in 0..<8 { _ = try copy(photo, "imgs/\(k).jpg") }
        let a = path("A.npy")
        try FileManager.default.createSymbolicLink(atPath: path("pl"), withDestinationPath: a + ".partial")
        let job = try startPaused(["embed-image", path("imgs"), "--model", tinyResNet, "--batch-size", "2", "-o", a], afterUnits: 1)
        defer { kill(job.processIdentifier, SIGKILL); job.waitUntilExit() }
        for out in [path("pl/rows.f32"), path("pl/journal.jsonl"), path(".A.npy.lock")] {
            assertRefused(try runVLM(["embed-text", "--model", tinyBERT, "hello", "-o", out]), status: 64, [out])
        }
    }

    /// Millions of tiny entries are refused by a count that decodes nothing, not after a parse
    /// of seconds and gigabytes (the message says which check refused them).
    func testAHeaderOfMillionsOfValuesIsRefusedBeforeItIsDecoded() throws {
        var header = "{"
        for k in 0..<450_000 { header += (k > 0 ? "," : "") + "\"t\(k)\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}" }
        header += "}"
        try safetensors(header).write(to: URL(fileURLWithPath: path("many.safetensors")))
        assertRefused(try runVLM(["inspect", path("many.safetensors")]), status: 1, ["holds more entries than the 262144 tensors"])
    }

    func testADuplicatedTokenizerConfigKeyTakesTheLast() throws {
        let plain = try runVLM(["tokenize", "--model", tinyBERT, "Hello World"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let m = path("m")
        try FileManager.default.copyItem(atPath: tinyBERT, toPath: m)
        try #"{"do_lower_case": false, "do_lower_case": true}"#.write(toFile: m + "/tokenizer_config.json", atomically: true, encoding: .utf8)
        let r = try runVLM(["tokenize", "--model", m, "Hello World"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, plain.stdout)
        XCTAssertFalse(r.out.contains("[UNK]"), r.out)
    }
}
