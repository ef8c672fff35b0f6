// CLIP's towers (Radford et al. 2021) in open_clip's layout, which OpenAI's released weights
// share, and in Hugging Face's (transformers' CLIPModel, read through a name map):
//   - the text tower: token + position embeddings → pre-LayerNorm transformer with a causal mask
//     → final LayerNorm at the pooled token (the first position of the largest id — the end
//     token — as open_clip's argmax; or the first end token, as transformers) → projection;
//   - the vision transformer: patches embedded by one GEMM, a class token, position embeddings,
//     LayerNorm before and after the transformer, the class token projected;
//   - the modified ResNet (open_clip / OpenAI only): a three-convolution stem and 2×2 average
//     pool, Bottleneck stages whose stride is an average pool (before the last 1×1 and in the
//     shortcut), and attention pooling: the mean token queries every position.
// Upstream: open_clip/model.py, transformer.py, modified_resnet.py;
// transformers/models/clip/modeling_clip.py. Every product runs on the backend (linear layers,
// convolutions, attention heads); sequences are packed without padding, which the causal mask
// makes exact: no token before the pooled one sees a later one.

import Foundation
import VLMCore
import VLMTokenizer

// MARK: - Settings

/// What a checkpoint's keys do not say: heads, activation, LayerNorm epsilon, the pooled token.
public struct CLIPTowerSettings: Equatable, Sendable {
    /// Attention heads (the ResNet's attention pooling: its heads).
    public var heads: Int
    /// QuickGELU (OpenAI's, `quick_gelu`) or exact GELU.
    public var activation: ActivationFunction
    public var layerNormEps: Float

    public init(heads: Int, activation: ActivationFunction, layerNormEps: Float = 1e-5) {
        (self.heads, self.activation, self.layerNormEps) = (heads, activation, layerNormEps)
    }
}

/// Where the text tower's sequence is read out.
public enum CLIPTextPooling: Equatable, Sendable {
    /// The first position of the sequence's largest id (open_clip's and OpenAI's `argmax`; in
    /// CLIP's vocabulary the end token is the largest id).
    case argmax
    /// The first position of this id (transformers' CLIPTextModel when `eos_token_id` is not
    /// its legacy 2).
    case firstToken(Int32)
}

public struct CLIPSettings: Equatable, Sendable {
    public var vision: CLIPTowerSettings
    public var text: CLIPTowerSettings
    public var textPooling: CLIPTextPooling

    public init(vision: CLIPTowerSettings, text: CLIPTowerSettings, textPooling: CLIPTextPooling = .argmax) {
        (self.vision, self.text, self.textPooling) = (vision, text, textPooling)
    }
}

/// The two key layouts of CLIP checkpoints.
public enum CLIPLayout: String, Sendable {
    /// open_clip's (and OpenAI's): `visual.*`, `transformer.resblocks.*`, `token_embedding`, …
    case openCLIP = "open_clip"
    /// transformers' CLIPModel: `vision_model.*`, `text_model.*`, `visual_projection`, …
    case huggingFace = "Hugging Face"

    /// The layout of these keys, or nil when they are neither.
    public static func of(_ keys: [String]) -> CLIPLayout? {
        if keys.contains(where: { $0.hasPrefix("text_model.") || $0.hasPrefix("vision_model.") }) { return .huggingFace }
        if keys.contains(where: { $0 == "token_embedding.weight" || $0.hasPrefix("visual.") || $0.hasPrefix("transformer.resblocks.") || $0.hasPrefix("ln_final.") }) {
            return .openCLIP
        }
        return nil
    }
}

// MARK: - The transformer both towers use

/// One residual block, pre-LayerNorm: x + attn(ln_1(x)), then + mlp(ln_2(x)).
struct CLIPBlock {
    var ln1Weight: [Float], ln1Bias: [Float]
    var qkv: LinearWeights          // W → 3W: query, key, value side by side
    var attnOut: LinearWeights      // W → W
    var ln2Weight: [Float], ln2Bias: [Float]
    var fc: LinearWeights           // W → M
    var proj: LinearWeights         // M → W

