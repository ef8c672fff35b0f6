// Where a CLIP checkpoint's settings come from: open_clip's `open_clip_config.json` (the layout of
// open_clip models on the Hugging Face hub: `model_cfg` with `vision_cfg`, `text_cfg`,
// `quick_gelu`, and `preprocess_cfg`) or transformers' `config.json` (`model_type: clip`, with
// `text_config` and `vision_config`). A key that changes the computation in a way vlm does not
// run (layer scale, a timm or Hugging Face tower inside open_clip, attentional pooling, SigLIP's
// logit bias, CoCa's decoder, …) is refused by name rather than ignored.

import Foundation
import VLMCore
import VLMIO

/// A CLIP checkpoint's files and the settings its config gives.
public struct CLIPCheckpointFiles: Sendable {
    public var folder: String
    /// The config read (open_clip_config.json or config.json).
    public var configPath: String
    public var weightsPath: String
    public var layout: CLIPLayout
    public var settings: CLIPSettings
    /// The image side the config names (checked against the weights at load).
    public var imageSize: Int?
    /// open_clip's `preprocess_cfg` or transformers' preprocessor_config.json, as read.
    public var preprocessMean: [Float]?
    public var preprocessStd: [Float]?
    /// The shorter side's size and the crop transformers' preprocessor_config.json names.
    public var preprocessResize: Int?
    public var preprocessCrop: Int?
    /// Pillow's filter the config names: "bicubic" (CLIP's) or "bilinear".
    public var preprocessFilter = "bicubic"
    /// open_clip's resize_mode "squash": resized to a square, no crop.
    public var preprocessSquash = false

    /// The `--clip-config NAME` form of a model argument: "open_clip:NAME:PATH", a bare open_clip
    /// state dict (a file, or a folder holding one) read as the built-in architecture NAME.
    public static let configuredPrefix = "open_clip:"

    /// "open_clip:NAME:PATH" → (NAME, PATH).
    public static func configured(_ spec: String) -> (name: String, path: String)? {
        guard spec.hasPrefix(configuredPrefix) else { return nil }
        let rest = spec.dropFirst(configuredPrefix.count)
        guard let colon = rest.firstIndex(of: ":"), colon != rest.startIndex else { return nil }
        return (String(rest[..<colon]), String(rest[rest.index(after: colon)...]))
    }

    /// True when `spec` is a CLIP checkpoint: a folder with a CLIP config (open_clip's, or
    /// config.json with model_type clip) or with a TorchScript archive as its one checkpoint, a
    /// TorchScript archive (OpenAI's released files), or the `--clip-config` form.
    public static func isCLIPFolder(_ spec: String) -> Bool {
        if configured(spec) != nil { return true }
        guard let kind = FileStatus.of(spec)?.kind else { return false }
        // A damaged zip is taken here too, so its reader says what is wrong with it.
        if kind == .regular { return TorchCheckpoint.isTorchScriptArchive(spec) || TorchCheckpoint.isUnreadableZip(spec) }
        guard kind == .directory else { return false }
        let fm = FileManager.default
        if fm.fileExists(atPath: (spec as NSString).appendingPathComponent("open_clip_config.json")) { return true }
        let config = (spec as NSString).appendingPathComponent("config.json")
        if fm.fileExists(atPath: config) {
            guard let data = try? readJSONFile(config, what: "config.json"),
                  case .object(let o)? = try? JSONDecoder().decode(JSONValue.self, from: data) else { return false }
            return o["model_type"] == .string("clip")
        }
        guard let weights = try? weightsInFolder(spec) else { return false }
        return TorchCheckpoint.isTorchScriptArchive(weights)
    }

