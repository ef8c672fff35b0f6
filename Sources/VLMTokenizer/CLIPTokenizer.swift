// CLIP's tokenizer as a Hugging Face CLIP folder's tokenizer.json defines it (CLIPTokenizerFast):
//   normalizer     NFC, every run of White_Space → one space, lower-casing char by char (Rust's
//                  char::to_lowercase: no final-sigma context)
//   pre-tokenizer  the pieces of 's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//                  (leftmost-first alternation; what no alternative matches, whitespace, is
//                  dropped), each piece's UTF-8 bytes mapped to GPT-2's printable byte alphabet
//   model          byte-level BPE, the word's last symbol carrying the "</w>" suffix, merges by
//                  rank
//   post-processor <|startoftext|> … <|endoftext|>, cut to the context length (77) with the end
//                  token kept
// Added tokens (the two specials) found in the text are their own ids, as in tokenizers.
// Upstream: huggingface/tokenizers (normalizers, pre_tokenizers/split.rs, byte_level.rs,
// models/bpe), transformers' CLIP conversion; open_clip's SimpleTokenizer is the same BPE.
// open_clip's own cleaning (ftfy, HTML unescaping) is not part of this reader.

import Foundation
import VLMCore
import VLMIO

public final class CLIPTokenizer: @unchecked Sendable {
    public let path: String
    public let vocab: [String: Int32]
    /// Merge ranks keyed by "left right" (a space never occurs inside a byte-level symbol).
    let ranks: [String: Int]
    public let startID: Int32, endID: Int32
    public let contextLength: Int
    let suffix: String
    /// Added tokens matched in the raw text (normalized: false) and in the normalized text.
    let rawAdded: [(String, Int32)], normalizedAdded: [(String, Int32)]
    /// Strings the split pattern makes pieces of before anything else (the special tokens).
    let literals: [[Unicode.Scalar]]
    /// Which text cleaning and split pattern: tokenizer.json's, or open_clip's own.
    public let cleaning: Cleaning
    private let lock = NSLock()

    public enum Cleaning: String, Sendable {
        /// A Hugging Face folder's tokenizer.json: NFC, whitespace, lower-casing.
        case huggingFace = "tokenizer.json"
        /// open_clip's SimpleTokenizer: ftfy's fixes (not its mojibake repair), HTML unescaping
        /// twice, whitespace, lower-casing; its split pattern, case-insensitive.
        case openCLIP = "open_clip"
    }

    /// Every id this tokenizer can give: its vocabulary's, its added tokens', start and end.
    public var allIDs: [Int32] {
        Array(vocab.values) + rawAdded.map(\.1) + normalizedAdded.map(\.1) + [startID, endID]
    }

    /// open_clip's vocabulary file's name.
    public static let openCLIPVocabularyName = "bpe_simple_vocab_16e6.txt.gz"

    /// open_clip's special tokens and their ids (matched first by its pattern).
    var openCLIPSpecials: [([Unicode.Scalar], Int32)] {
        [(Array("<start_of_text>".unicodeScalars), startID), (Array("<end_of_text>".unicodeScalars), endID)]
    }

