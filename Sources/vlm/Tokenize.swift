// `vlm tokenize`: token ids as the model sees them, one JSON line per text (no weights loaded).

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMEmbed
import VLMJobs
import VLMModels

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Token ids as the model sees them: one JSON line per text, {\"ids\": […], \"tokens\": […]}.")

    @OptionGroup var input: TextInputOptions

    @Option(help: "A model folder with vocab.txt or tokenizer.json (and config.json).")
    var model: String?

    @Option(parsing: .unconditional, help: "Truncate to this many tokens, [CLS] and [SEP] included.")
    var maxLength: Int?

    func validate() throws {
        if let maxLength, maxLength < 2 { throw ValidationError("--max-length must be at least 2 ([CLS] and [SEP])") }
    }

    struct Row: Encodable {
        var ids: [Int32]
        var tokens: [String]
        var type_ids: [Int32]?
    }

    func run() throws {
        let lines = try input.lines(spool: nil, reuseSpool: false, quiet: true)
        let folder = try TextModelFolder(folder: model ?? defaultTextModel())
        let source = TextSource(lines: lines, range: 0..<lines.lineCount, format: input.format)
        var truncated = 0, count = 0
        let step = 4096
        for start in stride(from: 0, to: source.count, by: step) {
            var out = Data()
            for item in try source.items(start..<min(source.count, start + step)) {
                switch item.content {
                case .blank: continue
                case .failed(let e): throw InputError(e.message)
                case .value(let t):
                    let e = folder.encode(t.text, pair: t.pair, maxLength: maxLength)
                    if e.truncated { truncated += 1 }
                    count += 1
                    out.append(JSONLines.encode(Row(ids: e.ids, tokens: e.tokens, type_ids: input.jsonlPairField != nil ? e.typeIds : nil)))
                }
            }
            try FileSink.standardOutput.write(out)
        }
        if truncated > 0 { note("vlm: note: \(truncated) of \(count) texts were truncated to \(maxLength ?? folder.defaultMaxLength) tokens") }
    }
}
