// BERT in Hugging Face's layout (transformers' BertModel): embeddings (word + position + token
// type, LayerNorm) → L encoder layers (fused QKV GEMM, scaled dot-product attention per
// sequence and head, output projection + residual + LayerNorm, intermediate + activation,
// output + residual + LayerNorm) → optional pooler (dense + tanh on [CLS]).
// Upstream: transformers/models/bert/modeling_bert.py. A batch is packed: its sequences'
// tokens are concatenated, so every dense layer runs over real tokens only.

import Foundation
import VLMCore
import VLMIO

// MARK: - Configuration

/// config.json, with Hugging Face's key names.
public struct BertConfig: Decodable, Equatable, Sendable {
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var intermediateSize: Int
    public var hiddenAct: String
    public var layerNormEps: Float
    public var maxPositionEmbeddings: Int
    public var typeVocabSize: Int
    public var vocabSize: Int
    public var positionEmbeddingType: String?
    public var modelType: String?

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case intermediateSize = "intermediate_size", hiddenAct = "hidden_act", layerNormEps = "layer_norm_eps"
        case maxPositionEmbeddings = "max_position_embeddings", typeVocabSize = "type_vocab_size", vocabSize = "vocab_size"
        case positionEmbeddingType = "position_embedding_type", modelType = "model_type"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu"
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? 1e-12
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 512
        typeVocabSize = try c.decodeIfPresent(Int.self, forKey: .typeVocabSize) ?? 2
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        positionEmbeddingType = try c.decodeIfPresent(String.self, forKey: .positionEmbeddingType)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType)
    }

    /// The settings themselves (DistilBERT's config.json, mapped).
    init(hiddenSize: Int, numHiddenLayers: Int, numAttentionHeads: Int, intermediateSize: Int, hiddenAct: String,
         layerNormEps: Float, maxPositionEmbeddings: Int, typeVocabSize: Int, vocabSize: Int, modelType: String?) {
        self.hiddenSize = hiddenSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.intermediateSize = intermediateSize
        self.hiddenAct = hiddenAct
        self.layerNormEps = layerNormEps
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.typeVocabSize = typeVocabSize
        self.vocabSize = vocabSize
        self.modelType = modelType
    }

    /// DistilBERT: no token types (type_vocab_size 0), LayerNorm eps 1e-12.
    public var isDistilBERT: Bool { modelType == "distilbert" }

    public var headDim: Int { hiddenSize / numAttentionHeads }

    /// Multiply-adds ×2 of the encoder for a batch of sequences with these lengths.
    public func flops(lengths: [Int]) -> Double {
        let h = Double(hiddenSize), i = Double(intermediateSize)
        let t = Double(lengths.reduce(0, +))
        let dense = 2 * t * (3 * h * h + h * h + 2 * h * i)
        let attention = lengths.reduce(0.0) { $0 + 2 * 2 * Double($1) * Double($1) * h }
        return Double(numHiddenLayers) * (dense + attention)
    }

    /// Reads and checks config.json; errors name the file.
    public static func load(path: String) throws -> BertConfig {
        let data: Data
        do { data = try readJSONFile(path, what: "the model's config.json") } catch let e as IOError {
            throw WeightError.unrecognized(source: path, reason: "cannot read config.json (\(e.description.dropFirst(path.count + 2)))")
        }
        let cfg: BertConfig
        // model_type first: a RoBERTa, XLM-R or MPNet config reads as BERT settings, but those
        // models are not BERT (another tokenizer, position scheme or attention).
        struct Kind: Decodable { var model_type: String? }
        let kind = (try? JSONDecoder().decode(Kind.self, from: data))?.model_type
        switch kind {
        case nil, "bert", "distilbert": break
        case let other?:
            throw WeightError.unrecognized(source: path, reason: "model_type '\(other.prefix(60))' is not supported: vlm runs BERT encoders "
                                           + "(model_type bert: BERT, MiniLM, BGE, E5, GTE, …) and DistilBERT (distilbert)")
        }
        do {
            if kind == "distilbert" {
                let d = try JSONDecoder().decode(DistilBertConfigJSON.self, from: data)
                // sinusoidal_pos_embds: transformers fills position_embeddings.weight with the
                // sinusoids and saves it, so the checkpoint holds them either way.
                cfg = BertConfig(hiddenSize: d.dim, numHiddenLayers: d.n_layers, numAttentionHeads: d.n_heads, intermediateSize: d.hidden_dim,
                                 hiddenAct: d.activation ?? "gelu", layerNormEps: 1e-12, maxPositionEmbeddings: d.max_position_embeddings ?? 512,
                                 typeVocabSize: 0, vocabSize: d.vocab_size, modelType: "distilbert")
            } else {
                cfg = try JSONDecoder().decode(BertConfig.self, from: data)
            }
        } catch DecodingError.keyNotFound(let key, _) {
            throw WeightError.unrecognized(source: path, reason: "missing key '\(key.stringValue)'")
        } catch DecodingError.typeMismatch(_, let ctx) where !ctx.codingPath.isEmpty {
            throw WeightError.unrecognized(source: path, reason: "key '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type")
        } catch DecodingError.valueNotFound(_, let ctx) where !ctx.codingPath.isEmpty {
            throw WeightError.unrecognized(source: path, reason: "key '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))' is null")
        } catch {
            throw WeightError.unrecognized(source: path, reason: "not a JSON object of \(kind == "distilbert" ? "DistilBERT" : "BERT") settings")
        }
        // Each setting by the name the file uses (DistilBERT's config names them its own way).
        let distil = cfg.isDistilBERT
        let names = (hidden: distil ? "dim" : "hidden_size", layers: distil ? "n_layers" : "num_hidden_layers",
                     heads: distil ? "n_heads" : "num_attention_heads", intermediate: distil ? "hidden_dim" : "intermediate_size")
        for (name, v) in [(names.hidden, cfg.hiddenSize), (names.layers, cfg.numHiddenLayers),
                          (names.heads, cfg.numAttentionHeads), (names.intermediate, cfg.intermediateSize),
                          ("max_position_embeddings", cfg.maxPositionEmbeddings), ("vocab_size", cfg.vocabSize),
                          ("type_vocab_size", distil ? 1 : cfg.typeVocabSize)] where v <= 0 {
            throw WeightError.unrecognized(source: path, reason: "\(name) must be positive, got \(v)")
        }
        if cfg.hiddenSize % cfg.numAttentionHeads != 0 {
            throw WeightError.unrecognized(source: path, reason: "\(names.hidden) \(cfg.hiddenSize) is not a multiple of \(names.heads) \(cfg.numAttentionHeads)")
        }
        if !(cfg.layerNormEps >= 0 && cfg.layerNormEps < 1) {
            throw WeightError.unrecognized(source: path, reason: "layer_norm_eps \(cfg.layerNormEps) is not in [0, 1)")
        }
        if ActivationFunction(huggingFace: cfg.hiddenAct) == nil {
            throw WeightError.unrecognized(source: path, reason: "\(distil ? "activation" : "hidden_act") '\(cfg.hiddenAct)' is not supported (gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, relu)")
        }
        if let p = cfg.positionEmbeddingType, p != "absolute" {
            throw WeightError.unrecognized(source: path, reason: "position_embedding_type '\(p)' is not supported (absolute only)")
        }
        return cfg
    }
}

