// `vlm bench`: throughput of a model on each backend, side by side in one run, with GFLOP/s and
// the BLAS-over-naive speedup. Synthetic seeded weights unless --model gives a checkpoint.

import ArgumentParser
import Foundation
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
    var secondsPerBatch: Double
    var itemsPerSecond: Double
    var gflops: Double
    var openblasCore: String
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure throughput on the blas and naive backends (release builds only mean anything).",
        discussion: "Workloads: resnet18, resnet34, resnet50, resnet101, resnet152 (224×224 images).")

    @Argument(help: "The workload: resnet50 (or resnet18/34/101/152).")
    var workload: String

    @Option(help: "Images per forward pass.")
    var batch: Int = 1

    @Option(help: "blas, naive or both (side by side, with the speedup).")
    var backend: BenchBackends = .both

    @Option(help: "Threads for OpenBLAS and the engine's loops. Default: all cores.")
    var threads: Int?

    @Option(help: "A checkpoint to benchmark instead of seeded synthetic weights.")
    var model: String?

    @Option(help: "Input height and width.")
    var size: Int = 224

    @Option(help: "Minimum timed seconds per backend (after one warm-up pass).")
    var minTime: Double = 3

    @Option(help: "Minimum timed iterations per backend.")
    var minIterations: Int = 2

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        if batch < 1 { throw ValidationError("--batch must be at least 1") }
        if size < 32 { throw ValidationError("--size must be at least 32") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        Threads.set(threads ?? Threads.defaultCount())
        guard workload.hasPrefix("resnet"), let depth = Int(workload.dropFirst(6)),
              resnetDepths.contains(where: { $0.depth == depth }) else {
            throw ValidationError("unknown workload '\(workload)'; known: \(resnetDepths.map { "resnet\($0.depth)" }.joined(separator: ", "))")
        }
        let net: ResNet
        let weights: String
        if let model {
            net = try loadResNet(model)
            weights = model
        } else {
            net = try ResNet(source: Synthetic.resnet(depth: depth, seed: 0)!)
            weights = "synthetic (seed 0)"
        }
        var rng = SeededRandom(seed: 7)
        let input = Tensor(shape: [batch, 3, size, size], data: rng.normals(batch * 3 * size * size, std: 1))
        let flopsPerImage = net.flops(height: size, width: size)

        var results: [BenchResult] = []
        var outputs: [BackendKind: [Float]] = [:]
        for kind in backend.kinds {
            let be = kind.make()
            outputs[kind] = net.forward(input, backend: be).pooled.data   // warm-up, and the parity check
            var times: [Double] = []
            let start = Date()
            while times.count < minIterations || Date().timeIntervalSince(start) < minTime {
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = net.forward(input, backend: be)
                times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            }
            let median = times.sorted()[times.count / 2]
            results.append(BenchResult(workload: workload, backend: kind.rawValue, batch: batch, threads: Threads.count,
                                       iterations: times.count, secondsPerBatch: median,
                                       itemsPerSecond: Double(batch) / median,
                                       gflops: flopsPerImage * Double(batch) / median / 1e9,
                                       openblasCore: OpenBLASCore.coreName))
        }
        var speedup: Double?
        var parity: Double?
        if results.count == 2 {
            speedup = results[0].itemsPerSecond / results[1].itemsPerSecond
            parity = relativeError(outputs[.blas]!, outputs[.naive]!)
        }
        if json {
            struct Report: Codable {
                var weights: String
                var gflopPerImage: Double
                var results: [BenchResult]
                var blasOverNaive: Double?
                var naiveVsBlasRelativeError: Double?
            }
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            let data = try enc.encode(Report(weights: weights, gflopPerImage: flopsPerImage / 1e9, results: results,
                                             blasOverNaive: speedup, naiveVsBlasRelativeError: parity))
            FileHandle.standardOutput.write(data + Data("\n".utf8))
            return
        }
        var s = "\(workload) (\(net.config.name)), \(size)×\(size), batch \(batch), \(Threads.count) threads, weights: \(weights)\n"
        s += "OpenBLAS kernels: \(OpenBLASCore.coreName)\n"
        s += String(format: "%.2f GFLOP per image\n", flopsPerImage / 1e9)
        s += "backend  images/s   ms/batch  GFLOP/s  iterations\n"
        for r in results {
            s += r.backend.padding(toLength: 7, withPad: " ", startingAt: 0)
            s += String(format: " %9.2f %10.1f %8.1f  %d\n", r.itemsPerSecond, r.secondsPerBatch * 1000, r.gflops, r.iterations)
        }
        if let speedup, let parity {
            s += String(format: "blas over naive: %.1f×   naive vs blas relative error: %.2e\n", speedup, parity)
        }
        FileHandle.standardOutput.write(Data(s.utf8))
    }
}