    /// Reads the checkpoint's config (or, for a TorchScript archive, its module) and finds its
    /// weights; `folder` is any form `isCLIPFolder` accepts.
    public static func locate(folder spec: String) throws -> CLIPCheckpointFiles {
        if let (name, path) = configured(spec) {
            if path.isEmpty { throw OptionError("--clip-config \(name.prefix(80)): no checkpoint named (open_clip:NAME:PATH)") }
            guard let st = FileStatus.of(path) else {
                throw IOError.cannotOpen(path: path, reason: errno == ENOENT ? "no such file or folder" : errnoMessage(errno))
            }
            // A folder: open_clip's hub names first, then the usual ones.
            let hub = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"].map { (path as NSString).appendingPathComponent($0) }
            let weights = st.kind == .directory ? try hub.first(where: { FileStatus.of($0) != nil }) ?? weightsInFolder(path) : path
            let layout = CLIPLayout.of(try Checkpoints.open(weights).tensorNames)
            guard layout == .openCLIP else {
                throw WeightError.unrecognized(source: weights, reason: layout == nil ? "not a CLIP checkpoint (no visual.*, token_embedding or transformer.resblocks.* tensors)"
                                                                                     : "a Hugging Face CLIP; --clip-config names an open_clip architecture (its folder's config.json gives a Hugging Face CLIP's settings: pass the folder without --clip-config)")
            }
            guard let model = CLIPArchitectures.config(named: name) else {
                throw OptionError("--clip-config \(name.prefix(80)): not an open_clip architecture vlm runs; one of \(CLIPArchitectures.names.joined(separator: ", "))")
            }
            return try openCLIP(root: ["model_cfg": model], source: "--clip-config \(name)", weights: weights, folder: parentPath(weights))
        }
        if FileStatus.of(spec)?.kind == .regular {
            if TorchCheckpoint.isUnreadableZip(spec) { _ = try TorchCheckpoint(path: spec) }
            guard TorchCheckpoint.isTorchScriptArchive(spec) else {
                throw WeightError.unrecognized(source: spec, reason: "a CLIP state dict without its config (what it says decides the activation and heads): pass the folder holding it with open_clip_config.json or config.json, or name its architecture with --clip-config NAME")
            }
            return try torchScript(weights: spec, folder: parentPath(spec))
        }
        let folder = spec
        func p(_ n: String) -> String { (folder as NSString).appendingPathComponent(n) }
        let fm = FileManager.default
        // A hub folder may hold both layouts (open_clip's weights and transformers' beside them):
        // open_clip's when its weights are there, else transformers'.
        if fm.fileExists(atPath: p("open_clip_config.json")) {
            let weights = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"].map(p).first { fm.fileExists(atPath: $0) }
            if let weights { return try openCLIP(config: p("open_clip_config.json"), weights: weights, folder: folder) }
            if !fm.fileExists(atPath: p("config.json")) {
                throw WeightError.unrecognized(source: folder, reason: "has open_clip_config.json but no open_clip_model.safetensors or open_clip_pytorch_model.bin")
            }
        }
        if !fm.fileExists(atPath: p("config.json")) {
            let weights = try weightsInFolder(folder)
            if TorchCheckpoint.isTorchScriptArchive(weights) { return try torchScript(weights: weights, folder: folder) }
        }
        return try huggingFace(config: p("config.json"), weights: try weightsInFolder(folder), folder: folder)
    }

    static func parentPath(_ path: String) -> String {
        let d = (path as NSString).deletingLastPathComponent
        return d.isEmpty ? "." : d
    }

    // MARK: TorchScript (OpenAI's releases)

