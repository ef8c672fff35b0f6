// vlm bench's measurements: workloads (ResNet on images, BERT on token ids or on whole text jobs),
// each backend timed side by side (a warm-up pass, then at least a number of runs and seconds;
// the median counts), the tables printed, and the measured FMA and sgemm peak.

import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMModels

public struct BenchResult: Codable {
    public var workload: String
    public var backend: String
    public var batch: Int
    public var threads: Int
    public var iterations: Int
    public var secondsPerRun: Double
    public var itemsPerSecond: Double
    public var gflops: Double
    public var openblasCore: String
}

/// One benchmark: a run function returning an output to compare across backends.
public struct Workload {
    public var input: Tensor? = nil
    public var outputShape: (Int) -> [Int] = { [$0] }
    /// ResNet with --layers: per-convolution times.
    public var layerTimes: LayerTimes? = nil
    public var title: String
    public var unit: String            // "images", "sequences", "sentences"
    public var itemsPerRun: Int
    public var flopsPerRun: Double
    public var weights: String
    /// The model loaded for a backend (which prepares its weights), as a function that runs it once.
    public var load: (any Backend) throws -> () throws -> [Float]
}

/// What to measure and how: the bench command's options.
public struct BenchPlan {
    public var workload: String
    public var batch: Int
    public var batchTokens: Int
    public var seq: Int
    public var sentences: Int?
    public var texts: String?
    public var saveOutput: String?
    public var backends: [BackendKind]
    public var model: String?
    public var size: Int
    public var minTime: Double
    public var minIterations: Int
    public var noWarmup: Bool
    public var layers: Bool

    public init(workload: String, batch: Int, batchTokens: Int, seq: Int, sentences: Int?, texts: String?, saveOutput: String?,
                backends: [BackendKind], model: String?, size: Int, minTime: Double, minIterations: Int, noWarmup: Bool, layers: Bool) {
        (self.workload, self.batch, self.batchTokens, self.seq, self.sentences, self.texts, self.saveOutput) = (workload, batch, batchTokens, seq, sentences, texts, saveOutput)
        (self.backends, self.model, self.size, self.minTime, self.minIterations, self.noWarmup, self.layers) = (backends, model, size, minTime, minIterations, noWarmup, layers)
    }

    var isTextJob: Bool { sentences != nil || texts != nil }

    /// Each backend's timings (`makeBackend` makes each; a warm-up pass first unless --no-warmup, then at least
    /// --min-iterations runs and --min-time seconds; the median counts) and first output.
    public func measure(_ w: Workload, makeBackend: (BackendKind) throws -> any Backend) throws -> ([BenchResult], [BackendKind: [Float]]) {
        var results: [BenchResult] = []
        var outputs: [BackendKind: [Float]] = [:]
        for kind in backends {
            let run = try w.load(try makeBackend(kind))
            var times: [Double] = []
            if noWarmup {
                times.append(try seconds { outputs[kind] = try run() })
            } else {
                outputs[kind] = try run()   // warm-up, and the parity check
            }
            if let saveOutput, results.isEmpty {
                let out = outputs[kind]!
                try writeAtomically(NPY.encode(Tensor(shape: w.outputShape(out.count), data: out)), to: saveOutput)
            }
            let start = Date()
            while times.count < minIterations || Date().timeIntervalSince(start) < minTime {
                times.append(try seconds { _ = try run() })
            }
            let median = times.sorted()[times.count / 2]
            results.append(BenchResult(workload: workload, backend: kind.rawValue, batch: batch, threads: Threads.count,
                                       iterations: times.count, secondsPerRun: median,
                                       itemsPerSecond: Double(w.itemsPerRun) / median,
                                       gflops: w.flopsPerRun / median / 1e9, openblasCore: OpenBLASCore.coreName))
        }
        return (results, outputs)
    }

