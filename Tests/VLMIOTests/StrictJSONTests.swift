// StrictJSON.lastKeyWins: the text a decoder that keeps the first of two equal keys reads as
// Python's json (and transformers) read the original — the last value of each repeated key.

import Foundation
import XCTest
import VLMIO

final class StrictJSONTests: XCTestCase {
    func decoded(_ text: String) throws -> JSONValue {
        try XCTUnwrap(JSONValue.parse(StrictJSON.lastKeyWins(Data(text.utf8))))
    }

    func testTheLastOfEqualKeysCountsAtEveryDepth() throws {
        // Expected values as Python's json.loads gives them.
        XCTAssertEqual(try decoded(#"{"a": 1, "a": 2}"#).jsonText, #"{"a":2}"#)
        XCTAssertEqual(try decoded(#"{"a": 1, "b": {"c": 1, "c": [3], "d": 0}, "a": 3, "a": {"x": 1}}"#).jsonText,
                       #"{"a":{"x":1},"b":{"c":[3],"d":0}}"#)
        XCTAssertEqual(try decoded(#"{"\u0061": 1, "a": 5}"#).jsonText, #"{"a":5}"#)     // equal as decoded text
        XCTAssertEqual(try decoded(#"[{"k": "v1", "k": "v2"}, {"k": 0}]"#).jsonText, #"[{"k":"v2"},{"k":0}]"#)
        // Nothing repeated: the very same bytes.
        let plain = Data(#"{"a": 1, "b": [1, 2]}"#.utf8)
        XCTAssertEqual(StrictJSON.lastKeyWins(plain), plain)
        // Not JSON: returned as it is, for the decoder to refuse.
        let broken = Data(#"{"a": 1,"#.utf8)
        XCTAssertEqual(StrictJSON.lastKeyWins(broken), broken)
    }
}
