// `vlm embed-image`: ResNet features for image files, folders and lists (a resumable batch job),
// or for a preprocessed (N,3,H,W) float32 .npy.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMImage
import VLMModels

enum ImageLayer: String, ExpressibleByArgument, CaseIterable {
    case pooled, logits
}

extension JobFormat {
    var outputFormat: OutputFormat? { OutputFormat(rawValue: rawValue) }
}

struct EmbedImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed-image",
        abstract: "ResNet features (pooled or logits) for image files, folders, lists, or a preprocessed .npy.",
        discussion: """
        Inputs: image paths and folders (recursive, sorted, .jpg/.jpeg/.png), --list FILE|- (one
        path per line), or --input-npy (a preprocessed float32 (N, 3, H, W) array). One row per
        image that worked, in input order, with its path as id: .npy or .f32 plus <output>.ids.txt,
        or jsonl/tsv with the id in each row. Bad files are skipped and listed in
        <output>.errors.jsonl; the exit code is then 2.
        """
    )

    @Argument(help: "Image files or folders.")
    var images: [String] = []

    @Option(help: "A file with one image path per line; - for stdin.")
    var list: String?

    @Option(name: .customLong("input-npy"), help: "Preprocessed images: float32 .npy of shape (N, 3, H, W); - for stdin.")
    var inputNPY: String?

    @Option(help: "A folder holding model.safetensors, a .safetensors file (torchvision/timm ResNet), or synthetic:resnet50.")
    var model: String = defaultResNetModel

    @Option(help: "Which output: pooled (global-average-pool features) or logits (fc output).")
    var layer: ImageLayer = .pooled

    @Option(help: "npy, jsonl, tsv or f32 (raw little-endian float32). Default: from the output's extension, else jsonl.")
    var format: JobFormat?

    @Option(name: [.customShort("o"), .long], help: "Output file, or - for stdout.")
    var output: String = "-"

    @Option(help: "Images per forward pass.")
    var batchSize: Int = 16

    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var job: JobOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        let sources = (images.isEmpty ? 0 : 1) + (list == nil ? 0 : 1) + (inputNPY == nil ? 0 : 1)
        if sources == 0 { throw ValidationError("give image paths or folders, --list FILE, or --input-npy FILE") }
        if inputNPY != nil && sources > 1 { throw ValidationError("--input-npy cannot be combined with image paths or --list") }
    }

    func run() throws {
        let backend = engine.configure()
        let format = self.format ?? JobFormat.inferred(from: output) ?? .jsonl
        if (format == .npy || format == .f32) && output == "-" && isTerminal(1) {
            throw CLIError("refusing to write binary \(format.rawValue) to a terminal; use -o FILE or --format jsonl|tsv")
        }
        let net = try loadResNet(model, backend: backend)
        if layer == .logits && net.config.numClasses == nil {
            throw CLIError("\(model): the checkpoint has no fc layer, so there are no logits; use --layer pooled")
        }
        if let inputNPY {
            try runNPY(net, inputNPY, format: format)
            return
        }
        var paths = images
        if let list { paths += try readList(list) }
        paths = try job.apply(try expandImagePaths(paths))
        let pre = imageOptions.preprocessing
        let dim = layer == .pooled ? net.config.featureSize : net.config.numClasses!
        let fp = fingerprint(paths + [model, layer.rawValue, format.rawValue, "\(batchSize)", "\(pre)", "\(imageOptions.maxPixels)"])
        let j = try FeatureJob(output: output, format: format, ids: paths, dim: dim, fingerprint: fp, options: job, unit: "images")
        try forEachImageBatch(paths, from: j.done, batchSize: batchSize, pre, maxPixels: imageOptions.maxPixels) { batch in
            let rows = runResNet(net, batch, crop: pre.crop, logits: layer == .logits)
            try j.commit(end: batch.range.upperBound, rows: Array(zip(batch.good, rows)).map { ($0.0, $0.1) }, errors: batch.errors)
        }
        let code = try j.finish()
        if code != 0 { Foundation.exit(code) }
    }

    func runNPY(_ net: ResNet, _ path: String, format: JobFormat) throws {
        let input = try readInputNPY(path)
        guard input.rank == 4, input.shape[1] == net.config.inChannels else {
            throw CLIError("\(path): expected a float32 array of shape (N, \(net.config.inChannels), H, W), got \(input.shape)")
        }
        guard input.shape[0] > 0, input.shape[2] > 0, input.shape[3] > 0 else {
            throw CLIError("\(path): the array \(input.shape) holds no images")
        }
        let features = Self.embed(net, input, layer: layer, batchSize: batchSize)
        if format == .f32 {
            try FeatureWriter.write(features.data.withUnsafeBytes { Data($0) }, to: output)
        } else {
            try FeatureWriter.write(FeatureWriter.encode(features, ids: nil, format: format.outputFormat!), to: output)
        }
    }

    /// rows of `input` in batches; returns (N, D).
    static func embed(_ net: ResNet, _ input: Tensor, layer: ImageLayer, batchSize: Int) -> Tensor {
        let n = input.shape[0]
        var rows: [Float] = []
        var width = 0
        var start = 0
        while start < n {
            let end = min(n, start + batchSize)
            let out = net.forward(input.rows(start..<end))
            let t = layer == .pooled ? out.pooled : out.logits!
            width = t.shape[1]
            rows.append(contentsOf: t.data)
            start = end
        }
        return Tensor(shape: [n, width], data: rows)
    }
}

/// One path per line (blank lines ignored); - for stdin.
func readList(_ path: String) throws -> [String] {
    let data: Data
    if path == "-" {
        data = FileHandle.standardInput.readDataToEndOfFile()
    } else {
        guard let d = FileManager.default.contents(atPath: path) else { throw CLIError("\(path): cannot read the list") }
        data = d
    }
    return try splitLines(data, name: path == "-" ? "<stdin>" : path, lossy: false).filter { !$0.isEmpty }
}

func readInputNPY(_ path: String) throws -> Tensor {
    if path == "-" {
        let data = FileHandle.standardInput.readDataToEndOfFile()
        return try data.withUnsafeBytes { try NPY.parse($0, path: "<stdin>") }
    }
    return try NPY.read(path: path)
}