/// DistilBERT's config.json (transformers' DistilBertConfig names).
struct DistilBertConfigJSON: Decodable {
    var dim: Int
    var n_layers: Int
    var n_heads: Int
    var hidden_dim: Int
    var activation: String?
    var max_position_embeddings: Int?
    var vocab_size: Int
    var sinusoidal_pos_embds: Bool?
}

// MARK: - Checkpoint key mapping (the one place the BERT family's names are reconciled)

/// Maps a checkpoint's keys to BertModel's: drops a `bert.` prefix (BertForMaskedLM,
/// BertForSequenceClassification, …), renames old-style LayerNorm `gamma`/`beta` to
/// `weight`/`bias`, and sets aside task heads (`cls.*`, `classifier.*`, …) and buffers
/// (`embeddings.position_ids`) which the encoder does not use.
public struct BertKeyMap {
    public let canonical: [String: String]   // canonical key → checkpoint key
    public let ignoredHeads: [String]
    public let ignoredBuffers: [String]

    public init(keys: [String]) {
        // BertModel's keys under `bert.`, or DistilBertModel's (under `distilbert.` in its task
        // models), whose layers are renamed to BERT's.
        let prefix = keys.contains { $0.hasPrefix("bert.embeddings.") } ? "bert."
            : keys.contains { $0.hasPrefix("distilbert.embeddings.") } ? "distilbert." : nil
        let distil = keys.contains { $0.hasPrefix("transformer.layer.") || $0.hasPrefix("distilbert.transformer.layer.") }
        var map: [String: String] = [:], heads: [String] = [], buffers: [String] = []
        for key in keys {
            var k = key
            if let prefix {
                guard k.hasPrefix(prefix) else { heads.append(key); continue }
                k.removeFirst(prefix.count)
            }
            if distil, let renamed = BertKeyMap.bertName(ofDistilBERT: k) { k = renamed }
            if k.hasSuffix("LayerNorm.gamma") { k = String(k.dropLast(5)) + "weight" }
            if k.hasSuffix("LayerNorm.beta") { k = String(k.dropLast(4)) + "bias" }
            if k == "embeddings.position_ids" || k.hasSuffix(".num_batches_tracked") { buffers.append(key); continue }
            if !(k.hasPrefix("embeddings.") || k.hasPrefix("encoder.") || k.hasPrefix("pooler.")) { heads.append(key); continue }
            map[k] = key
        }
        canonical = map
        ignoredHeads = heads.sorted()
        ignoredBuffers = buffers
    }

