// Texts to vectors: a model folder (config.json, model.safetensors, vocab.txt or tokenizer.json,
// and sentence-transformers' modules.json / 1_Pooling / sentence_bert_config.json when present)
// → tokenize → sort by length into packed batches → BERT → pool → optional L2 normalisation →
// rows back in input order. Defaults follow sentence-transformers' config, so an unflagged run
// gives what SentenceTransformer.encode gives.

import Foundation
import VLMCore
import VLMIO
import VLMTokenizer

public enum Pooling: String, CaseIterable, Sendable {
    /// The raw [CLS] hidden state.
    case cls
    /// The mean over real tokens (special tokens included, as sentence-transformers does).
    case mean
    /// The element-wise max over real tokens.
    case max
    /// BERT's pooler: dense + tanh on [CLS].
    case pooler
}

/// What sentence-transformers' files say, when the folder has them.
public struct SentenceTransformerConfig: Equatable, Sendable {
    public var pooling: Pooling
    public var normalize: Bool
    public var maxSeqLength: Int?
    public var doLowerCase: Bool

    /// modules.json: the pipeline's modules in order.
    struct Module: Decodable {
        var type: String?
        var path: String?
    }

    /// 1_Pooling/config.json: either the boolean flags or (newer releases) one `pooling_mode`.
    struct PoolingFile: Decodable {
        var pooling_mode: String?
        var pooling_mode_cls_token: Bool?
        var pooling_mode_mean_tokens: Bool?
        var pooling_mode_max_tokens: Bool?
        var pooling_mode_mean_sqrt_len_tokens: Bool?
        var pooling_mode_weightedmean_tokens: Bool?
        var pooling_mode_lasttoken: Bool?
    }

    /// sentence_bert_config.json.
    struct SentenceBertFile: Decodable {
        var max_seq_length: Int?
        var do_lower_case: Bool?
    }

    static func decode<T: Decodable>(_ type: T.Type, at path: String, what: String) throws -> T? {
        guard FileStatus.of(path) != nil else { return nil }
        let data: Data
        do { data = try readJSONFile(path, what: what) } catch let e as IOError {
            throw WeightError.unrecognized(source: path, reason: "cannot read \(what) (\(e.description.dropFirst(path.count + 2)))")
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw WeightError.unrecognized(source: path, reason: "not \(what)")
        }
    }

    /// nil when the folder has no modules.json.
    public static func load(folder: String) throws -> SentenceTransformerConfig? {
        let modulesPath = (folder as NSString).appendingPathComponent("modules.json")
        guard let modules = try decode([Module].self, at: modulesPath, what: "a JSON list of modules") else { return nil }
        var pooling = Pooling.cls
        var normalize = false
        for m in modules {
            let type = m.type ?? ""
            if type.hasSuffix(".Pooling") {
                let path = ((folder as NSString).appendingPathComponent(m.path ?? "1_Pooling") as NSString)
                    .appendingPathComponent("config.json")
                guard let p = try decode(PoolingFile.self, at: path, what: "a sentence-transformers pooling config (JSON object)") else {
                    throw WeightError.unrecognized(source: path, reason: "missing (sentence-transformers pooling config)")
                }
                if let mode = p.pooling_mode {
                    guard let pm = Pooling(rawValue: mode == "mean_tokens" ? "mean" : mode) else {
                        throw WeightError.unrecognized(source: path, reason: "pooling mode '\(mode)' is not supported (cls, mean, max)")
                    }
                    pooling = pm
                } else {
                    let flags: [(String, Bool?)] = [("pooling_mode_cls_token", p.pooling_mode_cls_token),
                                                    ("pooling_mode_mean_tokens", p.pooling_mode_mean_tokens),
                                                    ("pooling_mode_max_tokens", p.pooling_mode_max_tokens),
                                                    ("pooling_mode_mean_sqrt_len_tokens", p.pooling_mode_mean_sqrt_len_tokens),
                                                    ("pooling_mode_weightedmean_tokens", p.pooling_mode_weightedmean_tokens),
                                                    ("pooling_mode_lasttoken", p.pooling_mode_lasttoken)]
                    let on = flags.filter { $0.1 == true }.map(\.0)
                    switch on {
                    case ["pooling_mode_cls_token"]: pooling = .cls
                    case ["pooling_mode_mean_tokens"]: pooling = .mean
                    case ["pooling_mode_max_tokens"]: pooling = .max
                    default:
                        throw WeightError.unrecognized(source: path, reason: "pooling modes \(on) are not supported (exactly one of cls, mean, max)")
                    }
                }
            } else if type.hasSuffix(".Normalize") {
                normalize = true
            } else if !type.hasSuffix(".Transformer") {
                throw WeightError.unrecognized(source: modulesPath, reason: "module type '\(type)' is not supported (Transformer, Pooling, Normalize)")
            }
        }
        let sbPath = (folder as NSString).appendingPathComponent("sentence_bert_config.json")
        let sb = try decode(SentenceBertFile.self, at: sbPath, what: "a JSON object")
        if let m = sb?.max_seq_length, m < 2 {
            throw WeightError.unrecognized(source: sbPath, reason: "max_seq_length \(m) leaves no room for a token ([CLS] and [SEP] take 2)")
        }
        return SentenceTransformerConfig(pooling: pooling, normalize: normalize, maxSeqLength: sb?.max_seq_length,
                                         doLowerCase: sb?.do_lower_case ?? false)
    }
}

