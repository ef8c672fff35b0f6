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
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-pre-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }  // the output, its sidecars and lock
        let out = dir.appendingPathComponent("pre.npy").path
        let r = try runVLM(["preprocess"] + names.map { imageFixtures.appendingPathComponent($0).path } + ["-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let got = try NPY.read(path: out)
        XCTAssertEqual(got.shape, [names.count, 3, 224, 224])
        for (i, n) in names.enumerated() {
            let ref = try NPY.read(path: imageFixtures.appendingPathComponent(n.replacingOccurrences(of: ".", with: "_") + ".tensor.npy").path)
            // The README's promise: each value within one uint8 step (1/255/std ≤ 0.0175) of
            // torchvision's, and near-identity overall.
            let row = got.rows(i..<(i + 1)).data
            XCTAssertLessThanOrEqual(zip(row, ref.data).map { abs($0 - $1) }.max()!, 0.0176, n)
            XCTAssertLessThanOrEqual(relativeError(row, ref.data), 1e-3, n)
        }
        let bad = try runVLM(["preprocess", "/nonexistent.jpg", "-o", out])
        XCTAssertEqual(bad.status, 1)
        XCTAssertEqual(bad.stderr, "vlm: error: /nonexistent.jpg: cannot read: no such file or directory\n")
    }
}