    func seconds(_ body: () throws -> Void) rethrows -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    public func table(_ w: Workload, _ results: [BenchResult]) -> String {
        var s = "\(w.title), \(Threads.count) threads, weights: \(w.weights)\n"
        s += "OpenBLAS kernels: \(OpenBLASCore.kernelReport()), vlm's C kernels: \(kernelInstructionSet)\n"
        s += String(format: "%.2f GFLOP per run of %d %@\n", w.flopsPerRun / 1e9, w.itemsPerRun, w.unit)
        s += "backend " + "\(w.unit)/s".leftPadded(12) + "  ms/run".leftPadded(10) + "  GFLOP/s  iterations\n"
        for r in results {
            s += r.backend.padding(toLength: 7, withPad: " ", startingAt: 0)
            s += String(format: " %12.2f %10.1f %8.1f  %d\n", r.itemsPerSecond, r.secondsPerRun * 1000, r.gflops, r.iterations)
        }
        return s
    }

    /// `--layers`: each convolution's best time over the passes, and their sum.
    public func layerTable(_ times: LayerTimes) -> String {
        var s = "\nconvolution            input → output (N,H,W,C)               best ms   GFLOP/s\n"
        for l in times.layers {
            let g = l.geometry
            let shape = "\(g.kernelH)x\(g.kernelW)/\(g.stride) [\(g.batch),\(g.height),\(g.width),\(g.inChannels)]"
                + " → [\(g.outHeight),\(g.outWidth),\(g.outChannels)]"
            s += l.name.padding(toLength: 22, withPad: " ", startingAt: 0) + " "
            s += shape.padding(toLength: 38, withPad: " ", startingAt: 0)
            s += String(format: " %8.2f %9.1f\n", l.bestSeconds * 1000, g.flops / l.bestSeconds / 1e9)
        }
        let total = times.layers.reduce(0) { $0 + $1.bestSeconds }
        s += String(format: "sum of the convolutions' best times: %.1f ms (%.1f GFLOP/s)\n", total * 1000,
                    times.layers.reduce(0) { $0 + $1.geometry.flops } / total / 1e9)
        return s
    }

    // MARK: - Workloads

    public func makeWorkload() throws -> Workload {
        if workload.hasPrefix("resnet") { return try resnetWorkload() }
        if workload == "bert-base" || workload == "minilm" { return try bertWorkload() }
        if workload == "clip-image" || workload == "clip-text" { return try clipWorkload() }
        throw OptionError("unknown workload '\(workload)'; known: \(resnetDepths.map { "resnet\($0.depth)" }.joined(separator: ", ")), bert-base, minilm, clip-image, clip-text, peak")
    }

    func resnetWorkload() throws -> Workload {
        guard let depth = Int(workload.dropFirst(6)), resnetDepths.contains(where: { $0.depth == depth }) else {
            throw OptionError("unknown workload '\(workload)'; known: \(resnetDepths.map { "resnet\($0.depth)" }.joined(separator: ", ")), bert-base, minilm")
        }
        let times = layers ? LayerTimes() : nil
        func load(_ be: any Backend) throws -> ResNet {
            let net = try model.map { try loadResNet($0, backend: be) } ?? ResNet(source: Synthetic.resnet(depth: depth, seed: 0)!, backend: be)
            net.layerTimes = times
            return net
        }
        let net = try load(NaiveBackend())
        var rng = SeededRandom(seed: 7)
        let input = Tensor(shape: [batch, 3, size, size], data: rng.normals(batch * 3 * size * size, std: 1))
        return Workload(input: input, outputShape: { [batch, $0 / batch] }, layerTimes: times,
                        title: "\(workload) (\(net.config.name)), \(size)×\(size), batch \(batch)", unit: "images",
                        itemsPerRun: batch, flopsPerRun: net.flops(height: size, width: size) * Double(batch),
                        weights: model ?? "synthetic (seed 0)") { be in
            let net = try load(be)
            return { net.forward(input).pooled.data }
        }
    }

