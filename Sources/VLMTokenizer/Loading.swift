// Loading a tokenizer from a model folder as transformers' AutoTokenizer would: tokenizer.json
// (vocab, normalizer, added tokens) when present, else vocab.txt; tokenizer_config.json's
// do_lower_case / strip_accents / tokenize_chinese_chars override the normalizer, as
// BertTokenizerFast.__init__ does.

import Foundation
import VLMCore
import VLMIO

extension WordPieceTokenizer {
    public static func load(folder: String) throws -> WordPieceTokenizer {
        let fm = FileManager.default
        func path(_ name: String) -> String { (folder as NSString).appendingPathComponent(name) }
        var options = NormalizerOptions()
        var tokens: [String]
        var specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        let source: String

        if fm.fileExists(atPath: path("vocab.txt")) {
            source = path("vocab.txt")
            tokens = try readVocabTxt(source)
        } else if fm.fileExists(atPath: path("tokenizer.json")) {
            source = path("tokenizer.json")
            tokens = []
        } else {
            throw TokenizerError.missingVocabulary(folder: folder)
        }
        if fm.fileExists(atPath: path("tokenizer.json")) {
            let tj = path("tokenizer.json")
            let data = try readTokenizerFile(tj, limit: 64 << 20)
            // Codable decoding skips what it does not model (the vocabulary, unless needed),
            // which keeps start-up short for scripts that embed one line at a time.
            let head: TokenizerJSON
            do {
                head = try JSONDecoder().decode(TokenizerJSON.self, from: data)
            } catch {
                throw TokenizerError.badFile(path: tj, reason: "not a tokenizer.json this reader understands")
            }
            switch head.normalizer {
            case nil:
                // No normalizer: the text as it is (the pre-tokenizer still splits it).
                options = NormalizerOptions(cleanText: false, handleChineseChars: false, stripAccents: false, lowercase: false)
            case let norm? where norm.type == "BertNormalizer":
                options.cleanText = norm.clean_text ?? true
                options.handleChineseChars = norm.handle_chinese_chars ?? true
                options.stripAccents = norm.strip_accents
                options.lowercase = norm.lowercase ?? true
            case let norm?:
                throw TokenizerError.badFile(path: tj, reason: "normalizer '\(norm.type ?? "?")' is not supported (BertNormalizer, or none)")
            }
            try head.checkBERTPipeline(path: tj)
            let added = head.added_tokens ?? []
            if let plain = added.first(where: { $0.special != true }) {
                throw TokenizerError.badFile(path: tj, reason: "added token '\(plain.content)' is not special; added non-special tokens are not supported")
            }
            let s = added.map(\.content)
            if !s.isEmpty { specials = s }
            if tokens.isEmpty {
                guard let model = obj(forVocabIn: data, path: tj) else {
                    throw TokenizerError.badFile(path: tj, reason: "not a WordPiece tokenizer (model.type must be WordPiece with a vocab)")
                }
                var byId = [String?](repeating: nil, count: model.count)
                for (token, id) in model {
                    guard id >= 0, id < model.count else {
                        throw TokenizerError.badFile(path: tj, reason: "vocab id of '\(token)' is not in 0..<\(model.count)")
                    }
                    byId[id] = token
                }
                let complete = byId.compactMap { $0 }
                guard complete.count == model.count else {
                    throw TokenizerError.badFile(path: tj, reason: "vocab ids are not 0..<\(model.count) without gaps")
                }
                tokens = complete
            }
        }
        if fm.fileExists(atPath: path("tokenizer_config.json")) {
            let tc = path("tokenizer_config.json")
            let data = try readTokenizerFile(tc, limit: 16 << 20)
            let cfg: TokenizerConfigJSON
            do { cfg = try JSONDecoder().decode(TokenizerConfigJSON.self, from: data) } catch {
                throw TokenizerError.badFile(path: tc, reason: "not a JSON object of tokenizer settings")
            }
            if let v = cfg.doLowerCase { options.lowercase = v }
            if let v = cfg.stripAccents { options.stripAccents = v }
            if let v = cfg.tokenizeChineseChars { options.handleChineseChars = v }
        }
        return try WordPieceTokenizer(tokens: tokens, options: options, specialTokens: specials, source: source)
    }
}

/// The parts of tokenizer.json the BERT tokenizer reads.
struct TokenizerJSON: Decodable {
    struct Normalizer: Decodable {
        var type: String?
        var clean_text: Bool?
        var handle_chinese_chars: Bool?
        var strip_accents: Bool?
        var lowercase: Bool?
    }
    struct AddedToken: Decodable {
        var content: String
        var special: Bool?
    }
    struct Step: Decodable {
        var type: String?
        var pretokenizers: [Step]?
    }
    /// A template piece: {"SpecialToken": {"id", "type_id"}} or {"Sequence": {"id", "type_id"}}.
    struct Piece: Decodable {
        struct Ref: Decodable { var id: String; var type_id: Int? }
        var SpecialToken: Ref?
        var Sequence: Ref?
    }
    struct PostProcessor: Decodable {
        var type: String?
        var single: [Piece]?
        var pair: [Piece]?
        var cls: [JSONScalar]?
        var sep: [JSONScalar]?
    }
    struct Model: Decodable {
        var type: String?
        var unk_token: String?
        var continuing_subword_prefix: String?
        var max_input_chars_per_word: Int?
    }
    var normalizer: Normalizer?
    var pre_tokenizer: Step?
    var post_processor: PostProcessor?
    var model: Model?
    var added_tokens: [AddedToken]?

