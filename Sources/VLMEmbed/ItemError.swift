// The one error type an item gets, whatever front end asked: a batch job records it in
// errors.jsonl, the worker answers it as {"error": {"kind", "message"}}, the server as its
// status and message.

import Foundation
import VLMCore
import VLMIO

/// One item's failure, as errors.jsonl records it.
public struct ItemError: Error, Equatable, Sendable {
    public var id: [UInt8]
    /// A short machine-readable kind: unreadable, empty, not_an_image, corrupt, too_large,
    /// not_a_file (images); not_utf8, bad_record (text lines); too_long (a text over the maximum
    /// length, truncation off); non_finite (a vector holding NaN or infinity); model; error.
    public var kind: String
    /// One line naming the item and the problem.
    public var message: String

    public init(id: [UInt8], kind: String, message: String) { (self.id, self.kind, self.message) = (id, kind, message) }

    /// The record errors.jsonl holds: {"id", ["id_escaped",] "kind", "error"}.
    public var record: Data {
        struct Record: Encodable {
            var id: String
            var id_escaped: Bool?
            var kind: String
            var error: String
        }
        let text = String(validating: id, as: UTF8.self)
        return JSONLines.encode(Record(id: text ?? RawPath.escape(id), id_escaped: text == nil ? true : nil, kind: kind, error: message))
    }
}
