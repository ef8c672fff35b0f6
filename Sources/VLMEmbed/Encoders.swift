// The encoders that turn a batch of items into rows: images (decode → preprocess → ResNet),
// preprocessed tensors (ResNet), texts (tokenize → packed BERT → pool) and image–text pairs
// (both, concatenated). Each splits its work in two: `prepare` (decoding, tokenizing — the part
// that runs on other threads while the model works on the previous batch) and `encode` (the
// model). Batch jobs, the worker and classify all go through these, so a vector never depends
// on which command made it.

import Foundation
import VLMCore
import VLMIO
import VLMImage
import VLMModels
import VLMTokenizer

/// A batch's outcome: rows for the items that worked, in item order, and per item its error.
public struct EncodedBatch {
    /// (items that worked) × dim.
    public var rows: [Float]
    /// One entry per item of the batch: nil when it gave a row.
    public var failures: [ItemError?]

    public init(rows: [Float], failures: [ItemError?]) { (self.rows, self.failures) = (rows, failures) }
    public var goodCount: Int { failures.count - failures.compactMap { $0 }.count }

    /// The same batch with every row that holds NaN or infinity (weights loaded with
    /// --allow-nonfinite, a preprocessed input holding NaN, an absurd --std) turned into an
    /// error of kind non_finite: such a row is never written as if it were a vector.
    public func rejectingNonFinite(dim: Int, ids: [[UInt8]]) -> EncodedBatch {
        guard rows.contains(where: { !$0.isFinite }) else { return self }
        var kept: [Float] = [], failures = self.failures
        var row = 0
        for k in failures.indices where failures[k] == nil {
            let r = rows[(row * dim)..<((row + 1) * dim)]
            row += 1
            if r.allSatisfy(\.isFinite) { kept += r; continue }
            failures[k] = ItemError(id: ids[k], kind: "non_finite",
                                    message: "\(RawPath.display(ids[k])): its vector holds NaN or infinity (from the weights, the input or the preprocessing options)")
        }
        return EncodedBatch(rows: kept, failures: failures)
    }
}

public protocol RowEncoder: AnyObject {
    associatedtype Value
    associatedtype Prepared
    /// Floats per row.
    var dim: Int { get }
    /// Every setting that changes a row, for the job's fingerprint.
    var settings: [String: String] { get }
    /// The CPU work before the model, safe to run on another thread while `encode` runs.
    func prepare(_ items: [(id: [UInt8], value: Value)]) -> Prepared
    /// The model.
    func encode(_ prepared: Prepared) throws -> EncodedBatch
}

extension RowEncoder {
    /// prepare then encode, on this thread.
    public func rows(_ items: [(id: [UInt8], value: Value)]) throws -> EncodedBatch { try encode(prepare(items)) }
}

// MARK: - Images

/// An image to encode: a file, or encoded bytes (the worker's `image_bytes`).
public enum ImageInput: Sendable {
    /// `walked`: found by listing a folder, so only a regular file is opened.
    case file(RawPath, walked: Bool)
    case bytes(Data)
}

/// Which ResNet output a row is.
public enum ImageLayer: String, CaseIterable, Codable, Sendable {
    case pooled, logits
}

/// Decoded and preprocessed images: (good, 3, crop, crop) floats and per-item errors.
public struct PreparedImages {
    public var tensor: [Float]
    public var failures: [ItemError?]
    public init(tensor: [Float], failures: [ItemError?]) { (self.tensor, self.failures) = (tensor, failures) }
}

/// The network that turns preprocessed images into rows: a ResNet, or a CLIP checkpoint's
/// image tower.
public enum ImageNetwork {
    case resnet(ResNet)
    case clip(CLIPModel)

    public var sourceName: String {
        switch self {
        case .resnet(let n): return n.sourceName
        case .clip(let m): return m.sourceName
        }
    }

    /// The input's channels (3 for CLIP).
    public var inChannels: Int {
        if case .resnet(let n) = self { return n.config.inChannels }
        return 3
    }

    /// Refuses a preprocessed (N, C, H, W) input the network cannot take: a CLIP tower takes its
    /// own size only (a ResNet any).
    public func check(input shape: [Int], name: String) throws {
        if case .clip(let m) = self, shape.count == 4, shape[2] != m.vision.imageSize || shape[3] != m.vision.imageSize {
            let s = m.vision.imageSize
            throw InputError("\(name): shape \(shape), but this CLIP model takes (N, 3, \(s), \(s))")
        }
    }
}

