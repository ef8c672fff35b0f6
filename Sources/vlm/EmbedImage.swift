// `vlm embed-image`: ResNet features for a preprocessed (N,3,H,W) float32 .npy.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMModels

enum ImageLayer: String, ExpressibleByArgument, CaseIterable {
    case pooled, logits
}

struct EmbedImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed-image",
        abstract: "ResNet features (pooled or logits) for images.",
        discussion: """
        The input is a preprocessed float32 .npy of shape (N, 3, H, W) (ImageNet-normalised, as
        torchvision's transforms produce it). One output row per image, in input order.
        """
    )

    @Option(help: "A folder holding model.safetensors, a .safetensors file (torchvision/timm ResNet), or synthetic:resnet50.")
    var model: String = defaultResNetModel

    @Option(name: .customLong("input-npy"), help: "Preprocessed images: float32 .npy of shape (N, 3, H, W); - for stdin.")
    var inputNPY: String

    @Option(help: "Which output: pooled (global-average-pool features) or logits (fc output).")
    var layer: ImageLayer = .pooled

    @Option(help: "Output format: npy, jsonl or tsv. Default: from the output's extension, else jsonl.")
    var format: OutputFormat?

    @Option(name: [.customShort("o"), .long], help: "Output file, or - for stdout.")
    var output: String = "-"

    @Option(help: "Images per forward pass.")
    var batchSize: Int = 16

    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
    }

    func run() throws {
        let backend = engine.configure()
        let format = self.format ?? OutputFormat.inferred(from: output) ?? .jsonl
        if format == .npy && output == "-" && isTerminal(1) {
            throw CLIError("refusing to write binary .npy to a terminal; use -o FILE or --format jsonl|tsv")
        }
        let net = try loadResNet(model)
        let input = try readInputNPY(inputNPY)
        guard input.rank == 4, input.shape[1] == net.config.inChannels else {
            throw CLIError("\(inputNPY): expected a float32 array of shape (N, \(net.config.inChannels), H, W), got \(input.shape)")
        }
        guard input.shape[0] > 0, input.shape[2] > 0, input.shape[3] > 0 else {
            throw CLIError("\(inputNPY): the array \(input.shape) holds no images")
        }
        if layer == .logits && net.config.numClasses == nil {
            throw CLIError("\(model): the checkpoint has no fc layer, so there are no logits; use --layer pooled")
        }
        let features = Self.embed(net, input, layer: layer, batchSize: batchSize, backend: backend)
        try FeatureWriter.write(FeatureWriter.encode(features, ids: nil, format: format), to: output)
    }

    /// rows of `input` in batches; returns (N, D).
    static func embed(_ net: ResNet, _ input: Tensor, layer: ImageLayer, batchSize: Int, backend: any Backend) -> Tensor {
        let n = input.shape[0]
        var rows: [Float] = []
        var width = 0
        var start = 0
        while start < n {
            let end = min(n, start + batchSize)
            let out = net.forward(input.rows(start..<end), backend: backend)
            let t = layer == .pooled ? out.pooled : out.logits!
            width = t.shape[1]
            rows.append(contentsOf: t.data)
            start = end
        }
        return Tensor(shape: [n, width], data: rows)
    }
}

func readInputNPY(_ path: String) throws -> Tensor {
    if path == "-" {
        let data = FileHandle.standardInput.readDataToEndOfFile()
        return try data.withUnsafeBytes { try NPY.parse($0, path: "<stdin>") }
    }
    return try NPY.read(path: path)
}