    /// transformer.layer.N.{attention.q_lin, k_lin, v_lin, out_lin, sa_layer_norm, ffn.lin1,
    /// ffn.lin2, output_layer_norm} → BERT's encoder.layer.N names; nil for other keys.
    static func bertName(ofDistilBERT k: String) -> String? {
        let head = "transformer.layer."
        guard k.hasPrefix(head) else { return nil }
        let rest = k.dropFirst(head.count)
        guard let dot = rest.firstIndex(of: ".") else { return nil }
        let n = rest[..<dot], tail = String(rest[rest.index(after: dot)...])
        let renames: [(String, String)] = [
            ("attention.q_lin.", "attention.self.query."), ("attention.k_lin.", "attention.self.key."),
            ("attention.v_lin.", "attention.self.value."), ("attention.out_lin.", "attention.output.dense."),
            ("sa_layer_norm.", "attention.output.LayerNorm."), ("ffn.lin1.", "intermediate.dense."),
            ("ffn.lin2.", "output.dense."), ("output_layer_norm.", "output.LayerNorm."),
        ]
        for (from, to) in renames where tail.hasPrefix(from) {
            return "encoder.layer.\(n)." + to + tail.dropFirst(from.count)
        }
        return "encoder.layer.\(n)." + tail   // unknown: kept, so it is reported as unused
    }

    /// The inverse, for messages: BERT's encoder.layer.N name as DistilBERT's file would have it.
    static func distilBERTName(ofBERT k: String) -> String {
        let head = "encoder.layer."
        guard k.hasPrefix(head) else { return k }
        let rest = k.dropFirst(head.count)
        guard let dot = rest.firstIndex(of: ".") else { return k }
        let n = rest[..<dot], tail = String(rest[rest.index(after: dot)...])
        let renames: [(String, String)] = [
            ("attention.self.query.", "attention.q_lin."), ("attention.self.key.", "attention.k_lin."),
            ("attention.self.value.", "attention.v_lin."), ("attention.output.dense.", "attention.out_lin."),
            ("attention.output.LayerNorm.", "sa_layer_norm."), ("intermediate.dense.", "ffn.lin1."),
            ("output.dense.", "ffn.lin2."), ("output.LayerNorm.", "output_layer_norm."),
        ]
        for (from, to) in renames where tail.hasPrefix(from) {
            return "transformer.layer.\(n)." + to + tail.dropFirst(from.count)
        }
        return "transformer.layer.\(n)." + tail
    }
}

/// A source seen through a key map: canonical names in, checkpoint tensors out.
final class MappedTensorSource: TensorSource {
    let base: TensorSource
    let map: [String: String]
    /// The file's own name of a canonical key it lacks (DistilBERT's layer names), for messages.
    let missingName: (String) -> String
    init(base: TensorSource, map: [String: String], missingName: @escaping (String) -> String = { $0 }) {
        (self.base, self.map, self.missingName) = (base, map, missingName)
    }
    func checkpointName(of key: String) -> String { map[key] ?? missingName(key) }
    var sourceName: String { base.sourceName }
    var keys: [String] { map.keys.sorted() }
    func shape(of key: String) -> [Int]? { map[key].flatMap { base.shape(of: $0) } }
    func floatTensor(_ key: String) throws -> Tensor {
        guard let k = map[key] else { throw WeightError.missingTensor(source: base.sourceName, key: key) }
        return try base.floatTensor(k)
    }
}

