// open_clip's text cleaning (open_clip/tokenizer.py, clean_fn "lower"): basic_clean —
// ftfy.fix_text, html.unescape twice, strip — then whitespace_clean (runs of \s to one space,
// strip) and str.lower(), on code points as Python's str holds them.
//
// fix_text's steps are reproduced except its mojibake repair (fix_encoding: guessing that text
// was decoded in the wrong encoding and decoding it again, which needs ftfy's heuristics and
// codecs): per line (its "\n" kept), the HTML entities ftfy unescapes (skipped, as ftfy does, from
// the first line holding a "<" on), C1 controls read as windows-1252, Latin ligatures split,
// full-width forms narrowed, curly quotes straightened, line breaks to "\n", terminal escapes
// and control characters removed, NFC — repeated until nothing changes. The tables are ftfy's
// and CPython's own (FTFYTables.swift, from scripts/export_ftfy_tables.py).

import Foundation

public enum OpenCLIPCleaning {
    /// whitespace_clean(basic_clean(text)).lower(), without fix_text's mojibake repair.
    public static func clean(_ text: String) -> String {
        var s = fixText(Array(text.unicodeScalars))
        s = htmlUnescape(htmlUnescape(s))
        s = strip(s)
        // whitespace_clean: re.sub(r"\s+", " ", text).strip()
        var collapsed: [Unicode.Scalar] = []
        collapsed.reserveCapacity(s.count)
        var inSpace = false
        for u in s {
            if pythonSpaces.contains(u.value) {
                if !inSpace { collapsed.append(" ") }
                inSpace = true
            } else {
                collapsed.append(u)
                inSpace = false
            }
        }
        return string(pythonLower(strip(collapsed)))
    }

    /// Python's str.lower(): each code point's full lower-case mapping, and capital sigma as final
    /// sigma (ς) after a cased letter (case-ignorable ones between) and not before one — which
    /// Swift's lowercased() does not do.
    static func pythonLower(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(s.count)
        for (i, u) in s.enumerated() {
            if u == "\u{3A3}" {
                var j = i - 1
                while j >= 0 && s[j].properties.isCaseIgnorable { j -= 1 }
                var final = j >= 0 && s[j].properties.isCased
                if final {
                    var k = i + 1
                    while k < s.count && s[k].properties.isCaseIgnorable { k += 1 }
                    final = k == s.count || !s[k].properties.isCased
                }
                out.append(final ? "\u{3C2}" : "\u{3C3}")
            } else if u.properties.changesWhenLowercased {
                out += u.properties.lowercaseMapping.unicodeScalars
            } else {
                out.append(u)
            }
        }
        return out
    }

