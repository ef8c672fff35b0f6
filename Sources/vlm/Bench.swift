// `vlm bench`: throughput of a model on each backend, side by side in one run, with GFLOP/s and
// the BLAS-over-naive speedup. Synthetic seeded weights unless --model gives a checkpoint
// (minilm uses models/all-MiniLM-L6-v2 when it is there).

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMBench
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

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure throughput on the blas and naive backends (release builds only mean anything).",
        discussion: paragraphs("""
        Workloads:
          resnet18|34|50|101|152   images of --size × --size, --batch per forward pass
          peak                     the measured FMA peak and sgemm rate (2048³) on --threads
          clip-image, clip-text    a CLIP folder's (--model) image tower on random inputs at its
                                   size, or its text tower on --batch texts of --seq tokens
          bert-base, minilm        --batch sequences of --seq tokens (random ids), or with
                                   --sentences N: N generated captions through the whole text path
                                   (tokenize, sort by length, packed batches of at most
                                   --batch texts and --batch-tokens tokens, pool)
        """))

    @Argument(help: "The workload: resnet50, bert-base, minilm, clip-image, clip-text, peak (or resnet18/34/101/152).")
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

    @Option(parsing: .unconditional, help: "Threads for the engine's loops and products. Default: $VLM_THREADS, else $OMP_NUM_THREADS, else the CPUs this process may use (affinity mask, cgroup quota).")
    var threads: Int?

    @Option(help: "A checkpoint (ResNet file/folder, BERT model folder, or the CLIP folder clip-image/clip-text need) instead of synthetic weights.")
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

    var plan: BenchPlan {
        BenchPlan(workload: workload, batch: batch, batchTokens: batchTokens, seq: seq, sentences: sentences, texts: texts, saveOutput: saveOutput,
                  backends: backends.kinds, model: model, size: size, minTime: minTime, minIterations: minIterations, noWarmup: noWarmup, layers: layers)
    }

    func run() throws {
        Threads.set(try threads ?? EngineOptions.threadsFromEnvironment(ProcessInfo.processInfo.environment) ?? Threads.defaultCount())
        if workload == "peak" { return try FileSink.standardOutput.write(try peakReport(json: json)) }
        let plan = self.plan
        let w = try plan.makeWorkload()
        if let saveInput, let input = w.input { try writeAtomically(NPY.encode(input), to: saveInput) }
        let (results, outputs) = try plan.measure(w, makeBackend: EngineOptions.makeBackend)
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
        var s = plan.table(w, results)
        if let speedup, let parity {
            s += String(format: "blas over naive: %.1f×   naive vs blas relative error: %.2e\n", speedup, parity)
        }
        if let times = w.layerTimes { s += plan.layerTable(times) }
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
}