    static func load(_ r: WeightReader, width w: Int, layout: CLIPLayout, backend: any Backend) throws -> CLIPBlock {
        func linear(_ name: String, in inF: Int, out outF: Int?) throws -> LinearWeights {
            let weight = try r.tensor("\(name).weight", [outF, inF])
            let o = weight.shape[0]
            return backend.prepareLinear(weight: weight.data, bias: try r.tensor("\(name).bias", exact: [o]).data, inFeatures: inF, outFeatures: o)
        }
        switch layout {
        case .openCLIP:
            let fc = try linear("mlp.c_fc", in: w, out: nil)
            return CLIPBlock(
                ln1Weight: try r.tensor("ln_1.weight", exact: [w]).data, ln1Bias: try r.tensor("ln_1.bias", exact: [w]).data,
                qkv: backend.prepareLinear(weight: try r.tensor("attn.in_proj_weight", exact: [3 * w, w]).data,
                                           bias: try r.tensor("attn.in_proj_bias", exact: [3 * w]).data, inFeatures: w, outFeatures: 3 * w),
                attnOut: try linear("attn.out_proj", in: w, out: w),
                ln2Weight: try r.tensor("ln_2.weight", exact: [w]).data, ln2Bias: try r.tensor("ln_2.bias", exact: [w]).data,
                fc: fc, proj: try linear("mlp.c_proj", in: fc.outFeatures, out: w))
        case .huggingFace:
            var qkvW: [Float] = [], qkvB: [Float] = []
            for name in ["q_proj", "k_proj", "v_proj"] {
                qkvW += try r.tensor("self_attn.\(name).weight", exact: [w, w]).data
                qkvB += try r.tensor("self_attn.\(name).bias", exact: [w]).data
            }
            let fc = try linear("mlp.fc1", in: w, out: nil)
            return CLIPBlock(
                ln1Weight: try r.tensor("layer_norm1.weight", exact: [w]).data, ln1Bias: try r.tensor("layer_norm1.bias", exact: [w]).data,
                qkv: backend.prepareLinear(weight: qkvW, bias: qkvB, inFeatures: w, outFeatures: 3 * w),
                attnOut: try linear("self_attn.out_proj", in: w, out: w),
                ln2Weight: try r.tensor("layer_norm2.weight", exact: [w]).data, ln2Bias: try r.tensor("layer_norm2.bias", exact: [w]).data,
                fc: fc, proj: try linear("mlp.fc2", in: fc.outFeatures, out: w))
        }
    }
}

/// A stack of blocks over packed sequences (no padding: offsets[s]..<offsets[s+1] are sequence s).
struct CLIPTransformer {
    let width: Int
    let settings: CLIPTowerSettings
    let blocks: [CLIPBlock]

    /// The blocks under `r` (open_clip: `resblocks.N`; Hugging Face: `layers.N`), counted by key.
    static func load(_ r: WeightReader, width: Int, settings: CLIPTowerSettings, layout: CLIPLayout,
                     backend: any Backend) throws -> CLIPTransformer {
        let list = layout == .openCLIP ? "resblocks" : "layers"
        let first = layout == .openCLIP ? "ln_1.weight" : "layer_norm1.weight"
        var count = 0
        while r.contains("\(list).\(count).\(first)") { count += 1 }
        if count == 0 { throw WeightError.missingTensor(source: r.store.source.sourceName, key: r.key("\(list).0.\(first)")) }
        if width % settings.heads != 0 {
            throw WeightError.unrecognized(source: r.store.source.sourceName,
                                           reason: "width \(width) of '\(r.prefix)' is not a multiple of its \(settings.heads) attention heads")
        }
        let blocks = try (0..<count).map { try CLIPBlock.load(r.pp("\(list).\($0)"), width: width, layout: layout, backend: backend) }
        return CLIPTransformer(width: width, settings: settings, blocks: blocks)
    }

    var layers: Int { blocks.count }

    /// Multiply-adds ×2 of the blocks over one sequence of `t` tokens.
    func flops(tokens t: Int) -> Double {
        let w = Double(width), n = Double(t)
        var total = 0.0
        for b in blocks {
            let dense: Double = 4 * w * w + 2 * w * Double(b.fc.outFeatures)
            total += 2 * n * dense + 4 * n * n * w
        }
        return total
    }

    /// x is (tokens, width), in place.
    func forward(_ x: inout [Float], offsets: [Int], causal: Bool, backend: any Backend) {
        let w = width, t = offsets.last!
        let mlp = blocks.map(\.fc.outFeatures).max() ?? w
        var h = [Float](repeating: 0, count: t * w)
        var qkv = [Float](repeating: 0, count: t * 3 * w)
        var ctx = [Float](repeating: 0, count: t * w)
        var mid = [Float](repeating: 0, count: t * mlp)
        for b in blocks {
            h = x
            layerNorm(&h, b.ln1Weight, b.ln1Bias, rows: t)
            linear(&qkv, h, b.qkv, rows: t, backend: backend)
            attention(ctx: &ctx, qkv: qkv, offsets: offsets, causal: causal, backend: backend)
            linear(&h, ctx, b.attnOut, rows: t, residual: x, backend: backend)   // h = x + attn
            x = h
            layerNorm(&h, b.ln2Weight, b.ln2Bias, rows: t)
            linear(&mid, h, b.fc, rows: t, backend: backend)
            mid.withUnsafeMutableBufferPointer { activationForward($0.baseAddress!, count: t * b.fc.outFeatures, settings.activation) }
            linear(&h, mid, b.proj, rows: t, residual: x, backend: backend)      // h = x + mlp
            swap(&x, &h)
        }
    }