// MARK: - Layers


/// One encoder layer's weights, each linear layer prepared by the backend at load.
struct BertLayerWeights {
    var qkv: LinearWeights                                  // H → 3H: query, key, value side by side
    var attnOut: LinearWeights                              // H → H
    var attnNormWeight: [Float], attnNormBias: [Float]      // (H)
    var inter: LinearWeights                                // H → I
    var out: LinearWeights                                  // I → H
    var outNormWeight: [Float], outNormBias: [Float]        // (H)

    static func load(_ r: WeightReader, _ c: BertConfig, backend: any Backend) throws -> BertLayerWeights {
        let h = c.hiddenSize, i = c.intermediateSize
        let a = r.pp("attention"), s = a.pp("self")
        var qkvW: [Float] = [], qkvB: [Float] = []
        for name in ["query", "key", "value"] {
            qkvW += try s.tensor("\(name).weight", exact: [h, h]).data
            qkvB += try s.tensor("\(name).bias", exact: [h]).data
        }
        func linear(_ r: WeightReader, _ name: String, _ inF: Int, _ outF: Int) throws -> LinearWeights {
            backend.prepareLinear(weight: try r.tensor("\(name).weight", exact: [outF, inF]).data,
                                  bias: try r.tensor("\(name).bias", exact: [outF]).data, inFeatures: inF, outFeatures: outF)
        }
        return BertLayerWeights(
            qkv: backend.prepareLinear(weight: qkvW, bias: qkvB, inFeatures: h, outFeatures: 3 * h),
            attnOut: try linear(a, "output.dense", h, h),
            attnNormWeight: try a.tensor("output.LayerNorm.weight", exact: [h]).data,
            attnNormBias: try a.tensor("output.LayerNorm.bias", exact: [h]).data,
            inter: try linear(r, "intermediate.dense", h, i),
            out: try linear(r, "output.dense", i, h),
            outNormWeight: try r.tensor("output.LayerNorm.weight", exact: [h]).data,
            outNormBias: try r.tensor("output.LayerNorm.bias", exact: [h]).data)
    }
}

/// A packed batch: sequences' tokens concatenated. offsets[s]..<offsets[s+1] are sequence s's rows.
public struct PackedBatch: Sendable {
    public var ids: [Int32]
    public var typeIds: [Int32]
    public var offsets: [Int]

    public init(sequences: [(ids: [Int32], typeIds: [Int32])]) {
        ids = []; typeIds = []; offsets = [0]
        for s in sequences {
            precondition(s.ids.count == s.typeIds.count && !s.ids.isEmpty)
            ids += s.ids
            typeIds += s.typeIds
            offsets.append(ids.count)
        }
    }

    public var count: Int { offsets.count - 1 }
    public var tokenCount: Int { ids.count }
    public func range(_ s: Int) -> Range<Int> { offsets[s]..<offsets[s + 1] }
}

public struct BertOutput {
    /// (tokens, H): the last hidden state of every real token, sequences concatenated.
    public var hidden: Tensor
    /// (N, H): dense + tanh on each [CLS], when the checkpoint has a pooler.
    public var pooled: Tensor?
    public var offsets: [Int]
}

// MARK: - Model

public final class BertModel {
    public let config: BertConfig
    public let activation: ActivationFunction
    let wordEmbeddings: [Float], positionEmbeddings: [Float], typeEmbeddings: [Float]
    let embNormWeight: [Float], embNormBias: [Float]
    let layers: [BertLayerWeights]
    let pooler: LinearWeights?
    /// Checkpoint keys that belong to task heads (ignored), for the caller to report.
    public let ignoredHeads: [String]
    /// The backend that prepared the weights and runs every forward pass.
    public let backend: any Backend

    public var hasPooler: Bool { pooler != nil }

