// The models of `vlm worker` and `vlm serve`: built once, on first use, from a recipe (their
// flags, resolved), and which of their outputs each kind of request gets; and the worker's
// answers to a window of requests.

import Foundation
import VLMCore
import VLMIO
import VLMImage
import VLMJobs
import VLMModels

/// What the worker's and the server's encoders are built from.
public struct ServedModelRecipe {
    public var imageModel: String?
    public var textModel: String?
    /// Image requests' output, and the image part of image–text requests'.
    public var layer: ImageLayer
    public var imageLayer: ImageLayer
    public var normalizeParts: Bool
    public var imageBatchSize: Int
    public var textBatchSize: Int
    public var allowNonFinite: Bool
    /// --pca: applied to every kind of request whose vectors it fits.
    public var pca: PCAModel?
    public var pcaName: String
    public var normalizeOutput: Bool
    public var version: String
    /// The image encoder of a network for a layer (the model's path, for its declared preprocessing).
    public var imageEncoder: (ResNet, ImageLayer, String?) throws -> ImageRowEncoder
    /// The text encoder at a batch size; the Bool, when given, overrides the normalisation.
    public var textEncoder: (TextEncoder, Int, Bool?) throws -> TextRowEncoder

    public init(imageModel: String?, textModel: String?, layer: ImageLayer, imageLayer: ImageLayer, normalizeParts: Bool,
                imageBatchSize: Int, textBatchSize: Int, allowNonFinite: Bool, pca: PCAModel?, pcaName: String, normalizeOutput: Bool,
                version: String, imageEncoder: @escaping (ResNet, ImageLayer, String?) throws -> ImageRowEncoder,
                textEncoder: @escaping (TextEncoder, Int, Bool?) throws -> TextRowEncoder) {
        (self.imageModel, self.textModel, self.layer, self.imageLayer, self.normalizeParts) = (imageModel, textModel, layer, imageLayer, normalizeParts)
        (self.imageBatchSize, self.textBatchSize, self.allowNonFinite) = (imageBatchSize, textBatchSize, allowNonFinite)
        (self.pca, self.pcaName, self.normalizeOutput, self.version) = (pca, pcaName, normalizeOutput, version)
        (self.imageEncoder, self.textEncoder) = (imageEncoder, textEncoder)
    }
}

/// The encoders of the worker and the server, each built once on first use.
public final class ServedModels {
    public let recipe: ServedModelRecipe
    public let backend: any Backend
    private var net: Result<ResNet, Error>?
    private var textEncoder: Result<TextEncoder, Error>?
    private var imageRows: ProjectedRowEncoder<ImageRowEncoder>?
    private var textRows: ProjectedRowEncoder<TextRowEncoder>?
    private var pairRows: ProjectedRowEncoder<PairRowEncoder>?

    public init(_ recipe: ServedModelRecipe, backend: any Backend) { (self.recipe, self.backend) = (recipe, backend) }

    /// Loads the models named by flags now, so a bad path ends the worker at start.
    public func loadNamed() throws {
        if recipe.imageModel != nil { _ = try resnet() }
        if recipe.textModel != nil { _ = try bert() }
    }

    public func resnet() throws -> ResNet {
        if net == nil {
            net = Result { try loadResNet(recipe.imageModel, backend: backend, allowNonFinite: recipe.allowNonFinite) }
        }
        return try net!.get()
    }

    public func bert() throws -> TextEncoder {
        if textEncoder == nil {
            textEncoder = Result { try loadTextEncoder(recipe.textModel, backend: backend, allowNonFinite: recipe.allowNonFinite) }
        }
        return try textEncoder!.get()
    }

    public func images() throws -> ProjectedRowEncoder<ImageRowEncoder> {
        if let imageRows { return imageRows }
        let e = try project(try recipe.imageEncoder(try resnet(), recipe.layer, recipe.imageModel))
        imageRows = e
        return e
    }

    public func texts() throws -> ProjectedRowEncoder<TextRowEncoder> {
        if let textRows { return textRows }
        let e = try project(try rawTexts(normalize: nil))
        textRows = e
        return e
    }

    /// Text rows without projection; `normalize` overrides the flags' normalisation.
    public func rawTexts(normalize: Bool?) throws -> TextRowEncoder {
        try recipe.textEncoder(try bert(), recipe.textBatchSize, normalize)
    }

    public func pairs() throws -> ProjectedRowEncoder<PairRowEncoder> {
        if let pairRows { return pairRows }
        let i = try recipe.imageEncoder(try resnet(), recipe.imageLayer, recipe.imageModel)
        let t = try recipe.textEncoder(try bert(), recipe.imageBatchSize, nil)
        let e = try project(PairRowEncoder(images: i, texts: t, normalizeParts: recipe.normalizeParts))
        pairRows = e
        return e
    }

