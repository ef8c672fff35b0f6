// `vlm bench`: throughput of a model on each backend, side by side in one run, with GFLOP/s and
// the BLAS-over-naive speedup. Synthetic seeded weights unless --model gives a checkpoint
// (minilm uses models/all-MiniLM-L6-v2 when it is there).

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMModels

enum BenchBackends: String, ExpressibleByArgument, CaseIterable {
    case blas, naive, both
    var kinds: [BackendKind] {
        switch self {
        case .blas: return [.blas]
        case .naive: return [.naive]
        case .both: return [.blas, .naive]
        }
    }
}

struct BenchResult: Codable {
    var workload: String
    var backend: String
    var batch: Int
    var threads: Int
    var iterations: Int
    var secondsPerRun: Double
    var itemsPerSecond: Double
    var gflops: Double
    var openblasCore: String
}

/// One benchmark: a run function returning an output to compare across backends.
struct Workload {
    var input: Tensor? = nil
    var outputShape: (Int) -> [Int] = { [$0] }
    /// ResNet with --layers: per-convolution times.
    var layerTimes: LayerTimes? = nil
    var title: String
    var unit: String            // "images", "sequences", "sentences"
    var itemsPerRun: Int
    var flopsPerRun: Double
    var weights: String
    /// The model loaded for a backend (which prepares its weights), as a function that runs it once.
    var load: (any Backend) throws -> () throws -> [Float]
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure throughput on the blas and naive backends (release builds only mean anything).",
        discussion: """
        Workloads:
          resnet18|34|50|101|152   images of --size × --size, --batch per forward pass
          peak                     the measured FMA peak and sgemm rate (2048³) on --threads
          bert-base, minilm        --batch sequences of --seq tokens (random ids), or with
                                   --sentences N: N generated captions through the whole text path
                                   (tokenize, sort by length, packed batches of at most
                                   --batch texts and --batch-tokens tokens, pool)
        """)

    @Argument(help: "The workload: resnet50, bert-base, minilm, peak (or resnet18/34/101/152).")
    var workload: String

    @Option(name: .customLong("batch"),
            help: "Items per forward pass (default 1; with --sentences/--texts, at most this many texts, default \(TextEncoder.defaultBatchSize)).")
    var batchOption: Int?

    var isTextJob: Bool { sentences != nil || texts != nil }
    /// Items per forward pass: --batch, else 1 (or the text default for --sentences/--texts).
    var batch: Int { batchOption ?? (isTextJob ? TextEncoder.defaultBatchSize : 1) }

    @Option(help: "With --sentences/--texts: at most this many tokens per forward pass.")
    var batchTokens: Int = TextEncoder.defaultBatchTokens

    @Option(help: "bert-base/minilm: tokens per sequence, [CLS] and [SEP] included.")
    var seq: Int = 128

    @Option(help: "bert-base/minilm: embed this many generated captions end to end instead.")
    var sentences: Int?

    @Option(help: "bert-base/minilm: embed the texts of this file (one per line) end to end instead.")
    var texts: String?

    @Option(help: "Write the benchmark's input to this .npy (images, or token ids as float32) for peers to reuse.")
    var saveInput: String?

    @Option(help: "Write the first backend's output to this .npy, for parity checks.")
    var saveOutput: String?

    @Option(name: .customLong("backend"), help: "blas, naive or both (side by side, with the speedup).")
    var backends: BenchBackends = .both

    @Option(parsing: .unconditional, help: "Threads for the engine's loops and products. Default: $VLM_THREADS, else $OMP_NUM_THREADS, else all cores.")
    var threads: Int?

    @Option(help: "A checkpoint (ResNet file/folder, or BERT model folder) instead of synthetic weights.")
    var model: String?

    @Option(help: "ResNet input height and width.")
    var size: Int = 224

    @Option(help: "Minimum timed seconds per backend (after one warm-up pass).")
    var minTime: Double = 3

    @Option(help: "Minimum timed iterations per backend.")
    var minIterations: Int = 2

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Flag(help: "No warm-up pass: the first timed run also gives the output (for runs too long to repeat).")
    var noWarmup = false

    @Flag(help: "ResNet: also print every convolution's time (its minimum over all passes) and GFLOP/s. Needs --backend blas or naive.")
    var layers = false

    func validate() throws {
        try Limits.check("--batch", batch, 1...Limits.maxBatch)
        try Limits.check("--batch-tokens", batchTokens, 1...Limits.maxBatchTokens)
        try Limits.check("--size", size, 32...4096)
        try Limits.check("--min-iterations", minIterations, 1...1_000_000)
        if !(minTime >= 0 && minTime <= 86_400) { throw ValidationError("--min-time must be from 0 to 86400 seconds, got \(minTime)") }
        if sentences != nil && texts != nil { throw ValidationError("--sentences and --texts exclude each other") }
        if seq < 2 { throw ValidationError("--seq must be at least 2") }
        if let sentences { try Limits.check("--sentences", sentences, 1...10_000_000) }
        if let threads { try Limits.check("--threads", threads, 1...Limits.maxThreads) }
        if layers && !workload.hasPrefix("resnet") { throw ValidationError("--layers times ResNet convolutions only") }
        if layers && backends.kinds.count != 1 { throw ValidationError("--layers needs one backend: --backend blas or naive") }
        if layers && json { throw ValidationError("--layers prints a table; it does not combine with --json") }
    }

    func run() throws {
        Threads.set(try threads ?? EngineOptions.threadsFromEnvironment(ProcessInfo.processInfo.environment) ?? Threads.defaultCount())
        if workload == "peak" { return try runPeak() }
        let w = try makeWorkload()
        if let saveInput, let input = w.input { try writeAtomically(NPY.encode(input), to: saveInput) }
        let (results, outputs) = try measure(w)
        var speedup: Double?, parity: Double?
        if results.count == 2 {
            speedup = results[0].itemsPerSecond / results[1].itemsPerSecond
            parity = relativeError(outputs[.naive]!, outputs[.blas]!)
        }
        if json {
            let report = Report(title: w.title, unit: w.unit, weights: w.weights, gflopPerRun: w.flopsPerRun / 1e9,
                                results: results, blasOverNaive: speedup, naiveVsBlasRelativeError: parity)
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            try FileSink.standardOutput.write(try enc.encode(report) + Data("\n".utf8))
            return
        }
        var s = table(w, results)
        if let speedup, let parity {
            s += String(format: "blas over naive: %.1f×   naive vs blas relative error: %.2e\n", speedup, parity)
        }
        if let times = w.layerTimes { s += layerTable(times) }
        try FileSink.standardOutput.write(s)
    }

    struct Report: Codable {
        var title: String
        var unit: String
        var weights: String
        var gflopPerRun: Double
        var results: [BenchResult]
        var blasOverNaive: Double?
        var naiveVsBlasRelativeError: Double?
    }

    /// Each backend's timings (a warm-up pass first unless --no-warmup, then at least
    /// --min-iterations runs and --min-time seconds; the median counts) and first output.
    func measure(_ w: Workload) throws -> ([BenchResult], [BackendKind: [Float]]) {
        var results: [BenchResult] = []
        var outputs: [BackendKind: [Float]] = [:]
        for kind in backends.kinds {
            let run = try w.load(try EngineOptions.makeBackend(kind))
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

    func table(_ w: Workload, _ results: [BenchResult]) -> String {
        var s = "\(w.title), \(Threads.count) threads, weights: \(w.weights)\n"
        s += "OpenBLAS kernels: \(OpenBLASCore.coreName), vlm's C kernels: \(kernelInstructionSet)\n"
        s += String(format: "%.2f GFLOP per run of %d %@\n", w.flopsPerRun / 1e9, w.itemsPerRun, w.unit)
        s += "backend " + "\(w.unit)/s".leftPadded(12) + "  ms/run".leftPadded(10) + "  GFLOP/s  iterations\n"
        for r in results {
            s += r.backend.padding(toLength: 7, withPad: " ", startingAt: 0)
            s += String(format: " %12.2f %10.1f %8.1f  %d\n", r.itemsPerSecond, r.secondsPerRun * 1000, r.gflops, r.iterations)
        }
        return s
    }

    /// `--layers`: each convolution's best time over the passes, and their sum.
    func layerTable(_ times: LayerTimes) -> String {
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

    /// `vlm bench peak`: the measured FMA peak and sgemm rate that other results are shares of.
    func runPeak() throws {
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
            try FileSink.standardOutput.write(try enc.encode(p) + Data("\n".utf8))
            return
        }
        var s = "\(p.threads) threads, OpenBLAS kernels: \(p.openblasCore), vlm's C kernels: \(p.kernels)\n"
        s += String(format: "FMA peak (measured): %.1f GFLOP/s\n", p.fmaGFLOPs)
        s += String(format: "sgemm %d³ (measured): %.1f GFLOP/s (%.0f%% of the FMA peak)\n", p.sgemmSize, p.sgemmGFLOPs,
                    100 * p.sgemmGFLOPs / p.fmaGFLOPs)
        if sgemm > fma { s += "note: sgemm ran faster than the FMA loop (a disturbed timing); shares use sgemm's rate as the peak\n" }
        try FileSink.standardOutput.write(s)
    }

    // MARK: - Workloads

    func makeWorkload() throws -> Workload {
        if workload.hasPrefix("resnet") { return try resnetWorkload() }
        if workload == "bert-base" || workload == "minilm" { return try bertWorkload() }
        throw ValidationError("unknown workload '\(workload)'; known: \(resnetDepths.map { "resnet\($0.depth)" }.joined(separator: ", ")), bert-base, minilm, peak")
    }

    func resnetWorkload() throws -> Workload {
        guard let depth = Int(workload.dropFirst(6)), resnetDepths.contains(where: { $0.depth == depth }) else {
            throw ValidationError("unknown workload '\(workload)'; known: \(resnetDepths.map { "resnet\($0.depth)" }.joined(separator: ", ")), bert-base, minilm")
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
            throw ValidationError("--seq \(seq) exceeds max_position_embeddings \(config.maxPositionEmbeddings)")
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

/// Seeded caption-like sentences of 6–20 words.
func syntheticCaptions(_ n: Int, seed: UInt64) -> [String] {
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

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