    /// The rest of BERT's pipeline, as the tokenizer runs it: BertPreTokenizer; [CLS] A [SEP]
    /// (B [SEP], type 1) by TemplateProcessing or BertProcessing; WordPiece with [UNK], "##"
    /// and 100 characters a word. Anything else would tokenize differently: refused.
    func checkBERTPipeline(path: String) throws {
        func fail(_ r: String) -> TokenizerError { .badFile(path: path, reason: r) }
        let pre = pre_tokenizer.map { $0.type == "Sequence" ? ($0.pretokenizers ?? []) : [$0] } ?? []
        guard pre.count == 1, pre[0].type == "BertPreTokenizer" else {
            let named = pre.isEmpty ? "none" : pre.map { $0.type ?? "?" }.joined(separator: ", ")
            throw fail("pre_tokenizer \(named) is not supported (BertPreTokenizer)")
        }
        if let m = model {
            guard m.type == "WordPiece" else { throw fail("model '\(m.type ?? "?")' is not WordPiece") }
            if let u = m.unk_token, u != "[UNK]" { throw fail("unk_token '\(u)' is not supported ([UNK])") }
            if let p = m.continuing_subword_prefix, p != "##" { throw fail("continuing_subword_prefix '\(p)' is not supported (##)") }
            if let n = m.max_input_chars_per_word, n != 100 { throw fail("max_input_chars_per_word \(n) is not supported (100)") }
        }
        guard let post = post_processor else { throw fail("no post_processor: the [CLS] … [SEP] template is missing") }
        switch post.type {
        case "TemplateProcessing":
            func shape(_ pieces: [Piece]?) -> [String] {
                (pieces ?? []).map { p in
                    if let t = p.SpecialToken { return "\(t.id):\(t.type_id ?? 0)" }
                    if let q = p.Sequence { return "$\(q.id):\(q.type_id ?? 0)" }
                    return "?"
                }
            }
            guard shape(post.single) == ["[CLS]:0", "$A:0", "[SEP]:0"],
                  post.pair == nil || shape(post.pair) == ["[CLS]:0", "$A:0", "[SEP]:0", "$B:1", "[SEP]:1"] else {
                throw fail("post_processor template \(shape(post.single).joined(separator: " ")) is not BERT's ([CLS]:0 $A:0 [SEP]:0)")
            }
        case "BertProcessing":
            guard post.cls?.first?.string == "[CLS]", post.sep?.first?.string == "[SEP]" else {
                throw fail("BertProcessing with other special tokens than [CLS] and [SEP] is not supported")
            }
        case let other:
            throw fail("post_processor '\(other ?? "?")' is not supported (TemplateProcessing or BertProcessing with [CLS] and [SEP])")
        }
    }
}

/// A string or a number in a JSON list (BertProcessing's ["[CLS]", 101]).
struct JSONScalar: Decodable {
    var string: String?
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        string = try? c.decode(String.self)
    }
}

/// model.vocab of a WordPiece tokenizer.json, when that is the only vocabulary.
func obj(forVocabIn data: Data, path: String) -> [String: Int]? {
    struct Full: Decodable {
        struct Model: Decodable { var type: String?; var vocab: [String: Int]? }
        var model: Model?
    }
    guard let f = try? JSONDecoder().decode(Full.self, from: data), f.model?.type == "WordPiece" else { return nil }
    return f.model?.vocab
}

/// One token per line, "\n" or "\r\n" line ends.
func readVocabTxt(_ path: String) throws -> [String] {
    let data = try readTokenizerFile(path, limit: 32 << 20)
    guard let text = String(data: data, encoding: .utf8) else {
        throw TokenizerError.badFile(path: path, reason: "not valid UTF-8")
    }
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
        line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
    }
    if lines.last == "" { lines.removeLast() }
    if lines.isEmpty { throw TokenizerError.badFile(path: path, reason: "the vocabulary is empty") }
    return lines
}

/// tokenizer_config.json's settings that override the normalizer. `strip_accents` is
/// three-valued: absent (keep), null (follow lower-casing), true or false.
struct TokenizerConfigJSON: Decodable {
    var doLowerCase: Bool?
    var tokenizeChineseChars: Bool?
    /// nil: absent; .some(nil): null.
    var stripAccents: Bool??

    enum CodingKeys: String, CodingKey {
        case doLowerCase = "do_lower_case", tokenizeChineseChars = "tokenize_chinese_chars", stripAccents = "strip_accents"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        doLowerCase = try? c.decodeIfPresent(Bool.self, forKey: .doLowerCase)
        tokenizeChineseChars = try? c.decodeIfPresent(Bool.self, forKey: .tokenizeChineseChars)
        if c.contains(.stripAccents) {
            stripAccents = .some(try c.decodeNil(forKey: .stripAccents) ? nil : (try? c.decode(Bool.self, forKey: .stripAccents)))
        }
    }
}

/// A tokenizer file read whole, its size checked first (the largest real ones: a 250,000-token
/// vocab.txt of ~5 MB, bge-m3's 17 MB tokenizer.json) and recorded as read (`ReadFiles`).
func readTokenizerFile(_ path: String, limit: Int) throws -> Data {
    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
    if size > limit {
        throw TokenizerError.badFile(path: path, reason: "\(size) bytes, over the \(limit >> 20) MiB a tokenizer file may hold")
    }
    guard let data = FileManager.default.contents(atPath: path) else { throw TokenizerError.badFile(path: path, reason: "cannot read") }
    guard data.count <= limit else {
        throw TokenizerError.badFile(path: path, reason: "over the \(limit >> 20) MiB a tokenizer file may hold")
    }
    ReadFiles.record(path)
    // JSON as Python's json reads it: of two equal keys, the last.
    return path.hasSuffix(".json") ? StrictJSON.lastKeyWins(data) : data
}
