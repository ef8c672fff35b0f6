// `vlm classify`: top-k ImageNet labels with softmax probabilities.

import ArgumentParser
import Foundation
import VLMCore
import VLMImage
import VLMIO
import VLMModels

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Top-k ImageNet labels and probabilities, for a checkpoint with a 1000-class fc.",
        discussion: "Output, one line per image: path, then label:probability for each of the top k (tsv), or JSON lines.")

    @Argument(help: "Image files or folders.")
    var images: [String]

    @Option(help: "ResNet checkpoint (folder, .safetensors, or synthetic:resnet50).")
    var model: String = defaultResNetModel

    @Option(help: "How many labels per image.")
    var top: Int = 5

    @Option(help: "A labels file, one per line, in class order. Default: models/imagenet_classes.txt.")
    var labels: String?

    @Option(help: "tsv or jsonl.")
    var format: OutputFormat = .tsv

    @Option(help: "Images per forward pass.")
    var batchSize: Int = 16

    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if top < 1 { throw ValidationError("--top must be at least 1") }
        if format == .npy { throw ValidationError("classify writes tsv or jsonl") }
    }

    func run() throws {
        let backend = engine.configure()
        let net = try loadResNet(model, backend: backend)
        guard let classes = net.config.numClasses else {
            throw CLIError("\(model): the checkpoint has no fc layer; classify needs one")
        }
        let labelsPath = labels ?? resolveModelsFolder("imagenet_classes.txt")
        guard let text = try? String(contentsOfFile: labelsPath, encoding: .utf8) else {
            throw CLIError("\(labelsPath): cannot read the labels file")
        }
        let names = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
        guard names.count == classes else {
            throw CLIError("\(labelsPath): \(names.count) labels, but the checkpoint's fc has \(classes) classes")
        }
        let paths = try expandImagePaths(images)
        let pre = imageOptions.preprocessing
        var failures = 0
        forEachImageBatch(paths, from: 0, batchSize: batchSize, pre, maxPixels: imageOptions.maxPixels) { batch in
            for e in batch.errors { note("vlm: warning: \(e.message) (skipped)") }
            failures += batch.errors.count
            let rows = runResNet(net, batch, crop: pre.crop, logits: true)
            var out = ""
            for (k, logits) in rows.enumerated() {
                let probs = softmax(logits)
                let best = topIndices(probs, top)
                let id = paths[batch.good[k]]
                var parts: [String] = []
                for c in best {
                    if format == .jsonl {
                        parts.append("{\"index\":\(c),\"label\":\(jsonString(names[c])),\"probability\":\(jsonNumber(probs[c]))}")
                    } else {
                        parts.append(names[c] + ":" + String(format: "%.4f", probs[c]))
                    }
                }
                if format == .jsonl {
                    out += "{\"id\":\(jsonString(id)),\"top\":[" + parts.joined(separator: ",") + "]}\n"
                } else {
                    out += id + "\t" + parts.joined(separator: "\t") + "\n"
                }
            }
            FileHandle.standardOutput.write(Data(out.utf8))
        }
        if failures > 0 { Foundation.exit(exitPartial) }
    }
}

/// Indices of the k largest values, largest first; ties by lower index.
func topIndices(_ p: [Float], _ k: Int) -> [Int] {
    let order = p.indices.sorted { a, b in p[a] != p[b] ? p[a] > p[b] : a < b }
    return Array(order.prefix(k))
}

func softmax(_ x: [Float]) -> [Float] {
    let m = x.max() ?? 0
    let e = x.map { Double(expf($0 - m)) }
    let s = e.reduce(0, +)
    return e.map { Float($0 / s) }
}
