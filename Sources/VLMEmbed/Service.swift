// The embedding service: the one way from an item to a vector for `vlm worker` and `vlm serve`
// (and, through the same encoders, the batch jobs). Built from an `EmbeddingDescription` and a
// backend; loads each model once, on first use (or at start: `loadNamed`); packs items into
// forward passes (texts by tokens, images by pixels); and finishes every batch in one place —
// normalisation, the PCA projection, --normalize-output and the NaN/∞ check — answering each
// item with its vector or an `ItemError`.

import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMImage
import VLMModels

public final class EmbeddingService: @unchecked Sendable {
    public let description: EmbeddingDescription
    public let backend: any Backend
    /// vlm's version, for info answers.
    public let version: String
    /// The PCA file named by the description, loaded and checked at start.
    public let pca: PCAModel?
    /// Notes on stderr while loading (as the batch commands print them).
    let quiet: Bool
    /// Recursive: building an encoder loads its model, each once.
    private let lock = NSRecursiveLock()
    private var net: Result<ResNet, Error>?
    private var textModel: Result<TextEncoder, Error>?
    /// CLIP checkpoints by folder: one checkpoint named for images and texts loads once.
    private var clipModels: [String: Result<CLIPModel, Error>] = [:]
    private var clipText: Result<CLIPTextEncoder, Error>?
    private var imageRows: Result<ImageRowEncoder, Error>?
    private var textRows: Result<TextRowEncoder, Error>?
    private var pairRows: Result<PairRowEncoder, Error>?
    private let pcaProjection: PCAProjection?

    /// Loads the PCA file now (a bad one is an error at start); the models load on first use.
    public init(_ description: EmbeddingDescription, backend: any Backend, version: String, quiet: Bool = false) throws {
        (self.description, self.backend, self.version, self.quiet) = (description, backend, version, quiet)
        pca = try description.pca.map { try PCAModel.load(path: $0) }
        pcaProjection = pca?.projection(backend)
    }

    /// Loads the models the description names now, so a bad path ends the process at start
    /// (the default models load on first use; a missing one answers its items with an error).
    public func loadNamed() throws {
        if description.image.model != nil { _ = try imageNetwork() }
        if description.text.model != nil { _ = try textNetwork() }
    }

    private func once<T>(_ slot: ReferenceWritableKeyPath<EmbeddingService, Result<T, Error>?>, _ make: () throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        if let r = self[keyPath: slot] { return try r.get() }
        let r = Result { try make() }
        self[keyPath: slot] = r
        return try r.get()
    }

    /// The image model when it is a ResNet (what ImageNet classification needs); an error for CLIP.
    public func resnet() throws -> ResNet {
        if let m = description.image.model, isCLIPModel(m) {
            throw InputError("\(m): a CLIP model, not a ResNet with an ImageNet classifier; this command takes a ResNet")
        }
        return try once(\.net) { try loadResNet(description.image.model, backend: backend, quiet: quiet, allowNonFinite: description.allowNonFinite) }
    }

    /// A CLIP checkpoint folder, loaded once however many roles name it.
    public func clip(_ folder: String) throws -> CLIPModel {
        lock.lock()
        defer { lock.unlock() }
        let key = canonicalModelSpec(folder)
        if let r = clipModels[key] { return try r.get() }
        let r = Result { try loadCLIP(folder, backend: backend, quiet: quiet, allowNonFinite: description.allowNonFinite).0 }
        clipModels[key] = r
        return try r.get()
    }

    /// The image model: a ResNet, or a CLIP checkpoint's image tower.
    public func imageNetwork() throws -> ImageNetwork {
        if let m = description.image.model, isCLIPModel(m) { return .clip(try clip(m)) }
        return .resnet(try resnet())
    }

    /// The text model: a BERT-family encoder, or a CLIP checkpoint's text side.
    public func textNetwork() throws -> TextNetwork {
        if let m = description.text.model, isCLIPModel(m) {
            return .clip(try once(\.clipText) {
                try CLIPTextEncoder(model: try clip(m), tokenizer: try loadCLIPTokenizer(try locateCLIP(m)))
            })
        }
        return .bert(try textEncoder())
    }

    public func textEncoder() throws -> TextEncoder {
        try once(\.textModel) { try loadTextEncoder(description.text.model, backend: backend, quiet: quiet, allowNonFinite: description.allowNonFinite) }
    }

    // MARK: Encoders (rows before `finish`)

    /// The preprocessing in force (`EmbeddingDescription.Image.preprocessing`).
    public func preprocessing() throws -> Preprocessing { try description.image.preprocessing() }

