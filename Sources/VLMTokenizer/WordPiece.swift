// BERT's tokenizer, id-for-id with Hugging Face's BertTokenizerFast (the `tokenizers` library):
// added special tokens split out of the raw text → BertNormalizer (clean text, pad CJK
// ideographs, strip accents, lower-case) → BertPreTokenizer (whitespace, then punctuation as
// single tokens) → greedy longest-match-first WordPiece with "##" continuations → [CLS] A [SEP]
// (B [SEP]) with token type ids, longest-first truncation. Every step but the special tokens
// works on one code point at a time, with Hugging Face's own Unicode tables
// (BertUnicodeTables.swift), so a text is read only as far as the pieces it keeps.
// Upstream: tokenizers/src/normalizers/bert.rs, pre_tokenizers/bert.rs, models/wordpiece/mod.rs,
// utils/truncation.rs.

import Foundation
import VLMCore

public struct NormalizerOptions: Equatable, Sendable {
    public var cleanText = true
    public var handleChineseChars = true
    /// nil: follow `lowercase` (as Hugging Face does).
    public var stripAccents: Bool? = nil
    public var lowercase = true

    public init(cleanText: Bool = true, handleChineseChars: Bool = true, stripAccents: Bool? = nil, lowercase: Bool = true) {
        self.cleanText = cleanText
        self.handleChineseChars = handleChineseChars
        self.stripAccents = stripAccents
        self.lowercase = lowercase
    }
}

public struct Encoding: Equatable, Sendable {
    public var ids: [Int32]
    public var tokens: [String]
    public var typeIds: [Int32]
    /// Whether truncation dropped tokens.
    public var truncated: Bool
    public var count: Int { ids.count }

    public init(ids: [Int32], tokens: [String], typeIds: [Int32], truncated: Bool) {
        (self.ids, self.tokens, self.typeIds, self.truncated) = (ids, tokens, typeIds, truncated)
    }
}

public enum TokenizerError: VLMError, Equatable {
    case missingVocabulary(folder: String)
    case badFile(path: String, reason: String)
    case missingSpecialToken(path: String, token: String)

    public var description: String {
        switch self {
        case let .missingVocabulary(f): return "\(f): no vocab.txt or tokenizer.json in this folder"
        case let .badFile(p, r): return "\(p): \(r)"
        case let .missingSpecialToken(p, t): return "\(p): the vocabulary has no \(t) token"
        }
    }
}

/// Vocabulary keys compare by Unicode scalars, never by Swift's canonical equivalence
/// (the vocabulary may hold "é" precomposed and decomposed as two different tokens).
struct ScalarKey: Hashable {
    let scalars: [UInt32]
    init(scalars: [UInt32]) { self.scalars = scalars }
    init<S: Sequence>(_ s: S) where S.Element == Unicode.Scalar { scalars = s.map(\.value) }
}

/// One piece of a text: its vocabulary id and token.
public typealias WordPiece = (id: Int32, token: String)

public final class WordPieceTokenizer: @unchecked Sendable {
    public let options: NormalizerOptions
    public let idToToken: [String]
    private let vocab: [ScalarKey: Int32]
    public let unkId: Int32, clsId: Int32, sepId: Int32
    public let unkToken = "[UNK]", clsToken = "[CLS]", sepToken = "[SEP]"
    public let maxInputCharsPerWord = 100
    /// Added special tokens matched in the raw text, longest first, and the scalars they start with.
    fileprivate let specials: [(scalars: [Unicode.Scalar], id: Int32, token: String)]
    fileprivate let specialStarts: [Unicode.Scalar]
    /// Scalars in the vocabulary's longest token.
    private let longestToken: Int

    public var vocabularySize: Int { idToToken.count }