    /// open_clip's vocabulary file (bpe_simple_vocab_16e6.txt.gz, in the open-clip-torch wheel and
    /// OpenAI's CLIP repository): its first 48,894 merges after the header line, the vocabulary
    /// built from them as SimpleTokenizer builds it — the 256 byte symbols in GPT-2's order, the
    /// same with </w>, each merge joined, then <start_of_text> and <end_of_text> (49406, 49407).
    public init(openCLIPVocabulary path: String, contextLength: Int = 77) throws {
        self.path = path
        let compressed = try readTokenizerFile(path, limit: 16 << 20)
        let text: String
        do {
            guard let t = String(data: try gunzip(compressed, limit: 64 << 20), encoding: .utf8) else {
                throw TokenizerError.badFile(path: path, reason: "not UTF-8 text once decompressed")
            }
            text = t
        } catch let e as GzipError {
            throw TokenizerError.badFile(path: path, reason: "\(e.description) (open_clip's vocabulary is a gzipped text file of merges)")
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let wanted = 49152 - 256 - 2
        guard lines.count > wanted else {
            throw TokenizerError.badFile(path: path, reason: "\(max(0, lines.count - 1)) merges, fewer than the \(wanted) CLIP's vocabulary is built from")
        }
        var vocab: [String: Int32] = [:]
        var order = Array(33...126) + Array(161...172) + Array(174...255)
        order += (0..<256).filter { !order.contains($0) }
        let symbols = order.map { String(Self.byteAlphabet[$0]) }
        for (k, sym) in (symbols + symbols.map { $0 + "</w>" }).enumerated() { vocab[sym] = Int32(k) }
        var ranks: [String: Int] = [:]
        for (k, line) in lines[1...wanted].enumerated() {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard parts.count == 2 else {
                throw TokenizerError.badFile(path: path, reason: "line \(k + 2) is not a merge of two symbols")
            }
            ranks[parts[0] + " " + parts[1]] = k
            vocab[String(parts[0] + parts[1])] = Int32(512 + k)
        }
        startID = Int32(512 + wanted)
        endID = startID + 1
        vocab["<start_of_text>"] = startID
        vocab["<end_of_text>"] = endID
        self.vocab = vocab
        self.ranks = ranks
        self.contextLength = contextLength
        suffix = "</w>"
        (rawAdded, normalizedAdded, literals) = ([], [], [])
        cleaning = .openCLIP
    }
    private var cache: [String: [Int32]] = [:]

    /// Reads `path` (a tokenizer.json of a CLIP folder); refuses one whose pipeline is not CLIP's.
    public init(tokenizerJSON path: String, contextLength: Int = 77) throws {
        self.path = path
        let data = try readTokenizerFile(path, limit: 64 << 20)
        let file: CLIPTokenizerFile
        do { file = try JSONDecoder().decode(CLIPTokenizerFile.self, from: data) } catch {
            throw TokenizerError.badFile(path: path, reason: "not a tokenizer.json: \(error)")
        }
        guard file.model.type == "BPE" else {
            throw TokenizerError.badFile(path: path, reason: "model \(file.model.type ?? "none"), not CLIP's byte-level BPE")
        }
        try Self.checkPipeline(file, path: path)
        literals = try Self.literalPieces(file, path: path)
        cleaning = .huggingFace
        let vocab = file.model.vocab
        self.vocab = vocab
        var ranks: [String: Int] = [:]
        ranks.reserveCapacity(file.model.merges.count)
        // A merge listed twice keeps its last rank, as tokenizers' map of merges does.
        for (k, m) in file.model.merges.enumerated() { ranks[m.key] = k }
        self.ranks = ranks
        suffix = file.model.end_of_word_suffix ?? ""
        var raw: [(String, Int32)] = [], normalized: [(String, Int32)] = []
        for t in file.added_tokens ?? [] where !t.content.isEmpty {
            if t.normalized ?? true { normalized.append((t.content, t.id)) } else { raw.append((t.content, t.id)) }
        }
        // Longest first, as tokenizers' matcher prefers the longest token at a position.
        (rawAdded, normalizedAdded) = (raw.sorted { $0.0.count > $1.0.count }, normalized.sorted { $0.0.count > $1.0.count })
        func special(_ names: [String]) throws -> Int32 {
            for n in names { if let id = vocab[n] ?? file.added_tokens?.first(where: { $0.content == n })?.id { return id } }
            throw TokenizerError.missingSpecialToken(path: path, token: names[0])
        }
        startID = try special(["<|startoftext|>", "<start_of_text>"])
        endID = try special(["<|endoftext|>", "<end_of_text>"])
        guard contextLength >= 2 else { throw TokenizerError.badFile(path: path, reason: "a context length under 2") }
        self.contextLength = contextLength
    }

    /// The normalizer and pre-tokenizer must be CLIP's (anything else would tokenize differently
    /// without a word of warning).
    static func checkPipeline(_ f: CLIPTokenizerFile, path: String) throws {
        let normalizers = f.normalizer?.normalizers?.map(\.type) ?? [f.normalizer?.type].compactMap { $0 }
        guard normalizers == ["NFC", "Replace", "Lowercase"] else {
            throw TokenizerError.badFile(path: path, reason: "normalizer \(normalizers), not CLIP's NFC, whitespace, lower-casing")
        }
        let replace = f.normalizer?.normalizers?[1]
        guard replace?.pattern?.Regex == #"\s+"#, replace?.content == " " else {
            throw TokenizerError.badFile(path: path, reason: "the normalizer's Replace is not CLIP's (runs of whitespace to one space)")
        }
        let steps = f.pre_tokenizer?.pretokenizers ?? []
        let pre = steps.map(\.type)
        guard pre == ["Split", "ByteLevel"] else {
            throw TokenizerError.badFile(path: path, reason: "pre-tokenizer \(pre), not CLIP's split and byte-level")
        }
        guard steps[0].behavior == "Removed", steps[0].invert == true, steps[1].add_prefix_space != true else {
            throw TokenizerError.badFile(path: path, reason: "the pre-tokenizer's settings are not CLIP's (split keeping the matches, no prefix space)")
        }
        guard f.model.dropout == nil, (f.model.continuing_subword_prefix ?? "").isEmpty, f.model.byte_fallback != true else {
            throw TokenizerError.badFile(path: path, reason: "BPE settings (dropout, subword prefix, byte fallback) that are not CLIP's")
        }
        _ = try literalPieces(f, path: path)
    }