    func imageEncoder(layer: ImageLayer, normalize: Bool = false) throws -> ImageRowEncoder {
        try ImageRowEncoder(network: try imageNetwork(), preprocessing: try preprocessing(), maxPixels: description.image.maxPixels, layer: layer,
                            draft: description.image.draft, normalize: normalize)
    }

    /// Image items' rows: the model's output, not yet normalised or projected.
    public func images() throws -> ImageRowEncoder {
        try once(\.imageRows) {
            let e = try imageEncoder(layer: description.image.layer)
            _ = try projection(e.dim)
            return e
        }
    }

    /// Text items' rows: pooled, not yet normalised or projected (`finish` does both).
    public func texts() throws -> TextRowEncoder {
        try once(\.textRows) {
            let t = description.text
            let e = try TextRowEncoder(network: try textNetwork(), pooling: t.pooling, normalize: false, maxLength: t.maxLength,
                                       batchSize: t.batchSize, batchTokens: t.batchTokens, truncate: t.truncate ?? true)
            _ = try projection(e.dim)
            return e
        }
    }

    /// Pair items' rows: image ⧺ text (the text part normalised as text items are, the parts
    /// as --normalize-parts says), not yet projected.
    public func pairs() throws -> PairRowEncoder {
        try once(\.pairRows) {
            let t = description.text
            let texts = try TextRowEncoder(network: try textNetwork(), pooling: t.pooling, normalize: t.normalize, maxLength: t.maxLength,
                                           batchSize: description.image.batchSize, batchTokens: t.batchTokens, truncate: t.truncate ?? true)
            let e = PairRowEncoder(images: try imageEncoder(layer: description.image.pairLayer, normalize: try imageNormalize()), texts: texts,
                                   normalizeParts: description.normalizeParts)
            _ = try projection(e.dim)
            return e
        }
    }

    /// Whether text vectors are normalised when the asker does not say: --normalize, else the
    /// model's sentence-transformers config (a CLIP text tower: yes).
    public func textNormalize() throws -> Bool {
        if let n = description.text.normalize { return n }
        switch try textNetwork() {
        case .bert(let e): return e.defaultNormalize
        case .clip: return true
        }
    }

    /// Whether image vectors are normalised when the asker does not say: yes for CLIP (its
    /// space is compared by cosine), no for a ResNet's features.
    public func imageNormalize() throws -> Bool {
        if let n = description.image.normalize { return n }
        if case .clip = try imageNetwork() { return true }
        return false
    }

    /// The model's width for a kind of item (before projection).
    public func rowDim(_ kind: ItemKind) throws -> Int {
        switch kind {
        case .image: return try images().dim
        case .text: return try texts().dim
        case .pair: return try pairs().dim
        }
    }

    /// A vector's width for a kind of item (after projection).
    public func dim(_ kind: ItemKind) throws -> Int {
        let d = try rowDim(kind)
        return try projection(d)?.dimOut ?? d
    }

    /// The PCA's projection for rows of width `dim`; an error when it takes rows of another width.
    func projection(_ dim: Int) throws -> PCAProjection? {
        guard let pca else { return nil }
        if pca.dimIn != dim {
            throw InputError("\(description.pca ?? "the PCA file"): the PCA takes \(pca.dimIn)-d rows, but this model's rows are \(dim)-d (fit it on this model's features)")
        }
        return pcaProjection
    }

    // MARK: Finishing

    /// Rows of `kind` as the encoders give them, turned into vectors — the one place this
    /// happens: L2-normalised when `normalize` (nil: text items as `textNormalize()`, others
    /// not), projected by the PCA, normalised again with --normalize-output, and each row holding
    /// NaN or infinity turned into an item error of kind non_finite (unless allowed).
    /// `ids` name the batch's items, for those errors.
    public func finish(_ kind: ItemKind, _ batch: EncodedBatch, ids: [[UInt8]], normalize: Bool? = nil) throws -> EncodedBatch {
        var b = batch
        let raw = try rowDim(kind)
        if try normalize ?? (kind == .text ? textNormalize() : kind == .image ? imageNormalize() : false) { l2NormalizeRows(&b.rows, dim: raw) }
        let finishing = RowFinishing(projection: try projection(raw), normalizeOutput: description.normalizeOutput,
                                     allowNonFinite: description.allowNonFinite)
        return finishing.apply(b, width: raw, ids: ids)
    }

