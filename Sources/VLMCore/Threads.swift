// One thread-count knob for the whole engine: it sets OpenBLAS's pool and bounds the engine's
// own parallel loops (im2col, epilogues, pooling, the naive backend).

import COpenBLAS
import Dispatch
import Foundation

public enum Threads {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var _count: Int = {
        let n = defaultCount()
        openblas_set_num_threads(Int32(n))
        return n
    }()

    /// All cores, unless `VLM_THREADS` says otherwise.
    public static func defaultCount() -> Int {
        if let s = ProcessInfo.processInfo.environment["VLM_THREADS"], let n = Int(s), n > 0 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// The number of threads the engine uses.
    public static var count: Int {
        lock.lock(); defer { lock.unlock() }
        return _count
    }

    /// Sets OpenBLAS's thread count and the engine's own to `n` (at least 1).
    public static func set(_ n: Int) {
        let n = max(1, n)
        lock.lock(); defer { lock.unlock() }
        _count = n
        openblas_set_num_threads(Int32(n))
    }

    /// Runs `body` over `0..<total` split into at most `count` contiguous chunks of at least
    /// `minChunk` items. Chunks are disjoint, so bodies may write disjoint output ranges.
    public static func parallelFor(_ total: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        if total <= 0 { return }
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