    func layerNorm(_ x: inout [Float], _ g: [Float], _ b: [Float], rows: Int) {
        layerNormRows(&x, g, b, rows: rows, cols: width, eps: settings.layerNormEps)
    }

    func attention(ctx: inout [Float], qkv: [Float], offsets: [Int], causal: Bool, backend: any Backend) {
        packedAttention(ctx: &ctx, qkv: qkv, offsets: offsets, width: width, heads: settings.heads, causal: causal, backend: backend)
    }
}

/// A projection stored as open_clip does, (in, out) — `text_projection`, `visual.proj` — or as
/// a bias-free torch Linear, (out, in) — Hugging Face's `text_projection.weight`.
func loadProjection(_ r: WeightReader, _ name: String, in inF: Int, layout: CLIPLayout, backend: any Backend) throws -> LinearWeights {
    switch layout {
    case .openCLIP:
        let p = try r.tensor(name, [inF, nil])
        let out = p.shape[1]
        return backend.prepareLinear(weight: transposed(p.data, rows: inF, cols: out), bias: nil, inFeatures: inF, outFeatures: out)
    case .huggingFace:
        let p = try r.tensor("\(name).weight", [nil, inF])
        return backend.prepareLinear(weight: p.data, bias: nil, inFeatures: inF, outFeatures: p.shape[0])
    }
}

// MARK: - Text tower

public final class CLIPTextTower {
    public let width: Int
    public let vocabSize: Int
    /// The longest sequence, start and end tokens included (77 for every released CLIP).
    public let contextLength: Int
    public let embedDim: Int
    public let pooling: CLIPTextPooling
    let tokenEmbedding: [Float], positionalEmbedding: [Float]
    let transformer: CLIPTransformer
    let lnFinalWeight: [Float], lnFinalBias: [Float]
    let projection: LinearWeights

    init(_ r: WeightReader, settings: CLIPSettings, layout: CLIPLayout, backend: any Backend) throws {
        let t = layout == .openCLIP ? r : r.pp("text_model")
        let tokenName = layout == .openCLIP ? "token_embedding.weight" : "embeddings.token_embedding.weight"
        let tok = try t.tensor(tokenName, [nil, nil])
        (vocabSize, width) = (tok.shape[0], tok.shape[1])
        tokenEmbedding = tok.data
        let pos = try t.tensor(layout == .openCLIP ? "positional_embedding" : "embeddings.position_embedding.weight", [nil, width])
        contextLength = pos.shape[0]
        positionalEmbedding = pos.data
        transformer = try CLIPTransformer.load(layout == .openCLIP ? t.pp("transformer") : t.pp("encoder"), width: width,
                                               settings: settings.text, layout: layout, backend: backend)
        let ln = layout == .openCLIP ? "ln_final" : "final_layer_norm"
        lnFinalWeight = try t.tensor("\(ln).weight", exact: [width]).data
        lnFinalBias = try t.tensor("\(ln).bias", exact: [width]).data
        projection = try loadProjection(r, "text_projection", in: width, layout: layout, backend: backend)
        embedDim = projection.outFeatures
        pooling = settings.textPooling
    }

    public var layers: Int { transformer.layers }

    /// Multiply-adds ×2 of one sequence of `t` tokens, projection included.
    public func flops(tokens t: Int) -> Double { transformer.flops(tokens: t) + 2 * Double(width * embedDim) }

    /// The position each sequence is read out at.
    public func pooledPosition(_ ids: [Int32]) -> Int {
        switch pooling {
        case .argmax:
            var best = 0
            for (i, id) in ids.enumerated() where id > ids[best] { best = i }
            return best
        case .firstToken(let end):
            // transformers' (ids == eos).int().argmax(): position 0 when there is none.
            return ids.firstIndex(of: end) ?? 0
        }
    }

    /// (N, embedDim): each token sequence's projected embedding (not normalised). Every id must
    /// be < vocabSize and every sequence 1…contextLength tokens (checked). Only the tokens up
    /// to the pooled one run: the causal mask keeps later ones from changing it.
    public func forward(_ sequences: [[Int32]], backend: any Backend) -> Tensor {
        Threads.run { forwardOnEngine(sequences, backend: backend) }
    }