    static let pattern = #"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"#

    /// The split pattern's literal alternatives before CLIP's own (transformers writes the two
    /// special tokens there, escaped): each a piece of its own wherever it occurs.
    static func literalPieces(_ f: CLIPTokenizerFile, path: String) throws -> [[Unicode.Scalar]] {
        guard let regex = f.pre_tokenizer?.pretokenizers?.first?.pattern?.Regex, regex.hasSuffix(pattern) else {
            throw TokenizerError.badFile(path: path, reason: "the split pattern is not CLIP's \(pattern)")
        }
        let head = regex.dropLast(pattern.count)
        guard !head.isEmpty else { return [] }
        guard head.hasSuffix("|") else { throw TokenizerError.badFile(path: path, reason: "the split pattern is not CLIP's \(pattern)") }
        var pieces: [[Unicode.Scalar]] = [], current: [Unicode.Scalar] = []
        var escaped = false
        for u in head.unicodeScalars {
            if escaped {
                // An escaped letter or digit is a class (\s, \d, \p…), not a plain string.
                guard !u.properties.isAlphabetic && !("0"..."9").contains(u) else {
                    throw TokenizerError.badFile(path: path, reason: "the split pattern's alternative \\\(u)… is not a plain string")
                }
                current.append(u)
                escaped = false
            } else if u == "\\" {
                escaped = true
            } else if u == "|" {
                pieces.append(current)
                current = []
            } else if "()[]{}.*+?^$".unicodeScalars.contains(u) {
                throw TokenizerError.badFile(path: path, reason: "the split pattern's alternative \(String(String.UnicodeScalarView(current + [u]))) is not a plain string")
            } else {
                current.append(u)
            }
        }
        return pieces.filter { !$0.isEmpty }.sorted { $0.count > $1.count }
    }

    // MARK: Encoding

    /// `text` as ids: start, the text's tokens (cut so the whole fits the context length), end.
    public func encode(_ text: String) -> Encoding {
        var ids = tokens(text)
        let room = contextLength - 2
        let truncated = ids.count > room
        if truncated { ids.removeLast(ids.count - room) }
        let all = [startID] + ids + [endID]
        return Encoding(ids: all, tokens: [], typeIds: [Int32](repeating: 0, count: all.count), truncated: truncated)
    }