public final class ImageRowEncoder: RowEncoder {
    public let network: ImageNetwork
    public let preprocessing: Preprocessing
    public let maxPixels: UInt64
    public let layer: ImageLayer
    /// Decode JPEGs at the DCT scale Pillow's Image.draft("RGB", (resize, resize)) picks.
    public let draft: Bool
    /// Each row L2-normalised (the image part of a CLIP pair; image items are normalised by the
    /// service's finishing step instead).
    public let normalize: Bool

    public init(network: ImageNetwork, preprocessing: Preprocessing, maxPixels: UInt64, layer: ImageLayer, draft: Bool = false,
                normalize: Bool = false) throws {
        switch network {
        case .resnet(let net):
            if layer == .logits && net.config.numClasses == nil {
                throw InputError("\(net.sourceName): the checkpoint has no fc layer, so there are no logits; use the pooled layer")
            }
        case .clip(let m):
            if layer == .logits {
                throw InputError("\(m.sourceName): a CLIP image tower has no logits; its output is the embedding (the pooled layer)")
            }
            if preprocessing.crop != m.vision.imageSize {
                throw OptionError("the preprocessing crops to \(preprocessing.crop) px (--crop, or the config's image size), but this CLIP model takes \(m.vision.imageSize)-px images")
            }
        }
        (self.network, self.preprocessing, self.maxPixels, self.layer, self.draft) = (network, preprocessing, maxPixels, layer, draft)
        self.normalize = normalize
    }

    public var dim: Int {
        switch network {
        case .resnet(let net): return layer == .pooled ? net.config.featureSize : net.config.numClasses!
        case .clip(let m): return m.embedDim
        }
    }

    public var settings: [String: String] {
        var s = ["layer": layer.rawValue, "max_pixels": "\(maxPixels)", "draft": "\(draft)",
                 "preprocessing": "resize \(preprocessing.resize), crop \(preprocessing.crop), mean \(preprocessing.mean), std \(preprocessing.std)"]
        if preprocessing.filter != .bilinear { s["preprocessing"]! += ", \(preprocessing.filter.rawValue)" }
        if normalize { s["normalize"] = "true" }
        return s
    }

    /// Decodes and preprocesses the items in parallel (each image on one thread).
    public func prepare(_ items: [(id: [UInt8], value: ImageInput)]) -> PreparedImages {
        Self.preprocess(items, preprocessing: preprocessing, maxPixels: maxPixels, draft: draft)
    }

    /// (good, 3, crop, crop) tensors of the items that decode, and each other item's error.
    public static func preprocess(_ items: [(id: [UInt8], value: ImageInput)], preprocessing: Preprocessing,
                                  maxPixels: UInt64, draft: Bool = false) -> PreparedImages {
        Threads.run { preprocessOnEngine(items, preprocessing: preprocessing, maxPixels: maxPixels, draft: draft) }
    }

    static func preprocessOnEngine(_ items: [(id: [UInt8], value: ImageInput)], preprocessing: Preprocessing,
                                   maxPixels: UInt64, draft: Bool) -> PreparedImages {
        let per = 3 * preprocessing.crop * preprocessing.crop
        var slots = [[Float]?](repeating: nil, count: items.count)
        var errs = [ItemError?](repeating: nil, count: items.count)
        slots.withUnsafeMutableBufferPointer { s in
            errs.withUnsafeMutableBufferPointer { e in
                let sp = s.baseAddress!, ep = e.baseAddress!
                Threads.parallelBlocks(items.count) { k in
                    do {
                        sp[k] = try withDecoded(items[k].value, id: items[k].id, maxPixels: maxPixels,
                                                draft: draft ? preprocessing.resize : nil) { image in
                            let need = preprocessing.bufferPixels(width: image.width, height: image.height)
                            if need > maxPixels {
                                throw ImageError.tooLargeToResize(path: RawPath.display(items[k].id), width: image.width, height: image.height,
                                                                  pixels: need, limit: maxPixels)
                            }
                            return preprocessing.tensor(image)
                        }
                    } catch let error as ImageError {
                        ep[k] = ItemError(id: items[k].id, kind: error.kind, message: error.description)
                    } catch {
                        ep[k] = ItemError(id: items[k].id, kind: "error", message: "\(RawPath.display(items[k].id)): \(error)")
                    }
                }
            }
        }
        var tensor: [Float] = []
        tensor.reserveCapacity(slots.count * per)
        for t in slots { if let t { tensor += t } }
        return PreparedImages(tensor: tensor, failures: errs)
    }

