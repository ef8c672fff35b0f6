// `vlm fuse`: image vector ⧺ text vector for image–text pairs, as a resumable batch job.

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMEmbed
import VLMJobs
import VLMModels

struct Fuse: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Concatenate each image's ResNet vector with its text's vector: [N, D_image + D_text].",
        discussion: paragraphs("""
        Pairs come from --image/--text, or --pairs FILE|- as TSV (image path, tab, text) or JSON
        lines ({"image": ..., "text": ...}). The image part is what embed-image gives (pooled by
        default), the text part what embed-text gives (the text model's pooling and normalisation);
        --normalize-parts L2-normalises each part before concatenating. Pairs whose image fails,
        and lines that are not pairs, are skipped and recorded as in embed-image (exit 2).
        """))

    @Option(help: "One image (with --text).")
    var image: String?

    @Option(help: "The text for --image.")
    var text: String?

    @Option(help: "Pairs: TSV (path<TAB>text) or JSON lines with \"image\" and \"text\"; - for stdin.")
    var pairs: String?

    @OptionGroup var models: PairModelOptions
    @OptionGroup var textOptions: TextModelOptions
    @OptionGroup var truncation: TruncationOptions

    @Option(parsing: .unconditional, help: "Pairs per forward pass (and per resumable unit).")
    var batchSize: Int = 16

    @OptionGroup var projection: ProjectionOptions
    @OptionGroup var common: BatchOptions
    @OptionGroup var imageOptions: ImageOptions

    func validate() throws {
        if (image == nil) != (text == nil) { throw ValidationError("--image and --text go together") }
        if (image == nil) == (pairs == nil) { throw ValidationError("give --image and --text, or --pairs FILE") }
        try Limits.check("--batch-size", batchSize, 1...Limits.maxBatch)
    }

    func run() throws {
        try models.clipConfig.check(models.imageModelOption, models.textModelOption)
        let (backend, batch) = try common.start("fuse", unitName: "pairs", inputs: [pairs, projection.pca])
        let source: PairSource
        if let image, let text {
            source = PairSource(image: image, text: text)
        } else {
            let lines = try TextLines(pairs!, spool: batch.job.spoolPath, reuseSpool: common.job.resume, quiet: common.job.quiet)
            guard lines.lineCount > 0 else { throw InputError("\(lines.name): no pairs") }
            source = PairSource(lines: lines, range: common.job.slice(lines.lineCount))
        }
        try refuseOutput(common.out.output, amongPairsOf: source)
        var d = EmbeddingDescription()
        d.image = imageOptions.image(model: models.imageModel, batchSize: batchSize)
        d.image.pairLayer = models.imageLayer
        d.text = textOptions.text(model: models.textModel, batchSize: batchSize)
        truncation.apply(to: &d.text)
        d.normalizeParts = models.normalizeParts
        projection.apply(to: &d)
        let service = try common.service(d, backend: backend)
        let pairs = try service.pairs()
        defer { reportTruncation(pairs.texts, of: source.count) }
        try batch.run(source, try ServiceRows(service, .pair, pairs), unitSize: batchSize,
                      backend: backend, models: models.identities, streamedInput: image.map(isStream) ?? false)
    }
}
