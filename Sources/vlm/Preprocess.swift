// `vlm preprocess`: the tensor the model would see, for checking against torchvision.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMImage

struct PreprocessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preprocess",
        abstract: "Decode and preprocess images into the (N, 3, crop, crop) float32 .npy the model sees.",
        discussion: "torchvision's Resize(resize) → CenterCrop(crop) → ToTensor → Normalize(mean, std) on PIL images, reproduced exactly.")

    @Argument(help: "Image files (JPEG or PNG) or folders.")
    var images: [String]

    @OptionGroup var imageOptions: ImageOptions

    @Option(name: [.customShort("o"), .long], help: "Output .npy file, or - for stdout.")
    var output: String

    func run() throws {
        let paths = try expandImagePaths(images)
        guard !paths.isEmpty else { throw CLIError("no images found in \(images.joined(separator: ", "))") }
        let pre = imageOptions.preprocessing
        let per = 3 * pre.crop * pre.crop
        var data = [Float](repeating: 0, count: paths.count * per)
        var firstError: Error?
        let lock = NSLock()
        data.withUnsafeMutableBufferPointer { buf in
            let base = buf.baseAddress!
            DispatchQueue.concurrentPerform(iterations: paths.count) { i in
                do {
                    let t = pre.tensor(try ImageDecoder.decode(path: paths[i], maxPixels: imageOptions.maxPixels))
                    t.withUnsafeBufferPointer { (base + i * per).update(from: $0.baseAddress!, count: per) }
                } catch {
                    lock.lock(); if firstError == nil { firstError = error }; lock.unlock()
                }
            }
        }
        if let firstError { throw firstError }
        try FeatureWriter.write(NPY.encode(Tensor(shape: [paths.count, 3, pre.crop, pre.crop], data: data)), to: output)
    }
}