final class Resize232CLITests: XCTestCase {
    /// torchvision's V2 weights (the registry's default ResNets) resize to 232: --resize 232, and
    /// a model folder whose preprocess.json says so, equal torchvision's Resize(232) →
    /// CenterCrop(224) on every image case, each value within one uint8 step.
    func testResize232EqualsTorchvision() throws {
        struct Case: Decodable { let name: String, file: String }
        let cases = try JSONDecoder().decode([Case].self, from: Data(contentsOf: imageFixtures.appendingPathComponent("cases.json")))
        XCTAssertGreaterThanOrEqual(cases.count, 20)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-232-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("model"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(#"{"resize": 232, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}"#.utf8)
            .write(to: dir.appendingPathComponent("model/preprocess.json"))
        let files = cases.map { imageFixtures.appendingPathComponent($0.file).path }
        let n = 3 * 224 * 224
        var differsFrom256 = 0
        for flags in [["--resize", "232"], ["--model", dir.appendingPathComponent("model").path]] {
            let out = dir.appendingPathComponent("x.npy").path
            let r = try runVLM(["preprocess"] + flags + files + ["-o", out])
            XCTAssertEqual(r.status, 0, r.stderr)
            let got = try NPY.read(path: out)
            XCTAssertEqual(got.shape, [cases.count, 3, 224, 224])
            for (i, c) in cases.enumerated() {
                let want = try NPY.read(path: imageFixtures.appendingPathComponent("\(c.name).tensor232.npy").path).data
                let row = got.data[(i * n)..<((i + 1) * n)]
                XCTAssertLessThanOrEqual(zip(row, want).map { abs($0 - $1) }.max()!, 0.0176, "\(c.file) \(flags)")
                let at256 = try NPY.read(path: imageFixtures.appendingPathComponent("\(c.name).tensor.npy").path).data
                if zip(row, at256).map({ abs($0 - $1) }).max()! > 0.0176 { differsFrom256 += 1 }
            }
        }
        XCTAssertGreaterThanOrEqual(differsFrom256, 2 * (cases.count - 4), "232 is not 256: the test tells them apart")
    }
}

final class EmbedImageFilesTests: XCTestCase {
    var dir: URL!
    let tiny = fixtures.appendingPathComponent("resnet/bottleneck_f32").path

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-files-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("imgs/sub"), withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ n: String) -> String { dir.appendingPathComponent(n).path }

    /// Good images and one of each kind of bad file, in a folder tree.
    func makeFolder() throws -> (good: [String], bad: [String: String]) {
        let fm = FileManager.default
        var good: [String] = []
        for (src, dst) in [("astronaut.jpg", "imgs/a.jpg"), ("cmyk.jpg", "imgs/b.JPG"), ("palette.png", "imgs/c.png"),
                           ("chelsea.png", "imgs/sub/d.png"), ("gray16.png", "imgs/sub/e.png")] {
            try fm.copyItem(atPath: imageFixtures.appendingPathComponent(src).path, toPath: path(dst))
            good.append(path(dst))
        }
        let jpeg = try Data(contentsOf: imageFixtures.appendingPathComponent("rocket.jpg"))
        var bad: [String: String] = [:]
        fm.createFile(atPath: path("imgs/empty.jpg"), contents: Data()); bad[path("imgs/empty.jpg")] = "empty"
        fm.createFile(atPath: path("imgs/notes.png"), contents: Data("not a picture".utf8)); bad[path("imgs/notes.png")] = "not_an_image"
        fm.createFile(atPath: path("imgs/sub/cut.jpg"), contents: jpeg.prefix(jpeg.count / 3)); bad[path("imgs/sub/cut.jpg")] = "corrupt"
        try fm.copyItem(atPath: imageFixtures.appendingPathComponent("hubble.jpg").path, toPath: path("imgs/huge.jpg"))
        bad[path("imgs/huge.jpg")] = "too_large"
        fm.createFile(atPath: path("imgs/readme.txt"), contents: Data("ignored: not an image extension".utf8))
        // A folder whose name looks like an image: unreadable as a file.
        try fm.createDirectory(atPath: path("imgs/folder.jpg"), withIntermediateDirectories: true)
        bad[path("imgs/folder.jpg")] = "unreadable"
        return (good, bad)
    }

    func testFolderWithBadFilesKeepsEveryGoodRow() throws {
        let (good, bad) = try makeFolder()
        let out = path("feat.npy")
        let r = try runVLM(["embed-image", path("imgs"), "--model", tiny, "-o", out, "--batch-size", "3", "--max-pixels", "500000"])
        XCTAssertEqual(r.status, 2, "exit 2 when items were skipped: \(r.stderr)")
        let ids = try String(contentsOfFile: out + ".ids.txt", encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(Set(ids), Set(good))
        XCTAssertEqual(ids, ids.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }, "sorted order")
        let feats = try NPY.read(path: out)
        XCTAssertEqual(feats.shape, [good.count, 256])
        // Each row equals that image embedded alone.
        for (i, id) in ids.enumerated() {
            let one = try runVLM(["embed-image", id, "--model", tiny, "--format", "tsv", "--quiet"])
            let v = one.out.split(separator: "\n")[0].split(separator: "\t").dropFirst().map { Float($0)! }
            XCTAssertLessThanOrEqual(relativeError(feats.rows(i..<(i + 1)).data, v), 1e-6, id)
        }
        let errors = try String(contentsOfFile: out + ".errors.jsonl", encoding: .utf8).split(separator: "\n")
        var kinds: [String: String] = [:]
        for line in errors {
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: String]
            kinds[obj["id"]!] = obj["kind"]!
        }
        XCTAssertEqual(kinds, bad)
        for b in bad.keys { XCTAssertTrue(r.stderr.contains("vlm: warning: \(b)"), r.stderr) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".partial"))
        // --errors fail stops at the first bad file.
        let f = try runVLM(["embed-image", path("imgs"), "--model", tiny, "-o", path("f.npy"), "--errors", "fail", "--quiet"])
        XCTAssertEqual(f.status, 1)
        XCTAssertTrue(f.stderr.hasPrefix("vlm: error: "), f.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("f.npy")))
    }

    func testAllGoodExitsZeroAndFormatsAgree() throws {
        let (good, _) = try makeFolder()
        let listFile = path("list.txt")
        try Data((good.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: listFile))
        let npy = try runVLM(["embed-image", "--list", listFile, "--model", tiny, "-o", path("x.npy"), "--layer", "logits"])
        XCTAssertEqual(npy.status, 0, npy.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("x.npy.errors.jsonl")))
        let f32 = try runVLM(["embed-image", "--list", "-", "--model", tiny, "-o", path("x.f32"), "--layer", "logits"], stdin: Data(good.joined(separator: "\n").utf8))
        // A listed path that does not exist is skipped as unreadable; the others keep their rows.
        let missing = try runVLM(["embed-image", "--list", "-", "--model", tiny, "-o", path("m.npy")],
                                 stdin: Data((good + [path("imgs/nope.jpg")]).joined(separator: "\n").utf8))
        XCTAssertEqual(missing.status, 2, missing.stderr)
        XCTAssertEqual(try NPY.read(path: path("m.npy")).shape, [good.count, 256])
        XCTAssertTrue(try String(contentsOfFile: path("m.npy.errors.jsonl"), encoding: .utf8).contains("\"kind\":\"unreadable\""))
        XCTAssertEqual(f32.status, 0, f32.stderr)
        let a = try NPY.read(path: path("x.npy"))
        let raw = try Data(contentsOf: URL(fileURLWithPath: path("x.f32")))
        XCTAssertEqual(raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }, a.data)
        XCTAssertEqual(try String(contentsOfFile: path("x.f32.ids.txt"), encoding: .utf8), good.joined(separator: "\n") + "\n")
        let jl = try runVLM(["embed-image"] + good + ["--model", tiny, "--layer", "logits", "--quiet"])
        XCTAssertEqual(jl.status, 0)
        let rows = jl.out.split(separator: "\n")
        XCTAssertEqual(rows.count, good.count)
        let first = try JSONSerialization.jsonObject(with: Data(rows[0].utf8)) as! [String: Any]
        XCTAssertEqual(first["id"] as? String, good[0])
        // The JSON vectors are the .npy rows of the same job.
        XCTAssertEqual(try runVLM(["embed-image"] + good + ["--model", tiny, "--layer", "logits", "--quiet", "-o", path("logits.npy")]).status, 0)
        let logits = try NPY.read(path: path("logits.npy"))
        XCTAssertEqual(logits.shape, [good.count, 10])
        for (i, line) in rows.enumerated() {
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            XCTAssertEqual(obj["id"] as? String, good[i])
            let v = (obj["vector"] as! [NSNumber]).map(\.floatValue)
            XCTAssertLessThanOrEqual(relativeError(v, Array(logits.data[(i * 10)..<((i + 1) * 10)])), 1e-6, "row \(i)")
        }
        XCTAssertTrue(jl.stderr.isEmpty, "--quiet: \(jl.stderr)")
    }

    func testShardsPartitionTheSortedInput() throws {
        let (good, _) = try makeFolder()
        var union: [String] = []
        for i in 1...3 {
            let out = path("s\(i).tsv")
            let r = try runVLM(["embed-image", path("imgs"), "--model", tiny, "--shard", "\(i)/3", "-o", out, "--quiet"])
            XCTAssertTrue(r.status == 0 || r.status == 2, r.stderr)
            if FileManager.default.fileExists(atPath: out) {
                union += try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map { String($0.split(separator: "\t")[0]) }
            }
        }
        // Without --max-pixels the 1000×872 photo is a good image too.
        XCTAssertEqual(union, (good + [path("imgs/huge.jpg")]).sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        XCTAssertEqual(try runVLM(["embed-image", path("imgs"), "--shard", "4/3"]).status, 64)
    }

    /// A job killed with SIGKILL (twice) and resumed ends byte-identical to an uninterrupted run.
    func testResumeAfterSIGKILLIsByteIdentical() throws {
        let fm = FileManager.default
        let names = ["astronaut.jpg", "coffee.jpg", "chelsea.png", "rocket.jpg", "palette.png", "cmyk.jpg"]
        var paths: [String] = []
        for k in 0..<24 {
            let p = path("imgs/\(String(format: "%03d", k))_\(names[k % names.count])")
            try fm.copyItem(atPath: imageFixtures.appendingPathComponent(names[k % names.count]).path, toPath: p)
            paths.append(p)
        }
        fm.createFile(atPath: path("imgs/010_broken.jpg"), contents: Data("broken".utf8))
        let args = ["embed-image", path("imgs"), "--model", "synthetic:resnet50", "--batch-size", "2", "--quiet", "--threads", "2"]
        let reference = try runVLM(args + ["-o", path("ref.npy")])
        XCTAssertEqual(reference.status, 2, reference.stderr)

        let out = path("job.npy")
        for killAt in [3, 8] {
            try killPaused(args + ["-o", out] + (killAt == 3 ? [] : ["--resume"]), afterUnits: killAt)
            XCTAssertFalse(fm.fileExists(atPath: out), "no output before the job ends")
        }
        let resumed = try runVLM(args + ["-o", out, "--resume"])
        XCTAssertEqual(resumed.status, 2, resumed.stderr)
        for suffix in ["", ".ids.txt", ".errors.jsonl"] {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + suffix)),
                           try Data(contentsOf: URL(fileURLWithPath: path("ref.npy") + suffix)), "file \(suffix)")
        }
        // A finished job leaves no partial; --resume then finds it complete (issue 28).
        XCTAssertFalse(fm.fileExists(atPath: out + ".partial"))
        let r = try runVLM(args.filter { $0 != "--quiet" } + ["-o", out, "--resume"])
        XCTAssertEqual(r.status, 2, r.stderr)  // the finished job's outcome: one item failed
        XCTAssertTrue(r.stderr.contains("is complete (24 rows, 1 failed item listed in"), r.stderr)
        // A different job (other options) cannot resume from a partial state.
        try killPaused(args + ["-o", out], afterUnits: 2)
        let other = try runVLM(args + ["-o", out, "--resume", "--layer", "logits"])
        XCTAssertEqual(other.status, 1)
        XCTAssertTrue(other.stderr.contains("holds a different job (other inputs, model or options: layer)"), other.stderr)
    }
}

