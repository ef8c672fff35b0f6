// The error contract of every library target: a failure the user can act on is an error whose
// description is one line naming the file, tensor or option and what is wrong (with a hint where
// there is one). The command line catches `VLMError` in one place and prints that line; a broken
// internal invariant is a precondition instead, never one of these.

public protocol VLMError: Error, CustomStringConvertible {}

/// A failure described by its message alone (bad input that no more specific type covers).
public struct InputError: VLMError, Equatable {
    public let description: String
    public init(_ message: String) { description = message }
}

/// An option (or environment variable) whose value does not fit what it meets — a length
/// over the model's limit, --resume with a stream output: the command line's usage error
/// (exit 64), found after parsing.
public struct OptionError: VLMError, Equatable {
    public let description: String
    public init(_ message: String) { description = message }
}
