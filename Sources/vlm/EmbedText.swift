// `vlm embed-text` and `vlm tokenize`: BERT-family sentence vectors and token ids.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMModels

extension Pooling: ExpressibleByArgument {}

struct EmbedText: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed-text",
        abstract: "Sentence vectors from a BERT-family model (default: models/all-MiniLM-L6-v2).",
        discussion: """
        One output row per text, in input order. Texts are sorted by length into batches that are
        packed (no padding is computed). Defaults follow the folder's sentence-transformers config
        (modules.json, 1_Pooling, Normalize, max_seq_length) when it has one, so an unflagged run
        gives what SentenceTransformer.encode gives; otherwise mean pooling, no normalisation.
        """)

    @OptionGroup var input: TextInputOptions

    @Option(help: "A model folder: config.json, model.safetensors, vocab.txt or tokenizer.json.")
    var model: String?

    @Option(help: "cls, mean, max or pooler. Default: the model's sentence-transformers config, else mean.")
    var pooling: Pooling?

    @Flag(inversion: .prefixedNo, help: "L2-normalise each vector. Default: the model's sentence-transformers config.")
    var normalize: Bool?

    @Option(help: "Truncate to this many tokens, [CLS] and [SEP] included. Default: max_seq_length, else max_position_embeddings.")
    var maxLength: Int?

    @Option(help: "At most this many texts per forward pass.")
    var batchSize: Int = TextEncoder.defaultBatchSize

    @Option(help: "At most this many tokens per forward pass (a longer text goes alone).")
    var batchTokens: Int = TextEncoder.defaultBatchTokens

    @Option(help: "Output format: npy, jsonl or tsv. Default: from the output's extension, else jsonl.")
    var format: OutputFormat?

    @Option(name: [.customShort("o"), .long], help: "Output file, or - for stdout.")
    var output: String = "-"

    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if batchTokens < 1 { throw ValidationError("--batch-tokens must be at least 1") }
        if let maxLength, maxLength < 2 { throw ValidationError("--max-length must be at least 2 ([CLS] and [SEP])") }
    }

    func run() throws {
        let backend = engine.configure()
        let format = self.format ?? OutputFormat.inferred(from: output) ?? .jsonl
        if format == .npy && output == "-" && isTerminal(1) {
            throw CLIError("refusing to write binary .npy to a terminal; use -o FILE or --format jsonl|tsv")
        }
        let (texts, pairs) = try input.read()
        guard !texts.isEmpty else { throw CLIError("\(input.file ?? "<stdin>"): no texts to embed") }
        let enc = try loadTextEncoder(model, backend: backend)
        if let maxLength, maxLength > enc.model.config.maxPositionEmbeddings {
            throw CLIError("--max-length \(maxLength) exceeds the model's max_position_embeddings \(enc.model.config.maxPositionEmbeddings)")
        }
        let result = try enc.embed(texts, pairs: pairs, pooling: pooling, normalize: normalize, maxLength: maxLength,
                                   batchSize: batchSize, batchTokens: batchTokens)
        if result.truncatedCount > 0 {
            note("vlm: note: \(result.truncatedCount) of \(texts.count) texts were truncated to \(maxLength ?? enc.defaultMaxLength) tokens")
        }
        try FeatureWriter.write(FeatureWriter.encode(result.vectors, ids: nil, format: format), to: output)
    }
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Token ids as the model sees them: one JSON line per text, {\"ids\": […], \"tokens\": […]}.")

    @OptionGroup var input: TextInputOptions

    @Option(help: "A model folder with vocab.txt or tokenizer.json (and config.json).")
    var model: String?

    @Option(help: "Truncate to this many tokens, [CLS] and [SEP] included.")
    var maxLength: Int?

    func run() throws {
        let (texts, pairs) = try input.read()
        let enc = try TextModelFolder(folder: model ?? defaultTextModel())
        var out = ""
        var truncated = 0
        for (i, t) in texts.enumerated() {
            let e = enc.encode(t, pair: pairs?[i] ?? nil, maxLength: maxLength)
            if e.truncated { truncated += 1 }
            out += "{\"ids\":[" + e.ids.map(String.init).joined(separator: ",") + "],\"tokens\":["
            out += e.tokens.map(jsonString).joined(separator: ",") + "]"
            if pairs != nil { out += ",\"type_ids\":[" + e.typeIds.map(String.init).joined(separator: ",") + "]" }
            out += "}\n"
        }
        if truncated > 0 { note("vlm: note: \(truncated) of \(texts.count) texts were truncated to \(maxLength ?? enc.defaultMaxLength) tokens") }
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}