final class FuseAndClassifyTests: XCTestCase {
    let tinyResNet = fixtures.appendingPathComponent("resnet/bottleneck_f32").path
    let tinyBert = fixtures.appendingPathComponent("bert/tiny").path

    func rows(_ r: RunResult) -> [[Float]] {
        r.out.split(separator: "\n").map { $0.split(separator: "\t").dropFirst().map { Float($0)! } }
    }

    /// fuse = embed-image ⧺ embed-text, with and without per-part normalisation.
    func testFusedEqualsConcatenatedOutputs() throws {
        let imgs = ["astronaut.jpg", "coffee.jpg", "palette.png"].map { imageFixtures.appendingPathComponent($0).path }
        let texts = ["An astronaut in a white suit.", "A cup of coffee on a saucer.", "naïve café 東京"]
        let pairs = zip(imgs, texts).map { "\($0)\t\($1)" }.joined(separator: "\n")
        for normalize in [false, true] {
            let fused = try runVLM(["fuse", "--pairs", "-", "--image-model", tinyResNet, "--text-model", tinyBert, "--format", "tsv", "--quiet"]
                                   + (normalize ? ["--normalize-parts"] : []), stdin: Data(pairs.utf8))
            XCTAssertEqual(fused.status, 0, fused.stderr)
            let image = try runVLM(["embed-image"] + imgs + ["--model", tinyResNet, "--format", "tsv", "--quiet"])
            let text = try runVLM(["embed-text", "--model", tinyBert, "--format", "tsv"] + texts)
            let textRows = text.out.split(separator: "\n").map { $0.split(separator: "\t").dropFirst().map { Float($0)! } }
            let f = rows(fused), im = rows(image)
            XCTAssertEqual(f.count, 3)
            for i in 0..<3 {
                var a = im[i], b = textRows[i]
                if normalize {
                    let na = a.reduce(0) { $0 + $1 * $1 }.squareRoot(), nb = b.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    a = a.map { $0 / na }; b = b.map { $0 / nb }
                }
                XCTAssertEqual(f[i].count, 256 + 32)
                XCTAssertLessThanOrEqual(relativeError(f[i], a + b), 1e-6, "pair \(i), normalize \(normalize)")
            }
        }
        // One pair from flags, JSON lines, and logits as the image part (the seed snippet's choice).
        let one = try runVLM(["fuse", "--image", imgs[0], "--text", texts[0], "--image-model", tinyResNet, "--text-model", tinyBert,
                              "--image-layer", "logits", "--format", "tsv", "--quiet"])
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertEqual(rows(one)[0].count, 10 + 32)
        func single(_ args: [String]) throws -> [Float] {
            let r = try runVLM(args + ["--format", "tsv", "--quiet"])
            XCTAssertEqual(r.status, 0, r.stderr)
            return rows(r).first ?? []
        }
        let logitsRow = try single(["embed-image", imgs[0], "--model", tinyResNet, "--layer", "logits"])
        let textRow = try single(["embed-text", "--model", tinyBert, texts[0]])
        XCTAssertLessThanOrEqual(relativeError(rows(one)[0], logitsRow + textRow), 1e-6, "logits ⧺ text")
        // A JSON-lines pair (its text holding a newline, which TSV cannot): image ⧺ text too.
        let jl = try runVLM(["fuse", "--pairs", "-", "--image-model", tinyResNet, "--text-model", tinyBert, "--quiet", "--format", "tsv"],
                            stdin: Data("{\"image\": \(jsonString(imgs[1])), \"text\": \"a\\nb\"}\n".utf8))
        XCTAssertEqual(jl.status, 0, jl.stderr)
        let want = try single(["embed-image", imgs[1], "--model", tinyResNet]) + (try single(["embed-text", "--model", tinyBert, "a\nb"]))
        XCTAssertEqual(rows(jl).count, 1)
        XCTAssertLessThanOrEqual(relativeError(rows(jl).first ?? [], want), 1e-6, "JSON-lines pair")
        let bad = try runVLM(["fuse", "--pairs", "-", "--image-model", tinyResNet, "--text-model", tinyBert, "--quiet"],
                             stdin: Data("no tab here\n".utf8))
        XCTAssertEqual(bad.status, 2)
        XCTAssertEqual(bad.stderr, "vlm: warning: <stdin>:1: expected an image path, a tab, then the text (skipped)\n")
    }

