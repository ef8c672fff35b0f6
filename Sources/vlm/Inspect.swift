// `vlm inspect`: what a checkpoint holds and which architecture vlm recognises in it.

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMModels

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a checkpoint's tensors (dtype, shape) and the architecture vlm recognises.")

    @Argument(help: "A checkpoint (.safetensors, or a torch.save .pth/.pt/.bin), or a model folder holding one.")
    var path: String

    @Flag(help: "Print the summary only, not every tensor after it.")
    var summary = false

    func run() throws {
        let file = try openWeights(try weightsFile(path))
        let infos = file.tensorNames.map { (name: $0, dtype: file.dtype(of: $0)!, shape: file.shape(of: $0)!) }
        let params = infos.filter { $0.dtype.isFloat }.reduce(0) { $0 &+ $1.shape.reduce(1, &*) }
        let dtypes = Dictionary(grouping: infos, by: \.dtype).map { "\($0.key.rawValue)×\($0.value.count)" }.sorted()
        // The summary first; every tensor after it, unless --summary.
        var out = "file: \(file.path)\nformat: \(file.formatName)\(file.layoutNote.map { " (\($0))" } ?? "")\n"
        out += "tensors: \(infos.count) (\(dtypes.joined(separator: ", "))), float parameters: \(params)\n"
        out += "architecture: " + architecture(file) + "\n"
        if !summary {
            out += "\n"
            for t in infos { out += "\(t.name)\t\(t.dtype.rawValue)\t\(t.shape)\n" }
        }
        try FileSink.standardOutput.write(out)
    }

    func architecture(_ file: any TensorSource & Checkpoint) -> String {
        if let bert = describeBERT(file) { return bert }
        do {
            let net = try ResNet(source: file, backend: NaiveBackend())
            let c = net.config
            return "\(c.name) — \(c.block.rawValue) blocks \(c.layers), features \(c.featureSize)"
                + (c.numClasses.map { ", fc to \($0) classes" } ?? ", no fc")
                + String(format: ", %.2f GFLOP per 224×224 image", net.flops(height: 224, width: 224) / 1e9)
        } catch {
            return "not recognised as a ResNet: \(error)"
        }
    }
}