    /// The text's tokens without the start and end tokens or truncation.
    public func tokens(_ text: String) -> [Int32] {
        if cleaning == .openCLIP { return openCLIPTokens(text) }
        var out: [Int32] = []
        for piece in Self.split(text, on: rawAdded) {
            switch piece {
            case .added(let id): out.append(id)
            case .text(let t):
                for inner in Self.split(Self.normalize(t), on: normalizedAdded) {
                    switch inner {
                    case .added(let id): out.append(id)
                    case .text(let n): for word in Self.preTokenize(n, literals: literals) { out += bpe(word) }
                    }
                }
            }
        }
        return out
    }

    /// open_clip's encode: the cleaned text's pieces by its pattern
    /// `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
    /// under IGNORECASE (so ſ, which folds to s, matches an s), each through BPE; a piece that is
    /// exactly a special token is its id (SimpleTokenizer's cache), one matched only by folding
    /// is text.
    func openCLIPTokens(_ text: String) -> [Int32] {
        let s = Array(OpenCLIPCleaning.clean(text).unicodeScalars)
        func fold(_ u: Unicode.Scalar) -> Unicode.Scalar { u == "\u{17F}" ? "s" : u }
        func word(_ r: Range<Int>) -> String {
            var w = ""
            for u in s[r] { for b in String(u).utf8 { w.unicodeScalars.append(Self.byteAlphabet[Int(b)]) } }
            return w
        }
        var out: [Int32] = []
        var i = 0
        while i < s.count {
            if let (literal, id) = openCLIPSpecials.first(where: { l in
                i + l.0.count <= s.count && zip(s[i..<(i + l.0.count)], l.0).allSatisfy { fold($0) == $1 }
            }) {
                let r = i..<(i + literal.count)
                if Array(s[r]) == literal { out.append(id) } else { out += bpe(word(r)) }
                i = r.upperBound
                continue
            }
            if s[i] == "'", let c = Self.contractions.first(where: { c in
                i + c.count < s.count && zip(s[(i + 1)...(i + c.count)], c).allSatisfy { fold($0) == $1 }
            }) {
                out += bpe(word(i..<(i + 1 + c.count)))
                i += 1 + c.count
                continue
            }
            switch Self.classify(s[i]) {
            case .space:
                i += 1
            case .number:
                out += bpe(word(i..<(i + 1)))
                i += 1
            case .letter, .other:
                let j = Self.runEnd(s, from: i, end: s.count)
                out += bpe(word(i..<j))
                i = j
            }
        }
        return out
    }

    enum Piece { case text(String), added(Int32) }

    /// `text` cut at each occurrence of an added token (the longest at a position, leftmost
    /// first), matched scalar by scalar as tokenizers matches them: not by Character, which
    /// would miss a token whose first or last scalar joins a neighbour's grapheme cluster (a
    /// combining mark or skin-tone modifier after it, a prepended mark before it).
    static func split(_ text: String, on added: [(String, Int32)]) -> [Piece] {
        guard !added.isEmpty else { return [.text(text)] }
        let s = Array(text.unicodeScalars)
        let tokens = added.map { (Array($0.0.unicodeScalars), $0.1) }
        var out: [Piece] = []
        var plainStart = 0, i = 0
        func flush(_ end: Int) {
            if plainStart < end { out.append(.text(String(String.UnicodeScalarView(s[plainStart..<end])))) }
        }
        while i < s.count {
            if let (token, id) = tokens.first(where: { t in i + t.0.count <= s.count && s[i..<(i + t.0.count)].elementsEqual(t.0) }) {
                flush(i)
                out.append(.added(id))
                i += token.count
                plainStart = i
            } else {
                i += 1
            }
        }
        flush(s.count)
        return out
    }