    /// tokens are the vocabulary in id order (later duplicates win, as in Hugging Face).
    public init(tokens: [String], options: NormalizerOptions = NormalizerOptions(),
                specialTokens: [String] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], source: String = "vocabulary") throws {
        self.options = options
        var v: [ScalarKey: Int32] = [:]
        v.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() { v[ScalarKey(t.unicodeScalars)] = Int32(i) }
        vocab = v
        idToToken = tokens
        longestToken = v.keys.map(\.scalars.count).max() ?? 0
        func id(_ t: String) throws -> Int32 {
            guard let i = v[ScalarKey(t.unicodeScalars)] else { throw TokenizerError.missingSpecialToken(path: source, token: t) }
            return i
        }
        unkId = try id("[UNK]")
        clsId = try id("[CLS]")
        sepId = try id("[SEP]")
        specials = specialTokens.compactMap { t in v[ScalarKey(t.unicodeScalars)].map { (Array(t.unicodeScalars), $0, t) } }
            .filter { !$0.scalars.isEmpty }
            .sorted { $0.scalars.count > $1.scalars.count }
        var starts: [Unicode.Scalar] = []
        for s in specials where !starts.contains(s.scalars[0]) { starts.append(s.scalars[0]) }
        specialStarts = starts
    }

    public func id(of token: String) -> Int32? { vocab[ScalarKey(token.unicodeScalars)] }

    // MARK: - Encoding

    /// [CLS] text [SEP] (pair [SEP]), truncated to maxLength tokens in all (longest first).
    public func encode(_ text: String, pair: String? = nil, maxLength: Int? = nil) -> Encoding {
        var read = 0
        return encode(text, pair: pair, maxLength: maxLength, scalarsRead: &read)
    }

    /// As encode(_:pair:maxLength:), also telling how many Unicode scalars of the text(s) were
    /// read: with maxLength, tokenizing stops as soon as what is kept and `truncated` are known.
    public func encode(_ text: String, pair: String?, maxLength: Int?, scalarsRead: inout Int) -> Encoding {
        var sa = PieceStream(self, text)
        var a: [WordPiece], b: [WordPiece]? = nil
        var truncated = false
        if let pair {
            var sb = PieceStream(self, pair)
            let budget = maxLength.map { max(0, $0 - 3) } ?? .max
            // Each side up to budget + 1 pieces. A side that ends sooner is whole; one cut off
            // there is over the budget, so longer than a whole one: which side is longer, and
            // so the cut, is known unless both are cut off.
            let cap = budget == .max ? budget : budget + 1
            a = sa.take(cap)
            var bb = sb.take(cap)
            if a.count + bb.count > budget {
                truncated = true
                let firstIsLonger: Bool
                switch (a.count < cap, bb.count < cap) {
                case (true, true): firstIsLonger = a.count > bb.count
                case (false, true): firstIsLonger = true
                case (true, false): firstIsLonger = false
                case (false, false):
                    // Both over the budget: each keeps budget / 2 and the longer one the odd
                    // token, so only an odd budget needs to know which is longer.
                    firstIsLonger = budget % 2 == 1 && Self.firstIsLonger(&sa, a.count, &sb, bb.count)
                }
                // Hugging Face's longest_first: the shorter keeps min(its length, budget / 2)
                // (on a tie the first is the shorter), the longer the rest of the budget.
                let keepShort = min(firstIsLonger ? bb.count : a.count, budget / 2)
                let keepLong = budget - keepShort
                a.removeLast(a.count - min(a.count, firstIsLonger ? keepLong : keepShort))
                bb.removeLast(bb.count - min(bb.count, firstIsLonger ? keepShort : keepLong))
            }
            b = bb
            scalarsRead = sa.scalarsRead + sb.scalarsRead
        } else {
            let budget = maxLength.map { max(0, $0 - 2) } ?? .max
            a = sa.take(budget)
            truncated = maxLength != nil && sa.next() != nil
            scalarsRead = sa.scalarsRead
        }
        var ids: [Int32] = [clsId], tokens = [clsToken], types: [Int32] = [0]
        let n = a.count + (b?.count ?? 0) + 3
        ids.reserveCapacity(n); tokens.reserveCapacity(n); types.reserveCapacity(n)
        for p in a { ids.append(p.id); tokens.append(p.token); types.append(0) }
        ids.append(sepId); tokens.append(sepToken); types.append(0)
        if let b {
            for p in b { ids.append(p.id); tokens.append(p.token); types.append(1) }
            ids.append(sepId); tokens.append(sepToken); types.append(1)
        }
        return Encoding(ids: ids, tokens: tokens, typeIds: types, truncated: truncated)
    }

    /// Whether the first text has more pieces than the second (a tie is "no"), given `na` and
    /// `nb` pieces already read: the side behind reads on until one ends, so this reads about
    /// twice the shorter text, never the rest of the longer.
    private static func firstIsLonger(_ a: inout PieceStream, _ na: Int, _ b: inout PieceStream, _ nb: Int) -> Bool {
        var (na, nb, aEnded, bEnded) = (na, nb, false, false)
        while !(aEnded && (bEnded || nb > na)) && !(bEnded && na > nb) {
            if !aEnded && (bEnded || na <= nb) {
                if a.next() == nil { aEnded = true } else { na += 1 }
            } else {
                if b.next() == nil { bEnded = true } else { nb += 1 }
            }
        }
        return na > nb
    }

    /// The word pieces of `text` (no [CLS]/[SEP]), special tokens in the raw text kept whole.
    public func wordPieces(_ text: String) -> [WordPiece] {
        var s = PieceStream(self, text)
        return s.take(.max)
    }

    /// Greedy longest-match-first over one pre-tokenized word of at most maxInputCharsPerWord
    /// scalars; `key` is scratch space.
    fileprivate func wordPiece(_ word: [UInt32], into out: inout [WordPiece], key: inout [UInt32]) {
        let first = out.count
        var start = 0
        while start < word.count {
            // No candidate longer than the longest token can match.
            var end = min(word.count, start + longestToken - (start > 0 ? 2 : 0))
            var found: Int32?
            while start < end {
                key.removeAll(keepingCapacity: true)
                if start > 0 { key.append(0x23); key.append(0x23) }  // "##"
                key.append(contentsOf: word[start..<end])
                if let id = vocab[ScalarKey(scalars: key)] { found = id; break }
                end -= 1
            }
            guard let id = found else {
                out.removeSubrange(first...)
                out.append((unkId, unkToken))
                return
            }
            out.append((id, idToToken[Int(id)]))
            start = end
        }
    }
}