    func testClassifyTopKFromLogits() throws {
        // A checkpoint with a 1000-class fc: the tiny model's weights with a random 1000-way head.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-cls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = try SafetensorsFile(path: tinyResNet + "/model.safetensors")
        var entries: [(String, Tensor)] = []
        for k in src.names where src.tensors[k]!.dtype.isFloat && !k.hasPrefix("fc.") { entries.append((k, try src.floatTensor(k))) }
        var rng = SeededRandom(seed: 3)
        entries.append(("fc.weight", Tensor(shape: [1000, 256], data: rng.normals(256_000, std: 0.5))))
        entries.append(("fc.bias", Tensor(shape: [1000], data: rng.normals(1000, std: 0.1))))
        let model = dir.appendingPathComponent("model.safetensors").path
        try writeSafetensors(entries, to: model)
        let img = imageFixtures.appendingPathComponent("chelsea.jpg").path
        let r = try runVLM(["classify", img, "--model", model, "--top", "3", "--format", "jsonl"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        let top = obj["top"] as! [[String: Any]]
        XCTAssertEqual(top.count, 3)
        let logits = try runVLM(["embed-image", img, "--model", model, "--layer", "logits", "--format", "tsv", "--quiet"])
        let l = rows(logits)[0]
        let m = l.max()!
        let e = l.map { exp(Double($0 - m)) }, s = e.reduce(0, +)
        let order = l.indices.sorted { l[$0] > l[$1] }
        let labels = try String(contentsOfFile: fixtures.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("models/imagenet_classes.txt").path, encoding: .utf8).split(separator: "\n")
        for k in 0..<3 {
            XCTAssertEqual(top[k]["index"] as? Int, order[k])
            XCTAssertEqual(top[k]["label"] as? String, String(labels[order[k]]))
            XCTAssertEqual((top[k]["probability"] as! NSNumber).doubleValue, e[order[k]] / s, accuracy: 1e-5)
        }
        let tsv = try runVLM(["classify", img, "--model", model, "--top", "2"])
        XCTAssertTrue(tsv.out.hasPrefix(img + "\t" + labels[order[0]] + ":"), tsv.out)
        let noFC = try runVLM(["classify", img, "--model", fixtures.appendingPathComponent("resnet/basic_f16").path])
        XCTAssertEqual(noFC.status, 1)
        XCTAssertTrue(noFC.stderr.contains("7 classes"), noFC.stderr)
    }
}
