// What this CPU can do, measured: the FMA peak (independent multiply-add chains on every
// thread, the widest vectors the CPU runs) and the sgemm rate on a large square product
// through the BLAS backend. Benchmarks report vlm's GFLOP/s as a share of both; a peak is at
// least what any real kernel reached (`peakGFLOPs`).

import CKernels
import COpenBLAS
import Dispatch

public enum Peaks {
    /// GFLOP/s of fused multiply-adds over `Threads.count` threads: the best of `repeats` runs
    /// of about `seconds` each (this machine's timings drift; the best run is the one least
    /// disturbed). Chains of the widest vectors with FMA that the CPU runs (`vlm_fma_chains`).
    public static func fmaGFLOPs(seconds: Double = 0.3, repeats: Int = 3) -> Double {
        var lanes: Int32 = 0
        // Calibrate on one thread, then size the timed runs.
        var iterations = 200_000
        var t = time { _ = vlm_fma_chains(iterations, &lanes) }
        while t < 0.02 { iterations *= 4; t = time { _ = vlm_fma_chains(iterations, &lanes) } }
        iterations = max(iterations, Int(Double(iterations) * seconds / t))
        let threads = Threads.count
        var best = Double.infinity
        for _ in 0..<repeats {
            best = min(best, time {
                Threads.parallelBlocks(threads) { _ in
                    var l: Int32 = 0
                    _ = vlm_fma_chains(iterations, &l)
                }
            })
        }
        return Double(threads) * Double(iterations) * 12 * Double(lanes) * 2 / best / 1e9
    }

    /// GFLOP/s of sgemm on an n×n×n product, best of `repeats`: the better of the BLAS
    /// backend's split over the engine's threads and one cblas_sgemm on OpenBLAS's own pool of
    /// `Threads.count` threads (which wins on large square products).
    public static func sgemmGFLOPs(n: Int = 2048, repeats: Int = 3) -> Double {
        var rng = SeededRandom(seed: 5)
        let a = rng.normals(n * n, std: 1), b = rng.normals(n * n, std: 1)
        var c = [Float](repeating: 0, count: n * n)
        let backend = BLASBackend()
        var best = Double.infinity
        for _ in 0..<(repeats + 1) {
            best = min(best, time {
                backend.gemm(transA: false, transB: false, m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, beta: 0,
                             c: &c, ldc: n, epilogue: .none)
            })
        }
        openblas_set_num_threads(Int32(Threads.count))
        defer { openblas_set_num_threads(1) }
        for _ in 0..<(repeats + 1) {
            best = min(best, time {
                sgemm(transA: false, transB: false, m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, beta: 0, c: &c, ldc: n)
            })
        }
        return 2 * Double(n) * Double(n) * Double(n) / best / 1e9
    }

    private static func time(_ body: () -> Void) -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    /// The compute peak that shares are taken of: the FMA loop's rate, or sgemm's when that was
    /// higher (a timing disturbed the FMA loop more) — never below a kernel that really ran.
    public static func peakGFLOPs(fma: Double, sgemm: Double) -> Double { max(fma, sgemm) }
}