    /// Loads every encoder tensor for `backend` (with the same missing / shape / unused errors
    /// as ResNet); task heads are set aside and listed in `ignoredHeads`.
    /// `allowNonFinite` loads tensors holding NaN or infinity instead of refusing them.
    public init(config c: BertConfig, source: TensorSource, backend: any Backend, allowNonFinite: Bool = false) throws {
        config = c
        self.backend = backend
        activation = ActivationFunction(huggingFace: c.hiddenAct)!
        let keyMap = BertKeyMap(keys: source.keys)
        ignoredHeads = keyMap.ignoredHeads
        // A tensor the file lacks is named as the file's own family names it.
        let prefix = source.keys.contains { $0.hasPrefix("distilbert.") } ? "distilbert." : source.keys.contains { $0.hasPrefix("bert.") } ? "bert." : ""
        let missingName: (String) -> String = { prefix + (c.isDistilBERT ? BertKeyMap.distilBERTName(ofBERT: $0) : $0) }
        let store = WeightStore(MappedTensorSource(base: source, map: keyMap.canonical, missingName: missingName), allowNonFinite: allowNonFinite)
        let r = store.root, e = r.pp("embeddings"), h = c.hiddenSize
        wordEmbeddings = try e.tensor("word_embeddings.weight", exact: [c.vocabSize, h]).data
        positionEmbeddings = try e.tensor("position_embeddings.weight", exact: [c.maxPositionEmbeddings, h]).data
        typeEmbeddings = c.isDistilBERT ? [] : try e.tensor("token_type_embeddings.weight", exact: [c.typeVocabSize, h]).data
        embNormWeight = try e.tensor("LayerNorm.weight", exact: [h]).data
        embNormBias = try e.tensor("LayerNorm.bias", exact: [h]).data
        layers = try (0..<c.numHiddenLayers).map { try BertLayerWeights.load(r.pp("encoder.layer.\($0)"), c, backend: backend) }
        if r.contains("pooler.dense.weight") {
            pooler = backend.prepareLinear(weight: try r.tensor("pooler.dense.weight", exact: [h, h]).data,
                                           bias: try r.tensor("pooler.dense.bias", exact: [h]).data, inFeatures: h, outFeatures: h)
        } else {
            pooler = nil
        }
        try store.checkAllUsed()
    }

    /// Multiply-adds ×2 for a batch of sequences with these lengths.
    public func flops(lengths: [Int]) -> Double { config.flops(lengths: lengths) }

    /// Runs the encoder over a packed batch. Token ids must be < vocab_size, type ids <
    /// type_vocab_size and each sequence no longer than max_position_embeddings (checked).
    public func forward(_ batch: PackedBatch) -> BertOutput {
        Threads.run { forwardOnEngine(batch) }
    }

