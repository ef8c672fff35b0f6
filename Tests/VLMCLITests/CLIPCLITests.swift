// CLIP checkpoints on the command line, as a user runs them: `vlm embed-image`, `embed-text`,
// `fuse` and `worker` on open_clip and Hugging Face folders, from picture files and texts to
// vectors equal to open_clip's preprocessing + model (Pillow's bicubic resize, centre crop,
// CLIP's mean and std) and to transformers' tokenizer + get_text_features — L2-normalised, as
// CLIP vectors are compared. Fixtures: scripts/export_clip_model_fixtures.py (`make fixtures`).

import Foundation
import XCTest
import VLMCore
import VLMIO
import VLMModels

final class CLIPCLITests: XCTestCase {
    let models = fixtures.appendingPathComponent("generated/clip-models").path
    var dir: URL!

    override func setUpWithError() throws {
        guard FileManager.default.fileExists(atPath: models + "/done") else { throw FixtureMissing(path: models + " (run `make fixtures`)") }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-clip-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { if let dir { try? FileManager.default.removeItem(at: dir) } }

    func path(_ n: String) -> String { dir.appendingPathComponent(n).path }

    /// Each row of `got` against the same row of the reference, by relative error.
    func assertRows(_ got: Tensor, _ reference: String, rows: [Int]? = nil, columns: Range<Int>? = nil,
                    file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try NPY.read(path: reference)
        let d = ref.shape[1], width = got.shape[1]
        let cols = columns ?? 0..<width
        XCTAssertEqual(cols.count, d, file: file, line: line)
        for (i, r) in (rows ?? Array(0..<ref.shape[0])).enumerated() {
            let a = Array(got.data[(i * width + cols.lowerBound)..<(i * width + cols.upperBound)]), b = Array(ref.data[(r * d)..<((r + 1) * d)])
            XCTAssertLessThanOrEqual(relativeError(a, b), 1e-4, "row \(i) against reference row \(r)", file: file, line: line)
            XCTAssertEqual(a.reduce(0.0) { $0 + Double($1) * Double($1) }, 1, accuracy: 1e-5, "unit vector", file: file, line: line)
        }
    }

    func testImagesFromFilesEqualOpenCLIPsPreprocessingAndModel() throws {
        for name in ["oc-vit", "oc-rn", "hf-vit", "full-rn50", "full-vitb32"] {
            // The full-size models on the naive backend are checked at the model level (CLIPParityTests).
            for backend in name.hasPrefix("full") ? ["blas"] : ["blas", "naive"] {
                let out = path("\(name)-\(backend).npy")
                let r = try runVLM(["embed-image", models + "/images", "--model", models + "/" + name, "-o", out, "--backend", backend])
                XCTAssertEqual(r.status, 0, r.stderr)
                try assertRows(try NPY.read(path: out), models + "/\(name)/e2e_image_features.npy")
                if name == "oc-rn" && backend == "blas" {
                    // --no-normalize-images: open_clip's encode_image as it is (the norms differ from 1).
                    let raw = try runVLM(["embed-image", models + "/images", "--model", models + "/" + name, "-o", path("raw.npy"), "--no-normalize-images"])
                    XCTAssertEqual(raw.status, 0, raw.stderr)
                    let (a, b) = (try NPY.read(path: path("raw.npy")), try NPY.read(path: out))
                    let norm = a.data[0..<32].reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
                    XCTAssertGreaterThan(abs(norm - 1), 0.01)
                    XCTAssertLessThanOrEqual(relativeError(a.data[0..<32].map { Float(Double($0) / norm) }, Array(b.data[0..<32])), 1e-6)
                }
                let ids = try String(contentsOfFile: out + ".ids.txt", encoding: .utf8)
                XCTAssertEqual(ids.split(separator: "\n").map { ($0 as NSString).lastPathComponent }, ["a-wide.png", "b-small.png", "c-gray.png", "d-photo.jpg"])
            }
        }
    }

    func testTextsEqualTransformersAndShareTheImagesSpace() throws {
        let hf = models + "/hf-vit"
        let out = path("t.npy")
        let r = try runVLM(["embed-text", "--file", hf + "/texts.txt", "--model", hf, "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("1 of 4 texts were truncated to 77 tokens"), r.stderr)
        try assertRows(try NPY.read(path: out), hf + "/e2e_text_features.npy")
        // --max-length cuts sooner, the end token kept; --no-truncate makes the long one an error row.
        let cut = try runVLM(["embed-text", "--model", hf, "--max-length", "5", "-o", path("cut.npy"), "a photo of a red car at night"])
        XCTAssertEqual(cut.status, 0, cut.stderr)
        let strict = try runVLM(["embed-text", "--file", hf + "/texts.txt", "--model", hf, "--no-truncate", "-o", path("strict.npy")])
        XCTAssertEqual(strict.status, 2, strict.stderr)
        XCTAssertTrue(strict.stderr.contains("over the maximum length of 77, and truncation is off"), strict.stderr)
        XCTAssertEqual(try NPY.read(path: path("strict.npy")).shape, [3, 24])

        // Image and text rows of one CLIP checkpoint name one model: the same digest and files.
        let img = path("i.npy")
        XCTAssertEqual(try runVLM(["embed-image", models + "/images", "--model", hf, "-o", img]).status, 0)
        func space(_ p: String) throws -> [String: Any] {
            let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: p + ".meta.json"))) as! [String: Any]
            return (meta["definition"] as! [String: Any])["space"] as! [String: Any]
        }
        let (si, st) = (try space(img), try space(out))
        let (mi, mt) = ((si["models"] as! [[String: Any]])[0], (st["models"] as! [[String: Any]])[0])
        XCTAssertEqual(mi["role"] as? String, "image")
        XCTAssertEqual(mt["role"] as? String, "text")
        XCTAssertEqual(mi["sha256"] as? String, mt["sha256"] as? String)
        XCTAssertEqual(mi["files"] as? [String: String], mt["files"] as? [String: String])
        XCTAssertEqual((si["options"] as! [String: String])["filter"], "bicubic")
        XCTAssertEqual((st["options"] as! [String: String])["pooling"], "clip_end_token")
        XCTAssertEqual((si["options"] as! [String: String])["normalize"], "true")
    }

