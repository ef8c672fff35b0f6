// The one scoped weight reader every model loads through (after candle's VarBuilder): a reader
import Foundation
// carries a key prefix, `pp("layer1").pp("0")` scopes it, and `tensor("conv1.weight", …)` asks for
// the checkpoint key "layer1.0.conv1.weight". Missing tensors, wrong shapes and — after loading —
// unused tensors are distinct errors naming the file and the key.

import VLMCore
import VLMIO

/// Where named tensors come from: a safetensors file, or an in-memory state (synthetic weights).
public protocol TensorSource: AnyObject {
    var sourceName: String { get }
    var keys: [String] { get }
    func shape(of key: String) -> [Int]?
    func floatTensor(_ key: String) throws -> Tensor
    /// The name `key` has (or would have) in the file, for messages: a source that renames
    /// keys (DistilBERT's layers read as BERT's) names the file's own.
    func checkpointName(of key: String) -> String
}

extension TensorSource {
    public func checkpointName(of key: String) -> String { key }
}

extension SafetensorsFile: TensorSource {
    public var sourceName: String { path }
    public var keys: [String] { names }
}

extension TorchCheckpoint: TensorSource {
    public var sourceName: String { path }
    public var keys: [String] { tensorNames }
}

/// A checkpoint of either kind, as a tensor source: safetensors, or a torch.save file. When
/// every key carries one wrapper prefix (`backbone.conv1.weight`: a model saved inside another
/// module) and the keys without it are a layout vlm knows, the prefix is removed (its
/// `layoutNote` says so).
public func openWeights(_ path: String) throws -> any TensorSource & Checkpoint {
    let c = try Checkpoints.open(path)
    if !isKnownLayout(c.tensorNames) {
        // One wrapper or a few nested ones (`model.backbone.`, `module.module.`).
        var prefix = "", names = c.tensorNames
        for _ in 0..<3 {
            guard let p = sharedKeyPrefix(names) else { break }
            prefix += p
            names = names.map { String($0.dropFirst(p.count)) }
            if isKnownLayout(names) { return PrefixStrippedCheckpoint(c, prefix: prefix) }
        }
    }
    if let s = c as? SafetensorsFile { return s }
    if let s = c as? ShardedCheckpoint { return s }
    return c as! TorchCheckpoint
}

/// Runs `load` on `source`; a missing tensor in a checkpoint whose every key shares a prefix
/// the tensor lacks says so (the prefix was not removed: without it the keys are no model vlm
/// knows either).
public func explainingSharedPrefix<T>(_ source: TensorSource, _ load: () throws -> T) throws -> T {
    do {
        return try load()
    } catch let WeightError.missingTensor(name, key) {
        guard let prefix = sharedKeyPrefix(source.keys), !key.hasPrefix(prefix) else { throw WeightError.missingTensor(source: name, key: key) }
        throw WeightError.unrecognized(source: name, reason: "missing tensor '\(key)': every key in it starts with '\(prefix)', and without that prefix the keys are not a model vlm knows either")
    }
}

/// Whether `keys` hold the root of a model vlm runs: a torchvision/timm ResNet, or a BERT-family
/// encoder (bare, under `bert.`, or DistilBERT's).
func isKnownLayout(_ keys: [String]) -> Bool {
    let set = Set(keys)
    if set.contains("conv1.weight") && set.contains("layer1.0.conv1.weight") { return true }
    return ["embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight", "distilbert.embeddings.word_embeddings.weight"]
        .contains(where: set.contains)
}

extension ShardedCheckpoint: TensorSource {
    public var sourceName: String { path }
    public var keys: [String] { tensorNames }
}

extension PrefixStrippedCheckpoint: TensorSource {
    public var sourceName: String { path }
    public var keys: [String] { tensorNames }
}

/// The weights file in a model folder: model.safetensors; else pytorch_model.bin (Hugging Face's
/// torch.save file); else a sharded checkpoint's index (model.safetensors.index.json, then
/// pytorch_model.bin.index.json); else the folder's one .pth or .pt file. Anything else is an
/// error saying what was found.
public func weightsInFolder(_ folder: String) throws -> String {
    func p(_ name: String) -> String { (folder as NSString).appendingPathComponent(name) }
    for name in ["model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json"]
    where FileStatus.of(p(name)) != nil { return p(name) }
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
    let torch = names.filter { ($0.hasSuffix(".pth") || $0.hasSuffix(".pt")) && !$0.hasPrefix(".") }
    if torch.count == 1 { return p(torch[0]) }
    if torch.count > 1 {
        throw WeightError.unrecognized(source: folder, reason: "\(torch.count) checkpoints in this folder (\(torch.prefix(4).joined(separator: ", "))\(torch.count > 4 ? ", …" : "")); pass --model with the one to use")
    }
    if let index = names.first(where: { $0.hasSuffix(".index.json") }) {
        throw WeightError.unrecognized(source: folder, reason: "\(index) is not a sharded checkpoint's index vlm knows (model.safetensors.index.json or pytorch_model.bin.index.json); pass --model with the index file")
    }
    let kinds: [(suffix: String, what: String)] = [(".h5", "TensorFlow/Keras HDF5"), (".keras", "Keras"), (".onnx", "ONNX"),
                                                   (".msgpack", "Flax"), (".gguf", "GGUF"), (".tflite", "TensorFlow Lite"), (".pb", "TensorFlow")]
    let foreign = names.compactMap { n in kinds.first { n.lowercased().hasSuffix($0.suffix) }.map { "\(n) (\($0.what))" } }
    if !foreign.isEmpty {
        throw WeightError.unrecognized(source: folder, reason: "holds \(foreign.prefix(3).joined(separator: ", ")), which vlm does not read; it reads model.safetensors, pytorch_model.bin or a .pth/.pt checkpoint (convert the weights to safetensors first)")
    }
    throw WeightError.unrecognized(source: folder, reason: "no model.safetensors, pytorch_model.bin or .pth/.pt checkpoint in this folder")
}