    private func forwardOnEngine(_ sequences: [[Int32]], backend: any Backend) -> Tensor {
        let w = width
        var offsets = [0]
        let kept = sequences.map { s -> ArraySlice<Int32> in
            precondition(!s.isEmpty && s.count <= contextLength, "a CLIP text sequence holds 1…\(contextLength) tokens, got \(s.count)")
            return s[...pooledPosition(s)]
        }
        for s in kept { offsets.append(offsets.last! + s.count) }
        let t = offsets.last!
        var x = [Float](repeating: 0, count: t * w)
        tokenEmbedding.withUnsafeBufferPointer { te in
            positionalEmbedding.withUnsafeBufferPointer { pe in
                for (s, seq) in kept.enumerated() {
                    for (p, id) in seq.enumerated() {
                        precondition(id >= 0 && Int(id) < vocabSize, "token id \(id) out of range (vocabulary \(vocabSize))")
                        let row = offsets[s] + p
                        for j in 0..<w { x[row * w + j] = te[Int(id) * w + j] + pe[p * w + j] }
                    }
                }
            }
        }
        transformer.forward(&x, offsets: offsets, causal: true, backend: backend)
        var pooled = [Float](repeating: 0, count: kept.count * w)
        for s in 0..<kept.count {
            let row = offsets[s + 1] - 1
            for j in 0..<w { pooled[s * w + j] = x[row * w + j] }
        }
        layerNormRows(&pooled, lnFinalWeight, lnFinalBias, rows: kept.count, cols: w, eps: transformer.settings.layerNormEps)
        var out = [Float](repeating: 0, count: kept.count * embedDim)
        linear(&out, pooled, projection, rows: kept.count, backend: backend)
        return Tensor(shape: [kept.count, embedDim], data: out)
    }
}

// MARK: - Vision towers

public protocol CLIPImageTower: AnyObject {
    /// The input's side in pixels (the positional embedding's grid says it).
    var imageSize: Int { get }
    /// Multiply-adds ×2 of one image.
    var flops: Double { get }
    var embedDim: Int { get }
    /// A short description: "ViT, patch 32, width 768, 12 layers".
    var summary: String { get }
    /// input (N, 3, S, S), normalised; (N, embedDim), not normalised.
    func forward(_ input: Tensor, backend: any Backend) -> Tensor
}

public final class CLIPVisionTransformer: CLIPImageTower {
    public let width, patchSize, grid: Int
    public let embedDim: Int
    let patchEmbedding: LinearWeights            // 3·p·p → W, no bias
    let classEmbedding: [Float], positionalEmbedding: [Float]
    let lnPreWeight: [Float], lnPreBias: [Float]
    let transformer: CLIPTransformer
    let lnPostWeight: [Float], lnPostBias: [Float]
    let projection: LinearWeights

    init(_ r: WeightReader, settings: CLIPSettings, layout: CLIPLayout, backend: any Backend) throws {
        let v = layout == .openCLIP ? r.pp("visual") : r.pp("vision_model")
        let e = layout == .openCLIP ? v : v.pp("embeddings")
        let conv = try e.tensor(layout == .openCLIP ? "conv1.weight" : "patch_embedding.weight", [nil, 3, nil, nil])
        let (w, p) = (conv.shape[0], conv.shape[2])
        if conv.shape[3] != p {
            throw WeightError.unrecognized(source: r.store.source.sourceName, reason: "tensor '\(e.key(layout == .openCLIP ? "conv1.weight" : "patch_embedding.weight"))' has shape \(conv.shape): patches must be square")
        }
        (width, patchSize) = (w, p)
        // The convolution's (W, 3, p, p) is a linear layer over each patch's (c, y, x) pixels.
        patchEmbedding = backend.prepareLinear(weight: conv.data, bias: nil, inFeatures: 3 * p * p, outFeatures: w)
        classEmbedding = try e.tensor("class_embedding", exact: [w]).data
        let pos = try e.tensor(layout == .openCLIP ? "positional_embedding" : "position_embedding.weight", [nil, w])
        let cells = pos.shape[0] - 1
        let g = Int(Double(cells).squareRoot().rounded())
        if cells < 1 || g * g != cells {
            throw WeightError.unrecognized(source: r.store.source.sourceName,
                                           reason: "tensor '\(e.key(layout == .openCLIP ? "positional_embedding" : "position_embedding.weight"))' has \(pos.shape[0]) rows: not a square grid of patches and a class token")
        }
        grid = g
        positionalEmbedding = pos.data
        let pre = layout == .openCLIP ? "ln_pre" : "pre_layrnorm", post = layout == .openCLIP ? "ln_post" : "post_layernorm"
        lnPreWeight = try v.tensor("\(pre).weight", exact: [w]).data
        lnPreBias = try v.tensor("\(pre).bias", exact: [w]).data
        transformer = try CLIPTransformer.load(layout == .openCLIP ? v.pp("transformer") : v.pp("encoder"), width: w,
                                               settings: settings.vision, layout: layout, backend: backend)
        lnPostWeight = try v.tensor("\(post).weight", exact: [w]).data
        lnPostBias = try v.tensor("\(post).bias", exact: [w]).data
        projection = layout == .openCLIP ? try loadProjection(v, "proj", in: w, layout: .openCLIP, backend: backend)
            : try loadProjection(r, "visual_projection", in: w, layout: .huggingFace, backend: backend)
        embedDim = projection.outFeatures
    }

