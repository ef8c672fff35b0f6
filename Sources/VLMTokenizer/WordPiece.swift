// BERT's tokenizer, id-for-id with Hugging Face's BertTokenizerFast (the `tokenizers` library):
// added special tokens split out of the raw text → BertNormalizer (clean text, pad CJK
// ideographs, strip accents, lower-case) → BertPreTokenizer (whitespace, then punctuation as
// single tokens) → greedy longest-match-first WordPiece with "##" continuations → [CLS] A [SEP]
// (B [SEP]) with token type ids, longest-first truncation.
// Upstream: tokenizers/src/normalizers/bert.rs, pre_tokenizers/bert.rs, models/wordpiece/mod.rs.

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
    init<S: Sequence>(_ s: S) where S.Element == Unicode.Scalar { scalars = s.map(\.value) }
}

public final class WordPieceTokenizer: @unchecked Sendable {
    public let options: NormalizerOptions
    public let idToToken: [String]
    private let vocab: [ScalarKey: Int32]
    public let unkId: Int32, clsId: Int32, sepId: Int32
    public let unkToken = "[UNK]", clsToken = "[CLS]", sepToken = "[SEP]"
    public let maxInputCharsPerWord = 100
    private let prefix: [Unicode.Scalar] = ["#", "#"]
    /// Added special tokens matched in the raw text, longest first.
    private let specials: [(scalars: [Unicode.Scalar], id: Int32, token: String)]

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
        func id(_ t: String) throws -> Int32 {
            guard let i = v[ScalarKey(t.unicodeScalars)] else { throw TokenizerError.missingSpecialToken(path: source, token: t) }
            return i
        }
        unkId = try id("[UNK]")
        clsId = try id("[CLS]")
        sepId = try id("[SEP]")
        specials = specialTokens.compactMap { t in v[ScalarKey(t.unicodeScalars)].map { (Array(t.unicodeScalars), $0, t) } }
            .sorted { $0.scalars.count > $1.scalars.count }
    }

    public func id(of token: String) -> Int32? { vocab[ScalarKey(token.unicodeScalars)] }

    // MARK: - Encoding

    /// [CLS] text [SEP] (pair [SEP]), truncated to maxLength tokens in all (longest first).
    public func encode(_ text: String, pair: String? = nil, maxLength: Int? = nil) -> Encoding {
        var a = wordPieces(text)
        var b = pair.map { wordPieces($0) }
        let specialCount = b == nil ? 2 : 3
        var truncated = false
        if let maxLength {
            let budget = max(0, maxLength - specialCount)
            if var bb = b {
                if a.count + bb.count > budget {
                    truncated = true
                    let firstIsLonger = a.count > bb.count  // on a tie the second keeps the odd token
                    let short = firstIsLonger ? bb.count : a.count
                    let keepShort = min(short, budget / 2)
                    let keepLong = budget - keepShort
                    if firstIsLonger { a.removeLast(a.count - keepLong); bb.removeLast(bb.count - keepShort) }
                    else { bb.removeLast(bb.count - keepLong); a.removeLast(a.count - keepShort) }
                    b = bb
                }
            } else if a.count > budget {
                truncated = true
                a.removeLast(a.count - budget)
            }
        }
        var ids: [Int32] = [clsId], tokens = [clsToken], types: [Int32] = [0]
        for p in a { ids.append(p.id); tokens.append(p.token); types.append(0) }
        ids.append(sepId); tokens.append(sepToken); types.append(0)
        if let b {
            for p in b { ids.append(p.id); tokens.append(p.token); types.append(1) }
            ids.append(sepId); tokens.append(sepToken); types.append(1)
        }
        return Encoding(ids: ids, tokens: tokens, typeIds: types, truncated: truncated)
    }

    /// The word pieces of `text` (no [CLS]/[SEP]), special tokens in the raw text kept whole.
    public func wordPieces(_ text: String) -> [(id: Int32, token: String)] {
        var out: [(Int32, String)] = []
        let scalars = Array(text.unicodeScalars)
        var segmentStart = 0, i = 0
        func flush(_ end: Int) {
            if end > segmentStart { tokenizeSegment(scalars[segmentStart..<end], into: &out) }
        }
        while i < scalars.count {
            if scalars[i] == "[", let s = specials.first(where: { matches($0.scalars, scalars, at: i) }) {
                flush(i)
                out.append((s.id, s.token))
                i += s.scalars.count
                segmentStart = i
            } else {
                i += 1
            }
        }
        flush(scalars.count)
        return out
    }

    private func matches(_ needle: [Unicode.Scalar], _ hay: [Unicode.Scalar], at i: Int) -> Bool {
        guard i + needle.count <= hay.count else { return false }
        for j in 0..<needle.count where hay[i + j] != needle[j] { return false }
        return true
    }

    private func tokenizeSegment(_ raw: ArraySlice<Unicode.Scalar>, into out: inout [(Int32, String)]) {
        let normalized = normalize(raw, options)
        for word in preTokenize(normalized) { wordPiece(word, into: &out) }
    }

    /// Greedy longest-match-first over one pre-tokenized word.
    private func wordPiece(_ word: [Unicode.Scalar], into out: inout [(Int32, String)]) {
        if word.count > maxInputCharsPerWord { out.append((unkId, unkToken)); return }
        var pieces: [(Int32, String)] = []
        var start = 0
        while start < word.count {
            var end = word.count
            var found: (Int32, [Unicode.Scalar])?
            while start < end {
                let candidate = (start > 0 ? prefix : []) + word[start..<end]
                if let id = vocab[ScalarKey(candidate)] { found = (id, candidate); break }
                end -= 1
            }
            guard let (id, piece) = found else { out.append((unkId, unkToken)); return }
            var s = String.UnicodeScalarView()
            s.append(contentsOf: piece)
            pieces.append((id, String(s)))
            start = end
        }
        out.append(contentsOf: pieces)
    }
}

