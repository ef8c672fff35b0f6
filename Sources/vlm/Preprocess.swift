// `vlm preprocess`: the tensor the model would see, for checking against torchvision.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMImage
import VLMJobs

struct PreprocessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preprocess",
        abstract: "Decode and preprocess images into the (N, 3, crop, crop) float32 .npy the model sees.",
        discussion: "torchvision's Resize(resize) → CenterCrop(crop) → ToTensor → Normalize(mean, std) on PIL images, reproduced exactly. The first image that fails stops it (exit 1).")

    @Argument(help: "Image files (JPEG or PNG) or folders.")
    var images: [String]

    @OptionGroup var imageOptions: ImageOptions

    @Option(help: "Take the preprocessing this image model declares (a registry name, folder or checkpoint) for the options not given.")
    var model: String?

    @Option(name: [.customShort("o"), .long], help: "Output .npy file, or - for stdout.")
    var output: String

    func run() throws {
        let target = try OutputTarget.resolve(output)
        if target.isTerminal { throw InputError("refusing to write binary .npy to a terminal; use -o FILE") }
        let paths = try listImages(images: images, list: nil, list0: nil)
        guard paths.count > 0 else { throw InputError("no images found in \(images.joined(separator: ", "))") }
        let pre = try imageOptions.preprocessing(model: model, lookUp: model != nil)
        let prepared = ImageRowEncoder.preprocess(try ImageFileSource(paths: paths).items(0..<paths.count).compactMap {
            if case .value(let v) = $0.content { return ($0.id, v) }
            return nil
        }, preprocessing: pre, maxPixels: imageOptions.maxPixels, draft: imageOptions.draft)
        if let e = prepared.failures.compactMap({ $0 }).first { throw InputError(e.message) }
        let data = NPY.encode(Tensor(shape: [paths.count, 3, pre.crop, pre.crop], data: prepared.tensor))
        if let sink = try target.openStream() { try sink.write(data) } else { try writeAtomically(data, to: output) }
    }
}