// MARK: - Reading pieces on demand

/// The word pieces of one text, read as they are asked for: special tokens split out of the raw
/// text, each scalar normalized on its own (every BertNormalizer step is per code point), words
/// formed as BertPreTokenizer does and word-pieced as they end.
struct PieceStream {
    private let tokenizer: WordPieceTokenizer
    private let scalars: String.UnicodeScalarView
    private var index: String.UnicodeScalarView.Index
    private let options: NormalizerOptions
    private let stripAccents: Bool
    private var words: WordSink
    private var head = 0
    /// Scalars of the text consumed so far.
    private(set) var scalarsRead = 0

    init(_ tokenizer: WordPieceTokenizer, _ text: String) {
        self.tokenizer = tokenizer
        scalars = text.unicodeScalars
        index = scalars.startIndex
        options = tokenizer.options
        stripAccents = options.stripAccents ?? options.lowercase
        words = WordSink(tokenizer: tokenizer)
    }

    mutating func next() -> WordPiece? {
        if head == words.pieces.count {
            words.pieces.removeAll(keepingCapacity: true)
            head = 0
            fill()
            if words.pieces.isEmpty { return nil }
        }
        head += 1
        return words.pieces[head - 1]
    }

    /// Up to `n` pieces.
    mutating func take(_ n: Int) -> [WordPiece] {
        var out: [WordPiece] = []
        while out.count < n, let p = next() { out.append(p) }
        return out
    }

    /// Reads scalars until a word or special token ends, or the text does.
    private mutating func fill() {
        let end = scalars.endIndex
        while words.pieces.isEmpty {
            guard index < end else { words.endWord(); return }
            let c = scalars[index]
            if tokenizer.specialStarts.contains(c), let s = special(at: index) {
                words.endWord()
                words.pieces.append((s.id, s.token))
                index = scalars.index(index, offsetBy: s.scalars.count)
                scalarsRead += s.scalars.count
                continue
            }
            scalars.formIndex(after: &index)
            scalarsRead += 1
            normalizeScalar(c.value, options, stripAccents: stripAccents, into: &words)
        }
    }

    /// The longest special token at `i` in the raw text.
    private func special(at i: String.UnicodeScalarView.Index) -> (scalars: [Unicode.Scalar], id: Int32, token: String)? {
        tokenizer.specials.first { s in
            var j = i
            for c in s.scalars {
                guard j < scalars.endIndex, scalars[j] == c else { return false }
                scalars.formIndex(after: &j)
            }
            return true
        }
    }
}