public struct TextEmbedding {
    /// (N, H), rows in input order.
    public var vectors: Tensor
    /// How many inputs were cut to the maximum length.
    public var truncatedCount: Int
    public var tokenCount: Int
}

/// A text model folder's tokenizer side: config.json, the tokenizer and sentence-transformers'
/// settings, without loading weights (what `vlm tokenize` needs).
public struct TextModelFolder {
    public let folder: String
    public let config: BertConfig
    public let tokenizer: WordPieceTokenizer
    public let sentenceTransformer: SentenceTransformerConfig?

    public init(folder: String) throws {
        self.folder = folder
        guard let st = FileStatus.of(folder) else {
            throw IOError.cannotOpen(path: folder, reason: errno == ENOENT ? "no such model folder" : errnoMessage())
        }
        guard st.kind == .directory else {
            throw IOError.cannotOpen(path: folder, reason: "not a folder (a text model is a folder with config.json, model.safetensors or pytorch_model.bin, and vocab.txt or tokenizer.json)")
        }
        let configPath = (folder as NSString).appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw WeightError.unrecognized(source: folder, reason: "no config.json in this model folder")
        }
        config = try BertConfig.load(path: configPath)
        tokenizer = try WordPieceTokenizer.load(folder: folder)
        if tokenizer.vocabularySize > config.vocabSize {
            throw WeightError.unrecognized(source: configPath, reason: "vocab_size \(config.vocabSize) is smaller than the tokenizer's \(tokenizer.vocabularySize) tokens")
        }
        sentenceTransformer = try SentenceTransformerConfig.load(folder: folder)
        modelMaxLength = Self.modelMaxLength(folder: folder)
    }

    /// tokenizer_config.json's model_max_length (what transformers truncates to, and
    /// sentence-transformers 6 keeps its max_seq_length in); nil when absent or transformers'
    /// "no limit" placeholder (1e30).
    public let modelMaxLength: Int?

    static func modelMaxLength(folder: String) -> Int? {
        struct File: Decodable { var model_max_length: Double? }
        let path = (folder as NSString).appendingPathComponent("tokenizer_config.json")
        guard FileStatus.of(path) != nil, let data = try? readJSONFile(path, what: "tokenizer_config.json"),
              let v = (try? JSONDecoder().decode(File.self, from: data))?.model_max_length,
              v >= 2, v < 1e9, v == v.rounded() else { return nil }
        return Int(v)
    }

    public func path(_ name: String) -> String { (folder as NSString).appendingPathComponent(name) }

    /// sentence-transformers' pooling when configured, else mean.
    public var defaultPooling: Pooling { sentenceTransformer?.pooling ?? .mean }
    /// sentence-transformers' Normalize module when configured.
    public var defaultNormalize: Bool { sentenceTransformer?.normalize ?? false }

    /// sentence-transformers' max_seq_length when set, else tokenizer_config.json's
    /// model_max_length, else max_position_embeddings (and never more than it).
    public var defaultMaxLength: Int {
        min(sentenceTransformer?.maxSeqLength ?? modelMaxLength ?? config.maxPositionEmbeddings, config.maxPositionEmbeddings)
    }

    /// Tokenizes, truncating to maxLength (default `defaultMaxLength`).
    public func encode(_ text: String, pair: String? = nil, maxLength: Int? = nil) -> VLMTokenizer.Encoding {
        let lower = sentenceTransformer?.doLowerCase ?? false
        return tokenizer.encode(lower ? text.lowercased() : text, pair: lower ? pair?.lowercased() : pair,
                                maxLength: min(maxLength ?? defaultMaxLength, config.maxPositionEmbeddings))
    }

    /// The tokens a text (and pair) would take untruncated, special tokens included, counted up
    /// to `cap`; nil when there are more (counting all of a text of megabytes would take seconds).
    public func tokenCount(_ text: String, pair: String? = nil, upTo cap: Int) -> Int? {
        let lower = sentenceTransformer?.doLowerCase ?? false
        let e = tokenizer.encode(lower ? text.lowercased() : text, pair: lower ? pair?.lowercased() : pair, maxLength: cap)
        return e.truncated ? nil : e.count
    }
}

