// CLIP's towers against open_clip and transformers. Fixtures from
// scripts/export_clip_model_fixtures.py (`make fixtures`): small configurations with seeded
// random weights — open_clip's ViT (QuickGELU) and modified ResNet (GELU), in
// open_clip_model.safetensors and torch.save's .bin, and transformers' CLIPModel — with their
// libraries' image and text embeddings for the same normalised pixels and token ids.

import Foundation
import XCTest
import VLMCore
import VLMIO
import VLMModels

private let clipModels = fixtures.appendingPathComponent("generated/clip-models")

struct CLIPFixture {
    let folder: String
    let files: CLIPCheckpointFiles
    let images: Tensor, imageFeatures: Tensor, textFeatures: Tensor
    let ids: [[Int32]]
    let logitScale: Float

    init(_ name: String) throws {
        folder = clipModels.appendingPathComponent(name).path
        guard FileManager.default.fileExists(atPath: folder + "/images.npy") else { throw FixtureMissing(path: folder + "/images.npy") }
        files = try CLIPCheckpointFiles.locate(folder: folder)
        images = try NPY.read(path: folder + "/images.npy")
        imageFeatures = try NPY.read(path: folder + "/image_features.npy")
        textFeatures = try NPY.read(path: folder + "/text_features.npy")
        struct Texts: Decodable { let ids: [[Int32]] }
        ids = try JSONDecoder().decode(Texts.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/texts.json"))).ids
        struct Scale: Decodable { let logit_scale: Float }
        logitScale = try JSONDecoder().decode(Scale.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/logit_scale.json"))).logit_scale
    }

    func model(_ backend: any Backend, weights: String? = nil) throws -> CLIPModel {
        try CLIPModel(source: try openWeights(weights ?? files.weightsPath), settings: files.settings, backend: backend)
    }
}

/// The largest relative error of any row (‖a − b‖ / ‖b‖): random weights can make rows of
/// very different norms, and one bad row must not hide behind the others.
func worstRowError(_ a: Tensor, _ b: Tensor) -> Double {
    precondition(a.shape == b.shape)
    let d = b.shape[1]
    var worst: Double = 0
    for r in 0..<b.shape[0] {
        let rows = (r * d)..<((r + 1) * d)
        worst = max(worst, relativeError(Array(a.data[rows]), Array(b.data[rows])))
    }
    return worst
}

final class CLIPParityTests: XCTestCase {
    func checkParity(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> CLIPFixture {
        let f = try CLIPFixture(name)
        var outputs: [BackendKind: (Tensor, Tensor)] = [:]
        for be in [BLASBackend(), NaiveBackend()] as [any Backend] {
            let m = try f.model(be)
            XCTAssertEqual(m.logitScale, f.logitScale, file: file, line: line)
            let img = m.encodeImages(f.images), txt = m.encodeTexts(f.ids)
            XCTAssertEqual(img.shape, f.imageFeatures.shape, file: file, line: line)
            XCTAssertEqual(txt.shape, f.textFeatures.shape, file: file, line: line)
            let ei = worstRowError(img, f.imageFeatures), et = worstRowError(txt, f.textFeatures)
            print("\(name) \(be.kind): image rel err \(ei), text rel err \(et)")
            XCTAssertLessThanOrEqual(ei, 1e-4, "\(name) \(be.kind) image", file: file, line: line)
            XCTAssertLessThanOrEqual(et, 1e-4, "\(name) \(be.kind) text", file: file, line: line)
            outputs[be.kind] = (img, txt)
        }
        XCTAssertLessThanOrEqual(worstRowError(outputs[.naive]!.0, outputs[.blas]!.0), 1e-5, file: file, line: line)
        XCTAssertLessThanOrEqual(worstRowError(outputs[.naive]!.1, outputs[.blas]!.1), 1e-5, file: file, line: line)
        // Each row is its own: a text run alone gives the row it gave in the batch.
        let m = try f.model(BLASBackend())
        let alone = m.encodeTexts([f.ids[2]])
        XCTAssertLessThanOrEqual(relativeError(alone.data, Array(f.textFeatures.data[(2 * m.embedDim)..<(3 * m.embedDim)])), 1e-4, file: file, line: line)
        return f
    }

    func testOpenCLIPVisionTransformerQuickGELU() throws {
        let f = try checkParity("oc-vit")
        XCTAssertEqual(f.files.layout, .openCLIP)
        XCTAssertEqual(f.files.settings.vision.activation, .quickGELU)
        let m = try f.model(BLASBackend())
        XCTAssertTrue(m.vision is CLIPVisionTransformer)
        XCTAssertEqual(m.vision.imageSize, 32)
    }

    func testOpenCLIPModifiedResNetGELU() throws {
        let f = try checkParity("oc-rn")
        XCTAssertEqual(f.files.settings.text.activation, .gelu)
        let m = try f.model(BLASBackend())
        XCTAssertTrue(m.vision is CLIPModifiedResNet)
        XCTAssertEqual((m.vision as! CLIPModifiedResNet).layers, [1, 2, 1, 1])
        // torch.save's state dict of the same model gives the same vectors.
        let bin = try f.model(BLASBackend(), weights: f.folder + "/open_clip_pytorch_model.bin")
        XCTAssertEqual(bin.encodeImages(f.images).data, m.encodeImages(f.images).data)
        XCTAssertEqual(bin.encodeTexts(f.ids).data, m.encodeTexts(f.ids).data)
    }

    /// TorchScript archives (torch.jit.save): open_clip's model scripted (it keeps num_heads and
    /// the QuickGELU class) and a traced CLIP as OpenAI released theirs (no num_heads: OpenAI's
    /// 64-channel rule; the sizes as tensors), each equal to its model's references on both
    /// backends; an archive rewritten as version 3 (torch 1.6–1.7's, OpenAI's files) reads the same.
    func testTorchScriptArchives() throws {
        let s = try checkParity("oc-vit-script")
        XCTAssertTrue(s.files.weightsPath.hasSuffix("/model.pt"))
        XCTAssertEqual(try TorchCheckpoint(path: s.files.weightsPath).format, .torchScript)
        XCTAssertEqual(s.files.settings.vision, CLIPTowerSettings(heads: 2, activation: .quickGELU))
        XCTAssertEqual(s.files.settings.text, CLIPTowerSettings(heads: 2, activation: .quickGELU))
        let o = try checkParity("oc-openai")
        XCTAssertEqual(o.files.settings.vision, CLIPTowerSettings(heads: 4, activation: .quickGELU))
        XCTAssertEqual(o.files.settings.text, CLIPTowerSettings(heads: 2, activation: .quickGELU))
        XCTAssertEqual(o.files.imageSize, 64)
        let v3 = try o.model(BLASBackend(), weights: clipModels.appendingPathComponent("ts-extra/v3.pt").path)
        let m = try o.model(BLASBackend())
        XCTAssertEqual(v3.encodeTexts(o.ids).data, m.encodeTexts(o.ids).data)
        XCTAssertEqual(v3.encodeImages(o.images).data, m.encodeImages(o.images).data)
    }

    /// Archives vlm must not read, each refused in one line before anything is built: a global
    /// other than a module class (nothing runs), an object with its own __setstate__, a module
    /// that is not a CLIP, a format version outside those read, a truncated file.
    func testHostileTorchScriptArchivesAreRefused() throws {
        func refusal(_ name: String) -> String {
            let path = clipModels.appendingPathComponent("ts-extra/" + name).path
            XCTAssertTrue(CLIPCheckpointFiles.isCLIPFolder(path), name)
            do {
                _ = try CLIPCheckpointFiles.locate(folder: path)
                XCTFail("\(name) accepted")
                return ""
            } catch { return String("\(error)".dropFirst(path.count + 2)) }
        }
        XCTAssertEqual(refusal("global.pt"), "refusing global 'os.system' at pickle byte 2: only the globals torch.save writes for tensors and state dicts are allowed, and nothing was executed (is the file from a source you trust?)")
        XCTAssertTrue(refusal("setstate.pt").hasPrefix("refusing a TorchScript object '__torch__.open_clip.model."), refusal("setstate.pt"))
        XCTAssertTrue(refusal("setstate.pt").contains("CLIP' whose state is a tuple, not a dictionary of attributes (a class with its own __setstate__)"))
        XCTAssertTrue(refusal("notclip.pt").hasPrefix("a TorchScript archive that is not a CLIP model"), refusal("notclip.pt"))
        XCTAssertEqual(refusal("v2.pt"), "a TorchScript archive of file format version '2'; vlm reads versions 3–10")
        XCTAssertTrue(refusal("truncated.pt").contains("no end-of-central-directory record"), refusal("truncated.pt"))
    }

    /// A bare open_clip state dict with --clip-config's architecture: the full-size RN50 weights
    /// as RN50-quickgelu equal open_clip's model; RN50 reads them with GELU (what the name says).
    func testBareStateDictWithANamedArchitecture() throws {
        let f = try CLIPFixture("full-rn50")
        let spec = CLIPCheckpointFiles.configuredPrefix + "RN50-quickgelu:" + f.files.weightsPath
        XCTAssertTrue(CLIPCheckpointFiles.isCLIPFolder(spec))
        let files = try CLIPCheckpointFiles.locate(folder: spec)
        XCTAssertEqual(files.settings, f.files.settings)
        XCTAssertEqual(files.imageSize, 224)
        let m = try CLIPModel(source: try openWeights(files.weightsPath), settings: files.settings, backend: BLASBackend())
        XCTAssertLessThanOrEqual(worstRowError(m.encodeTexts(f.ids), f.textFeatures), 1e-4)
        let gelu = try CLIPCheckpointFiles.locate(folder: CLIPCheckpointFiles.configuredPrefix + "RN50:" + f.files.weightsPath)
        XCTAssertEqual(gelu.settings.text.activation, .gelu)
        XCTAssertThrowsError(try CLIPCheckpointFiles.locate(folder: CLIPCheckpointFiles.configuredPrefix + "SigLIP:" + f.files.weightsPath)) {
            XCTAssertTrue("\($0)".hasPrefix("--clip-config SigLIP: not an open_clip architecture vlm runs; one of RN101, "), "\($0)")
        }
        XCTAssertNotNil(CLIPArchitectures.config(named: "ViT-L-14-336"))
    }

    /// Full size, both backends: OpenAI's RN50 (QuickGELU; stages 3, 4, 6, 3 at width 64, 32
    /// attention-pooling heads) and ViT-B/32 (GELU, width 768, 12 layers, 12 heads; text width 512).
    func testFullSizeRN50() throws {
        let f = try checkParity("full-rn50")
        let m = try f.model(BLASBackend())
        XCTAssertEqual((m.vision as! CLIPModifiedResNet).layers, [3, 4, 6, 3])
        XCTAssertEqual(m.vision.imageSize, 224)
        XCTAssertEqual(m.embedDim, 1024)
        XCTAssertEqual(f.files.settings.vision.heads, 32)
    }

    func testFullSizeViTB32() throws {
        let f = try checkParity("full-vitb32")
        let m = try f.model(BLASBackend())
        XCTAssertEqual(m.vision.summary, "ViT, patch 32, 224 px, width 768, 12 layers, 12 heads")
        XCTAssertEqual(m.embedDim, 512)
        XCTAssertEqual(f.files.settings.text.activation, .gelu)
    }

    func testHuggingFaceCLIPModel() throws {
        let f = try checkParity("hf-vit")
        XCTAssertEqual(f.files.layout, .huggingFace)
        XCTAssertEqual(f.files.settings.textPooling, .firstToken(49407))
        XCTAssertEqual(f.files.settings.text.heads, 4)
        XCTAssertEqual(f.files.settings.vision.activation, .quickGELU)
        XCTAssertEqual(f.files.settings.text.activation, .gelu)
    }

    /// What a config does not say is not guessed: a wrong activation or head count is caught by
    /// the parity it breaks (the settings matter), and a refused feature is named.
    func testSettingsMatter() throws {
        let f = try CLIPFixture("oc-vit")
        var s = f.files.settings
        s.vision.activation = .gelu
        s.text.heads = 1
        let m = try CLIPModel(source: try openWeights(f.files.weightsPath), settings: s, backend: BLASBackend())
        XCTAssertGreaterThan(worstRowError(m.encodeImages(f.images), f.imageFeatures), 1e-3)
        XCTAssertGreaterThan(worstRowError(m.encodeTexts(f.ids), f.textFeatures), 1e-3)
    }
}

final class CLIPCheckpointTests: XCTestCase {
    /// The fixture's state dict in memory, changed by `edit`.
    func state(_ name: String, _ edit: (inout [String: Tensor]) -> Void) throws -> (MemoryTensorSource, CLIPSettings) {
        let f = try CLIPFixture(name)
        let file = try openWeights(f.files.weightsPath)
        var state: [String: Tensor] = [:]
        for k in file.keys where !k.hasSuffix("num_batches_tracked") { state[k] = try file.floatTensor(k) }
        edit(&state)
        return (MemoryTensorSource(name: "edited.safetensors", state: state), f.files.settings)
    }

    func refusal(_ name: String, _ edit: (inout [String: Tensor]) -> Void) throws -> String {
        let (source, settings) = try state(name, edit)
        do {
            _ = try CLIPModel(source: source, settings: settings, backend: BLASBackend())
            XCTFail("loaded")
            return ""
        } catch let e as WeightError { return e.description }
    }

    func testDefectsAreNamed() throws {
        XCTAssertEqual(try refusal("oc-vit") { $0["visual.extra"] = Tensor(shape: [1], data: [0]) },
                       "edited.safetensors: 1 tensor not used by the model: 'visual.extra'")
        XCTAssertEqual(try refusal("oc-vit") { $0["visual.ln_post.weight"] = nil }, "edited.safetensors: missing tensor 'visual.ln_post.weight'")
        XCTAssertEqual(try refusal("hf-vit") { $0["text_model.encoder.layers.1.self_attn.k_proj.bias"] = nil },
                       "edited.safetensors: missing tensor 'text_model.encoder.layers.1.self_attn.k_proj.bias'")
        XCTAssertEqual(try refusal("oc-vit") { $0["text_projection"] = Tensor(shape: [32, 64], data: [Float](repeating: 0, count: 2048)) },
                       "edited.safetensors: tensor 'text_projection' has shape [32, 64], expected [64, ?]")
        XCTAssertEqual(try refusal("oc-vit") { $0["text_projection"] = Tensor(shape: [64, 16], data: [Float](repeating: 0, count: 1024)) },
                       "edited.safetensors: the image tower projects to 32 dimensions and the text tower to 16: not one space")
        XCTAssertEqual(try refusal("oc-vit") { $0["visual.positional_embedding"] = Tensor(shape: [16, 64], data: [Float](repeating: 0, count: 1024)) },
                       "edited.safetensors: tensor 'visual.positional_embedding' has 16 rows: not a square grid of patches and a class token")
        XCTAssertEqual(try refusal("oc-rn") { $0["visual.layer2.0.downsample.0.weight"] = nil },
                       "edited.safetensors: missing tensor 'visual.layer2.0.downsample.0.weight'")
        XCTAssertEqual(try refusal("oc-rn") { $0["visual.attnpool.q_proj.weight"] = Tensor(shape: [256, 128], data: [Float](repeating: 0, count: 256 * 128)) },
                       "edited.safetensors: tensor 'visual.attnpool.q_proj.weight' has shape [256, 128], expected [256, 256]")
        XCTAssertTrue(try refusal("oc-vit") { $0["logit_scale"] = Tensor(shape: [1], data: [.nan]) }.contains("'logit_scale' has shape [1], expected []"))
        XCTAssertTrue(try refusal("oc-vit") { $0["logit_scale"] = Tensor(shape: [], data: [.nan]) }.contains("'logit_scale' holds 1 NaN"))
        XCTAssertEqual(try refusal("oc-vit") { s in for k in s.keys where k.hasPrefix("visual.") || k.hasPrefix("token_") { s[k] = nil } },
                       "edited.safetensors: missing tensor 'token_embedding.weight'")
        XCTAssertEqual(try refusal("oc-vit") { s in for k in s.keys { s["x." + k] = s.removeValue(forKey: k) } },
                       "edited.safetensors: not a CLIP checkpoint (no visual.*, token_embedding, transformer.resblocks.*, text_model.* or vision_model.* tensors)")
    }

    func folder(_ files: [String: String]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-clip-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        for (name, text) in files { try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8) }
        return dir
    }

    func configRefusal(_ files: [String: String]) throws -> String {
        let dir = try folder(files.merging(["open_clip_model.safetensors": "", "model.safetensors": ""]) { a, _ in a })
        do {
            _ = try CLIPCheckpointFiles.locate(folder: dir)
            XCTFail("accepted")
            return ""
        } catch let e as WeightError { return String(e.description.dropFirst(dir.count + 1)) }
    }

    /// Architectures vlm does not run are refused by name, not loaded as something else.
    func testForeignArchitecturesAreRefusedByName() throws {
        func oc(_ model: String) -> [String: String] {
            ["open_clip_config.json": #"{"model_cfg": {"embed_dim": 512, "vision_cfg": {"layers": 12, "width": 768, "patch_size": 16}, "text_cfg": {"width": 512, "heads": 8, "layers": 12}"# + model + "}}"]
        }
        XCTAssertTrue(try configRefusal(oc(#", "init_logit_bias": -10"#)).contains("'init_logit_bias' marks a SigLIP model"))
        XCTAssertTrue(try configRefusal(oc(#", "multimodal_cfg": {"width": 512}"#)).contains("CoCa"))
        XCTAssertTrue(try configRefusal(oc(#", "custom_text": true"#)).contains("CustomTextCLIP"))
        XCTAssertTrue(try configRefusal(["open_clip_config.json": #"{"model_cfg": {"embed_dim": 512, "vision_cfg": {"timm_model_name": "vit_base_patch16_siglip_224"}, "text_cfg": {}}}"#])
            .contains("vision_cfg.timm_model_name asks for a timm image tower"))
        XCTAssertTrue(try configRefusal(["open_clip_config.json": #"{"model_cfg": {"embed_dim": 512, "vision_cfg": {"width": 768}, "text_cfg": {"hf_model_name": "xlm-roberta-base"}}}"#])
            .contains("text_cfg.hf_model_name asks for a Hugging Face text tower"))
        XCTAssertTrue(try configRefusal(["open_clip_config.json": #"{"model_cfg": {"embed_dim": 512, "vision_cfg": {"width": 768, "ls_init_value": 0.1}, "text_cfg": {}}}"#])
            .contains("layer scale"))
        XCTAssertTrue(try configRefusal(["open_clip_config.json": #"{"model_cfg": {"embed_dim": 512, "vision_cfg": {"width": 768, "head_width": 0}, "text_cfg": {}}}"#])
            .contains("vision_cfg.head_width must be a positive integer"))
        XCTAssertEqual(try configRefusal(["open_clip_config.json": "[1]"]), "open_clip_config.json: not a JSON object")
        XCTAssertTrue(try configRefusal(["config.json": #"{"model_type": "siglip"}"#]).contains("model_type 'siglip' is not CLIP"))
        XCTAssertTrue(try configRefusal(["config.json": #"{"model_type": "clip", "text_config": {"hidden_act": "silu"}}"#])
            .contains("text_config.hidden_act 'silu' is not supported (quick_gelu, gelu)"))
        XCTAssertFalse(CLIPCheckpointFiles.isCLIPFolder(try folder(["config.json": #"{"model_type": "bert"}"#])))
        XCTAssertTrue(CLIPCheckpointFiles.isCLIPFolder(try folder(["config.json": #"{"model_type": "clip"}"#])))
    }

    /// What each config says is read: open_clip's ResNet heads are width·32 / head_width, a
    /// legacy eos_token_id of 2 pools at the largest id.
    func testSettingsFromConfigs() throws {
        let rn = try folder(["open_clip_config.json": #"{"model_cfg": {"embed_dim": 1024, "quick_gelu": true, "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64}, "text_cfg": {"width": 512, "heads": 8, "layers": 12}}, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5]}}"#,
                             "open_clip_pytorch_model.bin": ""])
        let r = try CLIPCheckpointFiles.locate(folder: rn)
        XCTAssertEqual(r.settings, CLIPSettings(vision: CLIPTowerSettings(heads: 32, activation: .quickGELU), text: CLIPTowerSettings(heads: 8, activation: .quickGELU)))
        XCTAssertEqual(r.imageSize, 224)
        XCTAssertEqual(r.preprocessMean, [0.5, 0.5, 0.5])
        XCTAssertTrue(r.weightsPath.hasSuffix("open_clip_pytorch_model.bin"))
        let hf = try folder(["config.json": #"{"model_type": "clip", "text_config": {"eos_token_id": 2}}"#, "model.safetensors": ""])
        let h = try CLIPCheckpointFiles.locate(folder: hf)
        XCTAssertEqual(h.settings.textPooling, .argmax)
        XCTAssertEqual(h.settings.vision.heads, 12)
        XCTAssertEqual(h.settings.text.activation, .quickGELU)
        XCTAssertNil(h.preprocessResize)
        XCTAssertEqual(h.preprocessFilter, "bicubic")
        // transformers' preprocessor_config.json: its sizes, filter, mean and std.
        let pre = try folder(["config.json": #"{"model_type": "clip"}"#, "model.safetensors": "",
                              "preprocessor_config.json": #"{"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}, "resample": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}"#])
        let q = try CLIPCheckpointFiles.locate(folder: pre)
        XCTAssertEqual([q.preprocessResize, q.preprocessCrop], [256, 224])
        XCTAssertEqual(q.preprocessFilter, "bilinear")
        XCTAssertEqual(q.preprocessStd, [0.25, 0.25, 0.25])
        let ocBilinear = try folder(["open_clip_config.json": #"{"model_cfg": {"vision_cfg": {"width": 768}, "text_cfg": {}}, "preprocess_cfg": {"interpolation": "bilinear"}}"#,
                                     "open_clip_model.safetensors": ""])
        XCTAssertEqual(try CLIPCheckpointFiles.locate(folder: ocBilinear).preprocessFilter, "bilinear")
    }

    /// Preprocessing a config asks for that vlm does not do is refused by name, not done another way.
    func testPreprocessingVlmDoesNotDoIsRefused() throws {
        func oc(_ pre: String) -> [String: String] {
            ["open_clip_config.json": #"{"model_cfg": {"vision_cfg": {"width": 768}, "text_cfg": {}}, "preprocess_cfg": "# + pre + "}"]
        }
        XCTAssertTrue(try configRefusal(oc(#"{"resize_mode": "longest"}"#)).contains("preprocess_cfg.resize_mode 'longest' (the longer side resized, then padded) is not supported (shortest, squash)"))
        XCTAssertTrue(try configRefusal(oc(#"{"resize_mode": "fit"}"#)).contains("preprocess_cfg.resize_mode 'fit' is not supported"))
        XCTAssertTrue(try configRefusal(oc(#"{"interpolation": "random"}"#)).contains("preprocess_cfg.interpolation 'random' is not supported"))
        XCTAssertTrue(try configRefusal(oc(#"{"std": [0.5, 0, 0.5]}"#)).contains("preprocess_cfg.std values must be at least 1e-6"))
        XCTAssertTrue(try configRefusal(oc(#"{"mean": [0.5]}"#)).contains("preprocess_cfg.mean must be three numbers"))
        func hf(_ pre: String) -> [String: String] { ["config.json": #"{"model_type": "clip"}"#, "preprocessor_config.json": pre] }
        XCTAssertTrue(try configRefusal(hf(#"{"resample": 0}"#)).contains("resample 0 is not supported"))
        XCTAssertTrue(try configRefusal(hf(#"{"do_center_crop": false}"#)).contains("do_center_crop false is not supported"))
        XCTAssertTrue(try configRefusal(hf(#"{"size": {"height": 224, "width": 224}}"#)).contains("size.shortest_edge"))
        XCTAssertTrue(try configRefusal(hf(#"{"crop_size": {"height": 224, "width": 200}}"#)).contains("crop_size must be square"))
    }
}
