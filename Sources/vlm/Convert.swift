// `vlm convert IN -o OUT.safetensors`: a checkpoint vlm reads (a torch.save .pth/.pt/.bin, or
// safetensors) written as a standard safetensors file — the state dict as vlm finds it (unwrapped,
// DataParallel's prefix removed), keys in the checkpoint's order, dtypes kept unless --dtype
// changes the float ones. Written atomically, one tensor at a time.

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMEmbed
import VLMJobs
import VLMModels

enum ConvertDType: String, ExpressibleByArgument, CaseIterable {
    case f16, bf16, f32
    var dtype: DType { self == .f16 ? .F16 : self == .bf16 ? .BF16 : .F32 }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint (torch.save .pth/.pt/.bin, or safetensors) as a safetensors file.",
        discussion: paragraphs("""
        The state dict is read without running its pickle (only the globals torch.save writes for \
        tensors are allowed); a wrapped one ({"state_dict": …}, {"model": …}) is unwrapped and a \
        DataParallel 'module.' prefix removed. Keys and their order are kept; so are dtypes, unless \
        --dtype converts the float tensors (F64, F32, F16, BF16) — integer tensors such as \
        BatchNorm's num_batches_tracked stay as they are. Rounding is to nearest even, as PyTorch's \
        .to(dtype). The output loads with safetensors.torch.load_file.
        """))

    @Argument(help: "The checkpoint: a file, or a model folder holding one.")
    var input: String

    @Option(name: [.customShort("o"), .long], help: "The safetensors file to write, or - for stdout.")
    var output: String

    @Option(help: "Store every float tensor as f16, bf16 or f32. Default: each tensor's own dtype.")
    var dtype: ConvertDType?

    @Flag(help: "No notes on stderr.")
    var quiet = false

    func run() throws {
        let source = try openWeights(try weightsFile(input))
        let target = try OutputTarget.resolve(output, example: "model.safetensors")
        try refuseOutput(output, overwriting: [], sidecars: false)
        if target.isTerminal { throw InputError("refusing to write a binary safetensors file to a terminal; use -o FILE") }
        let names = source.tensorNames
        if let sink = try target.openStream() {
            try SafetensorsWriter.convert(source, to: dtype?.dtype) { try sink.write($0) }
        } else {
            let writer = try AtomicFileWriter(path: output)
            defer { writer.discard() }
            try SafetensorsWriter.convert(source, to: dtype?.dtype) { try writer.write($0) }
            try writer.commit()
        }
        if !quiet {
            let layout = source.layoutNote.map { " (\($0))" } ?? ""
            note("vlm: wrote \(names.count) tensors from \(source.path) [\(source.formatName)\(layout)] to \(output)\(dtype.map { " as \($0.rawValue)" } ?? "")")
        }
    }
}
