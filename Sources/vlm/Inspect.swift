// `vlm inspect`: what a checkpoint holds and which architecture vlm recognises in it.

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMEmbed
import VLMIO
import VLMJobs
import VLMModels

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a checkpoint's tensors (dtype, shape) and the architecture vlm recognises, or say what made a feature file.",
        discussion: paragraphs("""
        A feature file written by a batch job (or its .meta.json) is described from the .meta.json
        beside it: the command and vlm version, rows and failures, and the vector space — each
        model with the SHA-256 of its files, and every option that changes a vector — then the
        whole description as JSON.
        """))

    @Argument(help: "A checkpoint (.safetensors, or a torch.save .pth/.pt/.bin), a model folder holding one, or a feature file with its .meta.json.")
    var path: String

    @Flag(help: "Print the summary only, not every tensor (or the whole description) after it.")
    var summary = false

    func run() throws {
        let described = path.hasSuffix(OutputDescription.suffix) ? String(path.dropLast(OutputDescription.suffix.count)) : path
        if FileStatus.of(described)?.kind != .directory, let d = OutputDescription.read(beside: described) {
            return try FileSink.standardOutput.write(Self.describe(d, file: described, full: !summary))
        }
        if path.hasSuffix(OutputDescription.suffix) { throw InputError("\(path): not a description vlm can read") }
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

    /// A feature file's description in lines: what made it, and its vector space.
    static func describe(_ d: OutputDescription, file: String, full: Bool) throws -> String {
        var out = "file: \(file)\nmade by: vlm \(d.vlmVersion) \(d.command)\n"
        out += "rows: \(d.rows) of \(d.definition.items) items (\(d.failures) failed), dimension \(d.dim), format \(d.definition.format)\n"
        if let s = d.definition.space {
            out += "vector space: \(s.kind), \(s.dim)-d\n"
            for m in s.models {
                out += "  \(m.role) model: \(m.name), weights sha256 \(m.sha256)\n"
                for (name, sha) in m.files.sorted(by: { $0.key < $1.key }) where sha != m.sha256 || m.files.count > 1 {
                    out += "    \(name) sha256 \(sha)\n"
                }
            }
            out += "  options: " + s.options.sorted(by: { $0.key < $1.key }).map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n"
        } else {
            out += "vector space: not recorded (made by a vlm that did not write it, or by a job that projects feature files without one)\n"
        }
        out += "engine (not part of the space): " + d.definition.engine.sorted(by: { $0.key < $1.key }).map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n"
        if full {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .prettyPrinted]
            out += "\n" + String(decoding: try e.encode(d), as: UTF8.self) + "\n"
        }
        return out
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
