// PyTorch checkpoints without Python: both formats torch.save writes, read through the
// restricted unpickler (Pickle.swift), never executed.
//   zip (torch ≥ 1.6): <prefix>/data.pkl, <prefix>/data/<key> storages (stored, aligned),
//       <prefix>/byteorder, <prefix>/version — read in place from a memory mapping.
//   legacy (_use_new_zipfile_serialization=False, torch < 1.6): five pickles in a row (magic
//       number, protocol version, sys info, the object, the storage keys), then each storage as an
//       8-byte element count and its raw bytes, in the order of the keys.
// The state dict may be wrapped ({"state_dict": …}, {"model": …}) and its keys may carry
// DataParallel's "module." prefix.
//   TorchScript (torch.jit.save, what OpenAI's CLIP releases are): the same zip, with code/ and
//       constants.pkl beside data.pkl, whose root is the module as inert objects (Pickle.swift);
//       its tensors are named by their attribute paths, as the module's state_dict() names them.
//       The code is never read. The `version` entry (torch's file format version) is checked.
// Tensors are windows (offset, sizes, strides) on storages that
// several tensors may share; every window is checked against its storage. Format:
// torch/serialization.py (`_save`, `_legacy_save`, `_load`, `_legacy_load`).

import Foundation
import VLMCore

/// A file of named tensors: safetensors or a torch checkpoint.
public protocol Checkpoint: AnyObject {
    var path: String { get }
    /// "safetensors", "torch zip (torch.save)", …
    var formatName: String { get }
    /// Tensor names in the order the file holds them.
    var tensorNames: [String] { get }
    func dtype(of name: String) -> DType?
    func shape(of name: String) -> [Int]?
    /// The tensor converted to Float32 (float dtypes only).
    func floatTensor(_ name: String) throws -> Tensor
    /// The tensor's elements, contiguous and little-endian, in its own dtype.
    func storedBytes(_ name: String) throws -> Data
    /// How the tensors were found, when not at the top level ("under 'state_dict'; 'module.' removed").
    var layoutNote: String? { get }
}

extension SafetensorsFile: Checkpoint {
    public var formatName: String { "safetensors" }
    public var tensorNames: [String] { names }
    public func dtype(of name: String) -> DType? { tensors[name]?.dtype }
    public func shape(of name: String) -> [Int]? { tensors[name]?.shape }
    public var layoutNote: String? { nil }
}

public enum Checkpoints {
    /// Opens `path` by what its bytes are: a zip archive or a pickle is a torch checkpoint,
    /// anything else is read as safetensors (whose errors then explain what is wrong); an
    /// `….index.json` is a sharded checkpoint's index.
    public static func open(_ path: String) throws -> Checkpoint {
        if path.hasSuffix(".index.json") { return try ShardedCheckpoint(indexPath: path) }
        return try openWeightsFile(path)
    }

    /// One file of tensors, never an index: what a sharded checkpoint's index may name (an
    /// index naming an index, itself included, would recurse without end).
    public static func openWeightsFile(_ path: String) throws -> Checkpoint {
        let file = try MappedFile(path: path)
        if let kind = file.withBytes(TorchCheckpoint.format(of:)) {
            if kind == .zip, let other = file.withBytes({ foreignZip($0, path: path) }) { throw TorchCheckpointError(path, other) }
            return try TorchCheckpoint(file: file, format: kind)
        }
        if let other = file.withBytes({ foreignFormat($0, path: path) }) { throw TorchCheckpointError(path, other) }
        return try SafetensorsFile(path: path)
    }