    /// What {"info": true} answers: models loaded so far, their dimensions, the options in force.
    public func info() -> [String: JSONValue] {
        var out: [String: JSONValue] = ["version": .string(recipe.version), "threads": .integer(Int64(Threads.count)),
                                        "backend": .string(backend.settings["backend"] ?? ""),
                                        "openblas_kernels": .string(OpenBLASCore.kernelReport()), "kernels": .string(kernelInstructionSet)]
        out["image_model"] = .string(recipe.imageModel ?? resolveModelsFolder(defaultResNetName))
        out["text_model"] = .string(recipe.textModel ?? defaultTextModel())
        // Each model: loaded (its dimension and options), or not and why — never only a name.
        do {
            let e = try images()
            out["image_dim"] = .integer(Int64(e.dim))
            out["image_options"] = .object(e.settings.mapValues { .string($0) })
            out["image_loaded"] = .bool(true)
        } catch {
            out["image_loaded"] = .bool(false)
            out["image_error"] = .string(oneLineMessage(error))
        }
        do {
            let e = try texts()
            out["text_dim"] = .integer(Int64(e.dim))
            out["text_options"] = .object(e.settings.mapValues { .string($0) })
            out["text_loaded"] = .bool(true)
        } catch {
            out["text_loaded"] = .bool(false)
            out["text_error"] = .string(oneLineMessage(error))
        }
        if let e = try? pairs() { out["pair_dim"] = .integer(Int64(e.dim)) }
        return out
    }

    /// `encoder`'s rows projected by the recipe's PCA and normalised as it says.
    func project<E: RowEncoder>(_ encoder: E) throws -> ProjectedRowEncoder<E> {
        try ProjectedRowEncoder(encoder, pca: recipe.pca, pcaName: recipe.pcaName, normalizeOutput: recipe.normalizeOutput, backend: backend)
    }

    /// The worker's responses to a window of requests, in request order.
    public func answer(_ requests: [WorkerRequest], firstNumber: Int, vectors: WorkerResponse.VectorFormat) -> Data {
        var out = [Data?](repeating: nil, count: requests.count)
        var images: [(Int, ImageInput)] = [], texts: [(Int, TextInput)] = [], pairs: [(Int, (image: ImageInput, text: TextInput))] = []
        for (k, r) in requests.enumerated() {
            switch r.kind {
            case .image(let i): images.append((k, i))
            case .text(let t): texts.append((k, t))
            case .pair(let i, let t): pairs.append((k, (i, t)))
            case .info:
                var info = self.info()
                info["vectors"] = .string(vectors.rawValue)
                out[k] = WorkerResponse.info(id: r.id, info)
            case .invalid(let kind, let message): out[k] = WorkerResponse.error(id: r.id, kind: kind, message: message)
            }
        }
        func embed<E: RowEncoder>(_ items: [(Int, E.Value)], chunk: Int, _ encoder: () throws -> E) {
            guard !items.isEmpty else { return }
            let e: E
            do { e = try encoder() } catch {
                for (k, _) in items { out[k] = WorkerResponse.error(id: requests[k].id, kind: "model", message: "\(error)") }
                return
            }
            for start in stride(from: 0, to: items.count, by: chunk) {
                let part = Array(items[start..<min(items.count, start + chunk)])
                do {
                    let ids = part.map { requests[$0.0].itemID(number: firstNumber + $0.0) }
                    var batch = try e.rows(part.map { (requests[$0.0].itemID(number: firstNumber + $0.0), $0.1) })
                    if !recipe.allowNonFinite { batch = batch.rejectingNonFinite(dim: e.dim, ids: ids) }
                    var row = 0
                    for (j, (k, _)) in part.enumerated() {
                        if let err = batch.failures[j] {
                            out[k] = WorkerResponse.error(id: requests[k].id, kind: err.kind, message: err.message)
                        } else {
                            out[k] = WorkerResponse.vector(id: requests[k].id, batch.rows[(row * e.dim)..<((row + 1) * e.dim)], format: vectors)
                            row += 1
                        }
                    }
                } catch {
                    for (k, _) in part { out[k] = WorkerResponse.error(id: requests[k].id, kind: "error", message: "\(error)") }
                }
            }
        }
        embed(images, chunk: recipe.imageBatchSize) { try self.images() }
        embed(texts, chunk: 4 * recipe.textBatchSize) { try self.texts() }
        embed(pairs, chunk: recipe.imageBatchSize) { try self.pairs() }
        var data = Data()
        for d in out { data.append(d!) }
        return data
    }
}

/// An error as one line, for answers that carry it.
func oneLineMessage(_ error: Error) -> String {
    "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
}