    static func withDecoded<R>(_ input: ImageInput, id: [UInt8], maxPixels: UInt64, draft: Int?, _ body: (ImageView) throws -> R) throws -> R {
        switch input {
        case .file(let path, let walked):
            if path.bytes == [0x2D] && !walked {   // "-": the image on stdin
                let data: Data
                do { data = try InputFile("-", what: "the image").readAll(limit: 1 << 34) } catch let IOError.cannotOpen(_, reason), let IOError.cannotRead(_, reason) {
                    throw ImageError.unreadable(path: "<stdin>", reason: reason)
                }
                return try data.withUnsafeBytes { try ImageDecoder.withDecoded($0, name: "<stdin>", maxPixels: maxPixels, draft: draft, body) }
            }
            return try ImageDecoder.withDecoded(path: path, maxPixels: maxPixels, regularOnly: walked, draft: draft, body)
        case .bytes(let data):
            return try data.withUnsafeBytes { try ImageDecoder.withDecoded($0, name: RawPath.display(id), maxPixels: maxPixels, draft: draft, body) }
        }
    }

    public func encode(_ p: PreparedImages) throws -> EncodedBatch {
        let crop = preprocessing.crop
        let good = p.tensor.count / (3 * crop * crop)
        return EncodedBatch(rows: run(Tensor(shape: [good, 3, crop, crop], data: p.tensor)), failures: p.failures)
    }

    /// Rows for (n, 3, H, W) preprocessed images.
    public func run(_ input: Tensor) -> [Float] {
        guard input.shape[0] > 0 else { return [] }
        var rows: [Float]
        switch network {
        case .resnet(let net):
            let out = net.forward(input)
            rows = layer == .pooled ? out.pooled.data : out.logits!.data
        case .clip(let m):
            rows = m.encodeImages(input).data
        }
        if normalize { l2NormalizeRows(&rows, dim: dim) }
        return rows
    }
}

/// Rows of a preprocessed float32 (N, 3, H, W) array: items are row indices.
public final class TensorRowEncoder: RowEncoder {
    public let images: ImageRowEncoder
    let input: Tensor

    public init(images: ImageRowEncoder, input: Tensor) { (self.images, self.input) = (images, input) }

    public var dim: Int { images.dim }
    public var settings: [String: String] { ["layer": images.layer.rawValue, "input": "npy \(input.shape)"] }

    public func prepare(_ items: [(id: [UInt8], value: Int)]) -> Tensor {
        let inner = input.shape.dropFirst().reduce(1, *)
        var data: [Float] = []
        data.reserveCapacity(items.count * inner)
        for (_, row) in items { data += input.data[(row * inner)..<((row + 1) * inner)] }
        return Tensor(shape: [items.count] + input.shape.dropFirst(), data: data)
    }

    public func encode(_ t: Tensor) throws -> EncodedBatch {
        EncodedBatch(rows: images.run(t), failures: [ItemError?](repeating: nil, count: t.shape[0]))
    }
}

// MARK: - Texts

/// A text and, for sentence pairs, its second segment.
public struct TextInput: Sendable {
    public var text: String
    public var pair: String?
    public init(_ text: String, pair: String? = nil) { (self.text, self.pair) = (text, pair) }
}

/// Tokenized texts of a batch: the encodings of those that worked, and one entry per text (nil
/// when it worked; an over-long text when truncation is off fails).
public struct PreparedTexts {
    public var encodings: [Encoding]
    public var failures: [ItemError?]
    public init(encodings: [Encoding], failures: [ItemError?]) { (self.encodings, self.failures) = (encodings, failures) }
    /// Several batches' texts as one.
    public static func merged(_ parts: [PreparedTexts]) -> PreparedTexts {
        PreparedTexts(encodings: parts.flatMap(\.encodings), failures: parts.flatMap(\.failures))
    }
    /// Tokens of the texts that worked.
    public var tokens: Int { encodings.reduce(0) { $0 + $1.count } }
}

