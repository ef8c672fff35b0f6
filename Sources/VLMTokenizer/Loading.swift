// Loading a tokenizer from a model folder as transformers' AutoTokenizer would: tokenizer.json
// (vocab, normalizer, added tokens) when present, else vocab.txt; tokenizer_config.json's
// do_lower_case / strip_accents / tokenize_chinese_chars override the normalizer, as
// BertTokenizerFast.__init__ does.

import Foundation

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
            let obj = try readJSONObject(tj)
            if let norm = obj["normalizer"] as? [String: Any], (norm["type"] as? String) == "BertNormalizer" {
                options.cleanText = norm["clean_text"] as? Bool ?? true
                options.handleChineseChars = norm["handle_chinese_chars"] as? Bool ?? true
                options.stripAccents = norm["strip_accents"] as? Bool
                options.lowercase = norm["lowercase"] as? Bool ?? true
            }
            if let added = obj["added_tokens"] as? [[String: Any]] {
                let s = added.filter { ($0["special"] as? Bool) == true }.compactMap { $0["content"] as? String }
                if !s.isEmpty { specials = s }
            }
            if tokens.isEmpty {
                guard let model = obj["model"] as? [String: Any], (model["type"] as? String) == "WordPiece",
                      let vocab = model["vocab"] as? [String: Any] else {
                    throw TokenizerError.badFile(path: tj, reason: "not a WordPiece tokenizer (model.type must be WordPiece with a vocab)")
                }
                var byId = [String?](repeating: nil, count: vocab.count)
                for (token, idAny) in vocab {
                    guard let id = (idAny as? NSNumber)?.intValue, id >= 0, id < vocab.count else {
                        throw TokenizerError.badFile(path: tj, reason: "vocab id of '\(token)' is not in 0..<\(vocab.count)")
                    }
                    byId[id] = token
                }
                let complete = byId.compactMap { $0 }
                guard complete.count == vocab.count else {
                    throw TokenizerError.badFile(path: tj, reason: "vocab ids are not 0..<\(vocab.count) without gaps")
                }
                tokens = complete
            }
        }
        if fm.fileExists(atPath: path("tokenizer_config.json")) {
            let cfg = try readJSONObject(path("tokenizer_config.json"))
            if let v = cfg["do_lower_case"] as? Bool { options.lowercase = v }
            if cfg.keys.contains("strip_accents") { options.stripAccents = cfg["strip_accents"] as? Bool }
            if let v = cfg["tokenize_chinese_chars"] as? Bool { options.handleChineseChars = v }
        }
        return try WordPieceTokenizer(tokens: tokens, options: options, specialTokens: specials, source: source)
    }
}

/// One token per line, "\n" or "\r\n" line ends.
func readVocabTxt(_ path: String) throws -> [String] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw TokenizerError.badFile(path: path, reason: "cannot read")
    }
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

func readJSONObject(_ path: String) throws -> [String: Any] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw TokenizerError.badFile(path: path, reason: "cannot read")
    }
    guard let obj = try? JSONSerialization.jsonObject(with: data), let dict = obj as? [String: Any] else {
        throw TokenizerError.badFile(path: path, reason: "not a JSON object")
    }
    return dict
}