// MARK: - Normalizer and pre-tokenizer (free functions: the exact Hugging Face rules)

/// Tab, newline and carriage return count as whitespace, as does Unicode White_Space.
@inline(__always)
func isBertWhitespace(_ c: Unicode.Scalar) -> Bool {
    c == "\t" || c == "\n" || c == "\r" || c.properties.isWhitespace
}

/// Other categories (Cc, Cf, Cs, Co, Cn), except tab, newline and carriage return.
@inline(__always)
func isBertControl(_ c: Unicode.Scalar) -> Bool {
    if c == "\t" || c == "\n" || c == "\r" { return false }
    switch c.properties.generalCategory {
    case .control, .format, .surrogate, .privateUse, .unassigned: return true
    default: return false
    }
}

/// CJK Unified Ideographs blocks, as BERT defines "Chinese character".
@inline(__always)
func isChineseChar(_ c: Unicode.Scalar) -> Bool {
    switch c.value {
    case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F, 0x2B740...0x2B81F,
         0x2B820...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F: return true
    default: return false
    }
}

/// ASCII punctuation and symbols, or any Unicode P* category.
@inline(__always)
func isBertPunctuation(_ c: Unicode.Scalar) -> Bool {
    let v = c.value
    if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
    switch c.properties.generalCategory {
    case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
         .initialPunctuation, .finalPunctuation, .otherPunctuation: return true
    default: return false
    }
}

/// BertNormalizer: clean text, pad CJK with spaces, strip accents (NFD, drop Mn), lower-case.
public func normalize<C: Collection>(_ input: C, _ o: NormalizerOptions) -> [Unicode.Scalar] where C.Element == Unicode.Scalar {
    var s: [Unicode.Scalar] = []
    s.reserveCapacity(input.count + 8)
    for c in input {
        if o.cleanText {
            if c.value == 0 || c.value == 0xFFFD || isBertControl(c) { continue }
            if isBertWhitespace(c) { s.append(" "); continue }
        }
        if o.handleChineseChars && isChineseChar(c) {
            s.append(" "); s.append(c); s.append(" ")
        } else {
            s.append(c)
        }
    }
    if o.stripAccents ?? o.lowercase {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: s)
        let nfd = String(view).decomposedStringWithCanonicalMapping
        s = nfd.unicodeScalars.filter { $0.properties.generalCategory != .nonspacingMark }
    }
    if o.lowercase {
        var lowered: [Unicode.Scalar] = []
        lowered.reserveCapacity(s.count)
        for c in s {
            if c.isASCII {
                lowered.append((0x41...0x5A).contains(c.value) ? Unicode.Scalar(c.value + 32)! : c)
            } else {
                lowered.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
            }
        }
        s = lowered
    }
    return s
}

/// BertPreTokenizer: split on whitespace (dropped), then every punctuation character alone.
public func preTokenize(_ s: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
    var words: [[Unicode.Scalar]] = []
    var current: [Unicode.Scalar] = []
    for c in s {
        if c.properties.isWhitespace || c == "\t" || c == "\n" || c == "\r" {
            if !current.isEmpty { words.append(current); current = [] }
        } else if isBertPunctuation(c) {
            if !current.isEmpty { words.append(current); current = [] }
            words.append([c])
        } else {
            current.append(c)
        }
    }
    if !current.isEmpty { words.append(current) }
    return words
}