    /// NFC, runs of White_Space to one space, each scalar lower-cased on its own.
    static func normalize(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        var inSpace = false
        for u in text.precomposedStringWithCanonicalMapping.unicodeScalars {
            if u.properties.isWhitespace {
                if !inSpace { out.append(" ") }
                inSpace = true
                continue
            }
            inSpace = false
            if u.properties.changesWhenLowercased {
                out.append(contentsOf: u.properties.lowercaseMapping.unicodeScalars)
            } else {
                out.append(u)
            }
        }
        return String(out)
    }

    enum Class { case space, letter, number, other }

    static func classify(_ u: Unicode.Scalar) -> Class {
        if u.properties.isWhitespace { return .space }
        switch u.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    static let contractions: [[Unicode.Scalar]] = ["s", "t", "re", "ve", "m", "ll", "d"].map { Array($0.unicodeScalars) }

    /// The pieces of 's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+, leftmost first,
    /// as byte-level strings.
    static func preTokenize(_ text: String, literals: [[Unicode.Scalar]] = []) -> [String] {
        let s = Array(text.unicodeScalars)
        var words: [String] = []
        var i = 0
        func emit(_ r: Range<Int>) {
            var w = ""
            for u in s[r] { for b in String(u).utf8 { w.unicodeScalars.append(byteAlphabet[Int(b)]) } }
            words.append(w)
        }
        while i < s.count {
            if let l = literals.first(where: { l in i + l.count <= s.count && Array(s[i..<(i + l.count)]) == l }) {
                // The byte-level step (use_regex) splits each piece again by GPT-2's pattern;
                // only a literal piece, which mixes classes, comes out in more than one.
                for r in gpt2Pieces(s, i..<(i + l.count)) { emit(r) }
                i += l.count
                continue
            }
            if let n = contraction(s, at: i, end: s.count) {
                emit(i..<(i + n))
                i += n
                continue
            }
            switch classify(s[i]) {
            case .space:
                i += 1
            case .number:
                emit(i..<(i + 1))
                i += 1
            case .letter, .other:
                // [\p{L}]+ or [^\s\p{L}\p{N}]+, greedy: the latter runs over an apostrophe too
                // (an alternative earlier in the pattern only wins where a match starts).
                let j = runEnd(s, from: i, end: s.count)
                emit(i..<j)
                i = j
            }
        }
        return words
    }

    /// GPT-2's 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ over
    /// `range` of `s` (a piece without spaces: the optional leading space never applies).
    static func gpt2Pieces(_ s: [Unicode.Scalar], _ range: Range<Int>) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var i = range.lowerBound
        while i < range.upperBound {
            let j = contraction(s, at: i, end: range.upperBound).map { i + $0 } ?? runEnd(s, from: i, end: range.upperBound)
            out.append(i..<j)
            i = j
        }
        return out
    }

    /// The length of the contraction ('s 't 're 've 'm 'll 'd) at `i`, ending before `end`.
    static func contraction(_ s: [Unicode.Scalar], at i: Int, end: Int) -> Int? {
        guard s[i] == "'" else { return nil }
        return contractions.first { c in i + c.count < end && Array(s[(i + 1)...(i + c.count)]) == c }.map { 1 + $0.count }
    }

    /// Where the run of scalars of `s[i]`'s class that starts at `i` ends (at most `end`).
    static func runEnd(_ s: [Unicode.Scalar], from i: Int, end: Int) -> Int {
        let kind = classify(s[i])
        var j = i + 1
        while j < end, classify(s[j]) == kind { j += 1 }
        return j
    }

    /// GPT-2's byte alphabet: printable bytes stand for themselves, the others for 256 + n.
    static let byteAlphabet: [Unicode.Scalar] = {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var map = [Unicode.Scalar](repeating: " ", count: 256)
        for b in printable { map[b] = Unicode.Scalar(UInt32(b))! }
        var n = 0
        for b in 0..<256 where !printable.contains(b) {
            map[b] = Unicode.Scalar(UInt32(256 + n))!
            n += 1
        }
        printable.removeAll()
        return map
    }()