/// The model that turns texts into rows: a BERT-family encoder, or a CLIP checkpoint's text side.
public enum TextNetwork {
    case bert(TextEncoder)
    case clip(CLIPTextEncoder)

    public var folder: String {
        switch self {
        case .bert(let e): return e.folder
        case .clip(let e): return e.model.sourceName
        }
    }
}

public final class TextRowEncoder: RowEncoder {
    public let network: TextNetwork
    /// BERT's pooling; CLIP's text tower pools at its end token (`.cls` is never used for it).
    public let pooling: Pooling
    public let normalize: Bool
    public let maxLength: Int
    /// Over-long texts are cut to maxLength (else they fail as too_long).
    public let truncate: Bool
    public let batchSize: Int, batchTokens: Int
    private let lock = NSLock()
    private var truncated = 0

    /// nil settings take the model folder's defaults (sentence-transformers' config).
    public convenience init(encoder: TextEncoder, pooling: Pooling?, normalize: Bool?, maxLength: Int?, batchSize: Int, batchTokens: Int,
                            pairs: Bool = false, truncate: Bool = true) throws {
        try self.init(network: .bert(encoder), pooling: pooling, normalize: normalize, maxLength: maxLength, batchSize: batchSize,
                      batchTokens: batchTokens, pairs: pairs, truncate: truncate)
    }

    /// nil settings take the model's defaults: for BERT its sentence-transformers config; for
    /// CLIP the context length (77) and normalised vectors.
    public init(network: TextNetwork, pooling: Pooling?, normalize: Bool?, maxLength: Int?, batchSize: Int, batchTokens: Int,
                pairs: Bool = false, truncate: Bool = true) throws {
        self.network = network
        self.truncate = truncate
        (self.batchSize, self.batchTokens) = (batchSize, batchTokens)
        switch network {
        case .bert(let encoder):
            self.pooling = pooling ?? encoder.defaultPooling
            self.normalize = normalize ?? encoder.defaultNormalize
            let maxPositions = encoder.model.config.maxPositionEmbeddings
            if let maxLength, maxLength > maxPositions {
                throw OptionError("--max-length \(maxLength) exceeds the model's max_position_embeddings \(maxPositions)")
            }
            self.maxLength = maxLength ?? encoder.defaultMaxLength
            try encoder.check(pooling: self.pooling, pairs: pairs)
        case .clip(let encoder):
            if let pooling {
                throw OptionError("--pooling \(pooling.rawValue): a CLIP text tower pools at its end token; --pooling is for BERT-family models")
            }
            if pairs { throw OptionError("\(encoder.model.sourceName): a CLIP text tower does not encode sentence pairs") }
            let context = encoder.contextLength
            if let maxLength, maxLength > context || maxLength < 2 {
                throw OptionError("--max-length \(maxLength): this CLIP text tower takes 2…\(context) tokens, start and end included")
            }
            self.pooling = .cls
            self.normalize = normalize ?? true
            self.maxLength = maxLength ?? context
        }
    }

    public var dim: Int {
        switch network {
        case .bert(let e): return e.model.config.hiddenSize
        case .clip(let e): return e.dim
        }
    }

    public var settings: [String: String] {
        var s = ["normalize": "\(normalize)", "max_length": "\(maxLength)", "batch_texts": "\(batchSize)", "batch_tokens": "\(batchTokens)"]
        if case .bert = network { s["pooling"] = pooling.rawValue } else { s["pooling"] = "end token (CLIP)" }
        if !truncate { s["truncate"] = "false" }   // only when off: fingerprints of jobs without it stay
        return s
    }

    /// The pooling's name for descriptions: BERT's, or "clip_end_token".
    public var poolingName: String {
        if case .clip = network { return "clip_end_token" }
        return pooling.rawValue
    }

    func encode(_ text: TextInput, maxLength: Int) -> Encoding {
        switch network {
        case .bert(let e): return e.encode(text.text, pair: text.pair, maxLength: maxLength)
        case .clip(let e): return e.encode(text.text, maxLength: maxLength)
        }
    }

    /// Texts cut to the maximum length so far.
    public var truncatedCount: Int { lock.lock(); defer { lock.unlock() }; return truncated }