/// A state dict held in memory.
public final class MemoryTensorSource: TensorSource {
    public let sourceName: String
    public private(set) var state: [String: Tensor]
    public private(set) var keys: [String]

    public init(name: String, state: [String: Tensor], order: [String]? = nil) {
        sourceName = name
        self.state = state
        keys = order ?? state.keys.sorted()
    }

    public func shape(of key: String) -> [Int]? { state[key]?.shape }
    public func floatTensor(_ key: String) throws -> Tensor {
        guard let t = state[key] else { throw WeightError.missingTensor(source: sourceName, key: key) }
        return t
    }
}

public enum WeightError: VLMError, Equatable {
    /// "[768, ?]" for an expected shape with free dimensions.
    public static func shapeText(_ e: [Int?]) -> String {
        "[" + e.map { $0.map(String.init) ?? "?" }.joined(separator: ", ") + "]"
    }

    case missingTensor(source: String, key: String)
    case shapeMismatch(source: String, key: String, expected: [Int?], got: [Int])
    case unusedTensors(source: String, keys: [String])
    case unrecognized(source: String, reason: String)
    case nonFinite(source: String, key: String, count: Int)

    public var description: String {
        switch self {
        case let .missingTensor(s, k):
            return "\(s): missing tensor '\(k)'"
        case let .shapeMismatch(s, k, e, g):
            return "\(s): tensor '\(k)' has shape \(g), expected \(WeightError.shapeText(e))"
        case let .unusedTensors(s, ks):
            let shown = ks.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
            return "\(s): \(ks.count) tensor\(ks.count == 1 ? "" : "s") not used by the model: \(shown)\(ks.count > 5 ? ", …" : "")"
        case let .unrecognized(s, r):
            return "\(s): \(r)"
        case let .nonFinite(s, k, n):
            return "\(s): tensor '\(k)' holds \(n) NaN or infinite value\(n == 1 ? "" : "s") (a damaged or diverged checkpoint; --allow-nonfinite loads it anyway)"
        }
    }
}

/// Tracks which keys of a source the model consumed.
public final class WeightStore {
    public let source: TensorSource
    public private(set) var used: Set<String> = []
    /// When false (the default), a tensor holding NaN or ±infinity is an error naming it.
    public let allowNonFinite: Bool

    public init(_ source: TensorSource, allowNonFinite: Bool = false) {
        self.source = source
        self.allowNonFinite = allowNonFinite
    }

    public var root: WeightReader { WeightReader(store: self, prefix: "") }

    /// Marks keys the model deliberately ignores (e.g. BatchNorm's num_batches_tracked).
    public func ignore(where predicate: (String) -> Bool) {
        for k in source.keys where predicate(k) { used.insert(k) }
    }

    /// Throws `unusedTensors` when some key was never read nor ignored.
    public func checkAllUsed() throws {
        let unused = source.keys.filter { !used.contains($0) }
        if !unused.isEmpty { throw WeightError.unusedTensors(source: source.sourceName, keys: unused.map(source.checkpointName)) }
    }

    fileprivate func fetch(_ key: String, expected: [Int?]) throws -> Tensor {
        guard let shape = source.shape(of: key) else {
            throw WeightError.missingTensor(source: source.sourceName, key: source.checkpointName(of: key))
        }
        let fits = shape.count == expected.count && zip(shape, expected).allSatisfy { $1 == nil || $0 == $1 }
        if !fits { throw WeightError.shapeMismatch(source: source.sourceName, key: source.checkpointName(of: key), expected: expected, got: shape) }
        if shape.contains(0) {
            throw WeightError.unrecognized(source: source.sourceName, reason: "tensor '\(key)' has shape \(shape): an empty dimension, no layer can be made of it")
        }
        used.insert(key)
        let t = try source.floatTensor(key)
        if !allowNonFinite {
            let bad = t.data.withUnsafeBufferPointer { b in b.reduce(0) { $0 + ($1.isFinite ? 0 : 1) } }
            if bad > 0 { throw WeightError.nonFinite(source: source.sourceName, key: key, count: bad) }
        }
        return t
    }
}

/// A view of a `WeightStore` under a key prefix.
public struct WeightReader {
    public let store: WeightStore
    public let prefix: String

    /// The reader for the sub-module `name`.
    public func pp(_ name: String) -> WeightReader {
        WeightReader(store: store, prefix: key(name))
    }

    public func key(_ name: String) -> String { prefix.isEmpty ? name : prefix + "." + name }

    public func contains(_ name: String) -> Bool { store.source.shape(of: key(name)) != nil }

    public func shape(of name: String) -> [Int]? { store.source.shape(of: key(name)) }

    /// The tensor `name`; `expected` is its shape, nil where any size is accepted.
    public func tensor(_ name: String, _ expected: [Int?]) throws -> Tensor {
        try store.fetch(key(name), expected: expected)
    }

    /// The tensor `name` with exactly `expected` shape.
    public func tensor(_ name: String, exact expected: [Int]) throws -> Tensor {
        try store.fetch(key(name), expected: expected.map { $0 })
    }
}
