// Options shared by the commands that read texts: where the texts come from and how lines are
// read; and how a text becomes a vector (pooling, normalisation, truncation, batching).

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMEmbed
import VLMJobs
import VLMModels

struct TextInputOptions: ParsableArguments {
    @Argument(help: "Texts. Without any, texts are read from --file, or from stdin when it is not a terminal.")
    var texts: [String] = []

    @Option(help: "A file with one text per line; - for stdin.")
    var file: String?

    @Option(help: "Read JSON lines and take the text from this field (texts may then contain newlines).")
    var jsonlField: String?

    @Option(help: "With --jsonl-field: take a second segment (sentence pair) from this field.")
    var jsonlPairField: String?

    @Option(help: "With --jsonl-field: take each row's id from this field (default: the line number).")
    var jsonlIdField: String?

    @Flag(help: "Decode invalid UTF-8 with replacement characters instead of skipping the line.")
    var lossy = false

    func validate() throws {
        if !texts.isEmpty && file != nil { throw ValidationError("give texts as arguments or with --file, not both") }
        if jsonlPairField != nil && jsonlField == nil { throw ValidationError("--jsonl-pair-field needs --jsonl-field") }
        if jsonlIdField != nil && jsonlField == nil { throw ValidationError("--jsonl-id-field needs --jsonl-field") }
    }

    var format: TextFormat { TextFormat(jsonField: jsonlField, jsonPairField: jsonlPairField, jsonIdField: jsonlIdField, lossy: lossy) }

    /// The input's lines: arguments, --file, or stdin (spooled to `spool` when given).
    func lines(spool: String?, reuseSpool: Bool, quiet: Bool) throws -> TextLines {
        if !texts.isEmpty { return TextLines(arguments: texts) }
        if file == nil && isatty(0) != 0 {
            throw OptionError("no input: give texts as arguments, --file FILE, or pipe lines to stdin")
        }
        return try TextLines(file ?? "-", spool: spool, reuseSpool: reuseSpool, quiet: quiet)
    }
}

struct TextModelOptions: ParsableArguments {
    @Option(help: "cls, mean, max or pooler. Default: the model's sentence-transformers config, else mean.")
    var pooling: Pooling?

    @Flag(inversion: .prefixedNo, help: "L2-normalise each vector. Default: the model's sentence-transformers config.")
    var normalize: Bool?

    @Option(parsing: .unconditional, help: "Truncate to this many tokens, [CLS] and [SEP] included. Default: max_seq_length, else max_position_embeddings.")
    var maxLength: Int?

    @Option(parsing: .unconditional, help: "At most this many tokens per forward pass (a longer text goes alone).")
    var batchTokens: Int = TextEncoder.defaultBatchTokens

    func validate() throws {
        try Limits.check("--batch-tokens", batchTokens, 1...Limits.maxBatchTokens)
        if let maxLength, maxLength < 2 { throw ValidationError("--max-length must be at least 2 ([CLS] and [SEP])") }
    }

    /// These options as the text part of a service's description, for `model`'s texts.
    func text(model: String?, batchSize: Int) -> EmbeddingDescription.Text {
        var t = EmbeddingDescription.Text(model: model)
        (t.pooling, t.normalize, t.maxLength, t.batchSize, t.batchTokens) = (pooling, normalize, maxLength, batchSize, batchTokens)
        return t
    }
}

/// Whether over-long texts are cut (the batch commands and the worker; `vlm serve` decides per
/// request, with --auto-truncate).
struct TruncationOptions: ParsableArguments {
    @Flag(inversion: .prefixedNo, help: "Cut texts over the maximum length to it. --no-truncate: record them as errors of kind too_long instead (exit 2).")
    var truncate = true

    /// This option in a service's description (nil when on, the default: descriptions of jobs
    /// that do not set it are unchanged).
    func apply(to t: inout EmbeddingDescription.Text) { t.truncate = truncate ? nil : false }
}

/// "n texts were truncated" after a job, when any were.
func reportTruncation(_ encoder: TextRowEncoder, of total: Int) {
    let n = encoder.truncatedCount
    if n > 0 { note("vlm: note: \(n) of \(total) texts were truncated to \(encoder.maxLength) tokens") }
}