    /// `s` with what `finish` does to `kind`'s rows: the text normalisation in force, and the
    /// PCA file's SHA-256 and --normalize-output only when set (so the fingerprints of jobs
    /// without them are what they were).
    public func withFinishing(_ kind: ItemKind, _ s: [String: String]) -> [String: String] {
        var s = s
        if kind == .text, let n = try? textNormalize() { s["normalize"] = "\(n)" }
        // Only when on: the fingerprints of ResNet jobs stay what they were.
        if kind == .image, (try? imageNormalize()) == true { s["normalize"] = "true" }
        if let pca { s["pca"] = pca.fileDigest ?? "fitted in memory" }
        if description.normalizeOutput { s["normalize_output"] = "true" }
        return s
    }

    // MARK: Items to vectors

    /// Each item's vector or error, in order: images and pairs in forward passes of the
    /// description's image batch size, texts in runs of 4× its text batch size (packed by
    /// length into passes of at most the batch size and tokens). `ids` name the items in errors.
    public func embed(_ items: [(id: [UInt8], item: EmbedItem)]) -> [Result<[Float], ItemError>] {
        var out = [Result<[Float], ItemError>?](repeating: nil, count: items.count)
        var images: [(Int, ImageInput)] = [], texts: [(Int, TextInput)] = [], pairs: [(Int, (image: ImageInput, text: TextInput))] = []
        for (k, (_, item)) in items.enumerated() {
            switch item {
            case .image(let i): images.append((k, i))
            case .text(let t): texts.append((k, t))
            case .pair(let i, let t): pairs.append((k, (i, t)))
            }
        }
        func run<E: RowEncoder>(_ kind: ItemKind, _ part: [(Int, E.Value)], chunk: Int, _ encoder: () throws -> E) {
            guard !part.isEmpty else { return }
            let e: E
            do { e = try encoder(); _ = try dim(kind) } catch {
                let message = oneLineMessage(error)
                for (k, _) in part { out[k] = .failure(ItemError(id: items[k].id, kind: "model", message: message)) }
                return
            }
            for start in stride(from: 0, to: part.count, by: chunk) {
                let slice = part[start..<min(part.count, start + chunk)]
                let ids = slice.map { items[$0.0].id }
                do {
                    let batch = try finish(kind, try e.rows(slice.map { (items[$0.0].id, $0.1) }), ids: ids)
                    let d = try dim(kind)
                    var row = 0
                    for (j, (k, _)) in slice.enumerated() {
                        if let err = batch.failures[j] {
                            out[k] = .failure(err)
                        } else {
                            out[k] = .success(Array(batch.rows[(row * d)..<((row + 1) * d)]))
                            row += 1
                        }
                    }
                } catch {
                    for (k, _) in slice { out[k] = .failure(ItemError(id: items[k].id, kind: "error", message: oneLineMessage(error))) }
                }
            }
        }
        run(.image, images, chunk: description.image.batchSize) { try self.images() }
        run(.text, texts, chunk: 4 * description.text.batchSize) { try self.texts() }
        run(.pair, pairs, chunk: description.image.batchSize) { try self.pairs() }
        return out.map { $0! }
    }

    // MARK: Info

    /// Models loaded so far, their dimensions, the options in force (`options`: the
    /// description), and for a model that could not load, why.
    public func info() -> [String: JSONValue] {
        var out: [String: JSONValue] = ["version": .string(version), "threads": .integer(Int64(Threads.count)),
                                        "backend": .string(backend.settings["backend"] ?? ""),
                                        "openblas_kernels": .string(OpenBLASCore.kernelReport()), "kernels": .string(kernelInstructionSet)]
        out["image_model"] = .string(description.image.model ?? resolveModelsFolder(defaultResNetName))
        out["text_model"] = .string(description.text.model ?? defaultTextModel())
        out["options"] = description.json
        // Each model: loaded (its dimension and options in force), or not and why — never only a name.
        func settings(_ kind: ItemKind, _ s: [String: String]) -> JSONValue { .object(withFinishing(kind, s).mapValues { .string($0) }) }
        do {
            let e = try images()
            out["image_dim"] = .integer(Int64(try dim(.image)))
            out["image_options"] = settings(.image, e.settings)
            out["image_loaded"] = .bool(true)
        } catch {
            out["image_loaded"] = .bool(false)
            out["image_error"] = .string(oneLineMessage(error))
        }
        do {
            let s = try texts().settings
            out["text_dim"] = .integer(Int64(try dim(.text)))
            out["text_options"] = settings(.text, s)
            out["text_loaded"] = .bool(true)
        } catch {
            out["text_loaded"] = .bool(false)
            out["text_error"] = .string(oneLineMessage(error))
        }
        if let d = try? dim(.pair) { out["pair_dim"] = .integer(Int64(d)) }
        return out
    }
}

/// An error as one line, for answers that carry it.
public func oneLineMessage(_ error: Error) -> String {
    "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
}
