// `vlm embed-image`: ResNet features for image files, folders and lists, or for a preprocessed
// (N,3,H,W) float32 .npy — a resumable batch job.

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMImage
import VLMJobs
import VLMModels

struct EmbedImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed-image",
        abstract: "ResNet features (pooled or logits) for image files, folders, lists, or a preprocessed .npy.",
        discussion: """
        Inputs: image paths and folders (recursive, sorted by bytes, .jpg/.jpeg/.jpe/.png), --list FILE|-
        (one path per line, as find prints them), --list0 FILE|- (NUL-separated, as find -print0
        writes them), or --input-npy (a preprocessed float32 (N, 3, H, W) array; ids are row numbers
        from 0). One row per image that worked, in input order, with its path as id: .npy or .f32
        plus <output>.ids.txt, or jsonl/tsv with the id in each row. Bad files are skipped and
        listed in <output>.errors.jsonl; the exit code is then 2.
        """)

    @Argument(help: "Image files or folders.")
    var images: [String] = []

    @Option(help: "A file with one image path per line; - for stdin.")
    var list: String?

    @Option(help: "A file of NUL-separated image paths (find -print0); - for stdin.")
    var list0: String?

    @Option(name: .customLong("input-npy"), help: "Preprocessed images: float32 .npy of shape (N, 3, H, W); - for stdin.")
    var inputNPY: String?

    @Option(help: "A ResNet checkpoint (.safetensors, or torch.save .pth/.pt/.bin: torchvision/timm layout), a model folder holding one, or synthetic:resnet50. Default: models/resnet50.")
    var model: String?

    @Option(help: "Which output: pooled (global-average-pool features) or logits (fc output).")
    var layer: ImageLayer = .pooled

    @Option(parsing: .unconditional, help: "Images per forward pass (and per resumable unit).")
    var batchSize: Int = 16

    @OptionGroup var out: OutputOptions
    @OptionGroup var projection: ProjectionOptions
    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var job: JobOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        try Limits.check("--batch-size", batchSize, 1...Limits.maxBatch)
        let sources = (images.isEmpty ? 0 : 1) + (list == nil ? 0 : 1) + (list0 == nil ? 0 : 1) + (inputNPY == nil ? 0 : 1)
        if sources == 0 { throw ValidationError("give image paths or folders, --list FILE, --list0 FILE, or --input-npy FILE") }
        if inputNPY != nil && sources > 1 { throw ValidationError("--input-npy cannot be combined with image paths or lists") }
    }

    func run() throws {
        let backend = try engine.configure()
        let batch = try BatchJob(command: "embed-image", output: out, options: job, unitName: "images", allowNonFinite: engine.allowNonfinite)
        let pca = try projection.load()
        let net = try loadResNet(model, backend: backend, quiet: job.quiet, allowNonFinite: engine.allowNonfinite)
        let images = try imageOptions.encoder(net, layer: layer, model: model)
        let models = [model ?? resolveModelsFolder(defaultResNetName)]
        if let inputNPY {
            let input = try readInputNPY(inputNPY, channels: net.config.inChannels)
            let source = TensorRowSource(rows: job.slice(input.shape[0]), fileIdentity: Array(modelIdentity(inputNPY).utf8))
            try batch.run(source, projection.wrap(TensorRowEncoder(images: images, input: input), pca: pca, backend: backend), unitSize: batchSize, backend: backend, models: models)
            return
        }
        let paths = try listImages(images: self.images, list: list, list0: list0)
        if paths.count == 0 {
            throw InputError("no images in \((self.images + [list, list0].compactMap { $0 }).joined(separator: ", ")) (folders are searched for .jpg, .jpeg, .jpe and .png)")
        }
        let source = ImageFileSource(paths: paths.slice(job.slice(paths.count)))
        try batch.run(source, projection.wrap(images, pca: pca, backend: backend), unitSize: batchSize, backend: backend, models: models)
    }
}

/// The image paths of arguments (folders walked), a --list (one per line; blank lines
/// ignored) and a --list0 (NUL-separated). Names stay bytes throughout.
func listImages(images: [String], list: String?, list0: String?) throws -> PathList {
    var args = images.map { RawPath($0) }
    if let list {
        var reader = LineReader(try InputFile(list, what: "the list of images"))
        while let line = try reader.nextLine() {
            if !line.isEmpty { args.append(RawPath(bytes: line)) }
        }
    }
    if let list0 {
        let data = try InputFile(list0, what: "the list of images").readAll()
        for name in data.split(separator: 0, omittingEmptySubsequences: true) { args.append(RawPath(bytes: Array(name))) }
    }
    let paths = PathList()
    try expandImagePaths(args, into: paths)
    return paths
}

/// A preprocessed float32 (N, channels, H, W) array from a file or stdin.
func readInputNPY(_ path: String, channels: Int) throws -> Tensor {
    let input: Tensor
    if path == "-" || (FileStatus.of(path).map { $0.kind != .regular } ?? false) {
        // stdin, /dev/stdin, a FIFO, process substitution: read as a stream.
        let file = try InputFile(path, what: "the input array")
        let data = try file.readAll()
        input = try data.withUnsafeBytes { try NPY.parse($0, path: file.name) }
    } else {
        input = try NPY.read(path: path)
    }
    let name = path == "-" ? "<stdin>" : path
    guard input.rank == 4, input.shape[1] == channels else {
        throw InputError("\(name): expected a float32 array of shape (N, \(channels), H, W), got \(input.shape)")
    }
    guard input.shape[0] > 0, input.shape[2] > 0, input.shape[3] > 0 else {
        throw InputError("\(name): the array \(input.shape) holds no images")
    }
    return input
}
