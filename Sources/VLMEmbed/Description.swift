// What an embedding service is built from: the models and every option that changes a vector,
// as plain Codable data — not closures over flags. `vlm worker` and `vlm serve` build theirs
// from their flags; /info and the worker's info answer show it as JSON.

import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMImage
import VLMModels

extension Pooling: Codable {}

/// The models and the options that decide a vector. A nil option takes what the model
/// declares (its preprocessing, its sentence-transformers pooling, normalisation and length).
public struct EmbeddingDescription: Codable, Equatable, Sendable {
    public struct Image: Codable, Equatable, Sendable {
        /// A ResNet checkpoint (folder, .safetensors, .pth/.pt/.bin, synthetic:NAME) or a CLIP
        /// checkpoint folder; nil: models/resnet50.
        public var model: String?
        /// The output of image items: pooled features or logits.
        public var layer: ImageLayer = .pooled
        /// The image part of image–text pairs.
        public var pairLayer: ImageLayer = .pooled
        public var resize: Int?
        public var crop: Int?
        public var mean: [Float]?
        public var std: [Float]?
        /// Images with more pixels than this are refused (decompression bombs).
        public var maxPixels: UInt64 = ImageDecoder.defaultMaxPixels
        /// JPEGs decoded at the reduced DCT scale Pillow's draft picks.
        public var draft = false
        /// Images (and pairs) per forward pass.
        public var batchSize = 16
        /// L2-normalise each image vector (before any projection); nil: yes for CLIP, no for a ResNet.
        public var normalize: Bool?

        public init(model: String? = nil) { self.model = model }

        /// The preprocessing in force: these options, else what the model declares (its
        /// registry entry or preprocess.json; a CLIP folder's config: its image size, mean and
        /// std, CLIP's own when it names none, and Pillow's bicubic filter; not looked up when
        /// `lookUp` is false), else torchvision's V1 defaults (256, 224, ImageNet).
        public func preprocessing(lookUp: Bool = true) throws -> Preprocessing {
            let complete = resize != nil && crop != nil && mean != nil && std != nil
            if lookUp, let model, isCLIPModel(model) {
                let files = try locateCLIP(model)
                let size = files.preprocessCrop ?? files.imageSize ?? 224
                var p = Preprocessing(resize: resize ?? files.preprocessResize ?? size, crop: crop ?? size,
                                      mean: mean ?? files.preprocessMean ?? Preprocessing.clipMean,
                                      std: std ?? files.preprocessStd ?? Preprocessing.clipStd,
                                      filter: ResampleFilter(rawValue: files.preprocessFilter) ?? .bicubic)
                // open_clip's transform converts to RGB after the resize and crop; transformers'
                // CLIPImageProcessor converts first (convert_rgb), as torchvision's pipeline does.
                p.convertAfterResize = files.layout == .openCLIP
                p.squash = files.preprocessSquash
                try check(p)
                return p
            }
            let declared = complete || !lookUp ? nil : try declaredPreprocess(model)?.0
            let p = Preprocessing(resize: resize ?? declared?.resize ?? 256, crop: crop ?? declared?.crop ?? 224,
                                  mean: mean ?? declared?.mean ?? Preprocessing.imagenetMean, std: std ?? declared?.std ?? Preprocessing.imagenetStd)
            try check(p)
            return p
        }

        func check(_ p: Preprocessing) throws {
            let (pixels, overflow) = UInt64(p.crop).multipliedReportingOverflow(by: UInt64(p.crop))
            if overflow || pixels > maxPixels {
                throw OptionError("crop \(p.crop) makes \(overflow ? "more than 2^64" : "\(pixels)")-pixel images, over --max-pixels \(maxPixels)")
            }
        }
    }

    public struct Text: Codable, Equatable, Sendable {
        /// A BERT-family model folder; nil: models/all-MiniLM-L6-v2.
        public var model: String?
        public var pooling: Pooling?
        /// L2-normalise each text vector (before any projection).
        public var normalize: Bool?
        /// Tokens a text is cut to, [CLS] and [SEP] included.
        public var maxLength: Int?
        /// Texts per forward pass (packed by length).
        public var batchSize = TextEncoder.defaultBatchSize
        /// Tokens per forward pass.
        public var batchTokens = TextEncoder.defaultBatchTokens
        /// Over-long texts are cut to the maximum length (nil: yes); false: they fail as too_long.
        public var truncate: Bool?

        public init(model: String? = nil) { self.model = model }
    }

    public var image = Image()
    public var text = Text()
    /// L2-normalise the image part and the text part of a pair before concatenating.
    public var normalizeParts = false
    /// A PCA file (`vlm pca fit`) every vector it fits is projected by, after the model's normalisation.
    public var pca: String?
    /// L2-normalise every vector last (after the projection).
    public var normalizeOutput = false
    /// Weights holding NaN or infinity load, and vectors holding them are given instead of
    /// refused as item errors of kind non_finite.
    public var allowNonFinite = false

    public init() {}

    /// As JSON (snake_case keys, as every answer of vlm's), for /info, the worker's info
    /// answer and output descriptions.
    public var json: JSONValue { (try? Self.encoder.encode(self)).flatMap { JSONValue.parse($0) } ?? .null }

    public static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.keyEncodingStrategy = .convertToSnakeCase
        return e
    }

    public static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }

    /// The same with every path cut to its last component (a server's clients need not see its
    /// folders).
    public var withoutFolders: EmbeddingDescription {
        var d = self
        func last(_ p: String?) -> String? { p.map { ($0 as NSString).lastPathComponent } }
        (d.image.model, d.text.model, d.pca) = (last(image.model), last(text.model), last(pca))
        return d
    }
}

/// The kinds of item a service embeds.
public enum ItemKind: String, Codable, CaseIterable, Sendable {
    case image, text, pair
}

/// One item to embed.
public enum EmbedItem: Sendable {
    case image(ImageInput)
    case text(TextInput)
    /// Image vector ⧺ text vector.
    case pair(ImageInput, TextInput)

    public var kind: ItemKind {
        switch self {
        case .image: return .image
        case .text: return .text
        case .pair: return .pair
        }
    }
}
