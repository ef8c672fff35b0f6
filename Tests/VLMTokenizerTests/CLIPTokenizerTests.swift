// CLIP's tokenizer read from a Hugging Face CLIP folder's tokenizer.json, id for id with
// transformers' CLIPTokenizer (the tokenizers one) on 2,000 seeded texts — accents and combining
// marks, CJK and Hangul, emoji with modifiers and joiners, curly quotes, full-width forms,
// punctuation runs, contractions in any case, odd spaces, final sigma, dotted I, ligatures, HTML
// entities (not unescaped here), the special tokens in the text (next to combining marks, skin-tone
// modifiers and prepended marks too), over-long texts cut to 77 with the end token kept. Fixtures: scripts/export_clip_fixtures.py, from open_clip's own BPE file.

import Foundation
import XCTest
import VLMTokenizer

final class CLIPTokenizerTests: XCTestCase {
    let folder = fixtures.appendingPathComponent("generated/clip")

    struct Case: Decodable { let text: String; let ids: [Int32] }

    func testEqualsTransformersOnTwoThousandTexts() throws {
        let tokenizer = try CLIPTokenizer(tokenizerJSON: folder.appendingPathComponent("hf-tokenizer/tokenizer.json").path)
        let cases = try JSONDecoder().decode([Case].self, from: Data(contentsOf: folder.appendingPathComponent("texts.json")))
        XCTAssertEqual(cases.count, 2000)
        XCTAssertEqual(tokenizer.encode("a photo of a cat").ids, [49406, 320, 1125, 539, 320, 2368, 49407], "CLIP's well-known ids")
        var wrong: [String] = []
        for c in cases {
            let e = tokenizer.encode(c.text)
            if e.ids != c.ids { wrong.append("\(c.text.debugDescription): \(e.ids) vs \(c.ids)") }
            XCTAssertEqual(e.truncated, c.ids.count == 77 && tokenizer.tokens(c.text).count > 75, c.text)
        }
        XCTAssertTrue(wrong.isEmpty, "\(wrong.count) of \(cases.count) differ; first: \(wrong.prefix(30).joined(separator: "\n"))")
        XCTAssertTrue(cases.contains { $0.ids.count == 77 }, "over-long texts are among the cases")
    }

    func testAPipelineThatIsNotCLIPsIsRefused() throws {
        let source = try String(contentsOf: folder.appendingPathComponent("hf-tokenizer/tokenizer.json"), encoding: .utf8)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-clip-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (from, to, says) in [("\"Lowercase\"", "\"Strip\"", "normalizer"), ("\"ByteLevel\"", "\"Metaspace\"", "pre-tokenizer"),
                                 ("[\\\\p{N}]", "[\\\\p{N}]+", "split pattern"), ("\"BPE\"", "\"WordPiece\"", "BPE"),
                                 ("\"Removed\"", "\"Isolated\"", "pre-tokenizer's settings"),
                                 ("<\\\\|startoftext", "\\\\s|<\\\\|startoftext", "not a plain string")] {
            XCTAssertTrue(source.contains(from), from)
            let path = dir.appendingPathComponent("tokenizer.json").path
            try source.replacingOccurrences(of: from, with: to).write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try CLIPTokenizer(tokenizerJSON: path)) { e in
                XCTAssertTrue("\(e)".contains(says) && "\(e)".contains(path), "\(e)")
            }
        }
    }

    /// open_clip's own tokenizer (open_clip and OpenAI checkpoints): its vocabulary file and
    /// cleaning — ftfy's fixes without the mojibake repair, HTML unescaped twice, whitespace,
    /// lower-casing — id for id with open_clip's SimpleTokenizer on the 2,000 texts and 474 more
    /// aimed at the cleaning.
    func testOpenCLIPsTokenizerEqualsOpenCLIP() throws {
        let tokenizer = try CLIPTokenizer(openCLIPVocabulary: folder.appendingPathComponent("bpe_simple_vocab_16e6.txt.gz").path)
        XCTAssertEqual(tokenizer.cleaning, .openCLIP)
        XCTAssertEqual([tokenizer.startID, tokenizer.endID], [49406, 49407])
        XCTAssertEqual(tokenizer.vocab.count, 49408)
        let cases = try JSONDecoder().decode([Case].self, from: Data(contentsOf: folder.appendingPathComponent("openclip_texts.json")))
        XCTAssertGreaterThan(cases.count, 2400)
        XCTAssertEqual(tokenizer.encode("A photo of a cat.").ids, [49406, 320, 1125, 539, 320, 2368, 269, 49407])
        var wrong: [String] = []
        for c in cases where tokenizer.encode(c.text).ids != c.ids {
            wrong.append("\(c.text.debugDescription): \(tokenizer.encode(c.text).ids) vs \(c.ids)")
        }
        XCTAssertTrue(wrong.isEmpty, "\(wrong.count) of \(cases.count) differ; first: \(wrong.prefix(30).joined(separator: "\n"))")
    }

    /// A vocabulary file that is not one is refused naming it: not gzip, truncated, too few merges.
    func testABadVocabularyFileIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-bpe-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = try Data(contentsOf: folder.appendingPathComponent("bpe_simple_vocab_16e6.txt.gz"))
        for (bytes, says) in [(Data("not gzip".utf8), "not a gzip stream"), (good.prefix(good.count / 2), "ends early"),
                              (Data(), "ends early")] {
            let path = dir.appendingPathComponent("v.txt.gz").path
            try bytes.write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try CLIPTokenizer(openCLIPVocabulary: path)) { e in
                XCTAssertTrue("\(e)".contains(says) && "\(e)".contains(path), "\(e)")
            }
        }
    }
}

final class CLIPTokenizerBoundsTests: XCTestCase {
    /// One long run of letters is one word for CLIP's pattern: its BPE merges through a heap, so
    /// 200,000 letters tokenize (here within the test's own time, never timed) and give the same
    /// ids as the same word cut in pieces would not — checked against a short word's known ids.
    func testALongWordTokenizesAndShortOnesKeepTheirIds() throws {
        let tokenizer = try CLIPTokenizer(openCLIPVocabulary: fixtures.appendingPathComponent("generated/clip/bpe_simple_vocab_16e6.txt.gz").path)
        XCTAssertEqual(tokenizer.encode("a photo of a cat").ids, [49406, 320, 1125, 539, 320, 2368, 49407])
        var rng = SystemRandomNumberGenerator()
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        let long = String((0..<200_000).map { _ in letters[Int.random(in: 0..<26, using: &rng)] })
        let e = tokenizer.encode(long)
        XCTAssertEqual(e.ids.count, 77)
        XCTAssertTrue(e.truncated)
        XCTAssertGreaterThan(tokenizer.tokens(long).count, 20_000)
    }
}