    /// What a file vlm does not read is, by its first bytes (and, for ONNX's protobuf, which has
    /// no magic, its name or the shape of its first fields): nil when it may be safetensors.
    static func foreignFormat(_ b: UnsafeRawBufferPointer, path: String) -> String? {
        func starts(_ magic: [UInt8], at offset: Int = 0) -> Bool {
            b.count >= offset + magic.count && zip(b[offset..<(offset + magic.count)], magic).allSatisfy { $0 == $1 }
        }
        let unsupported = "vlm reads safetensors and torch.save checkpoints only"
        if starts([0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) {
            return "an HDF5 file (TensorFlow's tf_model.h5 or a Keras .h5 model), not a checkpoint vlm reads; \(unsupported): load it in transformers with from_tf=True and save_pretrained, or convert it to safetensors"
        }
        if b.count >= 262 && Array(b[257..<262]) == Array("ustar".utf8) {
            return "a tar-format checkpoint (torch before 0.4) is not supported; load it in PyTorch and save it again with torch.save"
        }
        if starts(Array("GGUF".utf8)) { return "a GGUF file (llama.cpp), not a checkpoint vlm reads; \(unsupported)" }
        if starts(Array("TFL3".utf8), at: 4) { return "a TensorFlow Lite model, not a checkpoint vlm reads; \(unsupported)" }
        if starts([0x93] + Array("NUMPY".utf8)) { return "a NumPy .npy array, not a checkpoint; \(unsupported)" }
        // ONNX's ModelProto: field 1 (ir_version, a small varint) first, then another field.
        let onnxShaped = b.count >= 4 && b[0] == 0x08 && (1...15).contains(b[1]) && [0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42].contains(b[2])
        let lower = path.lowercased()
        if onnxShaped || lower.hasSuffix(".onnx") {
            return "an ONNX model, not a checkpoint vlm reads; \(unsupported): export the PyTorch model's state_dict with torch.save or safetensors instead"
        }
        if lower.hasSuffix(".pb") || lower.hasSuffix(".tflite") || lower.hasSuffix(".msgpack") {
            return "a \(lower.hasSuffix(".msgpack") ? "Flax (msgpack)" : "TensorFlow") model file, not a checkpoint vlm reads; \(unsupported)"
        }
        return nil
    }

    /// A zip that is not torch.save's: a Keras 3 .keras archive, a NumPy .npz.
    static func foreignZip(_ b: UnsafeRawBufferPointer, path: String) -> String? {
        guard let zip = try? ZipArchive(bytes: b, path: path) else { return nil }
        let names = Set(zip.entries.map(\.name))
        if names.contains("model.weights.h5") || (names.contains("metadata.json") && names.contains("config.json") && !names.contains(where: { $0.hasSuffix("data.pkl") })) {
            return "a Keras .keras archive, not a checkpoint vlm reads; vlm reads safetensors and torch.save checkpoints only"
        }
        if !names.isEmpty && names.allSatisfy({ $0.hasSuffix(".npy") }) {
            return "a NumPy .npz archive, not a checkpoint; vlm reads safetensors and torch.save checkpoints only"
        }
        return nil
    }
}

public struct TorchCheckpointError: VLMError, Equatable {
    public let description: String
    public init(_ path: String, _ message: String) { description = "\(path): \(message)" }
}

public struct TorchTensorInfo: Equatable, Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let strides: [Int]
    /// Element offset from the start of the storage's bytes.
    public let offset: Int
    public let storageKey: String
    public var count: Int { shape.reduce(1, *) }

    /// Row-major with no gaps (sizes of 1 may have any stride).
    public var isContiguous: Bool {
        if shape.contains(0) { return true }
        var expected = 1
        for (d, s) in zip(shape, strides).reversed() where d != 1 {
            if s != expected { return false }
            let (e, o) = expected.multipliedReportingOverflow(by: d)
            if o { return false }
            expected = e
        }
        return true
    }
}

public final class TorchCheckpoint: Checkpoint {
    public enum Format: String, Sendable { case zip, legacy, torchScript }

    /// TorchScript archives' file format versions read: 3 is what torch 1.6–1.7 wrote (OpenAI's
    /// CLIP files), 4–10 later ones (torch 2.x writes 4 here — tested, as are archives rewritten
    /// with version 3); 1–2 were the model.json format, without data.pkl.
    public static let scriptVersions = 3...10

    /// The largest tensor read: half the machine's memory, and at most 64 times its storage (or
    /// 64 MiB): a stride-0 window on a few stored elements can claim any size.
    static let maxTensorBytes = Int(clamping: ProcessInfo.processInfo.physicalMemory / 2)