    /// open_clip folders tokenize with open_clip's own tokenizer (its vocabulary file, its
    /// cleaning: ftfy's fixes, HTML entities unescaped twice, lower-casing): texts with entities,
    /// curly quotes, a ligature and full-width letters give open_clip's tokenize + encode_text.
    func testOpenCLIPFoldersTokenizeAsOpenCLIP() throws {
        for name in ["oc-vit", "oc-rn", "full-rn50", "full-vitb32"] {
            let folder = models + "/" + name
            let out = path("\(name).npy")
            let r = try runVLM(["embed-text", "--file", folder + "/texts.txt", "--model", folder, "-o", out])
            XCTAssertEqual(r.status, 0, r.stderr)
            try assertRows(try NPY.read(path: out), folder + "/e2e_text_features.npy")
        }
    }

    /// `vlm classify` with a CLIP model labels images zero-shot: probabilities equal open_clip's
    /// build_zero_shot_classifier and softmax(exp(logit_scale) · cosine) on 5 labels × 3 templates;
    /// the built-in imagenet set is CLIP's 80 templates, string for string.
    func testZeroShotClassificationEqualsOpenCLIP() throws {
        XCTAssertEqual(clipImageNetTemplates.count, 80)
        for name in ["oc-vit", "oc-rn"] {
            let folder = models + "/" + name
            struct Reference: Decodable { let labels: [String]; let templates: [String]; let probabilities: [[Float]]; let imagenet_templates: [String] }
            let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/zeroshot.json")))
            XCTAssertEqual(clipImageNetTemplates, ref.imagenet_templates)
            let labels = path("labels.txt")
            try (ref.labels.joined(separator: "\n") + "\n").write(toFile: labels, atomically: true, encoding: .utf8)
            let r = try runVLM(["classify", models + "/images", "--model", folder, "--labels", labels, "--format", "jsonl", "--top", "5"]
                               + ref.templates.flatMap { ["--template", $0] })
            XCTAssertEqual(r.status, 0, r.stderr)
            let rows = r.out.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
            XCTAssertEqual(rows.count, 4)
            for (i, row) in rows.enumerated() {
                let top = row["top"] as! [[String: Any]]
                XCTAssertEqual(top.count, 5)
                for entry in top {
                    let k = entry["index"] as! Int
                    XCTAssertEqual(entry["label"] as? String, ref.labels[k])
                    XCTAssertEqual((entry["probability"] as! NSNumber).floatValue, ref.probabilities[i][k], accuracy: 1e-4, "\(name) image \(i) label \(k)")
                }
                let probs = top.map { ($0["probability"] as! NSNumber).floatValue }
                XCTAssertEqual(probs, probs.sorted(by: >))
            }
            // The 80 templates run too, and --top is bounded by the labels.
            let all = try runVLM(["classify", models + "/images/a-wide.png", "--model", folder, "--labels", labels, "--templates", "imagenet", "--top", "9"])
            XCTAssertEqual(all.status, 0, all.stderr)
            XCTAssertEqual(all.out.split(separator: "\t").count, 6, all.out)
        }
        let oc = models + "/oc-vit"
        let noLabels = try runVLM(["classify", models + "/images", "--model", oc])
        XCTAssertEqual(noLabels.status, 64, noLabels.stderr)
        XCTAssertTrue(noLabels.stderr.contains("labels images zero-shot: give --labels FILE"), noLabels.stderr)
        let badTemplate = try runVLM(["classify", models + "/images", "--model", oc, "--labels", path("labels.txt"), "--template", "a photo"])
        XCTAssertEqual(badTemplate.status, 64, badTemplate.stderr)
        XCTAssertTrue(badTemplate.stderr.contains("must hold {} once"), badTemplate.stderr)
        let resnet = try runVLM(["classify", models + "/images", "--model", "synthetic:resnet18", "--template", "a {}"])
        XCTAssertEqual(resnet.status, 64, resnet.stderr)
        XCTAssertTrue(resnet.stderr.contains("are for a CLIP model"), resnet.stderr)
    }