    public var imageSize: Int { grid * patchSize }
    public var layers: Int { transformer.layers }
    public var flops: Double {
        let cells = Double(grid * grid)
        let patches: Double = 2 * cells * Double(3 * patchSize * patchSize * width)
        let projection: Double = 2 * Double(width * embedDim)
        return patches + transformer.flops(tokens: grid * grid + 1) + projection
    }
    public var summary: String { "ViT, patch \(patchSize), \(imageSize) px, width \(width), \(layers) layers, \(transformer.settings.heads) heads" }

    public func forward(_ input: Tensor, backend: any Backend) -> Tensor {
        Threads.run { forwardOnEngine(input, backend: backend) }
    }

    private func forwardOnEngine(_ input: Tensor, backend: any Backend) -> Tensor {
        let s = imageSize, p = patchSize, g = grid, w = width
        precondition(input.rank == 4 && input.shape[1] == 3 && input.shape[2] == s && input.shape[3] == s,
                     "CLIP ViT input must be (N, 3, \(s), \(s)), got \(input.shape)")
        let n = input.shape[0], cells = g * g, tokens = cells + 1, k = 3 * p * p
        // Every patch's pixels in the convolution weight's (c, y, x) order: one GEMM embeds all.
        var patches = [Float](repeating: 0, count: n * cells * k)
        input.data.withUnsafeBufferPointer { src in
            patches.withUnsafeMutableBufferPointer { dst in
                Threads.parallelFor(n * cells, minChunk: 8) { range in
                    for cell in range {
                        let b = cell / cells, gy = (cell % cells) / g, gx = cell % g
                        var o = cell * k
                        for c in 0..<3 {
                            for y in 0..<p {
                                let row = ((b * 3 + c) * s + gy * p + y) * s + gx * p
                                for x in 0..<p { dst[o] = src[row + x]; o += 1 }
                            }
                        }
                    }
                }
            }
        }
        var embedded = [Float](repeating: 0, count: n * cells * w)
        linear(&embedded, patches, patchEmbedding, rows: n * cells, backend: backend)
        var x = [Float](repeating: 0, count: n * tokens * w)
        for b in 0..<n {
            for j in 0..<w { x[b * tokens * w + j] = classEmbedding[j] + positionalEmbedding[j] }
            for c in 0..<cells {
                let dst = (b * tokens + 1 + c) * w, src = (b * cells + c) * w, pe = (1 + c) * w
                for j in 0..<w { x[dst + j] = embedded[src + j] + positionalEmbedding[pe + j] }
            }
        }
        layerNormRows(&x, lnPreWeight, lnPreBias, rows: n * tokens, cols: w, eps: transformer.settings.layerNormEps)
        transformer.forward(&x, offsets: (0...n).map { $0 * tokens }, causal: false, backend: backend)
        var cls = [Float](repeating: 0, count: n * w)
        for b in 0..<n { for j in 0..<w { cls[b * w + j] = x[b * tokens * w + j] } }
        layerNormRows(&cls, lnPostWeight, lnPostBias, rows: n, cols: w, eps: transformer.settings.layerNormEps)
        var out = [Float](repeating: 0, count: n * embedDim)
        linear(&out, cls, projection, rows: n, backend: backend)
        return Tensor(shape: [n, embedDim], data: out)
    }
}

/// open_clip's ModifiedResNet.
public final class CLIPModifiedResNet: CLIPImageTower {
    let stem: [FoldedConv]
    /// Per stage, its blocks: convolutions 1×1, 3×3, 1×1; the stride (an average pool after the
    /// 3×3 and before the shortcut's 1×1); the shortcut's convolution when shapes change.
    let stages: [[(convs: [FoldedConv], stride: Int, downsample: FoldedConv?)]]
    public let layers: [Int]
    public let width: Int
    let grid: Int
    let heads: Int
    let positionalEmbedding: [Float]     // (grid² + 1, C)
    let query: LinearWeights             // C → C
    let keyValue: LinearWeights          // C → 2C: keys and values side by side
    let output: LinearWeights            // C → embedDim
    public let embedDim: Int