/// BertPreTokenizer over normalized scalars: whitespace ends a word, punctuation is a word of
/// its own; each word is word-pieced as it ends.
struct WordSink: ScalarSink {
    let tokenizer: WordPieceTokenizer
    var pieces: [WordPiece] = []
    private var word: [UInt32] = []
    /// The word's length; only its first maxInputCharsPerWord scalars are kept.
    private var length = 0
    private var key: [UInt32] = []

    init(tokenizer: WordPieceTokenizer) { self.tokenizer = tokenizer }

    mutating func put(_ c: UInt32, _ f: BertClass) {
        if f.contains(.space) {
            endWord()
        } else if f.contains(.punct) {
            endWord()
            word.append(c)
            length = 1
            endWord()
        } else {
            length += 1
            if length <= tokenizer.maxInputCharsPerWord {
                word.append(c)
            } else if length == tokenizer.maxInputCharsPerWord + 1 {
                pieces.append((tokenizer.unkId, tokenizer.unkToken))  // too long: [UNK], known already
            }
        }
    }

    mutating func endWord() {
        guard length > 0 else { return }
        if length <= tokenizer.maxInputCharsPerWord { tokenizer.wordPiece(word, into: &pieces, key: &key) }
        word.removeAll(keepingCapacity: true)
        length = 0
    }
}

// MARK: - Normalizer and pre-tokenizer: Hugging Face's tables, one code point at a time

/// How Hugging Face's BERT normalizer and pre-tokenizer see a code point (BertUnicodeTables.swift).
struct BertClass: OptionSet {
    let rawValue: UInt8
    /// Dropped by clean_text: controls, formats, private use, U+FFFD (not unassigned code points).
    static let removed = BertClass(rawValue: 1)
    /// Whitespace: a space after clean_text, a word boundary for the pre-tokenizer.
    static let space = BertClass(rawValue: 2)
    static let punct = BertClass(rawValue: 4)
    /// Padded with spaces by handle_chinese_chars.
    static let cjk = BertClass(rawValue: 8)
    /// Dropped by strip_accents (a nonspacing mark in its tables).
    static let mark = BertClass(rawValue: 16)
    /// Changed by strip_accents: bertStripKeys, or a Hangul syllable.
    static let decomposes = BertClass(rawValue: 32)
}

private let asciiClasses: [BertClass] = (0..<128).map { searchClass(UInt32($0)) }

@inline(__always)
func bertClass(_ c: UInt32) -> BertClass {
    c < 0x80 ? asciiClasses[Int(c)] : searchClass(c)
}

/// The range of bertClassRanges holding c: the last start ≤ c.
private func searchClass(_ c: UInt32) -> BertClass {
    let key = c << 8 | 0xFF
    var lo = 0, hi = bertClassRanges.count  // the answer is lo - 1 where lo is the first entry > key
    while lo < hi {
        let mid = (lo + hi) / 2
        if bertClassRanges[mid] <= key { lo = mid + 1 } else { hi = mid }
    }
    return BertClass(rawValue: UInt8(truncatingIfNeeded: bertClassRanges[lo - 1]))
}

/// Rust's char::to_lowercase, except U+0130 (handled by the caller).
private func lowercased(_ c: UInt32) -> UInt32 {
    if c < 0x80 { return (0x41...0x5A).contains(c) ? c + 32 : c }
    let runs = bertLowerRuns
    var lo = 0, hi = runs.count / 4  // the last run whose first ≤ c
    while lo < hi {
        let mid = (lo + hi) / 2
        if UInt32(runs[4 * mid]) <= c { lo = mid + 1 } else { hi = mid }
    }
    guard lo > 0 else { return c }
    let r = 4 * (lo - 1), first = UInt32(runs[r])
    guard c <= UInt32(runs[r + 1]), (c - first) % UInt32(runs[r + 3]) == 0 else { return c }
    return UInt32(Int32(c) + runs[r + 2])
}

/// Where normalized code points go, with their classes.
protocol ScalarSink {
    mutating func put(_ c: UInt32, _ f: BertClass)
}

