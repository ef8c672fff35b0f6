// Request bodies are JSON as RFC 8259 writes it. Foundation's JSONDecoder is lenient — it takes
// trailing commas and keeps the first of two equal keys (Python's json keeps the last) — so a
// body is checked against the grammar first, in one pass over its bytes, and a body that a
// strict client library would refuse, or read differently, is refused with where it goes wrong.

/// Where a body stops being strict JSON.
struct JSONSyntaxError: Error {
    var offset: Int
    var reason: String
}

enum StrictJSON {
    /// Checks `bytes` is one JSON value with no trailing comma and no key twice in an object.
    static func check(_ bytes: UnsafeRawBufferPointer) throws {
        var p = Parser(bytes: bytes)
        p.space()
        try p.value(depth: 0)
        p.space()
        if p.at < bytes.count { throw JSONSyntaxError(offset: p.at, reason: "text after the JSON value") }
    }

    struct Parser {
        let bytes: UnsafeRawBufferPointer
        var at = 0

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
                if c == UInt8(ascii: "\\") {
                    at += 1
                    guard let e = peek else { break }
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                         UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                        at += 1
                    case UInt8(ascii: "u"):
                        at += 1
                        for _ in 0..<4 {
                            guard let h = peek, isHex(h) else { throw fail("\\u needs four hex digits") }
                            at += 1
                        }
                    default: throw fail("an unknown escape in a string")
                    }
                    continue
                }
                at += 1
            }
            throw fail("the body ends inside a string")
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
            var keys = Set<ArraySlice<UInt8>>()
            while true {
                space()
                if peek == UInt8(ascii: "}") { throw fail("a trailing comma in an object") }
                guard peek == UInt8(ascii: "\"") else { throw fail("an object's key must be a string in double quotes") }
                let keyAt: Int = at
                let key = ArraySlice<UInt8>(bytes[try string()])
                guard keys.insert(key).inserted else {
                    at = keyAt
                    throw fail("the key \"\(String(decoding: key, as: UTF8.self))\" appears twice in one object")
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