    /// A byte-level word's ids: its symbols, the last with the end-of-word suffix, merged by rank.
    /// The lowest-ranked adjacent pair merges first, the leftmost among equals (as tokenizers'
    /// BPE, and as open_clip's loop does for a trained merge list, where a merge's parts always
    /// rank before it), through a heap: a word of n symbols takes O(n log n), so a text of one
    /// long run of letters (CLIP's pattern makes it one word) cannot stall a server.
    func bpe(_ word: String) -> [Int32] {
        lock.lock()
        if let hit = cache[word] { lock.unlock(); return hit }
        lock.unlock()
        var symbols = word.unicodeScalars.map { String($0) }
        guard !symbols.isEmpty else { return [] }
        symbols[symbols.count - 1] += suffix
        let n = symbols.count
        var next = Array(1...n), prev = Array(-1..<(n - 1)), version = [Int](repeating: 0, count: n)
        next[n - 1] = -1
        var heap = PairHeap()
        func push(_ left: Int) {
            guard left >= 0 else { return }
            let right = next[left]
            guard right >= 0, let r = ranks[symbols[left] + " " + symbols[right]] else { return }
            heap.push(.init(rank: r, left: left, right: right, leftVersion: version[left], rightVersion: version[right]))
        }
        for i in 0..<(n - 1) { push(i) }
        while let p = heap.pop() {
            // Stale: a part merged since, or no longer neighbours.
            guard version[p.left] == p.leftVersion, version[p.right] == p.rightVersion, next[p.left] == p.right else { continue }
            symbols[p.left] += symbols[p.right]
            version[p.left] += 1
            version[p.right] = -1
            next[p.left] = next[p.right]
            if next[p.left] >= 0 { prev[next[p.left]] = p.left }
            push(prev[p.left])
            push(p.left)
        }
        var ids: [Int32] = []
        var i = 0
        // Every byte is in the alphabet, so every symbol is in a CLIP vocabulary; a vocabulary
        // without one gives the end token (tokenizers' unk for CLIP is <|endoftext|>).
        while i >= 0 { ids.append(vocab[symbols[i]] ?? endID); i = next[i] }
        // Long words are not kept: the cache holds words of ordinary length.
        if n <= 256 {
            lock.lock()
            if cache.count > 100_000 { cache.removeAll(keepingCapacity: true) }
            cache[word] = ids
            lock.unlock()
        }
        return ids
    }
}

/// A binary min-heap of candidate merges by (rank, left position).
struct PairHeap {
    struct Pair { var rank: Int, left: Int, right: Int, leftVersion: Int, rightVersion: Int }
    private var items: [Pair] = []

    private func less(_ a: Pair, _ b: Pair) -> Bool { (a.rank, a.left) < (b.rank, b.left) }

    mutating func push(_ p: Pair) {
        items.append(p)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Pair? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && less(items[l], items[m]) { m = l }
                if r < items.count && less(items[r], items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

// MARK: - tokenizer.json, the parts CLIP's pipeline has

struct CLIPTokenizerFile: Decodable {
    struct Pattern: Decodable {
        let Regex: String?
    }
    struct Step: Decodable {
        let type: String?
        let normalizers: [Step]?
        let pretokenizers: [Step]?
        let pattern: Pattern?
        let content: String?
        let behavior: String?
        let invert: Bool?
        let add_prefix_space: Bool?
    }
    struct Merge: Decodable {
        let key: String
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) {
                key = s
            } else {
                let pair = try c.decode([String].self)
                guard pair.count == 2 else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "a merge of \(pair.count) parts") }
                key = pair[0] + " " + pair[1]
            }
        }
    }
    struct Model: Decodable {
        let type: String?
        let vocab: [String: Int32]
        let merges: [Merge]
        let end_of_word_suffix: String?
        let dropout: Double?
        let continuing_subword_prefix: String?
        let byte_fallback: Bool?
    }
    struct Added: Decodable {
        let id: Int32
        let content: String
        let normalized: Bool?
    }
    let normalizer: Step?
    let pre_tokenizer: Step?
    let model: Model
    let added_tokens: [Added]?
}