    /// `vlm similarity --top K` finds each sentence's best photos across one CLIP checkpoint's two
    /// towers (scores equal to the cosines of the references), a file's nearest other rows, and
    /// refuses rows from different spaces.
    func testSimilarityTopAcrossTowers() throws {
        let hf = models + "/hf-vit"
        let (img, txt) = (path("img.npy"), path("txt.npy"))
        XCTAssertEqual(try runVLM(["embed-image", models + "/images", "--model", hf, "-o", img]).status, 0)
        XCTAssertEqual(try runVLM(["embed-text", "--file", hf + "/texts.txt", "--model", hf, "-o", txt]).status, 0)
        let r = try runVLM(["similarity", txt, img, "--top", "2", "--format", "jsonl"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "")
        let images = try NPY.read(path: hf + "/e2e_image_features.npy"), texts = try NPY.read(path: hf + "/e2e_text_features.npy")
        let names = ["a-wide.png", "b-small.png", "c-gray.png", "d-photo.jpg"]
        let lines = r.out.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(lines.count, 8)
        for (k, line) in lines.enumerated() {
            let q = k / 2
            var cos = (0..<4).map { j in (0..<24).reduce(Float(0)) { $0 + texts.data[q * 24 + $1] * images.data[j * 24 + $1] } }
            let order = cos.indices.sorted { cos[$0] > cos[$1] }
            let j = order[k % 2]
            XCTAssertEqual(line["rank"] as? Int, k % 2 + 1)
            XCTAssertEqual(((line["id"] as? String) ?? "").split(separator: "/").last.map(String.init), names[j])
            XCTAssertEqual((line["score"] as! NSNumber).floatValue, cos[j], accuracy: 1e-5)
            cos.removeAll()
        }
        // One file: each row's nearest other rows.
        let one = try runVLM(["similarity", img, "--top", "1"])
        XCTAssertEqual(one.status, 0, one.stderr)
        for line in one.out.split(separator: "\n") {
            let f = line.split(separator: "\t")
            XCTAssertEqual(f.count, 4)
            XCTAssertNotEqual(f[0], f[2], "a row is not its own match")
        }
        // An empty file has no matches (and no crash); a NaN score is never a match.
        let empty = path("empty.npy")
        try NPY.encode(Tensor(shape: [0, 24], data: [])).write(to: URL(fileURLWithPath: empty))
        let none = try runVLM(["similarity", txt, empty, "--top", "2"])
        XCTAssertEqual(none.status, 0, none.stderr)
        XCTAssertEqual(none.out, "")
        let nan = path("nan.npy")
        try NPY.encode(Tensor(shape: [3, 2], data: [.nan, 1, 1, 0, 0.5, 0.5])).write(to: URL(fileURLWithPath: nan))
        let skip = try runVLM(["similarity", nan, "--top", "2", "--format", "jsonl"])
        XCTAssertEqual(skip.status, 0, skip.stderr)
        XCTAssertEqual(skip.out.split(separator: "\n").count, 2, skip.out)   // rows 1 and 2 match each other; row 0 nothing
        XCTAssertFalse(skip.out.contains("{}"), skip.out)
        // Rows of different spaces of the same width are refused: a BERT's text rows against CLIP
        // image rows (both 32-d), and one CLIP tower's rows against another checkpoint's.
        let oc = models + "/oc-vit", bert = fixtures.appendingPathComponent("bert/tiny").path
        let (ocImg, bertTxt, ocTxt) = (path("oc-img.npy"), path("bert.npy"), path("oc-txt.npy"))
        XCTAssertEqual(try runVLM(["embed-image", models + "/images", "--model", oc, "-o", ocImg]).status, 0)
        XCTAssertEqual(try runVLM(["embed-text", "--model", bert, "-o", bertTxt, "a cat"]).status, 0)
        XCTAssertEqual(try runVLM(["embed-text", "--model", models + "/oc-rn", "-o", ocTxt, "a cat"]).status, 0)
        for (query, rows, says) in [(bertTxt, ocImg, "only one CLIP checkpoint's image and text rows share a space"),
                                    (ocTxt, ocImg, "only one CLIP checkpoint's image and text rows share a space")] {
            let bad = try runVLM(["similarity", query, rows, "--top", "1"])
            XCTAssertEqual(bad.status, 1, bad.stderr)
            XCTAssertTrue(bad.stderr.contains(says), bad.stderr)
            XCTAssertEqual(bad.out, "")
        }
    }

    /// `vlm bench clip-image|clip-text` runs a CLIP folder's towers on both backends, which agree.
    func testBenchRunsBothTowers() throws {
        for workload in ["clip-image", "clip-text"] {
            let r = try runVLM(["bench", workload, "--model", models + "/oc-rn", "--batch", "2", "--seq", "9", "--min-time", "0",
                                "--min-iterations", "1", "--json"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let o = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
            XCTAssertEqual((o["results"] as! [[String: Any]]).count, 2)
            XCTAssertLessThanOrEqual((o["naiveVsBlasRelativeError"] as! NSNumber).doubleValue, 1e-5)
            XCTAssertGreaterThan((o["gflopPerRun"] as! NSNumber).doubleValue, 0)
        }
        let none = try runVLM(["bench", "clip-image"])
        XCTAssertEqual(none.status, 64, none.stderr)
        XCTAssertTrue(none.stderr.contains("clip-image needs --model"), none.stderr)
    }

    func testPairsAndTheWorkerUseBothTowers() throws {
        let hf = models + "/hf-vit"
        let pairs = path("pairs.tsv")
        try "\(models)/images/a-wide.png\ta photo of a cat\n\(models)/images/c-gray.png\tA red car parked on the street at night.\n"
            .write(toFile: pairs, atomically: true, encoding: .utf8)
        let out = path("f.npy")
        let r = try runVLM(["fuse", "--pairs", pairs, "--image-model", hf, "--text-model", hf, "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let fused = try NPY.read(path: out)
        XCTAssertEqual(fused.shape, [2, 48])
        try assertRows(fused, hf + "/e2e_image_features.npy", rows: [0, 2], columns: 0..<24)
        try assertRows(fused, hf + "/e2e_text_features.npy", rows: [0, 1], columns: 24..<48)

        let requests = "{\"id\":1,\"text\":\"a photo of a cat\"}\n{\"id\":2,\"image\":\"\(models)/images/b-small.png\"}\n"
        let w = try runVLM(["worker", "--image-model", hf, "--text-model", hf, "--vectors", "json"], stdin: Data(requests.utf8))
        XCTAssertEqual(w.status, 0, w.stderr)
        let lines = w.out.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        func vector(_ k: Int) -> Tensor {
            let v = (lines[k]["vector"] as! [NSNumber]).map(\.floatValue)
            return Tensor(shape: [1, v.count], data: v)
        }
        try assertRows(vector(0), hf + "/e2e_text_features.npy", rows: [0])
        try assertRows(vector(1), hf + "/e2e_image_features.npy", rows: [1])
    }

    /// What a CLIP folder cannot do, or a user asks wrongly, is one line and the documented code.
    func testMisuseIsOneClearLine() throws {
        let hf = models + "/hf-vit", oc = models + "/oc-vit"
        func check(_ args: [String], _ status: Int32, _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let r = try runVLM(args + ["-o", path("x.npy")])
            XCTAssertEqual(r.status, status, r.stderr, file: file, line: line)
            XCTAssertTrue(r.stderr.contains(message), r.stderr, file: file, line: line)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr, file: file, line: line)
            XCTAssertFalse(FileManager.default.fileExists(atPath: path("x.npy")), file: file, line: line)
        }
        try check(["embed-text", "--model", hf, "--pooling", "mean", "hi"], 64, "--pooling mean: a CLIP text tower pools at its end token")
        try check(["embed-text", "--model", hf, "--max-length", "78", "hi"], 64, "--max-length 78: this CLIP text tower takes 2…77 tokens")
        // An open_clip folder without open_clip's vocabulary file (not in the folder, not fetched).
        let bare = path("bare-oc")
        try FileManager.default.createDirectory(atPath: bare, withIntermediateDirectories: true)
        for f in ["open_clip_config.json", "open_clip_model.safetensors"] { try FileManager.default.createSymbolicLink(atPath: bare + "/" + f, withDestinationPath: oc + "/" + f) }
        let r = try runVLM(["embed-text", "--model", bare, "hi", "-o", path("x.npy")], env: ["VLM_MODELS": path("no-models")])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("no bpe_simple_vocab_16e6.txt.gz here or in") && r.stderr.contains("vlm models fetch clip-bpe"), r.stderr)
        try check(["embed-image", models + "/images", "--model", hf, "--crop", "40"], 64, "crops to 40 px (--crop, or the config's image size), but this CLIP model takes 48-px images")
        let npy = path("in32.npy")
        try NPY.encode(Tensor(shape: [2, 3, 32, 32], data: [Float](repeating: 0.1, count: 2 * 3 * 32 * 32))).write(to: URL(fileURLWithPath: npy))
        try check(["embed-image", "--model", hf, "--input-npy", npy], 1, "shape [2, 3, 32, 32], but this CLIP model takes (N, 3, 48, 48)")
        try check(["embed-image", models + "/images", "--model", hf, "--layer", "logits"], 1, "a CLIP image tower has no logits")
        try check(["embed-image", models + "/images", "--model", hf + "/model.safetensors"], 1, "a CLIP state dict without its config")
        try check(["embed-text", "--model", hf + "/model.safetensors", "hi"], 1, "a CLIP state dict without its config")
        try check(["embed-text", "--model", hf, "--clip-config", "ViT-B-32", "hi"], 64, "is not a bare open_clip state dict (a CLIP folder with its config")
        try check(["embed-text", "--model", oc + "/open_clip_model.safetensors", "--clip-config", "ViT-B-99", "hi"], 64, "--clip-config ViT-B-99: not an open_clip architecture vlm runs")
        try check(["embed-image", models + "/images", "--model", models + "/ts-extra/global.pt"], 1, "refusing global 'os.system'")
    }

    /// open_clip's transform on every shared test image (JPEG, progressive, PNG, gray, CMYK,
    /// 16-bit, palette, 1-bit, RGBA, LA, 1×1, 3000×10): open_clip resizes and crops in the file's
    /// own mode and converts to RGB last — NEAREST for palette and 1-bit images, premultiplied
    /// alpha for RGBA and LA, 16 bits for I;16 — and vlm's tensor is the same, level for level
    /// (CMYK within one level: Pillow's CMYK resize and conversion round differently).
    func testPreprocessingEqualsOpenCLIPsTransformOnEveryMode() throws {
        struct Case: Decodable { let name: String, file: String, mode: String }
        let refs = models + "/preprocess"
        let cases = try JSONDecoder().decode([Case].self, from: Data(contentsOf: URL(fileURLWithPath: refs + "/cases.json")))
        XCTAssertEqual(Set(cases.map(\.mode)), ["RGB", "L", "P", "RGBA", "LA", "I;16", "1", "CMYK"])
        let images = fixtures.appendingPathComponent("generated/images").path
        let out = path("pre.npy")
        let r = try runVLM(["preprocess"] + cases.map { images + "/" + $0.file } + ["--model", models + "/oc-rn", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let got = try NPY.read(path: out)
        XCTAssertEqual(got.shape, [cases.count, 3, 64, 64])
        let std: [Float] = [0.26862954, 0.26130258, 0.27577711], plane = 64 * 64
        for (i, c) in cases.enumerated() {
            let ref = try NPY.read(path: refs + "/\(c.name).npy")
            var worst: Float = 0
            for k in 0..<(3 * plane) {
                worst = max(worst, abs(got.data[i * 3 * plane + k] - ref.data[k]) * std[k / plane] * 255)
            }
            XCTAssertLessThanOrEqual(worst, c.mode == "CMYK" ? 1.001 : 0.001, "\(c.file) (\(c.mode)): \(worst) levels")
        }

        // --draft: the JPEGs decoded at the DCT scale Pillow's draft picks for 64 px, then open_clip's transform.
        let jpegs = cases.filter { $0.file.hasSuffix(".jpg") }
        XCTAssertGreaterThanOrEqual(jpegs.count, 10)
        let dr = try runVLM(["preprocess", "--draft"] + jpegs.map { images + "/" + $0.file } + ["--model", models + "/oc-rn", "-o", path("draft.npy")])
        XCTAssertEqual(dr.status, 0, dr.stderr)
        let drafted = try NPY.read(path: path("draft.npy"))
        for (i, c) in jpegs.enumerated() {
            let ref = try NPY.read(path: refs + "/draft-\(c.name).npy")
            let row = Array(drafted.data[(i * 3 * plane)..<((i + 1) * 3 * plane)])
            let worst = (0..<(3 * plane)).map { abs(row[$0] - ref.data[$0]) * std[$0 / plane] * 255 }.max()!
            XCTAssertLessThanOrEqual(worst, c.mode == "CMYK" ? 1.001 : 0.001, "draft \(c.file): \(worst) levels")
        }

        // resize_mode "squash" (the same weights, the config asking for it): both sides to 64, no crop.
        let squash = path("squash")
        try FileManager.default.createDirectory(atPath: squash, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: squash + "/open_clip_model.safetensors", withDestinationPath: models + "/oc-rn/open_clip_model.safetensors")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: models + "/oc-rn/open_clip_config.json"))) as! [String: Any]
        var pre = config["preprocess_cfg"] as! [String: Any]
        pre["resize_mode"] = "squash"
        config["preprocess_cfg"] = pre
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: squash + "/open_clip_config.json"))
        // Not tall_10x3000.jpg nor gray16.png: squashed (the height shrinking more than the
        // width), Pillow 13 runs its vertical pass first — by a rule not found in its sources
        // vlm read; vlm runs the horizontal first: 1 and 10 levels apart. Aspect-keeping resizes
        // (shortest, above) agree, portrait photos included.
        let picked = cases.filter { ["wide_3000x10_png", "palette_png", "coffee_jpg", "alpha_rgba_png", "chelsea_png"].contains($0.name) }
        XCTAssertEqual(picked.count, 5)
        let sq = try runVLM(["preprocess"] + picked.map { images + "/" + $0.file } + ["--model", squash, "-o", path("sq.npy")])
        XCTAssertEqual(sq.status, 0, sq.stderr)
        let squashed = try NPY.read(path: path("sq.npy"))
        for (i, c) in picked.enumerated() {
            let ref = try NPY.read(path: refs + "/squash-\(c.name).npy")
            let row = Array(squashed.data[(i * 3 * plane)..<((i + 1) * 3 * plane)])
            XCTAssertLessThanOrEqual(zip(row, ref.data).map { abs($0 - $1) }.max()! * 255 * 0.27, 0.001, c.file)
        }
    }

