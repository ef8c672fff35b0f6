// `vlm fuse`: image vector ⧺ text vector for image–text pairs, as one resumable batch job.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMImage
import VLMModels

struct Fuse: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Concatenate each image's ResNet vector with its text's vector: [N, D_image + D_text].",
        discussion: """
        Pairs come from --image/--text, or --pairs FILE|- as TSV (image path, tab, text) or JSON
        lines ({"image": ..., "text": ...}). The image part is what embed-image gives (pooled by
        default), the text part what embed-text gives (the text model's pooling and normalisation);
        --normalize-parts L2-normalises each part before concatenating. Pairs whose image fails are
        skipped and recorded as in embed-image (exit 2).
        """)

    @Option(help: "One image (with --text).")
    var image: String?

    @Option(help: "The text for --image.")
    var text: String?

    @Option(help: "Pairs: TSV (path<TAB>text) or JSON lines with \"image\" and \"text\"; - for stdin.")
    var pairs: String?

    @Option(help: "ResNet checkpoint (folder, .safetensors, or synthetic:resnet50).")
    var imageModel: String = defaultResNetModel

    @Option(help: "BERT-family model folder. Default: models/all-MiniLM-L6-v2.")
    var textModel: String?

    @Option(help: "Image part: pooled (2048-d for ResNet-50) or logits (the seed snippet's choice).")
    var imageLayer: ImageLayer = .pooled

    @Option(help: "Text pooling: cls, mean, max or pooler. Default: the text model's.")
    var pooling: Pooling?

    @Flag(help: "L2-normalise the image part and the text part before concatenating.")
    var normalizeParts = false

    @Option(help: "npy, jsonl, tsv or f32. Default: from the output's extension, else jsonl.")
    var format: JobFormat?

    @Option(name: [.customShort("o"), .long], help: "Output file, or - for stdout.")
    var output: String = "-"

    @Option(help: "Pairs per forward pass.")
    var batchSize: Int = 16

    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var job: JobOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if (image == nil) != (text == nil) { throw ValidationError("--image and --text go together") }
        if (image == nil) == (pairs == nil) { throw ValidationError("give --image and --text, or --pairs FILE") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
    }

    func run() throws {
        let backend = engine.configure()
        let format = self.format ?? JobFormat.inferred(from: output) ?? .jsonl
        var list: [(image: String, text: String)]
        if let image, let text { list = [(image, text)] } else { list = try readPairs(pairs!) }
        list = try job.apply(list)
        let net = try loadResNet(imageModel, backend: backend)
        if imageLayer == .logits && net.config.numClasses == nil {
            throw CLIError("\(imageModel): the checkpoint has no fc layer, so there are no logits; use --image-layer pooled")
        }
        let enc = try loadTextEncoder(textModel, backend: backend)
        let pre = imageOptions.preprocessing
        let di = imageLayer == .pooled ? net.config.featureSize : net.config.numClasses!
        let dt = enc.model.config.hiddenSize
        let paths = list.map(\.image), texts = list.map(\.text)
        let fp = fingerprint(paths + texts + [imageModel, textModel ?? "default", imageLayer.rawValue, pooling?.rawValue ?? "default",
                                              "\(normalizeParts)", format.rawValue, "\(batchSize)", "\(pre)"])
        let j = try FeatureJob(output: output, format: format, ids: paths, dim: di + dt, fingerprint: fp, options: job, unit: "pairs")
        var truncated = 0
        try forEachImageBatch(paths, from: j.done, batchSize: batchSize, pre, maxPixels: imageOptions.maxPixels) { batch in
            let imageRows = runResNet(net, batch, crop: pre.crop, logits: imageLayer == .logits)
            var rows: [(index: Int, vector: [Float])] = []
            if !batch.good.isEmpty {
                let t = try enc.embed(batch.good.map { texts[$0] }, pooling: pooling, batchSize: batchSize)
                truncated += t.truncatedCount
                let fused = Fusion.concat(image: Tensor(shape: [imageRows.count, di], data: imageRows.flatMap { $0 }),
                                          text: t.vectors, normalizeParts: normalizeParts)
                rows = batch.good.enumerated().map { ($0.element, Array(fused.data[($0.offset * (di + dt))..<(($0.offset + 1) * (di + dt))])) }
            }
            try j.commit(end: batch.range.upperBound, rows: rows, errors: batch.errors)
        }
        if truncated > 0 { note("vlm: note: \(truncated) texts were truncated to \(enc.defaultMaxLength) tokens") }
        let code = try j.finish()
        if code != 0 { Foundation.exit(code) }
    }
}

/// TSV (path<TAB>text) or JSON lines ({"image": ..., "text": ...}), chosen by the first line.
func readPairs(_ path: String) throws -> [(image: String, text: String)] {
    let data: Data
    let name = path == "-" ? "<stdin>" : path
    if path == "-" {
        data = FileHandle.standardInput.readDataToEndOfFile()
    } else {
        guard let d = FileManager.default.contents(atPath: path) else { throw CLIError("\(path): cannot read the pairs file") }
        data = d
    }
    var out: [(String, String)] = []
    for (i, line) in try splitLines(data, name: name, lossy: false).enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
        if line.first == "{" {
            guard let obj = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                  let image = obj["image"] as? String, let text = obj["text"] as? String else {
                throw CLIError("\(name):\(i + 1): expected a JSON object with string fields \"image\" and \"text\"")
            }
            out.append((image, text))
        } else {
            guard let tab = line.firstIndex(of: "\t") else {
                throw CLIError("\(name):\(i + 1): expected an image path, a tab, then the text")
            }
            out.append((String(line[..<tab]), String(line[line.index(after: tab)...])))
        }
    }
    if out.isEmpty { throw CLIError("\(name): no pairs") }
    return out
}