    /// A CLIP checkpoint folder's image tower on random (batch, 3, S, S) inputs at its own size,
    /// or its text tower on --batch sequences of --seq tokens (random ids, the end token last).
    func clipWorkload() throws -> Workload {
        guard let model else { throw OptionError("\(workload) needs --model: a CLIP checkpoint folder") }
        let clip = try loadCLIP(model, backend: NaiveBackend(), quiet: true).0
        var rng = SeededRandom(seed: 7)
        if workload == "clip-image" {
            let s = clip.vision.imageSize
            let input = Tensor(shape: [batch, 3, s, s], data: rng.normals(batch * 3 * s * s, std: 1))
            return Workload(input: input, outputShape: { [batch, $0 / batch] }, title: "\(workload) (\(clip.vision.summary)), batch \(batch)",
                            unit: "images", itemsPerRun: batch, flopsPerRun: clip.vision.flops * Double(batch), weights: model) { be in
                let m = try loadCLIP(model, backend: be, quiet: true).0
                return { m.encodeImages(input).data }
            }
        }
        let length = min(seq, clip.text.contextLength)
        let end = Int32(clip.text.vocabSize - 1)
        let ids = (0..<batch).map { _ in (0..<(length - 1)).map { _ in Int32(rng.next() % UInt64(end)) } + [end] }
        return Workload(title: "\(workload) (text width \(clip.text.width), \(clip.text.layers) layers), batch \(batch) × \(length) tokens",
                        unit: "texts", itemsPerRun: batch, flopsPerRun: clip.text.flops(tokens: length) * Double(batch), weights: model) { be in
            let m = try loadCLIP(model, backend: be, quiet: true).0
            return { m.encodeTexts(ids).data }
        }
    }

    func bertWorkload() throws -> Workload {
        var folder = model
        if folder == nil && workload == "minilm" {
            let real = defaultTextModel()
            if (try? weightsInFolder(real)) != nil { folder = real }
        }
        if isTextJob {
            guard let folder else {
                throw InputError("--sentences and --texts need a model folder with a tokenizer: run `make models` or pass --model DIR")
            }
            let enc = try TextModelFolder(folder: folder)
            let texts: [String]
            if let file = self.texts {
                texts = try readLines(file, what: "the texts")
            } else {
                texts = syntheticCaptions(sentences!, seed: 3)
            }
            let sentences = texts.count
            let h = enc.config.hiddenSize
            let what = self.texts == nil ? "generated captions" : "texts"
            let lengths = texts.map { enc.encode($0).count }
            let tokens = lengths.reduce(0, +)
            return Workload(outputShape: { [$0 / h, h] },
                            title: "\(workload) on \(sentences) \(what) (\(String(format: "%.1f", Double(tokens) / Double(sentences))) tokens on average), "
                                + "batches of ≤ \(batch) texts and ≤ \(batchTokens) tokens, pooling \(enc.defaultPooling.rawValue)",
                            unit: "sentences", itemsPerRun: sentences, flopsPerRun: enc.config.flops(lengths: lengths),
                            weights: folder) { be in
                let encoder = try loadTextEncoder(folder, backend: be)
                return { try encoder.embed(texts, batchSize: batch, batchTokens: batchTokens).vectors.data }
            }
        }
        let config = try folder.map { try TextModelFolder(folder: $0).config } ?? Synthetic.bertConfig(workload)!
        func load(_ be: any Backend) throws -> BertModel {
            if let folder { return try loadTextEncoder(folder, backend: be).model }
            return try BertModel(config: config, source: Synthetic.bert(config, seed: 0), backend: be)
        }
        let weights = folder ?? "synthetic (seed 0)"
        guard seq <= config.maxPositionEmbeddings else {
            throw OptionError("--seq \(seq) exceeds max_position_embeddings \(config.maxPositionEmbeddings)")
        }
        var rng = SeededRandom(seed: 5)
        let sequences: [(ids: [Int32], typeIds: [Int32])] = (0..<batch).map { _ in
            let body = (0..<(seq - 2)).map { _ in Int32(1000 + Int(rng.next() % UInt64(config.vocabSize - 1000))) }
            return ([101] + body + [102], [Int32](repeating: 0, count: seq))
        }
        let packed = PackedBatch(sequences: sequences)
        let ids = Tensor(shape: [batch, seq], data: sequences.flatMap { $0.ids.map(Float.init) })
        let h = config.hiddenSize
        return Workload(input: ids, outputShape: { [$0 / h, h] },
                        title: "\(workload), \(batch) × \(seq) tokens", unit: "sequences", itemsPerRun: batch,
                        flopsPerRun: config.flops(lengths: [Int](repeating: seq, count: batch)), weights: weights) { be in
            let bert = try load(be)
            return { bert.forward(packed).hidden.data }
        }
    }
}

