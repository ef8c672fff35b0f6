// Request bodies are JSON as RFC 8259 writes it. Foundation's JSONDecoder is lenient — it takes
// trailing commas and keeps the first of two equal keys (Python's json keeps the last) — so a
// body is checked against the grammar first, in one pass over its bytes, and a body that a
// strict client library would refuse, or read differently, is refused with where it goes wrong:
// UTF-8 checked, \u escapes paired, keys compared as the text they decode to. The pass also
// counts values: JSONDecoder builds every value of a body, ignored ones too (a 32 MiB list of
// zeros costs ~900 MB), so a body holding more values than any request needs is refused first.
// Model files (config.json and the like) are read as Python reads them: of two equal keys, the
// last (`lastKeyWins`).

import Foundation

/// Where a body stops being strict JSON.
public struct JSONSyntaxError: Error {
    public var offset: Int
    public var reason: String
}

public enum StrictJSON {
    /// Checks `bytes` is one JSON value with no trailing comma and no key twice in an object,
    /// holding at most `maxValues` values (strings, numbers, literals, lists and objects).
    public static func check(_ bytes: UnsafeRawBufferPointer, maxValues: Int = .max) throws {
        var p = Parser(bytes: bytes, maxValues: maxValues)
        p.space()
        try p.value(depth: 0)
        p.space()
        if p.at < bytes.count { throw JSONSyntaxError(offset: p.at, reason: "text after the JSON value") }
    }

    /// Whether `bytes` holds at most `limit` JSON values, found in one pass that builds none
    /// (~1 ns a byte): a header of millions of tiny entries is refused before a decoder spends
    /// seconds and gigabytes on it. Text that is not JSON counts as within the limit (its
    /// decoder then says what is wrong).
    public static func hasAtMost(_ limit: Int, valuesIn bytes: UnsafeRawBufferPointer) -> Bool {
        var p = Parser(bytes: bytes, maxValues: limit)
        p.keepLastKey = true
        p.space()
        do { try p.value(depth: 0) } catch { return p.values <= limit }
        return true
    }

    /// `data` with every member whose key comes again later in its object blanked out, so a
    /// decoder that keeps the first of equal keys (Foundation's) reads what Python's json and
    /// transformers read: the last. Text that is not strict JSON is returned as it is (its
    /// decoder then says what is wrong).
    public static func lastKeyWins(_ data: Data) -> Data {
        var blank: [Range<Int>] = []
        let ok: Bool = data.withUnsafeBytes { b in
            var p = Parser(bytes: b, maxValues: .max)
            p.keepLastKey = true
            p.space()
            guard (try? p.value(depth: 0)) != nil else { return false }
            blank = p.blanked
            return true
        }
        guard ok, !blank.isEmpty else { return data }
        var out = data
        for r in blank { out.replaceSubrange(r, with: Data(repeating: 0x20, count: r.count)) }
        return out
    }

    struct Parser {
        let bytes: UnsafeRawBufferPointer
        let maxValues: Int
        var at = 0
        var values = 0
        /// Of two equal keys, keep the last (record the earlier member in `blanked`) instead of
        /// refusing the text.
        var keepLastKey = false
        var blanked: [Range<Int>] = []

        init(bytes: UnsafeRawBufferPointer, maxValues: Int) { (self.bytes, self.maxValues) = (bytes, maxValues) }

        func fail(_ reason: String) -> JSONSyntaxError { JSONSyntaxError(offset: at, reason: reason) }

        var peek: UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func space() {
            while at < bytes.count {
                let c: UInt8 = bytes[at]
                guard c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D else { return }
                at += 1
            }
        }

        mutating func value(depth: Int) throws {
            guard depth < 512 else { throw fail("nested more than 512 deep") }
            guard let c = peek else { throw fail("the body ends where a value should be") }
            values += 1
            guard values <= maxValues else { throw fail("more than \(maxValues) values, far more than a request of the allowed inputs holds") }
            switch c {
            case UInt8(ascii: "{"): try object(depth: depth)
            case UInt8(ascii: "["): try array(depth: depth)
            case UInt8(ascii: "\""): try string()
            case UInt8(ascii: "t"): try literal("true")
            case UInt8(ascii: "f"): try literal("false")
            case UInt8(ascii: "n"): try literal("null")
            default: try number()
            }
        }

