// `vlm classify`: top-k ImageNet labels with softmax probabilities, through the same image
// pipeline as embed-image (bad files are skipped with a warning; exit 2).

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMImage
import VLMIO
import VLMEmbed
import VLMJobs
import VLMModels

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Top-k ImageNet labels and probabilities, for a checkpoint with a 1000-class fc.",
        discussion: "Output, one line per image: path, then label:probability for each of the top k (tsv), or JSON lines.")

    @Argument(help: "Image files or folders.")
    var images: [String]

    @Option(help: "ResNet checkpoint (folder, .safetensors, .pth/.pt/.bin, or synthetic:resnet50). Default: models/resnet50.")
    var model: String?

    @Option(parsing: .unconditional, help: "How many labels per image.")
    var top: Int = 5

    @Option(help: "A labels file, one per line, in class order. Default: imagenet_classes.txt beside the models.")
    var labels: String?

    @Option(help: "tsv or jsonl.")
    var format: RowFormat = .tsv

    @Option(parsing: .unconditional, help: "Images per forward pass.")
    var batchSize: Int = 16

    @Flag(help: "No warnings for skipped images.")
    var quiet = false

    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if top < 1 { throw ValidationError("--top must be at least 1") }
        try Limits.check("--batch-size", batchSize, 1...Limits.maxBatch)
        if format.isBinary { throw ValidationError("classify writes tsv or jsonl") }
    }

    struct Row: Encodable {
        struct Label: Encodable { var index: Int; var label: String; var probability: Float }
        var id: String
        var id_escaped: Bool?
        var top: [Label]
    }

    func run() throws {
        let backend = try engine.configure()
        var d = EmbeddingDescription()
        d.image = imageOptions.image(model: model, batchSize: batchSize)
        d.image.layer = .logits
        d.allowNonFinite = engine.allowNonfinite
        let service = try EmbeddingService(d, backend: backend, version: VLM.configuration.version, quiet: quiet)
        let net = try service.resnet()
        guard let classes = net.config.numClasses else {
            throw InputError("\(model ?? resolveModelsFolder(defaultResNetName)): the checkpoint has no fc layer; classify needs one")
        }
        let labelsPath = labels ?? resolveModelsFolder("imagenet_classes.txt")
        let names = try readLines(labelsPath, what: "the labels").filter { !$0.isEmpty }
        guard names.count == classes else {
            throw InputError("\(labelsPath): \(names.count) labels, but the checkpoint's fc has \(classes) classes")
        }
        let encoder = try ServiceRows(service, .image, try service.images())
        let source = ImageFileSource(paths: try listImages(images: images, list: nil, list0: nil))
        var failures = 0
        try Job.runUnits(source: source, encoder: encoder, unitSize: batchSize, from: 0) { _, unit in
            for e in unit.errors where !quiet { note("vlm: warning: \(e.message) (skipped)") }
            failures += unit.errors.count
            var out = Data()
            for (k, id) in unit.ids.enumerated() {
                let probs = softmax(Array(unit.rows[(k * classes)..<((k + 1) * classes)]))
                let best = topIndices(probs, top)
                if format == .jsonl {
                    let text = String(validating: id, as: UTF8.self)
                    out.append(JSONLines.encode(Row(id: text ?? RawPath.escape(id), id_escaped: text == nil ? true : nil,
                                                    top: best.map { Row.Label(index: $0, label: names[$0], probability: probs[$0]) })))
                } else {
                    out.append(Data((RawPath.escape(id) + "\t" + best.map { RawPath.escape(Array(names[$0].utf8)) + ":" + String(format: "%.4f", probs[$0]) }
                        .joined(separator: "\t") + "\n").utf8))
                }
            }
            try FileSink.standardOutput.write(out)
        }
        if failures > 0 { throw Finished(status: .partial) }
    }
}
