// One thread-count knob for the whole engine: it bounds the engine's own parallel loops, which
// also split every large product into single-threaded sgemm calls (OpenBLAS's pool stays idle).

import COpenBLAS
import Dispatch
import Foundation

public enum Threads {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var _count: Int = {
        openblas_set_num_threads(1)
        return defaultCount()
    }()

    /// All cores (the command line's `--threads`, `VLM_THREADS` and `OMP_NUM_THREADS` override it).
    public static func defaultCount() -> Int {
        max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// The number of threads the engine uses.
    public static var count: Int {
        lock.lock(); defer { lock.unlock() }
        return _count
    }

    /// Sets the engine's thread count to `n` (at least 1). OpenBLAS itself always runs
    /// single-threaded: the engine splits each large GEMM into per-thread blocks (BLASBackend).
    public static func set(_ n: Int) {
        let n = max(1, n)
        lock.lock(); defer { lock.unlock() }
        _count = n
        openblas_set_num_threads(1)
    }

    /// True on a thread running inside `parallelBlocks`/`parallelInterleaved`: nested work runs
    /// serially there instead of splitting again.
    public static var inParallelRegion: Bool { Thread.current.threadDictionary["vlm.parallel"] != nil }

    /// Runs body(0..<blocks) on up to `count` threads, one block at a time, marking the threads
    /// as inside a parallel region.
    public static func parallelBlocks(_ blocks: Int, _ body: (Int) -> Void) {
        if blocks <= 1 { if blocks == 1 { body(0) }; return }
        DispatchQueue.concurrentPerform(iterations: blocks) { i in
            let d = Thread.current.threadDictionary
            let was = d["vlm.parallel"]
            d["vlm.parallel"] = true
            body(i)
            d["vlm.parallel"] = was
        }
    }

    /// Runs `body` with this thread marked as inside a parallel region: the engine's loops and
    /// products in it run on this thread alone (for work that is itself one of several run at
    /// once, as a batch job's concurrent units are).
    public static func serially<R>(_ body: () throws -> R) rethrows -> R {
        let d = Thread.current.threadDictionary
        let was = d["vlm.parallel"]
        d["vlm.parallel"] = true
        defer { d["vlm.parallel"] = was }
        return try body()
    }

    /// Runs `body(worker, index)` for every index in `0..<total`, dealt round-robin to at most
    /// `count` workers (balanced when costs fall with the index, as in length-sorted batches).
    public static func parallelInterleaved(_ total: Int, _ body: (_ worker: Int, _ index: Int) -> Void) {
        if total <= 0 { return }
        let workers = inParallelRegion ? 1 : min(count, total)
        if workers == 1 { for i in 0..<total { body(0, i) }; return }
        parallelBlocks(workers) { w in
            for i in stride(from: w, to: total, by: workers) { body(w, i) }
        }
    }

    /// Runs `body` over `0..<total` split into at most `count` contiguous chunks of at least
    /// `minChunk` items. Chunks are disjoint, so bodies may write disjoint output ranges.
    public static func parallelFor(_ total: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        if total <= 0 { return }
        if inParallelRegion { body(0..<total); return }
        let workers = min(count, max(1, total / max(1, minChunk)))
        if workers <= 1 { body(0..<total); return }
        let chunk = (total + workers - 1) / workers
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let lo = w * chunk
            let hi = min(total, lo + chunk)
            if lo < hi { body(lo..<hi) }
        }
    }
}