    /// OpenAI's released form (a traced TorchScript archive: the file itself, or its folder) and
    /// a bare open_clip state dict with --clip-config, from picture files and texts to open_clip's
    /// vectors — and the same rows through the worker, which takes the same model argument.
    func testOpenAIArchivesAndBareStateDicts() throws {
        let openai = models + "/oc-openai"
        let img = path("oa-img.npy"), txt = path("oa-txt.npy")
        var r = try runVLM(["embed-image", models + "/images", "--model", openai + "/RN-openai.pt", "-o", img])
        XCTAssertEqual(r.status, 0, r.stderr)
        try assertRows(try NPY.read(path: img), openai + "/e2e_image_features.npy")
        r = try runVLM(["embed-text", "--file", openai + "/texts.txt", "--model", openai, "-o", txt])
        XCTAssertEqual(r.status, 0, r.stderr)
        try assertRows(try NPY.read(path: txt), openai + "/e2e_text_features.npy")
        // The two towers' rows share one space (the archive's digest).
        r = try runVLM(["similarity", txt, img, "--top", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)

        // A bare state dict (named as a training run names it) beside open_clip's vocabulary.
        let run = path("run")
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: run + "/epoch_32.safetensors", withDestinationPath: models + "/full-rn50/open_clip_model.safetensors")
        try FileManager.default.createSymbolicLink(atPath: run + "/bpe_simple_vocab_16e6.txt.gz", withDestinationPath: models + "/full-rn50/bpe_simple_vocab_16e6.txt.gz")
        let bare = path("bare.npy")
        r = try runVLM(["embed-text", "--file", models + "/full-rn50/texts.txt", "--model", run + "/epoch_32.safetensors", "--clip-config", "RN50-quickgelu", "-o", bare])
        XCTAssertEqual(r.status, 0, r.stderr)
        try assertRows(try NPY.read(path: bare), models + "/full-rn50/e2e_text_features.npy")
        let meta = try String(contentsOfFile: bare + ".meta.json", encoding: .utf8)
        XCTAssertTrue(meta.contains("\"clip_config\":\"RN50-quickgelu\"") || meta.contains("\"clip_config\" : \"RN50-quickgelu\""), meta)
        // The worker takes the archive as its image and text model.
        let requests = "{\"id\":1,\"text\":\"A photo of a cat &amp;amp; a dog\"}\n{\"id\":2,\"image\":\"\(models)/images/b-small.png\"}\n"
        let w = try runVLM(["worker", "--image-model", openai + "/RN-openai.pt", "--text-model", openai + "/RN-openai.pt", "--vectors", "json"],
                           stdin: Data(requests.utf8))
        XCTAssertEqual(w.status, 0, w.stderr)
        let lines = w.out.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(lines.count, 2, w.out)
        func vector(_ k: Int) -> Tensor {
            let v = (lines[k]["vector"] as? [NSNumber] ?? []).map(\.floatValue)
            return Tensor(shape: [1, v.count], data: v)
        }
        try assertRows(vector(0), openai + "/e2e_text_features.npy", rows: [0])
        try assertRows(vector(1), openai + "/e2e_image_features.npy", rows: [1])
    }
}