    /// A TorchScript archive of a CLIP (OpenAI's RN50.pt, ViT-B-32.pt…: what clip.load caches):
    /// the architecture from the tensors' shapes, as OpenAI's `build_model` (and open_clip's
    /// `build_model_from_openai_state_dict`) reads it; heads from the archive's `num_heads` where a
    /// scripted module kept them, else OpenAI's rule (width / 64; a ResNet's pooling width·32 /
    /// 64); the activation from the MLPs' class — QuickGELU or GELU — and QuickGELU (every OpenAI
    /// model's) when the archive names none. Preprocessing: CLIP's (bicubic, its mean and std),
    /// the image size from the position embedding.
    static func torchScript(weights: String, folder: String) throws -> CLIPCheckpointFiles {
        let c = try TorchCheckpoint(path: weights)
        func bad(_ reason: String) -> WeightError { .unrecognized(source: weights, reason: reason) }
        guard c.format == .torchScript, CLIPLayout.of(c.tensorNames) == .openCLIP else {
            throw bad(CLIPLayout.of(c.tensorNames) == .huggingFace
                      ? "a TorchScript archive of a Hugging Face CLIP (text_model.*, vision_model.*): its settings are in its folder's config.json, which an archive does not carry; save_pretrained the model and pass that folder"
                      : "a TorchScript archive that is not a CLIP model (no visual.*, token_embedding or transformer.resblocks.* tensors); vlm reads TorchScript archives of CLIP only — save other models' state_dict() with torch.save")
        }
        func dim(_ key: String, _ axis: Int) throws -> Int {
            guard let s = c.shape(of: key), s.count > axis, axis >= -s.count else { throw WeightError.missingTensor(source: weights, key: key) }
            return s[axis >= 0 ? axis : s.count + axis]
        }
        let resnet = c.shape(of: "visual.attnpool.positional_embedding") != nil
        let visionWidth = resnet ? try dim("visual.layer1.0.conv1.weight", 0) * 32 : try dim("visual.conv1.weight", 0)
        let textWidth = try dim("ln_final.weight", 0)
        func heads(_ key: String, width: Int) throws -> Int {
            if let h = c.scriptIntegers[key] {
                guard h > 0, width % h == 0 else { throw bad("\(key) is \(h), which does not divide the width \(width)") }
                return h
            }
            guard width >= 64, width % 64 == 0 else { throw bad("a width of \(width), not a multiple of 64: OpenAI's rule (64 channels a head) gives no head count") }
            return width / 64
        }
        let visionHeads = try heads(resnet ? "visual.attnpool.num_heads" : "visual.transformer.resblocks.0.attn.num_heads", width: visionWidth)
        let textHeads = try heads("transformer.resblocks.0.attn.num_heads", width: textWidth)
        // What a scripted open_clip module says of itself that vlm does not run (a traced one
        // keeps none of these: OpenAI's are CLIP as released).
        for (key, want) in [("text_pool_type", "argmax"), ("visual.pool_type", "tok")] {
            if let v = c.scriptStrings[key], v != want { throw bad("\(key) is '\(v.prefix(40))'; vlm pools CLIP's way (\(want))") }
        }
        if c.scriptBools["visual.final_ln_after_pool"] == true {
            throw bad("visual.final_ln_after_pool is true; vlm runs open_clip's default (LayerNorm before pooling)")
        }
        if let cls = c.scriptClasses["visual.attn_pool"] { throw bad("its image tower pools by attention (\(cls.split(separator: ".").last ?? "")), which vlm does not run") }
        if c.scriptCodeMarkers.contains("approximate=\"tanh\"") {
            throw bad("its code computes GELU with approximate=\"tanh\"; vlm runs exact GELU or QuickGELU")
        }
        // A scripted open_clip text tower keeps its causal mask as attn_mask; without one it
        // attends both ways (no_causal_mask), which vlm does not run.
        if c.scriptStrings["text_pool_type"] != nil && !c.tensorNames.contains(where: { $0 == "attn_mask" || $0.hasSuffix(".attn_mask") }) {
            throw bad("its text tower has no causal mask (attn_mask is None: no_causal_mask), which vlm does not run")
        }
        // The MLPs' activation modules, by their classes' last names.
        let acts = Set(c.scriptClasses.filter { $0.key.hasSuffix(".mlp.gelu") }.map { $0.value.split(separator: ".").last.map(String.init) ?? $0.value })
        let act: ActivationFunction
        switch acts {
        case [], ["QuickGELU"]: act = .quickGELU
        case ["GELU"]: act = .gelu
        default: throw bad("its MLPs' activations are \(acts.sorted().joined(separator: ", ")); vlm runs QuickGELU or GELU")
        }
        // A square grid of positions after the class token, and a patch (or ResNet stride) that
        // makes an image of a sane size.
        let positions = try dim(resnet ? "visual.attnpool.positional_embedding" : "visual.positional_embedding", 0) - 1
        let grid = positions >= 1 ? Int(Double(positions).squareRoot().rounded()) : 0
        let patch = resnet ? 32 : try dim("visual.conv1.weight", -1)
        guard grid >= 1, grid * grid == positions, patch >= 1, patch <= 4096, grid <= 4096, grid * patch <= 16384 else {
            throw bad("its image tower's position embedding (\(positions + 1) rows) and patch \(patch) make no square image of at most 16384 px")
        }
        let imageSize = grid * patch
        let settings = CLIPSettings(vision: CLIPTowerSettings(heads: visionHeads, activation: act),
                                    text: CLIPTowerSettings(heads: textHeads, activation: act), textPooling: .argmax)
        return CLIPCheckpointFiles(folder: folder, configPath: weights, weightsPath: weights, layout: .openCLIP, settings: settings, imageSize: imageSize)
    }

    // MARK: open_clip

    static func openCLIP(config path: String, weights: String, folder: String) throws -> CLIPCheckpointFiles {
        try openCLIP(root: try readObject(path, what: "open_clip's config"), source: path, weights: weights, folder: folder)
    }

