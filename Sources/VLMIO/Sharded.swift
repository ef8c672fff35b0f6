// Sharded checkpoints as Hugging Face writes them (save_pretrained with max_shard_size):
// model.safetensors.index.json or pytorch_model.bin.index.json beside the shards, its
// "weight_map" naming the shard of every tensor. Read as one checkpoint: every shard is opened
// and validated by its own reader (safetensors header, torch zip with its CRC-32s), and the index
// must agree with the shards exactly — a shard missing, a tensor in two shards, a tensor the
// index places in a shard that lacks it, or one a shard holds that the index does not list, is an
// error naming the files. Format: transformers/modeling_utils.py (`load_sharded_checkpoint`).

import Foundation
import VLMCore

public final class ShardedCheckpoint: Checkpoint {
    /// The index file.
    public let path: String
    public let shards: [Checkpoint]
    public let tensorNames: [String]
    /// The shard of each tensor.
    private let owner: [String: Int]

    public var formatName: String {
        let kinds = Set(shards.map(\.formatName)).sorted().joined(separator: ", ")
        return "sharded, \(shards.count) shard\(shards.count == 1 ? "" : "s") (\(kinds))"
    }

    public var layoutNote: String? {
        let notes = Set(shards.compactMap(\.layoutNote)).sorted()
        return notes.isEmpty ? nil : notes.joined(separator: "; ")
    }

    /// Shards at most (each is a mapped file); the largest models ship a few hundred.
    static let maxShards = 4096
    /// The largest index read, and the most tensors it may name: the largest published
    /// checkpoints (about 100,000 tensors) have indexes of about 10 MB.
    public static let maxIndexBytes = 16 << 20
    public static let maxTensors = 262_144

    /// `data`: the index's bytes when already read (else read from `indexPath`).
    public init(indexPath: String, data given: Data? = nil, open: (String) throws -> Checkpoint = { try Checkpoints.openWeightsFile($0) }) throws {
        path = indexPath
        func fail(_ m: String) -> TorchCheckpointError { TorchCheckpointError(indexPath, m) }
        let data = try given ?? readSmallFile(indexPath, limit: Self.maxIndexBytes, what: "a sharded checkpoint's index")
        guard data.count <= Self.maxIndexBytes else {
            throw fail("an index of \(data.count) bytes is over the \(byteCount(UInt64(Self.maxIndexBytes))) a checkpoint index may hold")
        }
        // Each tensor is two values (its name and shard) in the weight map; counted before decoding.
        guard data.withUnsafeBytes({ StrictJSON.hasAtMost(2 * Self.maxTensors + 4096, valuesIn: $0) }) else {
            throw fail("the weight_map names more than the \(Self.maxTensors) tensors a checkpoint may hold")
        }
        guard case .object(let top)? = JSONValue.parse(data) else { throw fail("not a JSON object (a sharded checkpoint's index)") }
        guard case .object(let map)? = top["weight_map"] else { throw fail("no \"weight_map\" object naming each tensor's shard") }
        guard !map.isEmpty else { throw fail("the weight_map is empty") }
        guard map.count <= Self.maxTensors else { throw fail("the weight_map names \(map.count) tensors, over the \(Self.maxTensors) a checkpoint may hold") }
        var shardOf: [String: String] = [:]
        for (tensor, v) in map {
            guard case .string(let file) = v else { throw fail("weight_map[\"\(tensor.prefix(100))\"] is \(v.typeName), not a shard's file name") }
            let parts = file.split(separator: "/", omittingEmptySubsequences: false)
            guard !file.isEmpty, parts.count == 1, file != ".", file != "..", !file.utf8.contains(0) else {
                throw fail("weight_map[\"\(tensor.prefix(100))\"] names \(jsonString(String(file.prefix(200)))): a shard must be a file beside the index")
            }
            guard !file.hasSuffix(".json") else {
                throw fail("weight_map[\"\(tensor.prefix(100))\"] names \(jsonString(String(file.prefix(200)))), an index or JSON file: a shard must be a weights file (safetensors or torch.save)")
            }
            shardOf[tensor] = file
        }
        let files = Set(shardOf.values).sorted()
        guard files.count <= Self.maxShards else { throw fail("\(files.count) shards, over the \(Self.maxShards) read") }
        let folder = parentPath(indexPath)
        var opened: [Checkpoint] = []
        var owner: [String: Int] = [:]
        var names: [String] = []
        for (k, file) in files.enumerated() {
            let shardPath = (folder as NSString).appendingPathComponent(file)
            guard FileStatus.of(shardPath) != nil else { throw fail("names the shard '\(file)', which is missing") }
            let shard = try open(shardPath)
            if shard is ShardedCheckpoint { throw fail("the shard '\(file)' is itself an index") }
            for name in shard.tensorNames {
                if let other = owner[name] {
                    throw fail("tensor '\(name)' is in two shards, '\(files[other])' and '\(file)'")
                }
                owner[name] = k
                names.append(name)
            }
            opened.append(shard)
        }
        // Then the index against what the shards hold.
        for name in names {
            let file = files[owner[name]!]
            guard let listed = shardOf[name] else { throw fail("the shard '\(file)' holds tensor '\(name)', which the index does not list") }
            guard listed == file else { throw fail("the shard '\(file)' holds tensor '\(name)', which the index places in '\(listed)'") }
        }
        if let lost = shardOf.keys.sorted().first(where: { owner[$0] == nil }) {
            throw fail("the index places tensor '\(lost)' in '\(shardOf[lost]!)', which does not hold it")
        }
        shards = opened
        self.owner = owner
        tensorNames = names
    }

