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

    /// `data`: the index's bytes when already read (else read from `indexPath`).
    public init(indexPath: String, data given: Data? = nil, open: (String) throws -> Checkpoint = { try Checkpoints.open($0) }) throws {
        path = indexPath
        func fail(_ m: String) -> TorchCheckpointError { TorchCheckpointError(indexPath, m) }
        guard let data = given ?? FileManager.default.contents(atPath: indexPath) else {
            throw IOError.cannotOpen(path: indexPath, reason: errno == ENOENT ? "no such file" : errnoMessage(errno))
        }
        guard data.count <= 64 << 20 else { throw fail("an index of \(data.count) bytes is not a checkpoint index (over 64 MiB)") }
        guard case .object(let top)? = JSONValue.parse(data) else { throw fail("not a JSON object (a sharded checkpoint's index)") }
        guard case .object(let map)? = top["weight_map"] else { throw fail("no \"weight_map\" object naming each tensor's shard") }
        guard !map.isEmpty else { throw fail("the weight_map is empty") }
        var shardOf: [String: String] = [:]
        for (tensor, v) in map {
            guard case .string(let file) = v else { throw fail("weight_map[\"\(tensor.prefix(100))\"] is \(v.typeName), not a shard's file name") }
            let parts = file.split(separator: "/", omittingEmptySubsequences: false)
            guard !file.isEmpty, parts.count == 1, file != ".", file != "..", !file.utf8.contains(0) else {
                throw fail("weight_map[\"\(tensor.prefix(100))\"] names \(jsonString(String(file.prefix(200)))): a shard must be a file beside the index")
            }
            shardOf[tensor] = file
        }
        let files = Set(shardOf.values).sorted()
        guard files.count <= Self.maxShards else { throw fail("\(files.count) shards, over the \(Self.maxShards) read") }
        let folder = (indexPath as NSString).deletingLastPathComponent
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