/// BertNormalizer on one code point: clean_text, handle_chinese_chars, strip_accents, lowercase,
/// in that order (tokenizers/src/normalizers/bert.rs). Hugging Face's NFD runs over the whole
/// text, which also reorders combining marks; one code point at a time this differs only where
/// two of the ~25 spacing combining marks (the Mc with a combining class: U+1D165…, U+302E, a
/// few viramas) stand in non-canonical order, which changes ids only if the vocabulary holds them.
@inline(__always)
func normalizeScalar<S: ScalarSink>(_ c: UInt32, _ o: NormalizerOptions, stripAccents: Bool, into sink: inout S) {
    let f = bertClass(c)
    if c < 0x80 && f.isEmpty {  // ASCII letters and digits
        sink.put(o.lowercase ? lowercased(c) : c, f)
        return
    }
    if o.cleanText {
        if f.contains(.removed) { return }
        if f.contains(.space) { sink.put(0x20, .space); return }
    }
    let pad = o.handleChineseChars && f.contains(.cjk)
    if pad { sink.put(0x20, .space) }
    if !stripAccents || f.isDisjoint(with: [.mark, .decomposes]) {
        putLowered(c, o, into: &sink, f)
    } else if f.contains(.decomposes) {
        putDecomposed(c, o, into: &sink)
    }  // else a nonspacing mark, which strip_accents drops
    if pad { sink.put(0x20, .space) }
}

/// strip_accents of a code point it changes: its NFD without nonspacing marks, each lower-cased.
private func putDecomposed<S: ScalarSink>(_ c: UInt32, _ o: NormalizerOptions, into sink: inout S) {
    if (0xAC00...0xD7A3).contains(c) {
        // Hangul syllables: the Unicode algorithm's jamo.
        let s = c - 0xAC00
        putLowered(0x1100 + s / 588, o, into: &sink)
        putLowered(0x1161 + s % 588 / 28, o, into: &sink)
        if s % 28 != 0 { putLowered(0x11A7 + s % 28, o, into: &sink) }
        return
    }
    let keys = bertStripKeys
    var lo = 0, hi = keys.count
    while lo < hi {
        let mid = (lo + hi) / 2
        if keys[mid] < c { lo = mid + 1 } else { hi = mid }
    }
    precondition(lo < keys.count && keys[lo] == c, "BertUnicodeTables: U+\(String(c, radix: 16)) flagged without a decomposition")
    let v = bertStripValues[lo]
    if v < 0x110000 {
        putLowered(v, o, into: &sink)
    } else {
        let at = Int(v - 0x110000)
        for x in bertStripLong[(at + 1)...(at + Int(bertStripLong[at]))] { putLowered(x, o, into: &sink) }
    }
}

@inline(__always)
private func putLowered<S: ScalarSink>(_ c: UInt32, _ o: NormalizerOptions, into sink: inout S, _ f: BertClass? = nil) {
    guard o.lowercase else { sink.put(c, f ?? bertClass(c)); return }
    if c == 0x130 {  // İ → i + combining dot above
        sink.put(0x69, bertClass(0x69))
        sink.put(0x307, bertClass(0x307))
        return
    }
    let l = lowercased(c)
    sink.put(l, l == c ? (f ?? bertClass(c)) : bertClass(l))
}

private struct ScalarArraySink: ScalarSink {
    var out: [Unicode.Scalar] = []
    mutating func put(_ c: UInt32, _ f: BertClass) { out.append(Unicode.Scalar(c)!) }
}

/// BertNormalizer: clean text, pad CJK with spaces, strip accents (NFD, drop Mn), lower-case.
public func normalize<C: Collection>(_ input: C, _ o: NormalizerOptions) -> [Unicode.Scalar] where C.Element == Unicode.Scalar {
    var sink = ScalarArraySink()
    sink.out.reserveCapacity(input.count)
    for c in input { normalizeScalar(c.value, o, stripAccents: o.stripAccents ?? o.lowercase, into: &sink) }
    return sink.out
}

/// BertPreTokenizer: split on whitespace (dropped), then every punctuation character alone.
public func preTokenize(_ s: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
    var words: [[Unicode.Scalar]] = []
    var current: [Unicode.Scalar] = []
    for c in s {
        let f = bertClass(c.value)
        if f.contains(.space) || f.contains(.punct) {
            if !current.isEmpty { words.append(current); current = [] }
            if f.contains(.punct) { words.append([c]) }
        } else {
            current.append(c)
        }
    }
    if !current.isEmpty { words.append(current) }
    return words
}
