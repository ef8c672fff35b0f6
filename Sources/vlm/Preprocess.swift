// `vlm preprocess`: the tensor the model would see, for checking against torchvision.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMImage
import VLMEmbed
import VLMJobs

struct PreprocessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preprocess",
        abstract: "Decode and preprocess images into the (N, 3, crop, crop) float32 .npy the model sees.",
        discussion: "torchvision's Resize(resize) → CenterCrop(crop) → ToTensor → Normalize(mean, std) on PIL images, reproduced exactly. Row i's image path is line i of <output>.ids.txt. The first image that fails stops it (exit 1).")

    @Argument(help: "Image files (JPEG or PNG) or folders.")
    var images: [String]

    @OptionGroup var imageOptions: ImageOptions

    @Option(name: .customLong("model"), help: "Take the preprocessing this image model declares (a registry name, folder or checkpoint) for the options not given.")
    var modelOption: String?

    @OptionGroup var clipConfig: CLIPConfigOption
    var model: String? { clipConfig.apply(modelOption) }

    func validate() throws { try clipConfig.requireModel(modelOption) }

    @Option(name: [.customShort("o"), .long], help: "Output .npy file, or - for stdout.")
    var output: String

    func run() throws {
        try clipConfig.check(modelOption)
        let target = try OutputTarget.resolve(output)
        if target.isTerminal { throw InputError("refusing to write binary .npy to a terminal; use -o FILE") }
        let paths = try listImages(images: images, list: nil, list0: nil)
        guard paths.count > 0 else { throw InputError("no images found in \(images.joined(separator: ", "))") }
        try refuseOutput(output, overwriting: [])
        try refuseOutput(output, amongImages: paths)
        let pre = try imageOptions.image(model: model).preprocessing(lookUp: model != nil)
        var values: [(id: [UInt8], value: ImageInput)] = []
        for item in try ImageFileSource(paths: paths).items(0..<paths.count) {
            switch item.content {
            case .value(let v): values.append((item.id, v))
            case .failed(let e): throw InputError(e.message)
            case .blank: continue
            }
        }
        let prepared = ImageRowEncoder.preprocess(values, preprocessing: pre, maxPixels: imageOptions.maxPixels, draft: imageOptions.draft)
        if let e = prepared.failures.compactMap({ $0 }).first { throw InputError(e.message) }
        let data = NPY.encode(Tensor(shape: [values.count, 3, pre.crop, pre.crop], data: prepared.tensor))
        if let sink = try target.openStream() {
            try sink.write(data)
        } else {
            // Row i is the i-th image: its path in <output>.ids.txt, as the batch commands write it.
            try writeAtomically(Data(values.map { RowText.idLine($0.id) }.joined().utf8), to: output + ".ids.txt")
            // A batch job's description of an earlier output here no longer describes it.
            unlink(output + OutputDescription.suffix)
            try writeAtomically(data, to: output)
        }
    }
}