    /// `source` names the config in messages: its file, or "--clip-config NAME".
    static func openCLIP(root: [String: JSONValue], source path: String, weights: String, folder: String) throws -> CLIPCheckpointFiles {
        // The hub's layout nests the architecture under model_cfg; open_clip's own model configs
        // (model_configs/*.json) are the architecture itself.
        let model = root["model_cfg"]?.objectValue ?? root
        func bad(_ reason: String) -> WeightError { .unrecognized(source: path, reason: reason) }
        for (key, what) in [("multimodal_cfg", "a CoCa model (its text decoder)"), ("init_logit_bias", "a SigLIP model (sigmoid loss, logit bias)"),
                            ("custom_text", "a CustomTextCLIP (its text tower under text.*)")] where truthy(model[key]) {
            throw bad("'\(key)' marks \(what), which vlm does not run; vlm runs CLIP's ResNet and ViT image towers with its text transformer")
        }
        guard let vision = model["vision_cfg"]?.objectValue, let text = model["text_cfg"]?.objectValue else {
            throw bad("no model_cfg.vision_cfg and text_cfg: not an open_clip CLIP config")
        }
        let refusedVision: [(String, String)] = [
            ("timm_model_name", "a timm image tower"), ("ls_init_value", "layer scale"), ("attentional_pool", "attentional pooling"),
            ("no_ln_pre", "no LayerNorm before the transformer"), ("qk_norm", "query/key normalisation"),
            ("scaled_cosine_attn", "scaled cosine attention"), ("scale_heads", "head scaling"), ("scale_attn", "attention scaling"),
            ("scale_attn_inner", "inner attention scaling"), ("scale_fc", "MLP scaling"), ("act_kwargs", "activation options"),
            ("norm_kwargs", "normalisation options"),
        ]
        for (key, what) in refusedVision where truthy(vision[key]) {
            throw bad("vision_cfg.\(key) asks for \(what), which vlm does not run")
        }
        if let pool = vision["pool_type"]?.stringValue, pool != "tok" { throw bad("vision_cfg.pool_type '\(pool)' is not supported (tok: the class token)") }
        if let pos = vision["pos_embed_type"]?.stringValue, pos != "learnable" { throw bad("vision_cfg.pos_embed_type '\(pos)' is not supported (learnable)") }
        if let block = vision["block_type"]?.stringValue, block != "default" { throw bad("vision_cfg.block_type '\(block)' is not supported") }
        let refusedText: [(String, String)] = [
            ("hf_model_name", "a Hugging Face text tower"), ("ls_init_value", "layer scale"), ("embed_cls", "a class token (CoCa)"),
            ("no_causal_mask", "attention without the causal mask"), ("proj_bias", "a biased projection"), ("qk_norm", "query/key normalisation"),
            ("scaled_cosine_attn", "scaled cosine attention"), ("scale_heads", "head scaling"), ("scale_attn", "attention scaling"),
            ("scale_attn_inner", "inner attention scaling"), ("scale_fc", "MLP scaling"), ("act_kwargs", "activation options"),
            ("norm_kwargs", "normalisation options"),
        ]
        for (key, what) in refusedText where truthy(text[key]) {
            throw bad("text_cfg.\(key) asks for \(what), which vlm does not run")
        }
        if let pool = text["pool_type"]?.stringValue, pool != "argmax" { throw bad("text_cfg.pool_type '\(pool)' is not supported (argmax)") }
        if truthy(text["hf_tokenizer_name"]) { throw bad("text_cfg.hf_tokenizer_name asks for a Hugging Face tokenizer, not CLIP's; vlm runs CLIP's tokenizer") }
        if let clean = text["tokenizer_kwargs"]?.objectValue?["clean"]?.stringValue, clean != "lower" {
            throw bad("text_cfg.tokenizer_kwargs.clean '\(clean)' is not supported (lower: open_clip's default cleaning)")
        }
        if let proj = text["proj_type"]?.stringValue, proj != "linear" { throw bad("text_cfg.proj_type '\(proj)' is not supported (linear)") }
        if let block = text["block_type"]?.stringValue, block != "default" { throw bad("text_cfg.block_type '\(block)' is not supported") }

        let quick = truthy(model["quick_gelu"])
        let act: ActivationFunction = quick ? .quickGELU : .gelu
        let headWidth = try positive(vision["head_width"], default: 64, "vision_cfg.head_width", path)
        let visionWidth = try positive(vision["width"], default: 768, "vision_cfg.width", path)
        // ModifiedResNet when layers is a list: its attention pooling has width·32 channels.
        let isResNet: Bool
        switch vision["layers"] {
        case .array?: isResNet = true
        default: isResNet = false
        }
        let visionHeads = (isResNet ? visionWidth * 32 : visionWidth) / headWidth
        if visionHeads < 1 { throw bad("vision_cfg.head_width \(headWidth) is wider than the tower") }
        let textHeads = try positive(text["heads"], default: 8, "text_cfg.heads", path)
        let settings = CLIPSettings(vision: CLIPTowerSettings(heads: visionHeads, activation: act),
                                    text: CLIPTowerSettings(heads: textHeads, activation: act), textPooling: .argmax)
        let imageSize = side(vision["image_size"])
        let pre = root["preprocess_cfg"]?.objectValue
        let squash: Bool
        switch pre?["resize_mode"]?.stringValue {
        case nil, "shortest": squash = false
        case "squash": squash = true
        case "longest": throw bad("preprocess_cfg.resize_mode 'longest' (the longer side resized, then padded) is not supported (shortest, squash)")
        case let mode?: throw bad("preprocess_cfg.resize_mode '\(mode.prefix(40))' is not supported (shortest, squash)")
        }
        var files = CLIPCheckpointFiles(folder: folder, configPath: path, weightsPath: weights, layout: .openCLIP, settings: settings, imageSize: imageSize,
                                        preprocessMean: try triple(pre?["mean"], "preprocess_cfg.mean", path),
                                        preprocessStd: try triple(pre?["std"], "preprocess_cfg.std", path))
        files.preprocessSquash = squash
        switch pre?["interpolation"]?.stringValue {
        case nil, "bicubic": break
        case "bilinear": files.preprocessFilter = "bilinear"
        case let other?: throw bad("preprocess_cfg.interpolation '\(other.prefix(40))' is not supported (bicubic, bilinear)")
        }
        return files
    }