    /// Each text tokenized; over-long ones cut when `truncate` (default: the encoder's own), else
    /// failed as too_long.
    public func prepare(_ items: [(id: [UInt8], value: TextInput)]) -> PreparedTexts { prepare(items, truncate: truncate) }

    public func prepare(_ items: [(id: [UInt8], value: TextInput)], truncate: Bool) -> PreparedTexts {
        let encodings = Threads.run { items.map { encode($0.value, maxLength: maxLength) } }
        var out = PreparedTexts(encodings: [], failures: [])
        out.encodings.reserveCapacity(encodings.count)
        var cut = 0
        for (item, e) in zip(items, encodings) {
            if e.truncated && !truncate {
                out.failures.append(tooLong(item.value, id: item.id))
                continue
            }
            if e.truncated { cut += 1 }
            out.encodings.append(e)
            out.failures.append(nil)
        }
        lock.lock(); truncated += cut; lock.unlock()
        return out
    }

    /// The error of a text over the maximum length when truncation is off — the same kind and
    /// words from every front end (the server's requests with "truncate": false among them).
    /// Its tokens are counted up to 16 times the limit: all of a text of megabytes would take seconds.
    public func tooLong(_ text: TextInput, id: [UInt8]) -> ItemError {
        let cap = 16 * maxLength
        let count: Int?
        switch network {
        case .bert(let e): count = e.tokenCount(text.text, pair: text.pair, upTo: cap)
        case .clip(let e): count = e.tokenCount(text.text, upTo: cap)
        }
        let size = count.map { "\($0) tokens" } ?? "more than \(cap) tokens"
        return ItemError(id: id, kind: "too_long",
                         message: "\(RawPath.display(id)): \(size), over the maximum length of \(maxLength), and truncation is off")
    }

    public func encode(_ texts: PreparedTexts) throws -> EncodedBatch {
        switch network {
        case .bert(let e):
            return EncodedBatch(rows: e.embed(encodings: texts.encodings, pooling: pooling, normalize: normalize,
                                              batchSize: batchSize, batchTokens: batchTokens),
                                failures: texts.failures)
        case .clip(let e):
            var rows = e.embed(encodings: texts.encodings, batchSize: batchSize, batchTokens: batchTokens)
            if normalize { l2NormalizeRows(&rows, dim: e.dim) }
            return EncodedBatch(rows: rows, failures: texts.failures)
        }
    }
}

// MARK: - Pairs

/// image vector ⧺ text vector, each part optionally L2-normalised first.
public final class PairRowEncoder: RowEncoder {
    public let images: ImageRowEncoder
    public let texts: TextRowEncoder
    public let normalizeParts: Bool

    public init(images: ImageRowEncoder, texts: TextRowEncoder, normalizeParts: Bool) {
        (self.images, self.texts, self.normalizeParts) = (images, texts, normalizeParts)
    }

    public var dim: Int { images.dim + texts.dim }

    public var settings: [String: String] {
        var s = images.settings.mapKeys { "image_" + $0 }
        for (k, v) in texts.settings { s["text_" + k] = v }
        s["normalize_parts"] = "\(normalizeParts)"
        return s
    }

    /// The images decoded, and the texts of the pairs whose image worked tokenized (a text that
    /// fails — over-long with truncation off — fails its pair).
    public func prepare(_ items: [(id: [UInt8], value: (image: ImageInput, text: TextInput))]) -> (PreparedImages, PreparedTexts) {
        prepare(items, truncate: texts.truncate)
    }

    public func prepare(_ items: [(id: [UInt8], value: (image: ImageInput, text: TextInput))], truncate: Bool) -> (PreparedImages, PreparedTexts) {
        let imgs = images.prepare(items.map { ($0.id, $0.value.image) })
        // Only the pairs whose image worked are embedded.
        let good = zip(items, imgs.failures).filter { $1 == nil }.map { ($0.0.id, $0.0.value.text) }
        return (imgs, texts.prepare(good, truncate: truncate))
    }

