// The WordPiece tokenizer against Hugging Face's BertTokenizerFast: Tests/Fixtures/tokenizer/
// cases.jsonl holds >600 strings (English, accents, Greek, Cyrillic, CJK, emoji, symbols,
// control characters, newline runs, over-long words, numbers, punctuation, special tokens in
// text, empty and whitespace-only; single, paired and truncated) in three casings, made by
// scripts/export_text_fixtures.py tokenizer.

import Foundation
import XCTest
import VLMTokenizer

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

final class TokenizerParityTests: XCTestCase {
    struct Case: Decodable {
        let config: String
        let text: String
        let pair: String?
        let max_length: Int?
        let ids: [Int32]
        let type_ids: [Int32]
    }

    func testEveryCaseIdenticalToHuggingFace() throws {
        let vocab = try String(contentsOf: fixtures.appendingPathComponent("tokenizer/vocab.txt"), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init).dropLast()
        let tokenizers = [
            "uncased": try WordPieceTokenizer(tokens: Array(vocab), options: NormalizerOptions(lowercase: true)),
            "cased": try WordPieceTokenizer(tokens: Array(vocab), options: NormalizerOptions(lowercase: false)),
            "uncased_keep_accents": try WordPieceTokenizer(tokens: Array(vocab), options: NormalizerOptions(stripAccents: false, lowercase: true)),
        ]
        let lines = try String(contentsOf: fixtures.appendingPathComponent("tokenizer/cases.jsonl"), encoding: .utf8)
            .split(separator: "\n")
        XCTAssertGreaterThanOrEqual(lines.count, 300)
        var mismatches = 0
        for line in lines {
            let c = try JSONDecoder().decode(Case.self, from: Data(line.utf8))
            let enc = tokenizers[c.config]!.encode(c.text, pair: c.pair, maxLength: c.max_length)
            if enc.ids != c.ids || enc.typeIds != c.type_ids {
                mismatches += 1
                if mismatches <= 10 {
                    XCTFail("\(c.config) \(String(reflecting: c.text)) pair \(String(reflecting: c.pair)) max \(String(describing: c.max_length)):\n ours \(enc.ids) \(enc.tokens)\n hf   \(c.ids)")
                }
            }
        }
        XCTAssertEqual(mismatches, 0, "\(mismatches) of \(lines.count) cases differ")
    }
}

final class TokenizerBehaviourTests: XCTestCase {
    func minilm() throws -> WordPieceTokenizer {
        let vocab = try String(contentsOf: fixtures.appendingPathComponent("tokenizer/vocab.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        return try WordPieceTokenizer(tokens: vocab)
    }

    func testWordPiecesAndSpecials() throws {
        let t = try minilm()
        let e = t.encode("Unbelievable! [MASK]")
        XCTAssertEqual(e.tokens, ["[CLS]", "unbelievable", "!", "[MASK]", "[SEP]"])
        XCTAssertEqual(t.encode("").tokens, ["[CLS]", "[SEP]"])
        XCTAssertEqual(t.encode(String(repeating: "a", count: 101)).tokens, ["[CLS]", "[UNK]", "[SEP]"])
        let p = t.encode("a b", pair: "c", maxLength: nil)
        XCTAssertEqual(p.typeIds, [0, 0, 0, 0, 1, 1])
        let tr = t.encode("one two three four five", maxLength: 4)
        XCTAssertEqual(tr.count, 4)
        XCTAssertTrue(tr.truncated)
        XCTAssertFalse(t.encode("one", maxLength: 4).truncated)
    }

    func testLoadsFromVocabTxtAndFromTokenizerJSONAlone() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // tokenizer.json only: vocabulary and normalizer come from it.
        let vocab = try String(contentsOf: fixtures.appendingPathComponent("tokenizer/vocab.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        var v: [String: Int] = [:]
        for (i, tok) in vocab.enumerated() { v[tok] = i }
        let tj: [String: Any] = [
            "normalizer": ["type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "lowercase": false],
            "added_tokens": [["content": "[CLS]", "special": true], ["content": "[SEP]", "special": true]],
            "model": ["type": "WordPiece", "vocab": v, "unk_token": "[UNK]"],
            "pre_tokenizer": ["type": "BertPreTokenizer"],
            "post_processor": ["type": "BertProcessing", "cls": ["[CLS]", 1], "sep": ["[SEP]", 2]],
        ]
        try JSONSerialization.data(withJSONObject: tj).write(to: dir.appendingPathComponent("tokenizer.json"))
        let fromJSON = try WordPieceTokenizer.load(folder: dir.path)
        XCTAssertEqual(fromJSON.vocabularySize, vocab.count)
        XCTAssertFalse(fromJSON.options.lowercase)
        XCTAssertEqual(fromJSON.encode("Hello").tokens, ["[CLS]", "[UNK]", "[SEP]"])
        // tokenizer_config.json overrides the normalizer, as BertTokenizerFast does.
        try Data(#"{"do_lower_case": true}"#.utf8).write(to: dir.appendingPathComponent("tokenizer_config.json"))
        XCTAssertEqual(try WordPieceTokenizer.load(folder: dir.path).encode("Hello").tokens, ["[CLS]", "hello", "[SEP]"])
        // Nothing to read.
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        XCTAssertThrowsError(try WordPieceTokenizer.load(folder: empty.path)) {
            XCTAssertEqual($0 as? TokenizerError, .missingVocabulary(folder: empty.path))
        }
        // A vocabulary without [CLS].
        try Data("[UNK]\n[SEP]\nhello\n".utf8).write(to: empty.appendingPathComponent("vocab.txt"))
        XCTAssertThrowsError(try WordPieceTokenizer.load(folder: empty.path)) {
            XCTAssertEqual($0 as? TokenizerError, .missingSpecialToken(path: empty.appendingPathComponent("vocab.txt").path, token: "[CLS]"))
        }
    }
}