    public let path: String
    public let format: Format
    public let tensors: [String: TorchTensorInfo]
    public let tensorNames: [String]
    public let layoutNote: String?
    /// TorchScript archives: each module's class by its path ("" the root, "visual.transformer"),
    /// torch's name mangling removed ("__torch__.open_clip.transformer.QuickGELU").
    public let scriptClasses: [String: String]
    /// TorchScript archives: integer attributes by path ("visual.attnpool.num_heads"; a scripted
    /// module keeps them, a traced one does not).
    public let scriptIntegers: [String: Int]
    /// TorchScript archives: string and bool attributes by path ("text_pool_type",
    /// "visual.final_ln_after_pool"), as a scripted module keeps them.
    public let scriptStrings: [String: String]
    public let scriptBools: [String: Bool]
    /// TorchScript archives: which of `codeMarkers` the archive's code/ files contain. The code
    /// is searched as text, never run: a scripted module's constants (GELU's `approximate`)
    /// live there, not in data.pkl.
    public let scriptCodeMarkers: Set<String>
    public static let codeMarkers = ["approximate=\"tanh\""]
    private let file: MappedFile
    /// Byte ranges of each storage in the file.
    private let storages: [String: Range<Int>]

    public var formatName: String {
        switch format {
        case .zip: return "torch zip archive (torch.save)"
        case .legacy: return "torch legacy format (torch.save before 1.6)"
        case .torchScript: return "TorchScript archive (torch.jit.save)"
        }
    }

    public convenience init(path: String) throws {
        let file = try MappedFile(path: path)
        guard let format = file.withBytes(TorchCheckpoint.format(of:)) else {
            throw TorchCheckpointError(path, "not a torch checkpoint (neither a zip archive nor a pickle)")
        }
        try self.init(file: file, format: format)
    }