    private func shard(_ name: String) -> Checkpoint? { owner[name].map { shards[$0] } }

    public func dtype(of name: String) -> DType? { shard(name)?.dtype(of: name) }
    public func shape(of name: String) -> [Int]? { shard(name)?.shape(of: name) }

    public func floatTensor(_ name: String) throws -> Tensor {
        guard let s = shard(name) else { throw TorchCheckpointError(path, "no tensor '\(name)'") }
        return try s.floatTensor(name)
    }

    public func storedBytes(_ name: String) throws -> Data {
        guard let s = shard(name) else { throw TorchCheckpointError(path, "no tensor '\(name)'") }
        return try s.storedBytes(name)
    }
}

// MARK: - A checkpoint saved inside a wrapper module

/// The first key component every tensor name shares ("backbone." for `backbone.conv1.weight`,
/// `backbone.fc.bias`, …); nil when the names do not all share one.
public func sharedKeyPrefix(_ names: [String]) -> String? {
    guard let first = names.first, let dot = first.firstIndex(of: ".") else { return nil }
    let prefix = String(first[...dot])
    return names.allSatisfy { $0.hasPrefix(prefix) && $0.count > prefix.count } ? prefix : nil
}

/// A checkpoint read with one key prefix removed from every name (a model saved inside a
/// wrapper: `backbone.`, `model.`, `encoder.`, DataParallel's `module.` in safetensors).
public final class PrefixStrippedCheckpoint: Checkpoint {
    public let base: Checkpoint
    public let prefix: String
    public let tensorNames: [String]

    public init(_ base: Checkpoint, prefix: String) {
        precondition(base.tensorNames.allSatisfy { $0.hasPrefix(prefix) })
        self.base = base
        self.prefix = prefix
        tensorNames = base.tensorNames.map { String($0.dropFirst(prefix.count)) }
    }

    public var path: String { base.path }
    public var formatName: String { base.formatName }
    public var layoutNote: String? {
        ((base.layoutNote.map { [$0] } ?? []) + ["the '\(prefix)' prefix every key carried removed"]).joined(separator: "; ")
    }
    public func dtype(of name: String) -> DType? { base.dtype(of: prefix + name) }
    public func shape(of name: String) -> [Int]? { base.shape(of: prefix + name) }
    public func floatTensor(_ name: String) throws -> Tensor { try base.floatTensor(prefix + name) }
    public func storedBytes(_ name: String) throws -> Data { try base.storedBytes(prefix + name) }
}
