// What defines a vector space: the models (by the SHA-256 of the files that make them) and every
// resolved option that changes a vector. Two feature files may be merged or projected together
// only when their spaces agree; everything else about a job — paths, batch limits, threads,
// the vlm version — is reported, never refused. A job writes its space into <output>.meta.json.

import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMModels

/// The vector space a feature file's rows live in.
public struct VectorSpace: Codable, Equatable, Sendable {
    /// One model's part: what it embeds ("image", "text"; later one checkpoint for both
    /// towers, a reranker), its name, and the SHA-256 of each file that makes it.
    public struct Model: Codable, Equatable, Sendable {
        public var role: String
        /// The checkpoint file's or folder's last path component, or a synthetic spec.
        public var name: String
        /// The weights' SHA-256 (of the weights file; for a sharded checkpoint, of its shards'
        /// digests in order; for synthetic weights, the spec).
        public var sha256: String
        /// Every file read to make the model (weights, config, tokenizer), by name.
        public var files: [String: String]

        public init(role: String, name: String, sha256: String, files: [String: String]) {
            (self.role, self.name, self.sha256, self.files) = (role, name, sha256, files)
        }
    }

    /// What an item is: image, text, pair.
    public var kind: String
    public var models: [Model]
    /// Every resolved option that changes a vector (layer, preprocessing, draft, pooling,
    /// normalisation, max length, normalize_parts, the PCA file's SHA-256, normalize_output),
    /// and later a prompt or an index.
    public var options: [String: String]
    public var dim: Int

    public init(kind: String, models: [Model], options: [String: String], dim: Int) {
        (self.kind, self.models, self.options, self.dim) = (kind, models, options, dim)
    }

    /// How `other` differs from this space, in words ("" when they agree): each disagreeing part
    /// as "name: mine vs theirs".
    public func differences(from other: VectorSpace) -> [String] {
        var out: [String] = []
        if kind != other.kind { out.append("kind: \(kind) vs \(other.kind)") }
        if dim != other.dim { out.append("dimension: \(dim) vs \(other.dim)") }
        let mine = Dictionary(models.map { ($0.role, $0) }, uniquingKeysWith: { a, _ in a })
        let theirs = Dictionary(other.models.map { ($0.role, $0) }, uniquingKeysWith: { a, _ in a })
        for role in Set(mine.keys).union(theirs.keys).sorted() {
            switch (mine[role], theirs[role]) {
            case let (a?, b?):
                if a.sha256 != b.sha256 {
                    out.append("\(role) model weights: \(a.name) sha256 \(a.sha256.prefix(12))… vs \(b.name) sha256 \(b.sha256.prefix(12))…")
                } else if a.files != b.files {
                    let names = Set(a.files.keys).union(b.files.keys).sorted().filter { a.files[$0] != b.files[$0] }
                    out.append("\(role) model files differ: \(names.joined(separator: ", "))")
                }
            case let (a?, nil): out.append("\(role) model: \(a.name) vs none")
            case let (nil, b?): out.append("\(role) model: none vs \(b.name)")
            default: break
            }
        }
        for key in Set(options.keys).union(other.options.keys).sorted() where options[key] != other.options[key] {
            out.append("\(key): \(options[key] ?? "unset") vs \(other.options[key] ?? "unset")")
        }
        return out
    }
}

/// A job's encoder that knows the space of its rows.
public protocol DescribesSpace {
    func vectorSpace() throws -> VectorSpace
}

