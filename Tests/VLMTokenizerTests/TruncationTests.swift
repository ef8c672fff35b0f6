// Truncation stops tokenizing early: encode(_:pair:maxLength:) must equal the whole text's word
// pieces cut by longest-first truncation afterwards, and read about as much as it keeps.
// (The cut itself is checked against Hugging Face in TokenizerParityTests.)

import Foundation
import XCTest
import VLMTokenizer

final class TruncationTests: XCTestCase {
    func minilm() throws -> WordPieceTokenizer {
        let vocab = try String(contentsOf: fixtures.appendingPathComponent("tokenizer/vocab.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        return try WordPieceTokenizer(tokens: vocab)
    }

    struct Cut: Equatable {
        var ids: [Int32], tokens: [String], typeIds: [Int32], truncated: Bool
        init(ids: [Int32], tokens: [String], typeIds: [Int32], truncated: Bool) {
            (self.ids, self.tokens, self.typeIds, self.truncated) = (ids, tokens, typeIds, truncated)
        }
        init(_ e: Encoding) { self.init(ids: e.ids, tokens: e.tokens, typeIds: e.typeIds, truncated: e.truncated) }
    }

    /// The reference: every piece of both texts, then Hugging Face's longest_first cut.
    func tokenizeThenCut(_ t: WordPieceTokenizer, _ text: String, _ pair: String?, _ maxLength: Int?) -> Cut {
        var a = t.wordPieces(text), b = pair.map { t.wordPieces($0) }
        var truncated = false
        if let maxLength {
            let budget = max(0, maxLength - (b == nil ? 2 : 3))
            if var bb = b {
                if a.count + bb.count > budget {
                    truncated = true
                    let firstIsLonger = a.count > bb.count
                    let keepShort = min(firstIsLonger ? bb.count : a.count, budget / 2)
                    let (keepA, keepB) = firstIsLonger ? (budget - keepShort, keepShort) : (keepShort, budget - keepShort)
                    a = Array(a.prefix(keepA))
                    bb = Array(bb.prefix(keepB))
                }
                b = bb
            } else if a.count > budget {
                truncated = true
                a = Array(a.prefix(budget))
            }
        }
        var out = Cut(ids: [t.clsId], tokens: [t.clsToken], typeIds: [0], truncated: truncated)
        for (pieces, type) in [(a, Int32(0))] + (b.map { [($0, Int32(1))] } ?? []) {
            for p in pieces + [(t.sepId, t.sepToken)] { out.ids.append(p.id); out.tokens.append(p.token); out.typeIds.append(type) }
        }
        return out
    }

    /// Texts mixing words, special tokens in the raw text, CJK, punctuation runs, accents,
    /// whitespace and controls, and words over 100 characters.
    func randomText(_ rng: inout SplitMix64) -> String {
        let parts = ["the", "photograph", "unbelievable", "naïve", "Crème", "東京", "中文文本", "[SEP]", "[CLS]", "[MASK]",
                     "[SEP", "[mask]", "!!!", "?!...", "---", "(a)", "😀", "\u{200B}", "\u{0301}", "x\u{0000}y", "ﬁ",
                     "İstanbul", "한국어", String(repeating: "long", count: 25), String(repeating: "z", count: 101),
                     String(repeating: "word", count: 40) + "!", "12:30", "e-mail", "\u{E000}", "\u{10FFFF}"]
        let gaps = [" ", " ", " ", "", "\n", "\t", "  ", "\u{3000}", "\r\n"]
        var s = ""
        for _ in 0..<Int(rng.next() % 40) {
            s += parts[Int(rng.next() % UInt64(parts.count))]
            s += gaps[Int(rng.next() % UInt64(gaps.count))]
        }
        return s
    }

    func testEarlyStopEqualsTokenizingEverythingThenCutting() throws {
        let t = try minilm()
        var rng = SplitMix64(seed: 2026)
        var checked = 0
        for i in 0..<400 {
            let text = randomText(&rng)
            let pair: String? = i % 4 == 0 ? nil : i % 9 == 0 ? text : randomText(&rng)
            let n = t.wordPieces(text).count + (pair.map { t.wordPieces($0).count } ?? 0) + (pair == nil ? 2 : 3)
            // Around every boundary: nothing cut, one piece cut, odd and even budgets, tiny limits.
            var limits: [Int?] = [nil, 0, 1, 2, 3, 4, 5, 8, 9, n - 2, n - 1, n, n + 1]
            limits.append(Int(rng.next() % UInt64(n + 2)))
            for maxLength in limits {
                let got = Cut(t.encode(text, pair: pair, maxLength: maxLength))
                let want = tokenizeThenCut(t, text, pair, maxLength)
                checked += 1
                if got != want {
                    XCTFail("\(String(reflecting: text)) pair \(String(reflecting: pair)) max \(String(describing: maxLength)):\n ours \(got.tokens) \(got.truncated)\n want \(want.tokens) \(want.truncated)")
                    return
                }
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 5000)
    }

    func testTruncationReadsAboutWhatItKeeps() throws {
        let t = try minilm()
        let million = String(repeating: "the cat sat on a mat, ", count: 166_667)  // ~1,000,000 words
        var read = 0

        let e = t.encode(million, pair: nil, maxLength: 128, scalarsRead: &read)
        XCTAssertEqual(e.count, 128)
        XCTAssertTrue(e.truncated)
        XCTAssertLessThan(read, 10_000)
        XCTAssertEqual(Cut(e), tokenizeThenCut(t, String(million.prefix(2_000)), nil, 128))

        // A pair with one short side: the short one whole, the long one about to the budget.
        let short = String(repeating: "dog ", count: 40)
        let p = t.encode(short, pair: million, maxLength: 128, scalarsRead: &read)
        XCTAssertLessThan(read, 10_000)
        XCTAssertEqual(Cut(p), tokenizeThenCut(t, short, String(million.prefix(2_000)), 128))

        // Both over an even budget (126): half each, whichever is longer.
        _ = t.encode(million, pair: million, maxLength: 129, scalarsRead: &read)
        XCTAssertLessThan(read, 10_000)

        // Both over an odd budget (125): the longer keeps the odd piece, so the shorter is read
        // to its end, and the longer about as far, never to its end.
        let medium = String(repeating: "the cat sat on a mat, ", count: 1_000)
        let o = t.encode(medium, pair: million, maxLength: 128, scalarsRead: &read)
        XCTAssertLessThan(read, 3 * medium.unicodeScalars.count)
        XCTAssertEqual(Cut(o), tokenizeThenCut(t, medium, String(million.prefix(30_000)), 128))

        // A word over 100 characters is one [UNK] as soon as that is known.
        let word = String(repeating: "x", count: 1_000_000)
        XCTAssertEqual(t.encode(word + " cat", pair: nil, maxLength: 2, scalarsRead: &read).tokens, ["[CLS]", "[SEP]"])
        XCTAssertLessThan(read, 200)
        XCTAssertEqual(t.encode(word + " cat", pair: nil, maxLength: 3, scalarsRead: &read).tokens, ["[CLS]", "[UNK]", "[SEP]"])
        XCTAssertEqual(read, 1_000_004)  // whether a piece follows: past the word to "cat"

        // Without a limit, or within it, everything is read.
        _ = t.encode(medium, pair: nil, maxLength: nil, scalarsRead: &read)
        XCTAssertEqual(read, medium.unicodeScalars.count)
    }

    /// Over-long is exact: a text of exactly the budget fits, one piece more is cut.
    func testTooLongIsExact() throws {
        let t = try minilm()
        for n in [0, 1, 5, 126, 127] {
            let text = Array(repeating: "cat", count: n).joined(separator: " ")
            XCTAssertFalse(t.encode(text, maxLength: n + 2).truncated)
            XCTAssertTrue(t.encode(text + " [SEP]", maxLength: n + 2).truncated)
            XCTAssertEqual(t.encode(text + " dog", maxLength: n + 2).ids, t.encode(text).ids)
        }
        XCTAssertFalse(t.encode("a b", pair: "c", maxLength: 6).truncated)
        XCTAssertTrue(t.encode("a b", pair: "c d", maxLength: 6).truncated)
    }
}

/// A seeded generator (SplitMix64), so the random texts are the same on every run.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
