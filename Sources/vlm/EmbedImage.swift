// `vlm embed-image`: ResNet features for image files, folders and lists, or for a preprocessed
// (N,3,H,W) float32 .npy — a resumable batch job.

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMImage
import VLMEmbed
import VLMJobs
import VLMModels

struct EmbedImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed-image",
        abstract: "ResNet features (pooled or logits) for image files, folders, lists, or a preprocessed .npy.",
        discussion: paragraphs("""
        Inputs: image paths and folders (recursive, sorted by bytes, .jpg/.jpeg/.jpe/.png), --list FILE|-
        (one path per line, as find prints them), --list0 FILE|- (NUL-separated, as find -print0
        writes them), or --input-npy (a preprocessed float32 (N, 3, H, W) array; ids are row numbers
        from 0). One row per image that worked, in input order, with its path as id: .npy or .f32
        plus <output>.ids.txt, or jsonl/tsv with the id in each row. Bad files are skipped and
        listed in <output>.errors.jsonl; the exit code is then 2.
        """))

    @Argument(help: "Image files or folders.")
    var images: [String] = []

    @Option(help: "A file with one image path per line; - for stdin.")
    var list: String?

    @Option(help: "A file of NUL-separated image paths (find -print0); - for stdin.")
    var list0: String?

    @Option(name: .customLong("input-npy"), help: "Preprocessed images: float32 .npy of shape (N, 3, H, W); - for stdin.")
    var inputNPY: String?

    @Option(name: .customLong("model"), help: "A ResNet checkpoint (.safetensors, or torch.save .pth/.pt/.bin: torchvision/timm layout), a model folder holding one, or synthetic:resnet50. Default: models/resnet50. A CLIP checkpoint: a folder (open_clip's or Hugging Face's), OpenAI's TorchScript .pt, or a bare open_clip state dict with --clip-config.")
    var modelOption: String?

    @OptionGroup var clipConfig: CLIPConfigOption
    var model: String? { clipConfig.apply(modelOption) }

    @Option(help: "Which output: pooled (global-average-pool features) or logits (fc output).")
    var layer: ImageLayer = .pooled

    @Option(parsing: .unconditional, help: "Images per forward pass (and per resumable unit).")
    var batchSize: Int = 16

    @OptionGroup var projection: ProjectionOptions
    @OptionGroup var common: BatchOptions
    @OptionGroup var imageOptions: ImageOptions

    func validate() throws {
        try clipConfig.requireModel(modelOption)
        try Limits.check("--batch-size", batchSize, 1...Limits.maxBatch)
        let sources = (images.isEmpty ? 0 : 1) + (list == nil ? 0 : 1) + (list0 == nil ? 0 : 1) + (inputNPY == nil ? 0 : 1)
        if sources == 0 { throw ValidationError("give image paths or folders, --list FILE, --list0 FILE, or --input-npy FILE") }
        if inputNPY != nil && sources > 1 { throw ValidationError("--input-npy cannot be combined with image paths or lists") }
    }

    func run() throws {
        try clipConfig.check(modelOption)
        let (backend, batch) = try common.start("embed-image", unitName: "images", inputs: [list, list0, inputNPY, projection.pca])
        var d = EmbeddingDescription()
        d.image = imageOptions.image(model: model, batchSize: batchSize)
        d.image.layer = layer
        projection.apply(to: &d)
        let service = try common.service(d, backend: backend)
        let images = try service.images()
        let models = [model ?? resolveModelsFolder(defaultResNetName)]
        if let inputNPY {
            let network = try service.imageNetwork()
            let input = try readInputNPY(inputNPY, channels: network.inChannels)
            try network.check(input: input.shape, name: inputNPY)
            let source = TensorRowSource(rows: common.job.slice(input.shape[0]), fileIdentity: Array(modelIdentity(inputNPY).utf8))
            try batch.run(source, try ServiceRows(service, .image, TensorRowEncoder(images: images, input: input)), unitSize: batchSize, backend: backend,
                          models: models, streamedInput: isStream(inputNPY))
            return
        }
        let paths = try listImages(images: self.images, list: list, list0: list0)
        if paths.count == 0 {
            throw InputError("no images in \((self.images + [list, list0].compactMap { $0 }).joined(separator: ", ")) (folders are searched for .jpg, .jpeg, .jpe and .png)")
        }
        try refuseOutput(common.out.output, amongImages: paths)
        let source = ImageFileSource(paths: paths.slice(common.job.slice(paths.count)))
        try batch.run(source, try ServiceRows(service, .image, images), unitSize: batchSize, backend: backend, models: models,
                      streamedInput: self.images.contains(where: isStream))
    }
}

/// stdin, or a named file that is not a regular file or folder (a FIFO, `<(curl …)`): read once,
/// its changes invisible to a file identity.
func isStream(_ path: String) -> Bool {
    if path == "-" { return true }
    guard let st = FileStatus.of(path) else { return false }
    return st.kind != .regular && st.kind != .directory
}
