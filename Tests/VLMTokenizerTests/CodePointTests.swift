// Every code point against Hugging Face: Tests/Fixtures/tokenizer/codepoints.txt holds
// BertTokenizerFast's ids for "a" + c + "b" with vocab.txt, lower-cased and cased, for every
// code point c but the surrogates (which a String cannot hold; line breaks and noncharacters are
// in), made by scripts/export_text_fixtures.py codepoints with the tokenizers version pinned in
// scripts/requirements.txt. Sources/VLMTokenizer/BertUnicodeTables.swift comes from the same
// version (scripts/export_bert_unicode_tables.py).

import Foundation
import XCTest
import VLMTokenizer

final class CodePointParityTests: XCTestCase {
    /// One line of the fixture: a range of code points with a rule, or one with its ids.
    enum Expected { case rule(Character), ids([Int32]), same(UInt32) }

    static func readFixture() throws -> [String: [(first: UInt32, last: UInt32, expected: Expected)]] {
        let text = try String(contentsOf: fixtures.appendingPathComponent("tokenizer/codepoints.txt"), encoding: .utf8)
        var sections: [String: [(first: UInt32, last: UInt32, expected: Expected)]] = [:]
        var section = ""
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            if line.hasPrefix("[") { section = String(line.dropFirst().dropLast()); continue }
            let f = line.split(separator: " ")
            let bounds = f[0].split(separator: "-").map { UInt32($0, radix: 16)! }
            let e: Expected
            if f[1].hasPrefix("=") { e = .same(UInt32(f[1].dropFirst(), radix: 16)!) }
            else if let id = Int32(f[1]) { e = .ids([id] + f.dropFirst(2).map { Int32($0)! }) }
            else { e = .rule(f[1].first!) }
            sections[section, default: []].append((bounds[0], bounds.last!, e))
        }
        return sections
    }

    func testEveryCodePointIdenticalToHuggingFace() throws {
        let tokens = try String(contentsOf: fixtures.appendingPathComponent("tokenizer/vocab.txt"), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        // Keyed by scalars: Swift's String equality would find ";" for U+037E, its canonical equivalent.
        var ids: [[UInt32]: Int32] = [:]
        for (i, t) in tokens.enumerated() { ids[t.unicodeScalars.map(\.value)] = Int32(i) }
        let vocab = { (s: String) in ids[s.unicodeScalars.map(\.value)] }
        let unk = vocab("[UNK]")!, a = vocab("a")!, b = vocab("b")!, hb = vocab("##b")!
        let sections = try Self.readFixture()
        XCTAssertEqual(Set(sections.keys), ["uncased", "cased"])

        for (name, lower) in [("uncased", true), ("cased", false)] {
            let t = try WordPieceTokenizer(tokens: tokens, options: NormalizerOptions(lowercase: lower))
            let lines = sections[name] ?? []
            var listed: [UInt32: [Int32]] = [:]  // explicit lines, for "=CP"
            var next = 0, checked = 0, mismatches = 0
            for v in UInt32(0)...0x10FFFF {
                guard let c = Unicode.Scalar(v) else { continue }  // surrogates
                while next < lines.count && lines[next].last < v { next += 1 }
                var want = [unk]
                if next < lines.count && lines[next].first <= v {
                    let s = String(c)
                    switch lines[next].expected {
                    case .ids(let ids): want = ids; listed[v] = ids
                    case .same(let cp): want = listed[cp]!
                    case .rule("S"): want = [a, vocab(s) ?? unk, b]
                    case .rule("W"): want = [a, b]
                    case .rule("R"): want = [vocab("ab")!]
                    case .rule("J"): want = [a, vocab("##" + s)!, hb]
                    case .rule("H"):
                        let i = v - 0xAC00
                        let jamo = [0x1100 + i / 588, 0x1161 + i % 588 / 28] + (i % 28 == 0 ? [] : [0x11A7 + i % 28])
                        want = [a] + jamo.map { vocab("##" + String(Unicode.Scalar($0)!))! } + [hb]
                    case .rule(let r): XCTFail("unknown rule \(r)"); return
                    }
                }
                var text = String.UnicodeScalarView()
                text.append("a"); text.append(c); text.append("b")
                let got = t.encode(String(text)).ids.dropFirst().dropLast()
                checked += 1
                if !got.elementsEqual(want) {
                    mismatches += 1
                    if mismatches <= 10 { XCTFail("\(name) U+\(String(v, radix: 16, uppercase: true)): ours \(Array(got)), Hugging Face \(want)") }
                }
            }
            XCTAssertEqual(checked, 1_112_064)
            XCTAssertEqual(mismatches, 0, "\(name): \(mismatches) of \(checked) code points differ")
        }
    }

    /// The fixture and the tables say which tokenizers made them; it must be the pinned one.
    func testFixtureAndTablesComeFromThePinnedTokenizers() throws {
        let root = fixtures.deletingLastPathComponent().deletingLastPathComponent()
        let requirements = try String(contentsOf: root.appendingPathComponent("scripts/requirements.txt"), encoding: .utf8)
        let pin = try XCTUnwrap(requirements.split(separator: "\n").first { $0.hasPrefix("tokenizers==") })
        let fixture = try String(contentsOf: fixtures.appendingPathComponent("tokenizer/codepoints.txt"), encoding: .utf8)
        let tables = try String(contentsOf: root.appendingPathComponent("Sources/VLMTokenizer/BertUnicodeTables.swift"), encoding: .utf8)
        XCTAssertTrue(fixture.contains("with \(pin) "), "codepoints.txt was not made with \(pin): rerun scripts/export_text_fixtures.py codepoints")
        XCTAssertTrue(tables.contains("from \(pin) "), "BertUnicodeTables.swift was not made with \(pin): rerun scripts/export_bert_unicode_tables.py")
    }
}