/// `vlm bench peak`: the measured FMA peak and sgemm rate that other results are shares of, as
/// a table or one JSON object.
public func peakReport(json: Bool) throws -> Data {
    struct Peak: Codable {
        var threads: Int
        var openblasCore: String
        var kernels: String
        var fmaGFLOPs: Double
        var sgemmGFLOPs: Double
        /// max(fma, sgemm): what shares are taken of.
        var peakGFLOPs: Double
        var sgemmSize: Int
    }
    let fma = Peaks.fmaGFLOPs(), sgemm = Peaks.sgemmGFLOPs()
    let p = Peak(threads: Threads.count, openblasCore: OpenBLASCore.coreName, kernels: kernelInstructionSet,
                 fmaGFLOPs: fma, sgemmGFLOPs: sgemm, peakGFLOPs: Peaks.peakGFLOPs(fma: fma, sgemm: sgemm), sgemmSize: 2048)
    if json {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return try enc.encode(p) + Data("\n".utf8)
    }
    var s = "\(p.threads) threads, OpenBLAS kernels: \(p.openblasCore), vlm's C kernels: \(p.kernels)\n"
    s += String(format: "FMA peak (measured): %.1f GFLOP/s\n", p.fmaGFLOPs)
    s += String(format: "sgemm %d³ (measured): %.1f GFLOP/s (%.0f%% of the FMA peak)\n", p.sgemmSize, p.sgemmGFLOPs,
                100 * p.sgemmGFLOPs / p.fmaGFLOPs)
    if sgemm > fma { s += "note: sgemm ran faster than the FMA loop (a disturbed timing); shares use sgemm's rate as the peak\n" }
    return Data(s.utf8)
}

/// Seeded caption-like sentences of 6–20 words.
public func syntheticCaptions(_ n: Int, seed: UInt64) -> [String] {
    let subjects = ["A dog", "Two cats", "A man", "A woman", "Children", "A red car", "An old bicycle", "A small bird",
                    "A group of people", "A chef", "The train", "A surfer", "A little girl", "An elephant", "Three horses"]
    let verbs = ["is sitting on", "runs across", "is standing next to", "jumps over", "is looking at", "rides along",
                 "is waiting near", "walks through", "is playing with", "is parked beside"]
    let objects = ["a wooden bench", "the busy street", "a snowy mountain", "a green field", "the kitchen table",
                   "a crowded beach", "an empty parking lot", "the river bank", "a colourful market", "a tall building"]
    let tails = ["", " at sunset", " in the rain", " on a sunny day", " while people watch", " near the old bridge",
                 " with a frisbee", " in front of a blue door", " during the winter festival"]
    var rng = SeededRandom(seed: seed)
    func pick(_ a: [String]) -> String { a[Int(rng.next() % UInt64(a.count))] }
    return (0..<n).map { _ in "\(pick(subjects)) \(pick(verbs)) \(pick(objects))\(pick(tails))." }
}