    // MARK: Hugging Face

    static func huggingFace(config path: String, weights: String, folder: String) throws -> CLIPCheckpointFiles {
        let root = try readObject(path, what: "the model's config.json")
        func bad(_ reason: String) -> WeightError { .unrecognized(source: path, reason: reason) }
        guard let type = root["model_type"]?.stringValue else { throw bad("no model_type: not a Hugging Face CLIP config") }
        guard type == "clip" else {
            throw bad("model_type '\(type.prefix(40))' is not CLIP; vlm runs CLIP (model_type clip), not SigLIP, Chinese-CLIP, AltCLIP, CLIPSeg, X-CLIP or other variants")
        }
        let text = root["text_config"]?.objectValue ?? [:], vision = root["vision_config"]?.objectValue ?? [:]
        func activation(_ cfg: [String: JSONValue], _ name: String) throws -> ActivationFunction {
            let a = cfg["hidden_act"]?.stringValue ?? "quick_gelu"
            switch a {
            case "quick_gelu": return .quickGELU
            case "gelu": return .gelu
            default: throw bad("\(name).hidden_act '\(a.prefix(40))' is not supported (quick_gelu, gelu)")
            }
        }
        func eps(_ cfg: [String: JSONValue], _ name: String) throws -> Float {
            let e = cfg["layer_norm_eps"]?.doubleValue ?? 1e-5
            guard e >= 0 && e < 1 else { throw bad("\(name).layer_norm_eps \(e) is not in [0, 1)") }
            return Float(e)
        }
        let eos = text["eos_token_id"]?.intValue ?? 49407
        let settings = CLIPSettings(
            vision: CLIPTowerSettings(heads: try positive(vision["num_attention_heads"], default: 12, "vision_config.num_attention_heads", path),
                                      activation: try activation(vision, "vision_config"), layerNormEps: try eps(vision, "vision_config")),
            text: CLIPTowerSettings(heads: try positive(text["num_attention_heads"], default: 8, "text_config.num_attention_heads", path),
                                    activation: try activation(text, "text_config"), layerNormEps: try eps(text, "text_config")),
            // transformers: eos_token_id 2 (configs written before it was set right) pools at the
            // largest id; any other at the first end token.
            textPooling: eos == 2 ? .argmax : .firstToken(Int32(clamping: eos)))
        var files = CLIPCheckpointFiles(folder: folder, configPath: path, weightsPath: weights, layout: .huggingFace, settings: settings,
                                        imageSize: side(vision["image_size"]))
        let prePath = (folder as NSString).appendingPathComponent("preprocessor_config.json")
        if FileManager.default.fileExists(atPath: prePath) {
            let p = try readObject(prePath, what: "preprocessor_config.json")
            func badPre(_ r: String) -> WeightError { .unrecognized(source: prePath, reason: r) }
            files.preprocessMean = try triple(p["image_mean"], "image_mean", prePath)
            files.preprocessStd = try triple(p["image_std"], "image_std", prePath)
            for key in ["do_resize", "do_center_crop", "do_normalize", "do_rescale"] where p[key] == .bool(false) {
                throw badPre("\(key) false is not supported: vlm resizes, crops, rescales and normalises as CLIP does")
            }
            if case .object(let size)? = p["size"] {
                guard let edge = size["shortest_edge"]?.intValue, edge > 0, size.count == 1 else {
                    throw badPre("size \(p["size"].map { "\($0)" } ?? ""): vlm resizes the shorter side (size.shortest_edge)")
                }
                files.preprocessResize = edge
            } else if let edge = p["size"]?.intValue, edge > 0 {
                files.preprocessResize = edge
            }
            if case .object(let crop)? = p["crop_size"] {
                guard let h = crop["height"]?.intValue, let w = crop["width"]?.intValue, h == w, h > 0 else {
                    throw badPre("crop_size must be square")
                }
                files.preprocessCrop = h
            } else if let c = p["crop_size"]?.intValue, c > 0 {
                files.preprocessCrop = c
            }
            switch p["resample"]?.intValue {
            case nil, 3: break
            case 2: files.preprocessFilter = "bilinear"
            case let r?: throw badPre("resample \(r) is not supported (3: bicubic, 2: bilinear)")
            }
        }
        return files
    }