    private func forwardOnEngine(_ batch: PackedBatch) -> BertOutput {
        let c = config, h = c.hiddenSize, t = batch.tokenCount, inter = c.intermediateSize
        precondition(t > 0, "empty batch")
        var x = [Float](repeating: 0, count: t * h)

        // Embeddings: word + position + token type, then LayerNorm.
        x.withUnsafeMutableBufferPointer { xp in
            let xb = xp.baseAddress!
            wordEmbeddings.withUnsafeBufferPointer { w in
                positionEmbeddings.withUnsafeBufferPointer { p in
                    typeEmbeddings.withUnsafeBufferPointer { ty in
                        for s in 0..<batch.count {
                            let r = batch.range(s)
                            precondition(r.count <= c.maxPositionEmbeddings, "sequence of \(r.count) tokens > max_position_embeddings \(c.maxPositionEmbeddings)")
                            for (pos, row) in r.enumerated() {
                                let id = Int(batch.ids[row])
                                let dst = xb + row * h, we = w.baseAddress! + id * h, pe = p.baseAddress! + pos * h
                                if c.isDistilBERT {   // no token types
                                    precondition(id >= 0 && id < c.vocabSize, "token id \(id) out of range")
                                    for j in 0..<h { dst[j] = we[j] + pe[j] }
                                    continue
                                }
                                let tt = Int(batch.typeIds[row])
                                precondition(id >= 0 && id < c.vocabSize && tt >= 0 && tt < c.typeVocabSize, "token id \(id) / type \(tt) out of range")
                                let te = ty.baseAddress! + tt * h
                                for j in 0..<h { dst[j] = we[j] + pe[j] + te[j] }
                            }
                        }
                    }
                }
            }
            embNormWeight.withUnsafeBufferPointer { g in
                embNormBias.withUnsafeBufferPointer { b in
                    layerNormForward(xb, gamma: g.baseAddress!, beta: b.baseAddress!, rows: t, cols: h, eps: c.layerNormEps)
                }
            }
        }

        // Scratch reused across layers.
        var qkv = [Float](repeating: 0, count: t * 3 * h)
        var ctx = [Float](repeating: 0, count: t * h)
        var attn = [Float](repeating: 0, count: t * h)
        var mid = [Float](repeating: 0, count: t * inter)

        for layer in layers {
            // Q, K, V in one GEMM: (t, 3H) = x (t, H) · Wqkvᵀ + b.
            linear(&qkv, x, layer.qkv, rows: t)
            attention(ctx: &ctx, qkv: qkv, batch: batch)
            // Output projection + residual, then LayerNorm.
            linear(&attn, ctx, layer.attnOut, rows: t, residual: x)
            layerNorm(&attn, layer.attnNormWeight, layer.attnNormBias, rows: t, cols: h)
            // Feed-forward.
            linear(&mid, attn, layer.inter, rows: t)
            mid.withUnsafeMutableBufferPointer { activationForward($0.baseAddress!, count: t * inter, activation) }
            linear(&x, mid, layer.out, rows: t, residual: attn)
            layerNorm(&x, layer.outNormWeight, layer.outNormBias, rows: t, cols: h)
        }

        var pooled: Tensor?
        if let pooler {
            var cls = [Float](repeating: 0, count: batch.count * h)
            for s in 0..<batch.count {
                let src = batch.offsets[s] * h
                for j in 0..<h { cls[s * h + j] = x[src + j] }
            }
            var out = [Float](repeating: 0, count: batch.count * h)
            linear(&out, cls, pooler, rows: batch.count)
            out.withUnsafeMutableBufferPointer { activationForward($0.baseAddress!, count: batch.count * h, .tanh) }
            pooled = Tensor(shape: [batch.count, h], data: out)
        }
        return BertOutput(hidden: Tensor(shape: [t, h], data: x), pooled: pooled, offsets: batch.offsets)
    }

    private func linear(_ out: inout [Float], _ inp: [Float], _ w: LinearWeights, rows: Int, residual: [Float]? = nil) {
        VLMModels.linear(&out, inp, w, rows: rows, residual: residual, backend: backend)
    }

    private func layerNorm(_ x: inout [Float], _ g: [Float], _ b: [Float], rows: Int, cols: Int) {
        layerNormRows(&x, g, b, rows: rows, cols: cols, eps: config.layerNormEps)
    }

    private func attention(ctx: inout [Float], qkv: [Float], batch: PackedBatch) {
        packedAttention(ctx: &ctx, qkv: qkv, offsets: batch.offsets, width: config.hiddenSize, heads: config.numAttentionHeads,
                        causal: false, backend: backend)
    }
}

/// "BERT, 6 layers, hidden 384, …" when the keys are a BERT-family encoder's (with or without
/// the `bert.` prefix); nil otherwise.
public func describeBERT(_ file: any Checkpoint) -> String? {
    let map = BertKeyMap(keys: file.tensorNames).canonical
    guard let word = map["embeddings.word_embeddings.weight"].flatMap({ file.shape(of: $0) }), word.count == 2 else { return nil }
    let layers = Set(map.keys.compactMap { k -> Int? in
        guard k.hasPrefix("encoder.layer.") else { return nil }
        return Int(k.dropFirst("encoder.layer.".count).prefix { $0.isNumber })
    }).count
    let inter = map["encoder.layer.0.intermediate.dense.weight"].flatMap { file.shape(of: $0)?.first }
    let distil = map["embeddings.token_type_embeddings.weight"] == nil && file.tensorNames.contains { $0.contains("transformer.layer.") }
    var s = (distil ? "DistilBERT encoder (Hugging Face layout, no token types)" : "BERT-family encoder (Hugging Face layout)")
        + ", \(layers) layers, hidden \(word[1]), vocabulary \(word[0])"
    if let inter { s += ", intermediate \(inter)" }
    s += map["pooler.dense.weight"] != nil ? ", with a pooler" : ", no pooler"
    return s
}