public final class TextEncoder {
    public let files: TextModelFolder
    public let model: BertModel

    public var folder: String { files.folder }
    public var tokenizer: WordPieceTokenizer { files.tokenizer }
    public var sentenceTransformer: SentenceTransformerConfig? { files.sentenceTransformer }
    public var defaultPooling: Pooling { files.defaultPooling }
    public var defaultNormalize: Bool { files.defaultNormalize }
    public var defaultMaxLength: Int { files.defaultMaxLength }

    /// The wrapper prefix removed from every weight's key, if any (`openWeights`).
    public let strippedPrefix: String?

    /// Loads the folder's tokenizer, settings and weights, prepared for `backend`.
    public init(folder: String, backend: any Backend, allowNonFinite: Bool = false) throws {
        let files = try TextModelFolder(folder: folder)
        self.files = files
        let config = files.config
        let weights = try openWeights(try weightsInFolder(folder))
        strippedPrefix = (weights as? PrefixStrippedCheckpoint)?.prefix
        do {
            model = try explainingSharedPrefix(weights) { try BertModel(config: config, source: weights, backend: backend, allowNonFinite: allowNonFinite) }
        } catch let WeightError.shapeMismatch(source, key, expected, got) {
            throw WeightError.unrecognized(source: source, reason: "tensor '\(key)' has shape \(got) but \(files.path("config.json")) implies \(WeightError.shapeText(expected))")
        } catch let WeightError.missingTensor(source, key)
                    where (key.contains("encoder.layer.") || key.contains("transformer.layer.")) && !key.contains(".layer.0.") {
            // Some layers are there, not as many as the config says.
            let name = config.isDistilBERT ? "n_layers" : "num_hidden_layers"
            throw WeightError.unrecognized(source: source, reason: "missing tensor '\(key)' (\(files.path("config.json")) says \(name) \(config.numHiddenLayers))")
        }
    }

    public func encode(_ text: String, pair: String? = nil, maxLength: Int? = nil) -> VLMTokenizer.Encoding {
        files.encode(text, pair: pair, maxLength: maxLength)
    }

    public func tokenCount(_ text: String, pair: String? = nil, upTo cap: Int) -> Int? { files.tokenCount(text, pair: pair, upTo: cap) }

    /// At most this many texts per forward pass, by default.
    public static let defaultBatchSize = 256
    /// At most this many tokens per forward pass, by default (a longer text still goes alone).
    /// Batches are packed — no padding is computed — so a batch's cost follows its tokens, and
    /// larger products run nearer sgemm's peak: on 1,000 captions of ~17 tokens, MiniLM ran
    /// ~20% faster in batches of 128–256 texts than of 32 (BENCHMARKS.md §4).
    public static let defaultBatchTokens = 8192

