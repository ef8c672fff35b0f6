// `vlm embed-text`: BERT-family sentence vectors, as a resumable batch job.

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMEmbed
import VLMJobs
import VLMModels

struct EmbedText: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed-text",
        abstract: "Sentence vectors from a BERT-family model (default: models/all-MiniLM-L6-v2).",
        discussion: paragraphs("""
        One row per text, in input order, with its id: the 1-based line (or argument) number, or
        --jsonl-id-field. Texts are read in units of 4 × --batch-size (the unit a resumed job
        continues from), sorted by length within a unit into packed batches (no padding is
        computed), so memory follows the unit, not the input.
        Defaults follow the folder's sentence-transformers config (modules.json, 1_Pooling,
        Normalize, max_seq_length), so an unflagged run gives what SentenceTransformer.encode
        gives; otherwise mean pooling, no normalisation. A line that is not UTF-8, or a JSON line
        without the field, is skipped and recorded (exit 2).
        """))

    @OptionGroup var input: TextInputOptions

    @Option(name: .customLong("model"), help: "A model folder: config.json, model.safetensors (or pytorch_model.bin), vocab.txt or tokenizer.json. A CLIP checkpoint: a folder (open_clip's or Hugging Face's), OpenAI's TorchScript .pt, or a bare open_clip state dict with --clip-config.")
    var modelOption: String?

    @OptionGroup var clipConfig: CLIPConfigOption
    var model: String? { clipConfig.apply(modelOption) }

    @OptionGroup var text: TextModelOptions
    @OptionGroup var truncation: TruncationOptions

    @Option(parsing: .unconditional, help: "At most this many texts per forward pass.")
    var batchSize: Int = TextEncoder.defaultBatchSize

    @OptionGroup var projection: ProjectionOptions
    @OptionGroup var common: BatchOptions

    func validate() throws {
        try clipConfig.requireModel(modelOption)
        try Limits.check("--batch-size", batchSize, 1...Limits.maxBatch)
    }

    func run() throws {
        try clipConfig.check(modelOption)
        let (backend, batch) = try common.start("embed-text", unitName: "texts", inputs: [input.file, projection.pca])
        let lines = try input.lines(spool: batch.job.spoolPath, reuseSpool: common.job.resume, quiet: common.job.quiet)
        guard lines.lineCount > 0 else {
            // Nothing named and nothing piped is a usage error, as embed-image's is; a named file
            // that holds no text is bad input.
            if input.texts.isEmpty && input.file == nil { throw OptionError("no input: give texts as arguments, --file FILE, or pipe lines to stdin (stdin was empty)") }
            throw InputError("\(lines.name): no texts to embed")
        }
        var d = EmbeddingDescription()
        d.text = text.text(model: model, batchSize: batchSize)
        truncation.apply(to: &d.text)
        projection.apply(to: &d)
        let service = try common.service(d, backend: backend)
        let rows = try service.texts()
        if input.jsonlPairField != nil {
            switch rows.network {
            case .bert(let e): try e.check(pooling: rows.pooling, pairs: true)
            case .clip(let e): throw OptionError("--jsonl-pair-field: \(e.model.sourceName) is a CLIP model, whose text tower does not encode sentence pairs")
            }
        }
        let source = TextSource(lines: lines, range: common.job.slice(lines.lineCount), format: input.format)
        defer { reportTruncation(rows, of: source.count) }
        try batch.run(source, try ServiceRows(service, .text, rows), unitSize: 4 * batchSize, backend: backend, models: [model ?? defaultTextModel()])
    }
}
