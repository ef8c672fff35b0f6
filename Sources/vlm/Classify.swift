// `vlm classify`: top-k ImageNet labels with softmax probabilities, through the same image
// pipeline as embed-image (bad files are skipped with a warning; exit 2). With a CLIP model, the
// labels are any the user gives, zero-shot: each label's texts over the templates embedded and
// normalised, averaged and normalised again (CLIP's paper, open_clip's
// build_zero_shot_classifier), and each image's probabilities softmax(exp(logit_scale) · cosine).

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
        abstract: "Top-k labels and probabilities: ImageNet's for a ResNet with a 1000-class fc, or any labels zero-shot with a CLIP model.",
        discussion: "Output, one line per image: path, then label:probability for each of the top k (tsv), or JSON lines. With a CLIP model: --labels FILE (one label per line), and --template \"a photo of a {}.\" (repeatable) or --templates imagenet (CLIP's 80); default one template, \"a photo of a {}.\".")

    @Argument(help: "Image files or folders.")
    var images: [String]

    @Option(name: .customLong("model"), help: "ResNet checkpoint (folder, .safetensors, .pth/.pt/.bin, or synthetic:resnet50), or a CLIP checkpoint: a folder (open_clip's or Hugging Face's), OpenAI's TorchScript .pt, or a bare open_clip state dict with --clip-config. Default: models/resnet50.")
    var modelOption: String?

    @OptionGroup var clipConfig: CLIPConfigOption
    var model: String? { clipConfig.apply(modelOption) }

    @Option(name: .customLong("template"), help: "CLIP: a prompt with {} where the label goes (repeatable; each label's texts are averaged).")
    var templates: [String] = []

    @Option(name: .customLong("templates"), help: "CLIP: a built-in set of prompts: imagenet (CLIP's 80 ImageNet templates).")
    var templateSet: String?

    @Option(parsing: .unconditional, help: "How many labels per image.")
    var top: Int = 5

    @Option(help: "A labels file, one per line, in class order (CLIP: any labels). Default: imagenet_classes.txt beside the models.")
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
        try clipConfig.requireModel(modelOption)
        if top < 1 { throw ValidationError("--top must be at least 1") }
        for t in templates where t.components(separatedBy: "{}").count != 2 {
            throw ValidationError("--template \(jsonString(t)) must hold {} once, where the label goes")
        }
        if let s = templateSet, s != "imagenet" { throw ValidationError("--templates \(jsonString(s)): the built-in set is imagenet (CLIP's 80 templates)") }
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
        try clipConfig.check(modelOption)
        let backend = try engine.configure()
        if let model, isCLIPModel(model) { return try runZeroShot(model, backend: backend) }
        if !templates.isEmpty || templateSet != nil {
            throw OptionError("--template and --templates are for a CLIP model, which labels images zero-shot; \(model ?? resolveModelsFolder(defaultResNetName)) is a ResNet with a classifier")
        }
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
        try write(service, names: names) { softmax($0) }
    }

    /// CLIP: the labels' text vectors over the templates (normalised, averaged, normalised), and
    /// each image's probabilities over them.
    func runZeroShot(_ model: String, backend: any Backend) throws {
        guard let labels else {
            throw OptionError("\(model) is a CLIP model, which labels images zero-shot: give --labels FILE (one label per line), and --template or --templates imagenet")
        }
        let names = try readLines(labels, what: "the labels").filter { !$0.isEmpty }
        guard !names.isEmpty else { throw InputError("\(labels): no labels") }
        var prompts = templates + (templateSet == "imagenet" ? clipImageNetTemplates : [])
        if prompts.isEmpty { prompts = ["a photo of a {}."] }
        var d = EmbeddingDescription()
        d.image = imageOptions.image(model: model, batchSize: batchSize)
        d.image.normalize = true
        d.text.model = model
        d.text.normalize = true
        d.allowNonFinite = engine.allowNonfinite
        let service = try EmbeddingService(d, backend: backend, version: VLM.configuration.version, quiet: quiet)
        let clip = try service.clip(model)
        let dim = clip.embedDim
        // Labels a few at a time: memory follows the chunk, not the labels file.
        var classes = [Float](repeating: 0, count: names.count * dim)
        for first in stride(from: 0, to: names.count, by: 64) {
            let chunk = first..<min(names.count, first + 64)
            let texts = chunk.flatMap { c in prompts.map { $0.replacingOccurrences(of: "{}", with: names[c]) } }
            let vectors = service.embed(texts.enumerated().map { k, t in
                (Array("\(labels): label \(first + k / prompts.count + 1), template \(k % prompts.count + 1)".utf8), .text(TextInput(t)))
            })
            for (i, c) in chunk.enumerated() {
                var mean = [Double](repeating: 0, count: dim)
                for t in 0..<prompts.count {
                    let v = try vectors[i * prompts.count + t].get()
                    for j in 0..<dim { mean[j] += Double(v[j]) }
                }
                var row = mean.map { Float($0 / Double(prompts.count)) }
                l2Normalize(&row)
                classes.replaceSubrange((c * dim)..<((c + 1) * dim), with: row)
            }
        }
        let scale = Float(exp(Double(clip.logitScale)))
        try write(service, names: names) { image in
            softmax((0..<names.count).map { c in
                var dot: Float = 0
                for j in 0..<dim { dot += image[j] * classes[c * dim + j] }
                return scale * dot
            })
        }
    }

    /// Runs the images through the service and prints each one's top labels by `probabilities`
    /// of its row.
    func write(_ service: EmbeddingService, names: [String], probabilities: ([Float]) -> [Float]) throws {
        let encoder = try ServiceRows(service, .image, try service.images())
        let width = encoder.dim
        let top = min(self.top, names.count)
        let source = ImageFileSource(paths: try listImages(images: images, list: nil, list0: nil))
        var failures = 0
        try Job.runUnits(source: source, encoder: encoder, unitSize: batchSize, from: 0) { _, unit in
            for e in unit.errors where !quiet { note("vlm: warning: \(e.message) (skipped)") }
            failures += unit.errors.count
            var out = Data()
            for (k, id) in unit.ids.enumerated() {
                let probs = probabilities(Array(unit.rows[(k * width)..<((k + 1) * width)]))
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