    static func readObject(_ path: String, what: String) throws -> [String: JSONValue] {
        let data: Data
        do { data = try readJSONFile(path, what: what) } catch let e as IOError {
            throw WeightError.unrecognized(source: path, reason: "cannot read \(what) (\(e.description.dropFirst(path.count + 2)))")
        }
        guard case .object(let o)? = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            throw WeightError.unrecognized(source: path, reason: "not a JSON object")
        }
        return o
    }

    /// A setting that is set: true, a number other than 0, a non-empty string, list or object.
    static func truthy(_ v: JSONValue?) -> Bool {
        switch v {
        case nil, .null?: return false
        case .bool(let b)?: return b
        case .integer(let i)?: return i != 0
        case .number(let d)?: return d != 0
        case .string(let s)?: return !s.isEmpty
        case .array(let a)?: return !a.isEmpty
        case .object(let o)?: return !o.isEmpty
        }
    }

    /// An image side: a number, or a square's [n, n].
    static func side(_ v: JSONValue?) -> Int? {
        if case .array(let a)? = v, a.count == 2, let h = a[0].intValue, a[1].intValue == h { return h }
        return v?.intValue
    }

    /// Three finite numbers (a per-channel mean or std), or nil when the key is absent.
    static func triple(_ v: JSONValue?, _ name: String, _ path: String) throws -> [Float]? {
        guard let v, v != .null else { return nil }
        guard let f = v.floatArray, f.count == 3, f.allSatisfy({ $0.isFinite }) else {
            throw WeightError.unrecognized(source: path, reason: "\(name) must be three numbers")
        }
        if name.hasSuffix("std"), f.contains(where: { abs($0) < 1e-6 }) {
            throw WeightError.unrecognized(source: path, reason: "\(name) values must be at least 1e-6 in size (pixels are divided by them)")
        }
        return f
    }

    static func positive(_ v: JSONValue?, default d: Int, _ name: String, _ path: String) throws -> Int {
        guard let v, v != .null else { return d }
        guard let i = v.intValue, i > 0, i < 1 << 20 else {
            throw WeightError.unrecognized(source: path, reason: "\(name) must be a positive integer")
        }
        return i
    }
}

extension JSONValue {
    var intValue: Int? {
        switch self {
        case .integer(let i): return Int(exactly: i)
        case .number(let d) where d.rounded() == d && abs(d) < 1e15: return Int(d)
        default: return nil
        }
    }
    var doubleValue: Double? {
        switch self {
        case .integer(let i): return Double(i)
        case .number(let d): return d
        default: return nil
        }
    }
    var floatArray: [Float]? {
        guard case .array(let a) = self else { return nil }
        let f = a.compactMap { $0.doubleValue.map(Float.init) }
        return f.count == a.count ? f : nil
    }
}
