// What each fuzz target does with an input, as plain functions: the libFuzzer executables
// (Fuzz/Fuzz*, built by `make fuzz`) call them, and the normal tests replay the corpora and
// every crash input kept in Fuzz/regressions/ through them. Each must end in a value or a
// thrown error for any bytes — a trap is the bug being hunted.

import Foundation
import VLMCore
import VLMIO
import VLMImage
import VLMEmbed
import VLMJobs
import VLMModels
import VLMTokenizer

public enum FuzzHarness {
    public static let targets: [String: (UnsafeRawBufferPointer) -> Void] = [
        "npy": npy, "safetensors": safetensors, "tokenizer": tokenizer, "image": image, "jsonl": jsonl,
        "pickle": pickle, "torch": torch, "features": features, "shards": shards, "clip": clip,
    ]

    /// A scratch folder per process for targets whose parsers read files.
    static let scratch: String = {
        let d = (NSTemporaryDirectory() as NSString).appendingPathComponent("vlm-fuzz-\(getpid())")
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }()

    /// Removes the scratch folder (the replay test's end; a fuzzer's process just exits).
    public static func removeScratch() {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    static func file(_ name: String, _ bytes: UnsafeRawBufferPointer) -> String {
        let p = (scratch as NSString).appendingPathComponent(name)
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }

    /// The .npy parser.
    public static func npy(_ b: UnsafeRawBufferPointer) {
        _ = try? NPY.parse(b, path: "fuzz.npy")
    }

    /// The safetensors reader: header, entries, and every tensor converted to float32.
    public static func safetensors(_ b: UnsafeRawBufferPointer) {
        guard let f = try? SafetensorsFile(path: file("f.safetensors", b)) else { return }
        for name in f.names.prefix(64) where (f.tensors[name]?.count ?? 0) <= 1 << 20 { _ = try? f.floatTensor(name) }
    }

    /// Tokenizer loading (first byte: vocab.txt, tokenizer.json, or tokenizer.json beside a
    /// vocab.txt, with or without a tokenizer_config.json) and WordPiece on texts cut from the
    /// input's tail.
    public static func tokenizer(_ b: UnsafeRawBufferPointer) {
        guard let mode = b.first else { return }
        let rest = UnsafeRawBufferPointer(rebasing: b.dropFirst())
        let cut = rest.firstIndex(of: 0) ?? rest.endIndex
        let spec = UnsafeRawBufferPointer(rebasing: rest[rest.startIndex..<cut])
        let texts = cut < rest.endIndex ? Array(rest[(cut + 1)...]) : []
        let folder = (scratch as NSString).appendingPathComponent("tok")
        try? FileManager.default.removeItem(atPath: folder)
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        func put(_ name: String, _ data: Data) { FileManager.default.createFile(atPath: (folder as NSString).appendingPathComponent(name), contents: data) }
        switch mode % 4 {
        case 0: put("vocab.txt", Data(spec))
        case 1: put("tokenizer.json", Data(spec))
        case 2: put("vocab.txt", Data("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n##b\n".utf8)); put("tokenizer.json", Data(spec))
        default: put("vocab.txt", Data("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n##s\n".utf8)); put("tokenizer_config.json", Data(spec))
        }
        guard let tok = try? WordPieceTokenizer.load(folder: folder) else { return }
        for piece in texts.split(separator: 0x0A, omittingEmptySubsequences: false).prefix(16) {
            let text = String(decoding: piece, as: UTF8.self)
            _ = tok.encode(text, pair: nil, maxLength: 64)
            _ = tok.encode(text, pair: text, maxLength: 9)
        }
    }

    /// The image decoder (JPEG and PNG, through the C decoder) and preprocessing, under a
    /// small pixel limit so a header's claim cannot ask for gigabytes.
    public static func image(_ b: UnsafeRawBufferPointer) {
        let items: [(id: [UInt8], value: ImageInput)] = [(Array("fuzz".utf8), .bytes(Data(b)))]
        _ = ImageRowEncoder.preprocess(items, preprocessing: Preprocessing(resize: 40, crop: 32), maxPixels: 1 << 20)
    }

    /// Text and pair inputs read as a job reads them: lines of a file, JSON records with text,
    /// pair and id fields, and image–text pair lines.
    public static func jsonl(_ b: UnsafeRawBufferPointer) {
        let path = file("in.jsonl", b)
        guard let lines = try? TextLines(path, spool: nil, reuseSpool: false, quiet: true) else { return }
        let n = min(lines.lineCount, 256)
        for format in [TextFormat(), TextFormat(jsonField: "text", jsonPairField: "pair", jsonIdField: "id"), TextFormat(lossy: true)] {
            _ = try? TextSource(lines: lines, range: 0..<n, format: format).items(0..<n)
        }
        _ = try? PairSource(lines: lines, range: 0..<n).items(0..<n)
    }

    /// The restricted unpickler on raw bytes: every opcode path, the allow-list, the memo and
    /// the nesting bound; then the walk that finds a state dict's storages.
    public static func pickle(_ b: UnsafeRawBufferPointer) {
        var u = Unpickler(bytes: b, path: "fuzz.pkl")
        if let v = try? u.load() { _ = TorchCheckpoint.storageKeysForFuzzing(v) }
        u.release()
        // As a TorchScript archive's data.pkl: module objects, then the tensors by path.
        var s = Unpickler(bytes: b, path: "fuzz.pkl", torchScript: true)
        if let v = try? s.load() {
            _ = TorchCheckpoint.storageKeysForFuzzing(v)
            _ = try? TorchCheckpoint.scriptModuleForFuzzing(v)
        }
        s.release()
    }

    /// CLIP's configs and tokenizers (first byte): open_clip_config.json, Hugging Face's
    /// config.json, its preprocessor_config.json (beside a fixed CLIP config.json), each read as
    /// `vlm` locates a CLIP checkpoint (an empty weights file beside it); a CLIP tokenizer.json or
    /// open_clip's gzipped vocabulary, then the texts after the first NUL byte through the BPE
    /// (and open_clip's cleaning).
    public static func clip(_ b: UnsafeRawBufferPointer) {
        guard let mode = b.first else { return }
        let rest = UnsafeRawBufferPointer(rebasing: b.dropFirst())
        let cut = rest.firstIndex(of: 0) ?? rest.endIndex
        let spec = Data(UnsafeRawBufferPointer(rebasing: rest[rest.startIndex..<cut]))
        let texts = cut < rest.endIndex ? Array(rest[(cut + 1)...]) : []
        let folder = (scratch as NSString).appendingPathComponent("clip")
        try? FileManager.default.removeItem(atPath: folder)
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        func put(_ name: String, _ data: Data) { FileManager.default.createFile(atPath: (folder as NSString).appendingPathComponent(name), contents: data) }
        func path(_ name: String) -> String { (folder as NSString).appendingPathComponent(name) }
        var tokenizer: CLIPTokenizer?
        switch mode % 5 {
        case 0, 1, 2:
            if mode % 5 == 0 { put("open_clip_config.json", spec); put("open_clip_model.safetensors", Data()) }
            if mode % 5 == 1 { put("config.json", spec) }
            if mode % 5 == 2 {
                put("config.json", Data(#"{"model_type": "clip", "text_config": {}, "vision_config": {}}"#.utf8))
                put("preprocessor_config.json", spec)
            }
            put("model.safetensors", Data())
            _ = CLIPCheckpointFiles.isCLIPFolder(folder)
            _ = try? CLIPCheckpointFiles.locate(folder: folder)
        case 3:
            put("tokenizer.json", spec)
            tokenizer = try? CLIPTokenizer(tokenizerJSON: path("tokenizer.json"))
        default:
            put("vocab.txt.gz", spec)
            tokenizer = try? CLIPTokenizer(openCLIPVocabulary: path("vocab.txt.gz"))
        }
        guard let tokenizer else { return }
        for piece in texts.split(separator: 0x0A, omittingEmptySubsequences: false).prefix(16) {
            _ = tokenizer.tokens(String(decoding: piece, as: UTF8.self))
        }
    }

    /// A torch checkpoint file: the zip reader (central directory, ZIP64, local headers) or the
    /// legacy framing, the state dict search, every window checked against its storage, and
    /// every tensor of up to 2^20 elements read (strided ones gathered).
    public static func torch(_ b: UnsafeRawBufferPointer) {
        guard let c = try? TorchCheckpoint(path: file("f.pth", b)) else { return }
        for name in c.tensorNames.prefix(64) where (c.tensors[name]?.count ?? 0) <= 1 << 20 {
            _ = try? c.storedBytes(name)
            if c.tensors[name]!.dtype.isFloat { _ = try? c.floatTensor(name) }
        }
    }

    /// A feature file as `pca fit` / `pca apply` open it (first byte: a .npy, with or without a
    /// --dim-in to agree with, or a raw .f32 of a given width), then its first rows read.
    public static func features(_ b: UnsafeRawBufferPointer) {
        guard let mode = b.first else { return }
        let rest = UnsafeRawBufferPointer(rebasing: b.dropFirst())
        let isNPY = mode & 1 == 0
        let path = file(isNPY ? "f.npy" : "f.f32", rest)
        let dimIn: Int? = isNPY ? (mode & 2 == 0 ? nil : Int(mode >> 2)) : Int(mode >> 1)
        guard let f = try? FeatureFile(path: path, dimIn: dimIn) else { return }
        let n = min(f.rows, 64)
        guard n > 0, n * f.dim <= 1 << 20 else { return }
        var rows = [Float](repeating: 0, count: n * f.dim)
        rows.withUnsafeMutableBufferPointer { _ = try? f.read(0..<n, into: $0.baseAddress!) }
    }

    /// Two valid shards, written once, beside each input as model.safetensors.index.json.
    static let shardFolder: String = {
        let d = (scratch as NSString).appendingPathComponent("shards")
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        let a = SafetensorsWriter.encode([.init(name: "x", shape: [2], floats: [1, 2]), .init(name: "y", dtype: .F16, shape: [1, 2], data: Data(count: 4))])
        let b = SafetensorsWriter.encode([.init(name: "z", shape: [3], floats: [3, 4, 5])])
        FileManager.default.createFile(atPath: (d as NSString).appendingPathComponent("a.safetensors"), contents: a)
        FileManager.default.createFile(atPath: (d as NSString).appendingPathComponent("b.safetensors"), contents: b)
        return d
    }()

    /// A sharded checkpoint's index (the input) over the two shards: the JSON, the file names,
    /// the index against the shards, then every tensor read through it.
    public static func shards(_ b: UnsafeRawBufferPointer) {
        let index = (shardFolder as NSString).appendingPathComponent("model.safetensors.index.json")
        guard let c = try? ShardedCheckpoint(indexPath: index, data: Data(b)) else { return }
        for name in c.tensorNames.prefix(64) { _ = try? c.floatTensor(name) }
    }
}