    /// Consecutive ranges of `lengths` (token counts, in the order they will run) holding at most
    /// `batchSize` items and `batchTokens` tokens each; every range holds at least one item.
    public static func batches(lengths: [Int], batchSize: Int, batchTokens: Int) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var start = 0, tokens = 0
        for (i, n) in lengths.enumerated() {
            if i > start && (i - start >= batchSize || tokens + n > batchTokens) {
                out.append(start..<i)
                start = i
                tokens = 0
            }
            tokens += n
        }
        if start < lengths.count { out.append(start..<lengths.count) }
        return out
    }

    /// Vectors for `texts` (with optional second segments), batched by length; rows in input order.
    public func embed(_ texts: [String], pairs: [String?]? = nil, pooling: Pooling? = nil, normalize: Bool? = nil,
                      maxLength: Int? = nil, batchSize: Int = TextEncoder.defaultBatchSize,
                      batchTokens: Int = TextEncoder.defaultBatchTokens) throws -> TextEmbedding {
        let pooling = pooling ?? defaultPooling
        try check(pooling: pooling, pairs: pairs?.contains { $0 != nil } ?? false)
        let encodings = Threads.run { texts.indices.map { encode(texts[$0], pair: pairs?[$0] ?? nil, maxLength: maxLength) } }
        let out = embed(encodings: encodings, pooling: pooling, normalize: normalize ?? defaultNormalize,
                        batchSize: batchSize, batchTokens: batchTokens)
        return TextEmbedding(vectors: Tensor(shape: [texts.count, model.config.hiddenSize], data: out),
                             truncatedCount: encodings.filter(\.truncated).count,
                             tokenCount: encodings.reduce(0) { $0 + $1.count })
    }

    /// Throws when the checkpoint cannot give `pooling`, or cannot encode sentence pairs.
    public func check(pooling: Pooling, pairs: Bool) throws {
        if pooling == .pooler && !model.hasPooler {
            throw WeightError.unrecognized(source: folder, reason: "the checkpoint has no pooler (pooler.dense.*); use --pooling cls|mean|max")
        }
        if pairs && !model.config.isDistilBERT && model.config.typeVocabSize < 2 {
            throw WeightError.unrecognized(source: folder, reason: "type_vocab_size \(model.config.typeVocabSize) cannot encode sentence pairs")
        }
    }

    /// (count, H) vectors for tokenized texts, rows in input order: sorted longest first (ties
    /// in input order) into packed batches of at most `batchSize` texts and `batchTokens`
    /// tokens, so each batch holds texts of similar length.
    public func embed(encodings: [VLMTokenizer.Encoding], pooling: Pooling, normalize: Bool,
                      batchSize: Int = TextEncoder.defaultBatchSize, batchTokens: Int = TextEncoder.defaultBatchTokens) -> [Float] {
        Threads.run { embedOnEngine(encodings: encodings, pooling: pooling, normalize: normalize, batchSize: batchSize, batchTokens: batchTokens) }
    }

    private func embedOnEngine(encodings: [VLMTokenizer.Encoding], pooling: Pooling, normalize: Bool, batchSize: Int, batchTokens: Int) -> [Float] {
        let h = model.config.hiddenSize
        var out = [Float](repeating: 0, count: encodings.count * h)
        let order = encodings.indices.sorted { (encodings[$0].count, $1) > (encodings[$1].count, $0) }
        for range in TextEncoder.batches(lengths: order.map { encodings[$0].count }, batchSize: max(1, batchSize),
                                         batchTokens: batchTokens) {
            let idx = Array(order[range])
            let batch = PackedBatch(sequences: idx.map { (encodings[$0].ids, encodings[$0].typeIds) })
            let result = model.forward(batch)
            for (s, row) in idx.enumerated() {
                poolSequence(out: &out, row: row, result: result, s: s, pooling: pooling, normalize: normalize)
            }
        }
        return out
    }

    private func poolSequence(out: inout [Float], row: Int, result: BertOutput, s: Int, pooling: Pooling, normalize: Bool) {
        let h = model.config.hiddenSize
        let r = result.offsets[s]..<result.offsets[s + 1]
        var v = [Float](repeating: 0, count: h)
        result.hidden.data.withUnsafeBufferPointer { x in
            switch pooling {
            case .cls:
                for j in 0..<h { v[j] = x[r.lowerBound * h + j] }
            case .pooler:
                for j in 0..<h { v[j] = result.pooled!.data[s * h + j] }
            case .mean:
                var acc = [Double](repeating: 0, count: h)
                for t in r { for j in 0..<h { acc[j] += Double(x[t * h + j]) } }
                for j in 0..<h { v[j] = Float(acc[j] / Double(r.count)) }
            case .max:
                for j in 0..<h { v[j] = -.infinity }
                for t in r { for j in 0..<h { v[j] = Swift.max(v[j], x[t * h + j]) } }
            }
        }
        if normalize { l2Normalize(&v) }
        for j in 0..<h { out[row * h + j] = v[j] }
    }
}

/// x / max(‖x‖, 1e-12), as torch.nn.functional.normalize.
public func l2Normalize(_ v: inout [Float]) {
    var s = 0.0
    for x in v { s += Double(x) * Double(x) }
    let n = Swift.max(s.squareRoot(), 1e-12)   // in Double: a norm above Float's range still divides
    for i in v.indices { v[i] = Float(Double(v[i]) / n) }
}