    init(_ r: WeightReader, settings: CLIPSettings, backend: any Backend) throws {
        let v = r.pp("visual"), name = r.store.source.sourceName
        guard let stemShape = v.shape(of: "conv1.weight"), stemShape.count == 4 else {
            throw WeightError.missingTensor(source: name, key: v.key("conv1.weight"))
        }
        let c1 = try FoldedConv.load(v, conv: "conv1", bn: "bn1", inChannels: 3, outChannels: nil, kernel: 3, stride: 2, backend: backend)
        let c2 = try FoldedConv.load(v, conv: "conv2", bn: "bn2", inChannels: c1.outChannels, outChannels: c1.outChannels, kernel: 3, stride: 1, backend: backend)
        let c3 = try FoldedConv.load(v, conv: "conv3", bn: "bn3", inChannels: c2.outChannels, outChannels: nil, kernel: 3, stride: 1, backend: backend)
        stem = [c1, c2, c3]
        width = c3.outChannels
        var channels = width
        var stages: [[(convs: [FoldedConv], stride: Int, downsample: FoldedConv?)]] = []
        var layers: [Int] = []
        for s in 1...4 {
            var count = 0
            while v.contains("layer\(s).\(count).conv1.weight") { count += 1 }
            if count == 0 { throw WeightError.missingTensor(source: name, key: v.key("layer\(s).0.conv1.weight")) }
            layers.append(count)
            var blocks: [(convs: [FoldedConv], stride: Int, downsample: FoldedConv?)] = []
            let planes = width << (s - 1)
            for j in 0..<count {
                let b = v.pp("layer\(s).\(j)")
                let stride = (s > 1 && j == 0) ? 2 : 1
                let k1 = try FoldedConv.load(b, conv: "conv1", bn: "bn1", inChannels: channels, outChannels: planes, kernel: 1, stride: 1, backend: backend)
                let k2 = try FoldedConv.load(b, conv: "conv2", bn: "bn2", inChannels: planes, outChannels: planes, kernel: 3, stride: 1, backend: backend)
                let k3 = try FoldedConv.load(b, conv: "conv3", bn: "bn3", inChannels: planes, outChannels: planes * 4, kernel: 1, stride: 1, backend: backend)
                var down: FoldedConv?
                if stride > 1 || channels != planes * 4 {
                    down = try FoldedConv.load(b.pp("downsample"), conv: "0", bn: "1", inChannels: channels, outChannels: planes * 4,
                                               kernel: 1, stride: 1, backend: backend)
                }
                blocks.append(([k1, k2, k3], stride, down))
                channels = planes * 4
            }
            stages.append(blocks)
        }
        self.stages = stages
        self.layers = layers
        let a = v.pp("attnpool")
        let pos = try a.tensor("positional_embedding", [nil, channels])
        let cells = pos.shape[0] - 1
        let g = Int(Double(max(cells, 0)).squareRoot().rounded())
        if cells < 1 || g * g != cells {
            throw WeightError.unrecognized(source: name, reason: "tensor '\(a.key("positional_embedding"))' has \(pos.shape[0]) rows: not a square grid and a mean token")
        }
        grid = g
        positionalEmbedding = pos.data
        heads = settings.vision.heads
        if channels % heads != 0 {
            throw WeightError.unrecognized(source: name, reason: "attention pooling's \(channels) channels are not a multiple of its \(heads) heads")
        }
        func weights(_ n: String, out: Int?) throws -> (w: [Float], b: [Float], out: Int) {
            let w = try a.tensor("\(n).weight", [out, channels])
            return (w.data, try a.tensor("\(n).bias", exact: [w.shape[0]]).data, w.shape[0])
        }
        let q = try weights("q_proj", out: channels), k = try weights("k_proj", out: channels), vv = try weights("v_proj", out: channels)
        let c = try weights("c_proj", out: nil)
        query = backend.prepareLinear(weight: q.w, bias: q.b, inFeatures: channels, outFeatures: channels)
        keyValue = backend.prepareLinear(weight: k.w + vv.w, bias: k.b + vv.b, inFeatures: channels, outFeatures: 2 * channels)
        output = backend.prepareLinear(weight: c.w, bias: c.b, inFeatures: channels, outFeatures: c.out)
        embedDim = c.out
    }

    /// The stem halves the side twice (a stride-2 convolution, a 2×2 pool), each later stage once.
    public var imageSize: Int { grid * 32 }

    public var flops: Double {
        var side = imageSize, total = 0.0
        func conv(_ c: FoldedConv) {
            let g = c.geometry(batch: 1, height: side, width: side)
            total += g.flops
            side = g.outHeight
        }
        for c in stem { conv(c) }
        side /= 2
        for stage in stages {
            for b in stage {
                let input = side
                conv(b.convs[0]); conv(b.convs[1])
                side /= b.stride
                if let d = b.downsample { total += d.geometry(batch: 1, height: side, width: side).flops }
                conv(b.convs[2])
                _ = input
            }
        }
        let c = Double(width * 32), tokens = Double(grid * grid + 1)
        return total + 2 * tokens * 2 * c * c + 2 * c * c + 4 * tokens * c + 2 * c * Double(embedDim)
    }
    public var summary: String { "modified ResNet (CLIP), stages \(layers), width \(width), \(imageSize) px, attention pooling with \(heads) heads" }

    public func forward(_ input: Tensor, backend: any Backend) -> Tensor {
        Threads.run { forwardOnEngine(input, backend: backend) }
    }

    private func pool(_ x: Activation, _ s: Int) -> Activation {
        var out = Activation(n: x.n, h: x.h / s, w: x.w / s, c: x.c)
        out.data.withUnsafeMutableBufferPointer { o in
            x.data.withUnsafeBufferPointer { i in avgPool2dForward(out: o.baseAddress!, inp: i.baseAddress!, n: x.n, h: x.h, w: x.w, c: x.c, size: s) }
        }
        return out
    }