    static func string(_ s: [Unicode.Scalar]) -> String {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: s)
        return String(v)
    }

    /// str.strip(): Python's whitespace off both ends.
    static func strip(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard let first = s.firstIndex(where: { !pythonSpaces.contains($0.value) }),
              let last = s.lastIndex(where: { !pythonSpaces.contains($0.value) }) else { return [] }
        return Array(s[first...last])
    }

    // MARK: ftfy.fix_text

    /// ftfy's segments: lines with their "\n", a long line cut every 1,000,000 code points.
    static func fixText(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(s.count)
        var unescape = true   // "auto": off from the first segment holding "<" on (ftfy keeps it off)
        var pos = 0
        while pos < s.count {
            var end = (s[pos...].firstIndex(of: "\n").map { $0 + 1 }) ?? s.count
            if end - pos > 1_000_000 { end = pos + 1_000_000 }
            let segment = Array(s[pos..<end])
            if unescape && segment.contains("<") { unescape = false }
            out += fixSegment(segment, unescape: unescape)
            pos = end
        }
        return out
    }

    static func fixSegment(_ segment: [Unicode.Scalar], unescape: Bool) -> [Unicode.Scalar] {
        var text = segment
        // A few rounds in practice (each removes a layer of escaping, so the text shortens);
        // bounded by its length anyway, which no real text reaches.
        for _ in 0..<(segment.count + 64) {
            let before = text
            if unescape { text = ftfyUnescape(text) }
            text = text.map { u in (0x80...0x9F).contains(u.value) ? Unicode.Scalar(sloppyWindows1252C1[Int(u.value) - 0x80])! : u }
            text = translate(text, FTFYData.ligatures)
            text = translate(text, FTFYData.width)
            text = text.map { u in
                switch u.value {
                case 0x201C...0x201F: return "\""
                case 0x02BC, 0x2018...0x201B: return "'"
                default: return u
                }
            }
            text = fixLineBreaks(text)
            text = removeTerminalEscapes(text)
            text = text.filter { !ftfyControlChars.contains($0.value) }
            text = Array(string(text).precomposedStringWithCanonicalMapping.unicodeScalars)
            if text == before { break }
        }
        return text
    }

    static func translate(_ s: [Unicode.Scalar], _ table: [UInt32: [Unicode.Scalar]]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(s.count)
        for u in s {
            if let r = table[u.value] { out += r } else { out.append(u) }
        }
        return out
    }

    static func fixLineBreaks(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(s.count)
        var i = 0
        while i < s.count {
            switch s[i].value {
            case 0x0D:
                out.append("\n")
                if i + 1 < s.count && s[i + 1] == "\n" { i += 1 }
            case 0x2028, 0x2029, 0x85: out.append("\n")
            default: out.append(s[i])
            }
            i += 1
        }
        return out
    }

    /// "\u{1B}[" then digits (Python's \d: any decimal digit) and semicolons, then an ASCII letter.
    static func removeTerminalEscapes(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard s.contains("\u{1B}") else { return s }
        var out: [Unicode.Scalar] = []
        var i = 0
        while i < s.count {
            if s[i] == "\u{1B}", i + 1 < s.count, s[i + 1] == "[" {
                var j = i + 2
                while j < s.count, s[j] == ";" || s[j].properties.generalCategory == .decimalNumber { j += 1 }
                if j < s.count, s[j].isASCII, s[j].properties.isAlphabetic {
                    i = j + 1
                    continue
                }
            }
            out.append(s[i])
            i += 1
        }
        return out
    }

    /// ftfy's unescape_html: each `&#?[0-9A-Za-z]{1,24};` that is one of its entities, or a
    /// numeric reference html.unescape decodes whole.
    static func ftfyUnescape(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard s.contains("&") else { return s }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(s.count)
        var i = 0
        func alnum(_ u: Unicode.Scalar) -> Bool { u.isASCII && (u.properties.isAlphabetic || ("0"..."9").contains(u)) }
        while i < s.count {
            if s[i] == "&" {
                var j = i + 1
                if j < s.count && s[j] == "#" { j += 1 }
                let start = j
                while j < s.count && j - start < 24 && alnum(s[j]) { j += 1 }
                if j > start && j < s.count && s[j] == ";" {
                    let match = Array(s[i...j])
                    let key = string(match)
                    if let r = FTFYData.entities[key] {
                        out += r
                        i = j + 1
                        continue
                    }
                    if match[1] == "#" {
                        let u = htmlUnescape(match)
                        if !u.contains(";") {
                            out += u
                            i = j + 1
                            continue
                        }
                    }
                }
            }
            out.append(s[i])
            i += 1
        }
        return out
    }

    // MARK: html.unescape

    /// Python's html.unescape: `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)` each
    /// replaced as _replace_charref does.
    static func htmlUnescape(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard s.contains("&") else { return s }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(s.count)
        var i = 0
        func isDigit(_ u: Unicode.Scalar) -> Bool { ("0"..."9").contains(u) }
        func isHex(_ u: Unicode.Scalar) -> Bool { isDigit(u) || ("a"..."f").contains(u) || ("A"..."F").contains(u) }
        while i < s.count {
            guard s[i] == "&", i + 1 < s.count else { out.append(s[i]); i += 1; continue }
            var j = i + 1
            if s[j] == "#" {
                // Numeric: decimal, or x/X and hex digits; a ';' is taken when there.
                var k = j + 1
                let hex = k < s.count && (s[k] == "x" || s[k] == "X")
                if hex { k += 1 }
                let digitsStart = k
                while k < s.count && (hex ? isHex(s[k]) : isDigit(s[k])) { k += 1 }
                guard k > digitsStart else { out.append(s[i]); i += 1; continue }
                var num: UInt64 = 0
                for u in s[digitsStart..<k] {
                    let d = UInt64(hex ? Int(String(u), radix: 16)! : Int(String(u))!)
                    num = num > 0x10FFFF ? num : num * (hex ? 16 : 10) + d   // saturates past the range
                }
                if k < s.count && s[k] == ";" { k += 1 }
                out += numericReference(num)
                i = k
                continue
            }
            // Named: up to 32 scalars that are not tab, newline, form feed, space, <, &, # or ;.
            let start = j
            while j < s.count && j - start < 32 && !"\t\n\u{0C} <&#;".unicodeScalars.contains(s[j]) { j += 1 }
            guard j > start else { out.append(s[i]); i += 1; continue }
            var name = Array(s[start..<j])
            if j < s.count && s[j] == ";" { name.append(";"); j += 1 }
            // Entity names are ASCII: a String key would match by canonical equivalence (the
            // Kelvin sign as K), which Python's dict does not.
            let ascii = name.allSatisfy(\.isASCII)
            if ascii, let r = FTFYData.html5[string(name)] {
                out += r
            } else if let (x, r) = stride(from: name.count - 1, through: 2, by: -1).lazy.compactMap({ x in
                name[..<x].allSatisfy(\.isASCII) ? FTFYData.html5[string(Array(name[..<x]))].map { (x, $0) } : nil
            }).first {
                // The longest name the text starts with (the standard's rule), the rest kept.
                out += r
                out += name[x...]
            } else {
                out.append("&")
                out += name
            }
            i = j
        }
        return out
    }

    static func numericReference(_ num: UInt64) -> [Unicode.Scalar] {
        if num <= 0x10FFFF, let r = FTFYData.invalidCharrefs[UInt32(num)] { return r }
        if (0xD800...0xDFFF).contains(num) || num > 0x10FFFF { return ["\u{FFFD}"] }
        if pythonInvalidCodepoints.contains(UInt32(num)) { return [] }
        return [Unicode.Scalar(UInt32(num))!]
    }
}

/// The generated tables, parsed once.
enum FTFYData {
    static func parse(_ blob: String) -> [String: [Unicode.Scalar]] {
        var out: [String: [Unicode.Scalar]] = [:]
        for line in blob.split(separator: "\n") {
            let parts = line.split(separator: "\t", omittingEmptySubsequences: false)
            out[String(parts[0])] = parts[1].split(separator: " ").map { Unicode.Scalar(UInt32($0, radix: 16)!)! }
        }
        return out
    }

    static func byCodePoint(_ blob: String) -> [UInt32: [Unicode.Scalar]] {
        Dictionary(uniqueKeysWithValues: parse(blob).map { (UInt32($0.key, radix: 16)!, $0.value) })
    }

    static let entities = parse(ftfyHTMLEntities)
    static let html5 = parse(pythonHTML5Entities)
    static let invalidCharrefs = byCodePoint(pythonInvalidCharrefs)
    static let ligatures = byCodePoint(ftfyLigatures)
    static let width = byCodePoint(ftfyWidthMap)
}