    /// A zip archive, or a pickle: PROTO 2–5 first, or — protocols 0 and 1, which have no PROTO —
    /// the legacy format's magic number as a text LONG, or a container's opening that
    /// safetensors' header (an 8-byte length below 2³², then "{") cannot be.
    static func format(of b: UnsafeRawBufferPointer) -> Format? {
        if ZipArchive.looksLikeZip(b) { return .zip }
        if b.count >= 2 && b[0] == 0x80 && b[1] <= 5 { return .legacy }
        let magic = Array("L119547037146038801333356L\n".utf8)
        if b.count >= magic.count && zip(b.prefix(magic.count), magic).allSatisfy({ $0 == $1 }) { return .legacy }
        let safetensorsShaped = b.count >= 9 && b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] == 0 && b[8] == UInt8(ascii: "{")
        // MARK, EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE: how protocol 0 and 1 pickles of a
        // container begin (the reader then says what kind of pickle it is).
        if !safetensorsShaped, let first = b.first, [0x28, 0x7D, 0x5D, 0x29].contains(first) { return .legacy }
        return nil
    }

    init(file: MappedFile, format: Format) throws {
        self.file = file
        path = file.path
        let path = file.path
        let (root, refs, ranges, script): (PickleValue, Unpickled, [String: Range<Int>], Bool) = try file.withBytes { b in
            if format == .zip { return try TorchCheckpoint.readZip(b, path: path) }
            let (root, refs, ranges) = try TorchCheckpoint.readLegacy(b, path: path)
            return (root, refs, ranges, false)
        }
        scriptCodeMarkers = script ? file.withBytes { TorchCheckpoint.codeMarkersFound($0, path: path) } : []
        defer { refs.release() }
        self.format = script ? .torchScript : format
        storages = ranges

        var named: [(String, TorchTensorRef)] = []
        var note: String?
        if script {
            let module = try TorchCheckpoint.scriptModule(root, path: path)
            (named, scriptClasses, scriptIntegers) = (module.tensors, module.classes, module.integers)
            (scriptStrings, scriptBools) = (module.strings, module.bools)
        } else {
            (scriptClasses, scriptIntegers, scriptStrings, scriptBools) = ([:], [:], [:], [:])
            let (dict, n) = try TorchCheckpoint.findStateDict(root, path: path)
            note = n
            for (k, v) in dict.entries {
                guard let key = k.stringValue else { throw TorchCheckpointError(path, "a state dict key that is \(k.kind), not a string") }
                guard case .tensor(let t) = v else { throw TorchCheckpointError(path, "state dict entry '\(key)' is \(v.kind), not a tensor") }
                named.append((key, t))
            }
        }
        // Names, with DataParallel's prefix removed when every key carries it.
        var notes = note.map { [$0] } ?? []
        if named.allSatisfy({ $0.0.hasPrefix("module.") }) {
            named = named.map { (String($0.0.dropFirst("module.".count)), $0.1) }
            notes.append("the 'module.' prefix (DataParallel) removed")
        }
        layoutNote = notes.isEmpty ? nil : notes.joined(separator: "; ")

        var infos: [String: TorchTensorInfo] = [:]
        var order: [String] = []
        var storageDType: [String: DType] = [:]
        for (name, t) in named {
            let s = t.storage
            if let d = storageDType[s.key], d != s.dtype {
                throw TorchCheckpointError(path, "storage '\(s.key)' is read as both \(d.rawValue) and \(s.dtype.rawValue)")
            }
            storageDType[s.key] = s.dtype
            guard let range = ranges[s.key] else { throw TorchCheckpointError(path, "tensor '\(name)': its storage '\(s.key)' is not in the file") }
            let info = try TorchCheckpoint.check(t, name: name, storageBytes: range.count, path: path)
            guard infos[name] == nil else { throw TorchCheckpointError(path, "tensor '\(name)' appears twice") }
            infos[name] = info
            order.append(name)
        }
        tensors = infos
        tensorNames = order
    }

    /// The window's bounds against its storage: every element it reaches must be stored.
    static func check(_ t: TorchTensorRef, name: String, storageBytes: Int, path: String) throws -> TorchTensorInfo {
        let s = t.storage
        let es = s.dtype.byteSize
        let available = s.viewSize ?? s.numel
        var count = 1, last = t.offset
        var overflow = false
        for (d, st) in zip(t.shape, t.strides) {
            var o1 = false, o2 = false
            (count, o1) = count.multipliedReportingOverflow(by: d)
            if d > 0 {
                let (step, o3) = (d - 1).multipliedReportingOverflow(by: st)
                (last, o2) = last.addingReportingOverflow(step)
                overflow = overflow || o3
            }
            overflow = overflow || o1 || o2
        }
        if overflow { throw TorchCheckpointError(path, "tensor '\(name)': size \(t.shape) with stride \(t.strides) overflows") }
        let (absolute, o) = s.viewOffset.addingReportingOverflow(t.offset)
        if o || t.offset > available || count > 0 && last >= available {
            throw TorchCheckpointError(path, "tensor '\(name)' (size \(t.shape), stride \(t.strides), offset \(t.offset)) reaches element \(last) of its storage '\(s.key)', which holds \(available); the file is damaged or truncated")
        }
        // Broadcast (stride-0) windows can claim far more elements than are stored.
        let (bytes, o5) = count.multipliedReportingOverflow(by: es)
        if o5 || bytes > min(TorchCheckpoint.maxTensorBytes, max(64 << 20, storageBytes.multipliedReportingOverflow(by: 64).partialValue)) {
            throw TorchCheckpointError(path, "tensor '\(name)' of size \(t.shape) would take \(o5 ? "more than 2^63" : "\(bytes)") bytes from a storage of \(storageBytes) (a broadcast window vlm does not expand)")
        }
        let (needBytes, o4) = s.numel.multipliedReportingOverflow(by: es)
        if o4 || needBytes > storageBytes {
            throw TorchCheckpointError(path, "storage '\(s.key)' holds \(storageBytes) bytes but its pickle says \(s.numel) \(s.dtype.rawValue) elements (\(o4 ? "overflow" : "\(needBytes) bytes")); the file is damaged or truncated")
        }
        return TorchTensorInfo(name: name, dtype: s.dtype, shape: t.shape, strides: t.strides, offset: absolute, storageKey: s.key)
    }

    // MARK: - The two containers

    /// The unpickled values (kept alive until the tensors are read from them).
    final class Unpickled {
        var picklers: [Unpickler] = []
        func release() { for i in picklers.indices { picklers[i].release() } }
    }

    /// True when the zip's entries are a TorchScript archive's (code/ or constants.pkl under the prefix).
    static func isScriptArchive(_ zip: ZipArchive) -> Bool {
        zip.entries.contains { $0.name.hasSuffix("/constants.pkl") || $0.name.split(separator: "/").dropFirst().first == "code" }
    }

    /// Whether `path` is a TorchScript archive, from its zip directory alone (no pickle read).
    public static func isTorchScriptArchive(_ path: String) -> Bool {
        guard let file = try? MappedFile(path: path) else { return false }
        return file.withBytes { b in
            guard ZipArchive.looksLikeZip(b), let zip = try? ZipArchive(bytes: b, path: path) else { return false }
            return isScriptArchive(zip)
        }
    }

    /// The markers the archive's code/*.py entries contain (entries that cannot be read are skipped).
    static func codeMarkersFound(_ b: UnsafeRawBufferPointer, path: String) -> Set<String> {
        guard let zip = try? ZipArchive(bytes: b, path: path) else { return [] }
        var found = Set<String>()
        for e in zip.entries where e.name.hasSuffix(".py") && e.name.split(separator: "/").dropFirst().first == "code" {
            guard e.size <= 16 << 20, let data = try? zip.inflated(e, in: b, limit: 16 << 20) else { continue }
            let text = String(decoding: data, as: UTF8.self)
            for m in codeMarkers where text.contains(m) { found.insert(m) }
        }
        return found
    }

    /// Whether `path` starts as a zip archive whose directory cannot be read (truncated, damaged):
    /// opening it says what is wrong.
    public static func isUnreadableZip(_ path: String) -> Bool {
        guard let file = try? MappedFile(path: path) else { return false }
        return file.withBytes { b in ZipArchive.looksLikeZip(b) && (try? ZipArchive(bytes: b, path: path)) == nil }
    }

    static func readZip(_ b: UnsafeRawBufferPointer, path: String) throws -> (PickleValue, Unpickled, [String: Range<Int>], Bool) {
        let zip = try ZipArchive(bytes: b, path: path)
        let script = isScriptArchive(zip)
        let pickles = zip.entries.filter { $0.name.hasSuffix("/data.pkl") && $0.name.split(separator: "/").count == 2 }
        if script && pickles.isEmpty {
            let old = zip.entries.contains { $0.name.hasSuffix("/model.json") }
            throw TorchCheckpointError(path, "a TorchScript archive without data.pkl\(old ? " (model.json: the format of torch 1.0–1.3)" : ""), which vlm does not read; load it in PyTorch and save its state_dict() with torch.save")
        }
        guard pickles.count == 1, let pkl = pickles.first else {
            throw TorchCheckpointError(path, pickles.isEmpty ? "a zip archive without <name>/data.pkl: not a torch.save checkpoint"
                                                               : "a zip archive with \(pickles.count) data.pkl entries: not one torch.save checkpoint")
        }
        let prefix = String(pkl.name.dropLast("data.pkl".count))
        if script {
            // torch writes <prefix>/.data/version from file format 6 on, <prefix>/version before.
            guard let entry = zip.entry(prefix + ".data/version") ?? zip.entry(prefix + "version") else {
                throw TorchCheckpointError(path, "a TorchScript archive without its \(prefix)version or \(prefix).data/version entry")
            }
            let text = String(decoding: b[try zip.verifiedRange(entry, in: b)], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard let v = Int(text), scriptVersions.contains(v) else {
                throw TorchCheckpointError(path, "a TorchScript archive of file format version '\(text.prefix(20))'; vlm reads versions \(scriptVersions.lowerBound)–\(scriptVersions.upperBound)")
            }
        }
        if let order = zip.entry(prefix + "byteorder") {
            let text = String(decoding: b[try zip.verifiedRange(order, in: b)], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard text == "little" else {
                throw TorchCheckpointError(path, "byteorder is '\(text.prefix(20))'; only little-endian checkpoints are read (load and re-save it on a little-endian machine)")
            }
        }
        let range = try zip.verifiedRange(pkl, in: b)
        var u = Unpickler(bytes: UnsafeRawBufferPointer(rebasing: b[range]), path: path, torchScript: script)
        let refs = Unpickled()
        let root: PickleValue
        do { root = try u.load() } catch { u.release(); throw error }
        refs.picklers.append(u)
        var ranges: [String: Range<Int>] = [:]
        for key in storageKeys(root) {
            guard !key.contains("/"), !key.contains(".."), let e = zip.entry(prefix + "data/" + key) else {
                refs.release()
                throw TorchCheckpointError(path, "storage '\(key.prefix(80))' has no entry \(prefix)data/\(key.prefix(80)) in the archive")
            }
            do { ranges[key] = try zip.verifiedRange(e, in: b) } catch { refs.release(); throw error }
        }
        return (root, refs, ranges, script)
    }

    /// A TorchScript module's tensors by attribute path, its objects' classes and integers. Each
    /// object is visited once (a module shared by two attributes is named by the first path), so
    /// a graph of shared objects cannot multiply the work.
    static func scriptModule(_ root: PickleValue, path: String) throws
        -> (tensors: [(String, TorchTensorRef)], classes: [String: String], integers: [String: Int], strings: [String: String], bools: [String: Bool]) {
        guard case .object(let top) = root else {
            throw TorchCheckpointError(path, "a TorchScript archive whose data.pkl holds \(root.kind), not a module")
        }
        func unmangled(_ name: String) -> String {
            name.split(separator: ".").filter { !$0.hasPrefix("___torch_mangle_") }.joined(separator: ".")
        }
        var tensors: [(String, TorchTensorRef)] = [], classes: [String: String] = [:], integers: [String: Int] = [:]
        var strings: [String: String] = [:], bools: [String: Bool] = [:]
        var visited: Set<ObjectIdentifier> = [ObjectIdentifier(top)]
        var work: [(String, Int, PickleObject)] = [("", 0, top)]
        // Names are built from attribute names, which a small pickle can repeat through its
        // memo: their length, the modules' nesting and all names' bytes are bounded.
        var nameBytes = 0
        let maxKey = 1024, maxNesting = 64, maxNameBytes = 64 << 20
        while let (prefix, level, o) = work.popLast() {
            classes[prefix] = unmangled(o.className)
            var children: [(String, Int, PickleObject)] = []
            for (k, v) in o.state?.entries ?? [] {
                guard let key = k.stringValue else { continue }
                guard key.utf8.count <= maxKey else {
                    throw TorchCheckpointError(path, "a TorchScript module attribute named by \(key.utf8.count) bytes (at most \(maxKey) are read)")
                }
                let name = prefix.isEmpty ? key : prefix + "." + key
                nameBytes += name.utf8.count
                guard nameBytes <= maxNameBytes else {
                    throw TorchCheckpointError(path, "a TorchScript module whose attribute paths take more than \(maxNameBytes >> 20) MiB (a malformed or hostile archive)")
                }
                switch v {
                case .tensor(let t): tensors.append((name, t))
                case .int: if let i = v.intValue { integers[name] = i }
                case .string(let s): strings[name] = String(s.prefix(256))
                case .bool(let b): bools[name] = b
                case .object(let child):
                    guard level < maxNesting else {
                        throw TorchCheckpointError(path, "a TorchScript module nested more than \(maxNesting) levels deep")
                    }
                    if visited.insert(ObjectIdentifier(child)).inserted { children.append((name, level + 1, child)) }
                default: break
                }
            }
            work.append(contentsOf: children.reversed())
        }
        if tensors.isEmpty { throw TorchCheckpointError(path, "a TorchScript archive with no tensors in its module") }
        return (tensors, classes, integers, strings, bools)
    }

    static func readLegacy(_ b: UnsafeRawBufferPointer, path: String) throws -> (PickleValue, Unpickled, [String: Range<Int>]) {
        let refs = Unpickled()
        var pos = 0
        func next() throws -> PickleValue {
            var u = Unpickler(bytes: b, path: path, start: pos)
            do {
                let v = try u.load()
                pos = u.end
                refs.picklers.append(u)
                return v
            } catch {
                u.release()
                throw error
            }
        }
        do {
            // 0x1950a86a20f9469cfc6c, little-endian, as LONG1 writes it.
            let magic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]
            guard case .bigInt(let m) = try next(), m == magic else {
                throw TorchCheckpointError(path, "a pickle, but not a torch checkpoint (no torch.save magic number)")
            }
            guard try next().intValue == 1001 else {
                throw TorchCheckpointError(path, "a torch legacy checkpoint of a protocol version other than 1001")
            }
            let sysInfo = try next()
            if case .dict(let d) = sysInfo, case .bool(false)? = d["little_endian"] {
                throw TorchCheckpointError(path, "written on a big-endian machine; only little-endian checkpoints are read")
            }
            let root = try next()
            guard case .list(let keyList) = try next() else {
                throw TorchCheckpointError(path, "the storage key list after the object is missing")
            }
            var dtypes: [String: DType] = [:]
            var numels: [String: Int] = [:]
            collectStorages(root) { dtypes[$0.key] = $0.dtype; numels[$0.key] = $0.numel }
            var ranges: [String: Range<Int>] = [:]
            for k in keyList.items {
                guard let key = k.stringValue, let dtype = dtypes[key] else {
                    throw TorchCheckpointError(path, "the storage list names \(k.stringValue.map { "'\($0.prefix(80))'" } ?? k.kind), which no tensor uses")
                }
                guard pos <= b.count - 8 else { throw TorchCheckpointError(path, "storage '\(key)' is cut off (truncated file)") }
                let n = UInt64(littleEndian: b.loadUnaligned(fromByteOffset: pos, as: UInt64.self))
                pos += 8
                let (bytes, o) = Int(clamping: n).multipliedReportingOverflow(by: dtype.byteSize)
                guard !o, n <= UInt64(Int.max), bytes <= b.count - pos else {
                    throw TorchCheckpointError(path, "storage '\(key)' claims \(n) elements, more than the file holds (truncated file)")
                }
                guard Int(n) == numels[key] else {
                    throw TorchCheckpointError(path, "storage '\(key)' holds \(n) elements but its pickle says \(numels[key] ?? 0)")
                }
                ranges[key] = pos..<(pos + bytes)
                pos += bytes
            }
            return (root, refs, ranges)
        } catch {
            refs.release()
            throw error
        }
    }

    /// `scriptModule`, for the fuzz harness.
    public static func scriptModuleForFuzzing(_ v: PickleValue) throws -> Int { try scriptModule(v, path: "fuzz").tensors.count }

    /// `storageKeys`, for the fuzz harness.
    public static func storageKeysForFuzzing(_ v: PickleValue) -> [String] { storageKeys(v) }

    /// Storage keys in the order tensors name them.
    static func storageKeys(_ v: PickleValue) -> [String] {
        var seen = Set<String>(), out: [String] = []
        collectStorages(v) { if seen.insert($0.key).inserted { out.append($0.key) } }
        return out
    }

    /// Visits every storage reachable from `v` (containers are visited once each).
    static func collectStorages(_ v: PickleValue, _ body: (TorchStorageRef) -> Void) {
        var visited = Set<ObjectIdentifier>()
        var work = [v]
        while let x = work.popLast() {
            switch x {
            case .tensor(let t): body(t.storage)
            case .storage(let s): body(s)
            case .tuple(let t): if visited.insert(ObjectIdentifier(t)).inserted { work.append(contentsOf: t.items) }
            case .list(let l): if visited.insert(ObjectIdentifier(l)).inserted { work.append(contentsOf: l.items) }
            case .dict(let d): if visited.insert(ObjectIdentifier(d)).inserted { for e in d.entries { work.append(e.key); work.append(e.value) } }
            case .object(let o): if visited.insert(ObjectIdentifier(o)).inserted, let d = o.state { work.append(.dict(d)) }
            default: break
            }
        }
    }

    /// Wrapper keys checked, in order, when the top level is not itself a state dict.
    public static let wrapperKeys = ["state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params"]

    static func isStateDict(_ v: PickleValue) -> PickleDict? {
        guard case .dict(let d) = v, !d.entries.isEmpty, d.entries.allSatisfy({ if case .tensor = $0.value { return $0.key.stringValue != nil }; return false }) else { return nil }
        return d
    }

    static func findStateDict(_ root: PickleValue, path: String) throws -> (PickleDict, String?) {
        // Each dict is judged once, however many entries share it.
        var judged: [ObjectIdentifier: PickleDict?] = [:]
        func isStateDict(_ v: PickleValue) -> PickleDict? {
            guard case .dict(let d) = v else { return nil }
            if let j = judged[ObjectIdentifier(d)] { return j }
            let j = TorchCheckpoint.isStateDict(v)
            judged[ObjectIdentifier(d)] = j
            return j
        }
        if let d = isStateDict(root) { return (d, nil) }
        guard case .dict(let top) = root else {
            if case .tensor = root { throw TorchCheckpointError(path, "holds a single tensor, not a state dict of named tensors") }
            throw TorchCheckpointError(path, "holds \(root.kind), not a state dict of named tensors")
        }
        for k in wrapperKeys {
            if let v = top[k], let d = isStateDict(v) { return (d, "the state dict under '\(k)'") }
        }
        let nested = top.entries.compactMap { e -> (String, PickleDict)? in
            guard let k = e.key.stringValue, let d = isStateDict(e.value) else { return nil }
            return (k, d)
        }
        if nested.count == 1 { return (nested[0].1, "the state dict under '\(nested[0].0)'") }
        let keys = top.entries.prefix(8).map { $0.key.stringValue.map { "'\($0.prefix(40))'" } ?? $0.key.kind }.joined(separator: ", ")
        if nested.count > 1 {
            throw TorchCheckpointError(path, "holds \(nested.count) state dicts (\(nested.prefix(4).map { "'\($0.0.prefix(40))'" }.joined(separator: ", "))\(nested.count > 4 ? ", …" : "")); save the one you want on its own in PyTorch")
        }
        throw TorchCheckpointError(path, top.entries.isEmpty ? "holds an empty dict: no tensors"
                                                             : "holds a dict (keys \(keys)\(top.entries.count > 8 ? ", …" : "")) with no state dict of tensors in it")
    }

    // MARK: - Tensors

    public func dtype(of name: String) -> DType? { tensors[name]?.dtype }
    public func shape(of name: String) -> [Int]? { tensors[name]?.shape }

    public func floatTensor(_ name: String) throws -> Tensor {
        guard let info = tensors[name] else { throw SafetensorsError.noSuchTensor(path: path, tensor: name) }
        guard info.dtype.isFloat else { throw SafetensorsError.notFloat(path: path, tensor: name, dtype: info.dtype) }
        var out = [Float](repeating: 0, count: info.count)
        withElements(info) { src in out.withUnsafeMutableBufferPointer { info.dtype.convertToFloat(src, into: $0) } }
        return Tensor(shape: info.shape, data: out)
    }

    public func storedBytes(_ name: String) throws -> Data {
        guard let info = tensors[name] else { throw SafetensorsError.noSuchTensor(path: path, tensor: name) }
        var out = Data()
        withElements(info) { out = Data(bytes: $0, count: info.count * info.dtype.byteSize) }
        return out
    }

    /// The tensor's elements, contiguous: in place in the mapping when the window is contiguous,
    /// else gathered into a temporary buffer.
    private func withElements(_ info: TorchTensorInfo, _ body: (UnsafeRawPointer) -> Void) {
        let es = info.dtype.byteSize
        let storage = storages[info.storageKey]!
        if info.count == 0 {
            var none: UInt64 = 0
            withUnsafeBytes(of: &none) { body($0.baseAddress!) }
            return
        }
        file.withBytes { b in
            let base = b.baseAddress! + storage.lowerBound
            if info.isContiguous {
                body(base + info.offset * es)
                return
            }
            let gathered = UnsafeMutableRawPointer.allocate(byteCount: max(1, info.count * es), alignment: 16)
            defer { gathered.deallocate() }
            TorchCheckpoint.gather(gathered, base + info.offset * es, shape: info.shape, strides: info.strides, elementSize: es)
            body(UnsafeRawPointer(gathered))
        }
    }

    /// dst (contiguous, shape) ← src (element strides); an odometer over all but the last dimension.
    static func gather(_ dst: UnsafeMutableRawPointer, _ src: UnsafeRawPointer, shape: [Int], strides: [Int], elementSize es: Int) {
        let n = shape.reduce(1, *)
        guard n > 0 else { return }
        let rank = shape.count
        let inner = rank > 0 ? shape[rank - 1] : 1, innerStride = rank > 0 ? strides[rank - 1] : 0
        var index = [Int](repeating: 0, count: max(0, rank - 1))
        var out = 0
        while out < n {
            var srcOffset = 0
            for d in 0..<index.count { srcOffset += index[d] * strides[d] }
            if innerStride == 1 {
                memcpy(dst + out * es, src + srcOffset * es, inner * es)
            } else {
                for i in 0..<inner { memcpy(dst + (out + i) * es, src + (srcOffset + i * innerStride) * es, es) }
            }
            out += inner
            var d = index.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < shape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
    }
}