    private func forwardOnEngine(_ input: Tensor, backend: any Backend) -> Tensor {
        precondition(input.rank == 4 && input.shape[1] == 3 && input.shape[2] == imageSize && input.shape[3] == imageSize,
                     "CLIP ResNet input must be (N, 3, \(imageSize), \(imageSize)), got \(input.shape)")
        let n = input.shape[0]
        let nhwc = nchwToNHWC(input)
        var x = Activation(n: n, h: nhwc.shape[1], w: nhwc.shape[2], c: 3, data: nhwc.data)
        for conv in stem { x = conv.forward(backend, x, relu: true) }
        x = pool(x, 2)
        for stage in stages {
            for b in stage {
                var h = b.convs[0].forward(backend, x, relu: true)
                h = b.convs[1].forward(backend, h, relu: true)
                if b.stride > 1 { h = pool(h, b.stride) }
                var identity = x
                if let d = b.downsample { identity = d.forward(backend, b.stride > 1 ? pool(x, b.stride) : x, relu: false) }
                x = b.convs[2].forward(backend, h, relu: true, residual: identity)
            }
        }
        precondition(x.h == grid && x.w == grid)
        return attentionPool(x, backend: backend)
    }

    /// The mean token (plus its position) queries every token; heads of C / heads channels.
    private func attentionPool(_ x: Activation, backend: any Backend) -> Tensor {
        let n = x.n, c = x.c, cells = grid * grid, tokens = cells + 1, d = c / heads
        var t = [Float](repeating: 0, count: n * tokens * c)
        for b in 0..<n {
            for p in 0..<cells {
                for j in 0..<c { t[(b * tokens) * c + j] += x.data[(b * cells + p) * c + j] }
            }
            for j in 0..<c { t[(b * tokens) * c + j] /= Float(cells) }
            for p in 0..<cells { for j in 0..<c { t[(b * tokens + 1 + p) * c + j] = x.data[(b * cells + p) * c + j] } }
            for r in 0..<tokens { for j in 0..<c { t[(b * tokens + r) * c + j] += positionalEmbedding[r * c + j] } }
        }
        var means = [Float](repeating: 0, count: n * c)
        for b in 0..<n { for j in 0..<c { means[b * c + j] = t[b * tokens * c + j] } }
        var q = [Float](repeating: 0, count: n * c)
        linear(&q, means, query, rows: n, backend: backend)
        var kv = [Float](repeating: 0, count: n * tokens * 2 * c)
        linear(&kv, t, keyValue, rows: n * tokens, backend: backend)
        var ctx = [Float](repeating: 0, count: n * c)
        let scale = 1 / Float(d).squareRoot()
        ctx.withUnsafeMutableBufferPointer { cp in
            Threads.parallelFor(n * heads, minChunk: 1) { range in
                var scores = [Float](repeating: 0, count: tokens)
                for pair in range {
                    let b = pair / heads, h = pair % heads
                    for r in 0..<tokens {
                        var s: Float = 0
                        let krow = (b * tokens + r) * 2 * c + h * d
                        for j in 0..<d { s += q[b * c + h * d + j] * kv[krow + j] }
                        scores[r] = s
                    }
                    scores.withUnsafeMutableBufferPointer { softmaxRowsForward($0.baseAddress!, rows: 1, cols: tokens, scale: scale) }
                    for j in 0..<d {
                        var acc: Float = 0
                        for r in 0..<tokens { acc += scores[r] * kv[(b * tokens + r) * 2 * c + c + h * d + j] }
                        cp[b * c + h * d + j] = acc
                    }
                }
            }
        }
        var out = [Float](repeating: 0, count: n * embedDim)
        linear(&out, ctx, output, rows: n, backend: backend)
        return Tensor(shape: [n, embedDim], data: out)
    }
}

// MARK: - The model

public final class CLIPModel {
    public let layout: CLIPLayout
    public let settings: CLIPSettings
    public let text: CLIPTextTower
    public let vision: any CLIPImageTower
    /// The learned temperature's logarithm: probabilities are softmax(exp(logitScale) · cosine).
    public let logitScale: Float
    public let backend: any Backend
    public let sourceName: String

