// `vlm inspect`: what a checkpoint holds and which architecture vlm recognises in it.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMModels

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a checkpoint's tensors (dtype, shape) and the architecture vlm recognises.")

    @Argument(help: "A .safetensors file, or a folder holding model.safetensors.")
    var path: String

    @Flag(help: "Print the summary only, not every tensor.")
    var summary = false

    func run() throws {
        let file = try SafetensorsFile(path: try weightsFile(path))
        var out = ""
        if !summary {
            for name in file.names {
                let t = file.tensors[name]!
                out += "\(name)\t\(t.dtype.rawValue)\t\(t.shape)\n"
            }
        }
        let params = file.tensors.values.filter { $0.dtype.isFloat }.reduce(0) { $0 + $1.count }
        let dtypes = Dictionary(grouping: file.tensors.values, by: \.dtype).map { "\($0.key.rawValue)×\($0.value.count)" }.sorted()
        out += "file: \(file.path)\ntensors: \(file.tensors.count) (\(dtypes.joined(separator: ", "))), float parameters: \(params)\n"
        do {
            let net = try ResNet(source: file, backend: NaiveBackend())
            let c = net.config
            out += "architecture: \(c.name) — \(c.block.rawValue) blocks \(c.layers), features \(c.featureSize)"
            out += c.numClasses.map { ", fc to \($0) classes" } ?? ", no fc"
            out += String(format: ", %.2f GFLOP per 224×224 image\n", net.flops(height: 224, width: 224) / 1e9)
        } catch {
            out += "architecture: not recognised as a ResNet: \(error)\n"
        }
        try FileSink.standardOutput.write(out)
    }
}