        mutating func literal(_ word: StaticString) throws {
            let n: Int = word.utf8CodeUnitCount
            guard at + n <= bytes.count else { throw fail("not a JSON value") }
            for k in 0..<n where bytes[at + k] != word.utf8Start[k] { throw fail("not a JSON value") }
            at += n
        }

        mutating func number() throws {
            let start: Int = at
            if peek == UInt8(ascii: "-") { at += 1 }
            guard let first = peek, first >= 0x30 && first <= 0x39 else { at = start; throw fail("not a JSON value") }
            at += 1
            if first != 0x30 { digits() }
            if peek == UInt8(ascii: ".") {
                at += 1
                guard digits() > 0 else { throw fail("a number needs digits after its point") }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                at += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { at += 1 }
                guard digits() > 0 else { throw fail("a number needs digits in its exponent") }
            }
        }

        @discardableResult
        mutating func digits() -> Int {
            let start: Int = at
            while let c = peek, c >= 0x30 && c <= 0x39 { at += 1 }
            return at - start
        }

        /// Where a string's raw bytes lie between its quotes (escapes checked, not decoded: two
        /// keys are the same when their bytes are, which is how clients write them).
        @discardableResult
        mutating func string() throws -> Range<Int> {
            at += 1
            let start: Int = at
            while at < bytes.count {
                let c: UInt8 = bytes[at]
                if c == UInt8(ascii: "\"") {
                    let range: Range<Int> = start..<at
                    at += 1
                    return range
                }
                if c < 0x20 { throw fail("a control character inside a string (escape it)") }
                if c >= 0x80 {
                    let n: Int = utf8Length(at)
                    guard n > 0 else { throw fail("not UTF-8") }
                    at += n
                    continue
                }
                if c == UInt8(ascii: "\\") {
                    at += 1
                    guard let e = peek else { break }
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                         UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                        at += 1
                    case UInt8(ascii: "u"):
                        let escapeAt: Int = at - 1
                        let unit: UInt32 = try hex4()
                        if unit >= 0xDC00 && unit <= 0xDFFF { at = escapeAt; throw fail("a lone UTF-16 surrogate escape (\\u\(String(unit, radix: 16)))") }
                        if unit >= 0xD800 && unit <= 0xDBFF {
                            // A high surrogate: a low one must follow.
                            guard at + 1 < bytes.count, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") else {
                                at = escapeAt
                                throw fail("a lone UTF-16 surrogate escape (\\u\(String(unit, radix: 16)))")
                            }
                            at += 1
                            let low: UInt32 = try hex4()
                            guard low >= 0xDC00 && low <= 0xDFFF else {
                                at = escapeAt
                                throw fail("a lone UTF-16 surrogate escape (\\u\(String(unit, radix: 16)))")
                            }
                        }
                    default: throw fail("an unknown escape in a string")
                    }
                    continue
                }
                at += 1
            }
            throw fail("the body ends inside a string")
        }

        /// `u` and four hex digits, at `at`; their value.
        mutating func hex4() throws -> UInt32 {
            at += 1
            var v: UInt32 = 0
            for _ in 0..<4 {
                guard let h = peek, isHex(h) else { throw fail("\\u needs four hex digits") }
                v = v << 4 | UInt32(h <= 0x39 ? h - 0x30 : (h | 0x20) - 0x61 + 10)
                at += 1
            }
            return v
        }

        /// The length of the UTF-8 sequence at `i`, 0 when it is not one (overlong forms,
        /// surrogates and code points past U+10FFFF included).
        func utf8Length(_ i: Int) -> Int {
            let c: UInt8 = bytes[i]
            func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
                i + k < bytes.count && bytes[i + k] >= lo && bytes[i + k] <= hi
            }
            switch c {
            case 0xC2...0xDF: return cont(1) ? 2 : 0
            case 0xE0: return cont(1, 0xA0, 0xBF) && cont(2) ? 3 : 0
            case 0xE1...0xEC, 0xEE, 0xEF: return cont(1) && cont(2) ? 3 : 0
            case 0xED: return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0
            case 0xF0: return cont(1, 0x90, 0xBF) && cont(2) && cont(3) ? 4 : 0
            case 0xF1...0xF3: return cont(1) && cont(2) && cont(3) ? 4 : 0
            case 0xF4: return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0
            default: return 0
            }
        }

        /// A key's text: its bytes, with escapes decoded when it has any.
        func keyText(_ r: Range<Int>) -> [UInt8] {
            let raw = Array(bytes[r])
            guard raw.contains(UInt8(ascii: "\\")) else { return raw }
            var out: [UInt8] = []
            var k = 0
            func hex(_ j: Int) -> UInt32 {
                var v: UInt32 = 0
                for h in raw[j..<(j + 4)] { v = v << 4 | UInt32(h <= 0x39 ? h - 0x30 : (h | 0x20) - 0x61 + 10) }
                return v
            }
            while k < raw.count {
                guard raw[k] == UInt8(ascii: "\\") else { out.append(raw[k]); k += 1; continue }
                let e = raw[k + 1]
                k += 2
                var scalar: UInt32
                switch e {
                case UInt8(ascii: "b"): scalar = 8
                case UInt8(ascii: "f"): scalar = 12
                case UInt8(ascii: "n"): scalar = 10
                case UInt8(ascii: "r"): scalar = 13
                case UInt8(ascii: "t"): scalar = 9
                case UInt8(ascii: "u"):
                    scalar = hex(k)
                    k += 4
                    if scalar >= 0xD800 && scalar <= 0xDBFF {   // paired (checked when scanned)
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (hex(k + 2) - 0xDC00)
                        k += 6
                    }
                default: scalar = UInt32(e)   // \" \\ \/
                }
                out += Array(String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8)
            }
            return out
        }

        func isHex(_ c: UInt8) -> Bool {
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
        }

        mutating func array(depth: Int) throws {
            at += 1
            space()
            if peek == UInt8(ascii: "]") { at += 1; return }
            while true {
                space()
                if peek == UInt8(ascii: "]") { throw fail("a trailing comma in a list") }
                try value(depth: depth + 1)
                space()
                guard let c = peek else { throw fail("the body ends inside a list") }
                at += 1
                if c == UInt8(ascii: "]") { return }
                guard c == UInt8(ascii: ",") else { at -= 1; throw fail("expected , or ] in a list") }
            }
        }

        mutating func object(depth: Int) throws {
            at += 1
            space()
            if peek == UInt8(ascii: "}") { at += 1; return }
            var keys: [[UInt8]: Int] = [:]   // each key's member, by number
            var starts: [Int] = []           // where each member's key begins
            while true {
                space()
                if peek == UInt8(ascii: "}") { throw fail("a trailing comma in an object") }
                guard peek == UInt8(ascii: "\"") else { throw fail("an object's key must be a string in double quotes") }
                let keyAt: Int = at
                starts.append(keyAt)
                let key: [UInt8] = keyText(try string())
                if let earlier = keys.updateValue(starts.count - 1, forKey: key) {
                    guard keepLastKey else {
                        at = keyAt
                        throw fail("the key \(jsonString(String(decoding: key.prefix(200), as: UTF8.self))) appears twice in one object")
                    }
                    // The earlier member, its comma included, up to the next member's key.
                    blanked.append(starts[earlier]..<starts[earlier + 1])
                }
                space()
                guard peek == UInt8(ascii: ":") else { throw fail("expected : after an object's key") }
                at += 1
                space()
                try value(depth: depth + 1)
                space()
                guard let c = peek else { throw fail("the body ends inside an object") }
                at += 1
                if c == UInt8(ascii: "}") { return }
                guard c == UInt8(ascii: ",") else { at -= 1; throw fail("expected , or } in an object") }
            }
        }
    }
}