    public func encode(_ p: (PreparedImages, PreparedTexts)) throws -> EncodedBatch {
        let image = try images.encode(p.0)
        guard image.goodCount > 0 else { return EncodedBatch(rows: [], failures: image.failures) }
        let text = try texts.encode(p.1)
        // Pairs whose image worked, in order, are the texts' items: keep the image rows of those
        // whose text worked too, and give each pair its first failure.
        var failures = image.failures
        var imageRows: [Float] = []
        var k = 0
        for (i, f) in image.failures.enumerated() where f == nil {
            if let t = text.failures[k] {
                failures[i] = t
            } else {
                imageRows += image.rows[(k * images.dim)..<((k + 1) * images.dim)]
            }
            k += 1
        }
        let n = text.goodCount
        guard n > 0 else { return EncodedBatch(rows: [], failures: failures) }
        let fused = Fusion.concat(image: Tensor(shape: [n, images.dim], data: imageRows),
                                  text: Tensor(shape: [n, texts.dim], data: text.rows), normalizeParts: normalizeParts)
        return EncodedBatch(rows: fused.data, failures: failures)
    }
}

extension Dictionary {
    func mapKeys(_ f: (Key) -> Key) -> [Key: Value] { Dictionary(uniqueKeysWithValues: map { (f($0.key), $0.value) }) }
}

// MARK: - Projection

/// What finishing does to rows after the model's own normalisation: the PCA's projection (one
/// GEMM), --normalize-output, then the NaN/∞ check (rows holding NaN or infinity — finite rows
/// can overflow in the projection — become non_finite item errors unless allowed). The one
/// place for these steps: the embedding service's batches and `vlm pca apply`'s rows both end
/// here.
public struct RowFinishing {
    public let projection: PCAProjection?
    public let normalizeOutput: Bool
    public let allowNonFinite: Bool

    public init(projection: PCAProjection?, normalizeOutput: Bool, allowNonFinite: Bool) {
        (self.projection, self.normalizeOutput, self.allowNonFinite) = (projection, normalizeOutput, allowNonFinite)
    }

    /// A vector's width for rows of width `raw`.
    public func dim(_ raw: Int) -> Int { projection?.dimOut ?? raw }

    /// `batch`'s rows (each `raw` wide) finished; `ids` name the items in errors.
    public func apply(_ batch: EncodedBatch, width raw: Int, ids: [[UInt8]]) -> EncodedBatch {
        var b = batch
        if let projection, !b.rows.isEmpty { b.rows = projection.apply(centring: &b.rows, normalize: false) }
        let dim = dim(raw)
        if normalizeOutput { l2NormalizeRows(&b.rows, dim: dim) }
        return allowNonFinite ? b : b.rejectingNonFinite(dim: dim, ids: ids)
    }
}

/// Rows of a feature file projected by a PCA fitted with `vlm pca fit` and/or L2-normalised
/// (`--normalize-output`), finished as the service finishes its batches: `vlm pca apply`.
public final class ProjectedRowEncoder<Inner: RowEncoder>: RowEncoder {
    public let inner: Inner
    public let pca: PCAModel?
    let finishing: RowFinishing

    /// `pca` must take the inner encoder's rows (its dim_in equals their width).
    /// `rowsCentred`: the inner encoder gives its rows with the PCA's mean already subtracted.
    public init(_ inner: Inner, pca: PCAModel?, pcaName: String = "the PCA file", normalizeOutput: Bool, backend: any Backend,
                rowsCentred: Bool = false, allowNonFinite: Bool = false) throws {
        if let pca, pca.dimIn != inner.dim {
            throw InputError("\(pcaName): the PCA takes \(pca.dimIn)-d rows, but these rows are \(inner.dim)-d (fit it on features of this width)")
        }
        (self.inner, self.pca) = (inner, pca)
        finishing = RowFinishing(projection: pca?.projection(backend, rowsCentred: rowsCentred), normalizeOutput: normalizeOutput,
                                 allowNonFinite: allowNonFinite)
    }

    public var dim: Int { finishing.dim(inner.dim) }

    public var settings: [String: String] {
        var s = inner.settings
        // Only when set, so the fingerprints of jobs without them are what they were.
        if let pca { s["pca"] = pca.fileDigest ?? "fitted in memory" }
        if finishing.normalizeOutput { s["normalize_output"] = "true" }
        return s
    }

    public func prepare(_ items: [(id: [UInt8], value: Inner.Value)]) -> (Inner.Prepared, ids: [[UInt8]]) {
        (inner.prepare(items), items.map(\.id))
    }

    public func encode(_ p: (Inner.Prepared, ids: [[UInt8]])) throws -> EncodedBatch {
        finishing.apply(try inner.encode(p.0), width: inner.dim, ids: p.ids)
    }
}