extension EmbeddingService {
    /// The space of `kind`'s vectors: the models' file digests (hashed once per file version,
    /// `DigestCache`) and the resolved options. `preprocessed`: images come as tensors already
    /// preprocessed (embed-image --input-npy), so the preprocessing options are not the service's.
    public func space(_ kind: ItemKind, preprocessed: Bool = false) throws -> VectorSpace {
        var models: [VectorSpace.Model] = []
        var options: [String: String] = [:]
        func image(layer: ImageLayer, prefix: String) throws {
            models.append(try Self.modelFiles(role: "image", spec: description.image.model, defaultName: defaultResNetName, text: false))
            options[prefix + "layer"] = layer.rawValue
            if preprocessed {
                options[prefix + "input"] = "preprocessed"
            } else {
                let p = try preprocessing()
                (options[prefix + "resize"], options[prefix + "crop"]) = ("\(p.resize)", "\(p.crop)")
                (options[prefix + "mean"], options[prefix + "std"]) = ("\(p.mean)", "\(p.std)")
                if p.filter != .bilinear { options[prefix + "filter"] = p.filter.rawValue }
                options[prefix + "draft"] = "\(description.image.draft)"
            }
        }
        func text(_ t: TextRowEncoder, prefix: String) throws {
            models.append(try Self.modelFiles(role: "text", spec: description.text.model, defaultName: defaultTextModelName, text: true))
            options[prefix + "pooling"] = t.poolingName
            options[prefix + "normalize"] = "\(try textNormalize())"
            options[prefix + "max_length"] = "\(t.maxLength)"
        }
        switch kind {
        case .image: try image(layer: description.image.layer, prefix: "")
        case .text: try text(texts(), prefix: "")
        case .pair:
            try image(layer: description.image.pairLayer, prefix: "image_")
            try text(pairs().texts, prefix: "text_")
            options["normalize_parts"] = "\(description.normalizeParts)"
        }
        return VectorSpace(kind: kind.rawValue, models: models, options: withFinishing(kind, options), dim: try dim(kind))
    }

    /// A model's files and their digests: the weights (a sharded checkpoint's index and shards),
    /// and for a text model folder its config and tokenizer files (a CLIP checkpoint's too, for
    /// either tower: its image and text rows name the same weights' digest).
    static func modelFiles(role: String, spec: String?, defaultName: String, text: Bool) throws -> VectorSpace.Model {
        let resolved = resolveModelSpec(spec, defaultName: defaultName)
        if resolved.hasPrefix("synthetic:") { return VectorSpace.Model(role: role, name: resolved, sha256: resolved, files: [:]) }
        let clip = isCLIPModel(resolved)
        let text = text || clip
        let folder: String
        let weights: String
        if clip {
            let files = try locateCLIP(resolved)
            folder = files.folder
            weights = files.weightsPath
        } else if FileStatus.of(resolved)?.kind == .directory {
            folder = resolved
            weights = try weightsInFolder(resolved)
        } else {
            folder = (resolved as NSString).deletingLastPathComponent
            weights = resolved
        }
        func name(_ path: String) -> String {
            path.hasPrefix(folder + "/") ? String(path.dropFirst(folder.count + 1)) : (path as NSString).lastPathComponent
        }
        var files: [String: String] = [:]
        var shards: [String] = []
        if weights.hasSuffix(".index.json"), let data = FileManager.default.contents(atPath: weights),
           let index = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let map = index["weight_map"] as? [String: String] {
            let dir = (weights as NSString).deletingLastPathComponent
            shards = Set(map.values).sorted().map { (dir as NSString).appendingPathComponent($0) }
        }
        var sha: String
        if shards.isEmpty {
            sha = try DigestCache.sha256(ofFile: weights)
            files[name(weights)] = sha
        } else {
            var all = SHA256()
            for s in shards {
                let d = try DigestCache.sha256(ofFile: s)
                files[name(s)] = d
                all.update(d)
            }
            sha = all.finalizeHex()
        }
        if text {
            for f in ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "open_clip_config.json",
                      "preprocessor_config.json"] {
                let p = (folder as NSString).appendingPathComponent(f)
                if FileStatus.of(p)?.kind == .regular { files[f] = try DigestCache.sha256(ofFile: p) }
            }
        }
        // --clip-config's architecture decides the vectors as a config file would.
        if let (arch, _) = CLIPCheckpointFiles.configured(resolved) { files["clip_config"] = arch }
        let shown = FileStatus.of(resolved)?.kind == .directory ? (resolved as NSString).lastPathComponent : name(weights)
        return VectorSpace.Model(role: role, name: shown, sha256: sha, files: files)
    }
}