    /// Loads both towers for `backend`; every tensor must be used (buffers such as
    /// `position_ids` and BatchNorm's `num_batches_tracked` aside).
    public init(source: TensorSource, settings: CLIPSettings, backend: any Backend, allowNonFinite: Bool = false) throws {
        guard let layout = CLIPLayout.of(source.keys) else {
            throw WeightError.unrecognized(source: source.sourceName, reason: "not a CLIP checkpoint (no visual.*, token_embedding, transformer.resblocks.*, text_model.* or vision_model.* tensors)")
        }
        self.layout = layout
        self.settings = settings
        self.backend = backend
        sourceName = source.sourceName
        let store = WeightStore(source, allowNonFinite: allowNonFinite)
        // OpenAI's TorchScript files hold their causal masks and three sizes as tensors (its
        // build_model deletes the sizes; open_clip's attn_mask is a non-persistent buffer).
        let scriptExtras: Set<String> = ["input_resolution", "context_length", "vocab_size"]
        store.ignore { $0.hasSuffix(".num_batches_tracked") || $0.hasSuffix("embeddings.position_ids") || $0 == "attn_mask" || $0.hasSuffix(".attn_mask") || scriptExtras.contains($0) }
        let r = store.root
        text = try CLIPTextTower(r, settings: settings, layout: layout, backend: backend)
        if layout == .openCLIP && r.contains("visual.attnpool.positional_embedding") {
            vision = try CLIPModifiedResNet(r, settings: settings, backend: backend)
        } else {
            vision = try CLIPVisionTransformer(r, settings: settings, layout: layout, backend: backend)
        }
        if vision.embedDim != text.embedDim {
            throw WeightError.unrecognized(source: source.sourceName, reason: "the image tower projects to \(vision.embedDim) dimensions and the text tower to \(text.embedDim): not one space")
        }
        logitScale = try r.tensor("logit_scale", exact: []).data[0]
        try store.checkAllUsed()
    }

    public var embedDim: Int { text.embedDim }

    /// (N, embedDim) image embeddings, not normalised.
    public func encodeImages(_ input: Tensor) -> Tensor { vision.forward(input, backend: backend) }

    /// (N, embedDim) text embeddings of token sequences, not normalised.
    public func encodeTexts(_ sequences: [[Int32]]) -> Tensor { text.forward(sequences, backend: backend) }
}

// MARK: - Texts to vectors

/// A CLIP checkpoint's text side: its tokenizer and text tower (what `TextEncoder` is for BERT).
public final class CLIPTextEncoder {
    public let model: CLIPModel
    public let tokenizer: CLIPTokenizer
    /// The files the tokenizer was read from.
    public var tokenizerPath: String { tokenizer.path }

    public init(model: CLIPModel, tokenizer: CLIPTokenizer) throws {
        let rows = model.text.vocabSize
        if tokenizer.vocab.count > rows {
            throw WeightError.unrecognized(source: tokenizer.path, reason: "the tokenizer has \(tokenizer.vocab.count) tokens, the text tower's embedding \(rows)")
        }
        // Every id the tokenizer can give must be a row of the embedding.
        if let bad = tokenizer.allIDs.first(where: { $0 < 0 || Int($0) >= rows }) {
            throw WeightError.unrecognized(source: tokenizer.path, reason: "token id \(bad) is outside the text tower's embedding of \(rows) rows")
        }
        if model.text.contextLength < 2 {
            throw WeightError.unrecognized(source: model.sourceName, reason: "the text tower's position embedding has \(model.text.contextLength) row: a sequence needs at least the start and end tokens")
        }
        (self.model, self.tokenizer) = (model, tokenizer)
    }

    public var tower: CLIPTextTower { model.text }
    public var dim: Int { model.embedDim }
    /// The longest sequence the tower takes, start and end tokens included: its position
    /// embedding's rows (77 for every released CLIP; open_clip's context_length).
    public var contextLength: Int { tower.contextLength }

    /// Start, tokens, end; cut to `maxLength` (default the context length) with the end token kept.
    public func encode(_ text: String, maxLength: Int? = nil) -> Encoding {
        let limit = min(maxLength ?? contextLength, contextLength)
        var ids = tokenizer.tokens(text)
        let room = max(0, limit - 2)
        let truncated = ids.count > room
        if truncated { ids.removeLast(ids.count - room) }
        let all = [tokenizer.startID] + ids + [tokenizer.endID]
        return Encoding(ids: all, tokens: [], typeIds: [Int32](repeating: 0, count: all.count), truncated: truncated)
    }

    /// Tokens of the text untruncated (start and end included), up to `cap`; nil beyond it.
    public func tokenCount(_ text: String, upTo cap: Int) -> Int? {
        let n = tokenizer.tokens(text).count + 2
        return n <= cap ? n : nil
    }

    /// (count, dim) rows in input order, not normalised: sorted longest first into batches of
    /// at most `batchSize` texts and `batchTokens` tokens, as BERT's.
    public func embed(encodings: [Encoding], batchSize: Int, batchTokens: Int) -> [Float] {
        let d = dim
        var out = [Float](repeating: 0, count: encodings.count * d)
        let order = encodings.indices.sorted { (encodings[$0].count, $1) > (encodings[$1].count, $0) }
        for range in TextEncoder.batches(lengths: order.map { encodings[$0].count }, batchSize: max(1, batchSize), batchTokens: batchTokens) {
            let idx = Array(order[range])
            let rows = tower.forward(idx.map { encodings[$0].ids }, backend: model.backend)
            for (s, row) in idx.enumerated() {
                for j in 0..<d { out[row * d + j] = rows.data[s * d + j] }
            }
        }
        return out
    }
}
