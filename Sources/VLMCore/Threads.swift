// One thread budget for the whole engine. `Threads.count` threads of vlm's own pool do all of
// the engine's work: forward passes, every product split, convolution tiles, Winograd's
// products, attention, LayerNorm/softmax loops, image decoding and PCA. A thread that is not
// one of them (the main thread, a server's request thread, a job's reader) hands its work to
// the pool (`run`, `submit`, or any parallel region) and sleeps until it is done, so at most
// `count` threads work at once however many callers there are, and the same `count` threads
// do it all (a test counts the process's OS threads that gained CPU time). OpenBLAS runs with
// one thread (each sgemm on the pool thread that calls it), except inside
// `OpenBLASThreads.with`, whose callers are the only work running then (PCA's decomposition).
//
// Why not Dispatch: `DispatchQueue.concurrentPerform` runs on the global pool, as wide as the
// machine, and its nested and concurrent uses multiply (a batch of 8 with `--threads 1` spent a
// third of its CPU time on other threads); there is no way to give it a width.

import CKernels
import COpenBLAS
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public enum Threads {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var _count: Int = {
        openblas_set_num_threads(1)
        let n = defaultCount()
        pool.setWidth(n)   // no thread starts before work comes
        return n
    }()

    /// The CPUs this process may use: its affinity mask (`taskset`, a container's cpuset), and
    /// its cgroup's CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`),
    /// rounded up — not the machine's core count. `--threads`, `VLM_THREADS` and
    /// `OMP_NUM_THREADS` override it.
    public static func defaultCount() -> Int {
        defaultCount(affinity: affinityCount(), cgroupRoot: "/sys/fs/cgroup", cgroupFile: "/proc/self/cgroup")
    }

    /// `defaultCount()` from the parts given (tests inject a quota under a folder of their own).
    public static func defaultCount(affinity: Int?, cgroupRoot: String, cgroupFile: String) -> Int {
        var n = affinity ?? ProcessInfo.processInfo.activeProcessorCount
        if let q = cgroupQuota(root: cgroupRoot, membership: cgroupFile) { n = min(n, q) }
        return max(1, n)
    }

    /// CPUs in this process's affinity mask (nil when it cannot be read).
    public static func affinityCount() -> Int? {
        let n = Int(vlm_affinity_cpus())
        return n > 0 ? n : nil
    }

    /// The CPU quota of this process's cgroup, in whole CPUs rounded up (nil: no quota). Looks at
    /// the cgroup named in `membership` (/proc/self/cgroup) under `root`, then at `root`
    /// itself (a container sees its own cgroup there), at every level up to the root, and takes
    /// the smallest quota.
    public static func cgroupQuota(root: String, membership: String) -> Int? {
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var folders: [String] = []
        if let lines = read(membership)?.split(separator: "\n") {
            for line in lines {
                // "0::/path" (v2) or "N:cpu,cpuacct:/path" (v1)
                let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                guard parts.count == 3 else { continue }
                let controllers = parts[1].split(separator: ",")
                var path = String(parts[2])
                if path.hasPrefix("/") { path.removeFirst() }
                var bases: [String] = []
                if parts[1].isEmpty { bases = [root] }
                if controllers.contains("cpu") { bases += ["\(root)/cpu", "\(root)/cpu,cpuacct", "\(root)/cpuacct,cpu"] }
                for base in bases {
                    var p = path
                    while true {
                        folders.append(p.isEmpty ? base : "\(base)/\(p)")
                        if p.isEmpty { break }
                        p = p.lastIndex(of: "/").map { String(p[..<$0]) } ?? ""
                    }
                }
            }
        }
        folders += [root, "\(root)/cpu", "\(root)/cpu,cpuacct"]
        var best: Int?
        for folder in folders {
            var quota: Double?
            if let max = read("\(folder)/cpu.max") {
                let f = max.split(separator: " ")
                if f.count >= 1, let q = Double(f[0]), q > 0 {
                    let period = f.count > 1 ? Double(f[1]) ?? 100_000 : 100_000
                    if period > 0 { quota = q / period }
                }
            } else if let q = read("\(folder)/cpu.cfs_quota_us").flatMap(Double.init), q > 0,
                      let period = read("\(folder)/cpu.cfs_period_us").flatMap(Double.init), period > 0 {
                quota = q / period
            }
            if let quota {
                let n = max(1, Int(quota.rounded(.up)))
                best = min(best ?? n, n)
            }
        }
        return best
    }

    /// The number of threads the engine uses.
    public static var count: Int {
        lock.lock(); defer { lock.unlock() }
        return _count
    }

    /// Sets the engine's thread count to `n` (at least 1): the pool's width. OpenBLAS itself
    /// runs single-threaded: the engine splits each large GEMM into per-thread blocks.
    public static func set(_ n: Int) {
        let n = max(1, n)
        lock.lock(); defer { lock.unlock() }
        _count = n
        pool.setWidth(n)
        openblas_set_num_threads(1)
    }

    static let pool = EnginePool()

    /// True on a thread running a block of a parallel region (or inside `serially`): nested
    /// work runs serially there instead of splitting again.
    public static var inParallelRegion: Bool { ThreadFlags.get() & ThreadFlags.region != 0 }

    /// True on one of the engine's own threads.
    public static var onEngineThread: Bool { ThreadFlags.get() & ThreadFlags.pool != 0 }

    /// Runs `body` on the engine's threads and returns its result: inline on an engine thread,
    /// otherwise handed to the pool while this thread waits (serially there when this thread
    /// is inside `serially`).
    public static func run<R>(_ body: () throws -> R) rethrows -> R {
        _ = count   // the pool exists
        if onEngineThread { return try body() }
        return try withoutActuallyEscaping(body) { body in
            let box = ResultBox<R>()
            let task = PoolTask(serial: inParallelRegion) { box.result = Result { try body() } }
            pool.enqueue(task)
            task.waitDone()
            return try box.result!.get()
        }
    }

    /// Starts `body` on the engine's threads; `wait()` gives its result.
    public static func submit<R>(_ body: @escaping () -> R) -> Pending<R> {
        _ = count
        let box = ResultBox<R>()
        let task = PoolTask(serial: inParallelRegion) { box.value = body() }
        pool.enqueue(task)
        return Pending(task: task, box: box)
    }

    /// Runs body(0..<blocks) on up to `count` engine threads, one block at a time, marking the
    /// threads as inside a parallel region. Inside a region (or `serially`) the blocks run one
    /// after the other on this thread.
    public static func parallelBlocks(_ blocks: Int, _ body: (Int) -> Void) {
        if blocks <= 0 { return }
        if !onEngineThread { return run { parallelBlocks(blocks, body) } }
        let was = ThreadFlags.get()
        if blocks == 1 || was & ThreadFlags.region != 0 {
            ThreadFlags.set(was | ThreadFlags.region)
            for i in 0..<blocks { body(i) }
            ThreadFlags.set(was)
            return
        }
        withoutActuallyEscaping(body) { body in pool.region(blocks: blocks, body: body) }
    }

    /// Runs `body` with this thread marked as inside a parallel region: the engine's loops and
    /// products in it run on this thread alone (for work that is itself one of several run at
    /// once, as a batch job's concurrent units are).
    public static func serially<R>(_ body: () throws -> R) rethrows -> R {
        let was = ThreadFlags.get()
        ThreadFlags.set(was | ThreadFlags.region)
        defer { ThreadFlags.set(was) }
        return try body()
    }

    /// Runs `body(worker, index)` for every index in `0..<total`, dealt round-robin to at most
    /// `count` workers (balanced when costs fall with the index, as in length-sorted batches).
    public static func parallelInterleaved(_ total: Int, _ body: (_ worker: Int, _ index: Int) -> Void) {
        if total <= 0 { return }
        if !onEngineThread { return run { parallelInterleaved(total, body) } }
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
        if !onEngineThread { return run { parallelFor(total, minChunk: minChunk, body) } }
        if inParallelRegion { body(0..<total); return }
        let workers = min(count, max(1, total / max(1, minChunk)))
        if workers <= 1 { body(0..<total); return }
        let chunk = (total + workers - 1) / workers
        parallelBlocks(workers) { w in
            let lo = w * chunk
            let hi = min(total, lo + chunk)
            if lo < hi { body(lo..<hi) }
        }
    }
}

/// A value being computed on the engine's threads (`Threads.submit`).
public final class Pending<T>: @unchecked Sendable {
    fileprivate let task: PoolTask
    fileprivate let box: ResultBox<T>
    fileprivate init(task: PoolTask, box: ResultBox<T>) { (self.task, self.box) = (task, box) }

    /// The value, once computed. On an engine thread, a task not yet started runs here instead
    /// of waiting for a free thread (which could be this one).
    public func wait() -> T {
        if Threads.onEngineThread, Threads.pool.claim(task) { task.execute() }
        task.waitDone()
        return box.value!
    }
}

final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
    var value: T?
}

/// Per-thread flags, in a pthread key (cheaper than Thread's dictionary on every block).
enum ThreadFlags {
    static let pool = 1, region = 2
    nonisolated(unsafe) static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()
    @inline(__always) static func get() -> Int { Int(bitPattern: pthread_getspecific(key)) }
    @inline(__always) static func set(_ f: Int) { pthread_setspecific(key, UnsafeRawPointer(bitPattern: f)) }
}

/// Work handed to the pool: run once, by a pool thread or by the thread that waits for it.
final class PoolTask: @unchecked Sendable {
    /// Released as soon as it has run (`Threads.run` hands over a closure that must not escape).
    private var work: (() -> Void)?
    private let done = NSCondition()
    private var isDone = false
    /// Set under the pool's lock when a thread takes the task.
    var claimed = false
    /// Handed over from inside a parallel region or `serially`: it runs serially too.
    private let serial: Bool
    init(serial: Bool, _ work: @escaping () -> Void) { (self.serial, self.work) = (serial, work) }

    func execute() {
        let was = ThreadFlags.get()
        if serial { ThreadFlags.set(was | ThreadFlags.region) }
        work!()
        ThreadFlags.set(was)
        work = nil
        done.lock(); isDone = true; done.broadcast(); done.unlock()
    }
    func waitDone() { done.lock(); while !isDone { done.wait() }; done.unlock() }
}

/// A parallel region: blocks claimed one at a time by the thread that opened it and by the pool
/// threads that are free.
final class Region {
    let blocks: Int
    /// Released by the opening thread once every block is done (the closure must not escape).
    var body: ((Int) -> Void)?
    var next = 0, finished = 0, helpers = 0
    let maxHelpers: Int
    private let done = NSCondition()
    private var isDone = false
    private let doneFlag = Atomic<Bool>(false)
    init(blocks: Int, maxHelpers: Int, body: @escaping (Int) -> Void) { (self.blocks, self.maxHelpers, self.body) = (blocks, maxHelpers, body) }

    func finish() {
        doneFlag.store(true, ordering: .releasing)
        done.lock(); isDone = true; done.broadcast(); done.unlock()
    }

    /// Waits for the helpers' last blocks: a short spin first (they usually end within
    /// microseconds of the owner's, and a futex sleep and wake costs tens of them).
    func waitDone() {
        if spinUntil({ doneFlag.load(ordering: .acquiring) }) { return }
        done.lock(); while !isDone { done.wait() }; done.unlock()
    }
}

/// Spins up to `spinMicroseconds` for `ready`; true when it became ready. The spin happens only on
/// engine threads that would otherwise sleep, so it stays inside the thread budget.
@inline(__always) func spinUntil(_ ready: () -> Bool) -> Bool {
    let deadline = DispatchTime.now().uptimeNanoseconds + spinMicroseconds * 1000
    var n = 0
    while true {
        if ready() { return true }
        n += 1
        if n & 63 == 0 && DispatchTime.now().uptimeNanoseconds > deadline { return false }
    }
}

/// How long an idle engine thread polls for work, and a region's thread for its helpers, before
/// sleeping on a condition.
let spinMicroseconds: UInt64 = 30

/// `width` threads that run tasks (FIFO, first) and help with open regions.
final class EnginePool: @unchecked Sendable {
    private let cond = NSCondition()
    private var width = 0, spawned = 0
    private var tasks: [PoolTask] = []
    private var head = 0
    private var regions: [Region] = []
    /// Bumped whenever work arrives: idle threads poll it briefly before they sleep.
    private let arrivals = Atomic<Int>(0)

    /// Sets the width; threads start when work first comes (so a `--threads 2` process on a
    /// large machine starts 2, not the default count first). Threads past a smaller width sleep.
    func setWidth(_ n: Int) {
        cond.lock()
        width = n
        cond.broadcast()
        cond.unlock()
    }

    /// Starts threads up to the width (under the lock).
    private func spawnToWidth() {
        while spawned < width {
            let index = spawned
            let t = Thread { [self] in loop(index) }
            t.stackSize = 8 << 20
            t.start()
            spawned += 1
        }
    }

    func enqueue(_ task: PoolTask) {
        cond.lock()
        spawnToWidth()
        tasks.append(task)
        arrivals.add(1, ordering: .releasing)
        wake(1)
        cond.unlock()
    }

    /// Wakes `n` idle threads (all of them when some idle ones are past the width and must not
    /// be the ones woken). Under the lock.
    private func wake(_ n: Int) {
        if n == 1 && spawned <= width { cond.signal() } else { cond.broadcast() }
    }

    /// Takes `task` for the calling thread if no one has.
    func claim(_ task: PoolTask) -> Bool {
        cond.lock(); defer { cond.unlock() }
        if task.claimed { return false }
        task.claimed = true
        return true
    }

    private func loop(_ index: Int) {
        ThreadFlags.set(ThreadFlags.pool)
        vlm_set_thread_name("vlm-\(index)")   // what /proc and top show
        cond.lock()
        while true {
            if index < width {
                // Tasks first: they are what keeps the model fed (the next unit decoded, a
                // request tokenized) while a forward pass runs; a region's own thread finishes
                // its blocks without help if need be.
                if let task = nextTask() {
                    cond.unlock()
                    task.execute()
                    ThreadFlags.set(ThreadFlags.pool)
                    cond.lock()
                    continue
                }
                if let r = regions.first(where: { $0.next < $0.blocks && $0.helpers < $0.maxHelpers }) {
                    r.helpers += 1
                    runBlocks(r, helper: true)
                    continue
                }
                // Nothing to do: poll briefly (regions come one after another within a forward
                // pass), then sleep. Work that arrives after the poll signals under the lock.
                let seen = arrivals.load(ordering: .acquiring)
                cond.unlock()
                let arrived = spinUntil { arrivals.load(ordering: .acquiring) != seen }
                cond.lock()
                // Re-read under the lock: work added since the poll (its signal found no one
                // waiting) is seen here, not slept through.
                if arrived || arrivals.load(ordering: .acquiring) != seen { continue }
            }
            cond.wait()
        }
    }

    /// The next unclaimed task (under the lock).
    private func nextTask() -> PoolTask? {
        while head < tasks.count {
            let t = tasks[head]
            head += 1
            if head > 64 && head * 2 > tasks.count { tasks.removeFirst(head); head = 0 }
            if !t.claimed { t.claimed = true; return t }
        }
        return nil
    }

    /// Claims and runs blocks of `r` until none are left (called and returning under the lock).
    /// A helper (not the region's own thread) leaves between blocks when a task is queued.
    private func runBlocks(_ r: Region, helper: Bool = false) {
        while r.next < r.blocks {
            if helper && head < tasks.count {
                r.helpers -= 1
                return
            }
            let i = r.next
            r.next += 1
            if r.next == r.blocks, let k = regions.firstIndex(where: { $0 === r }) { regions.remove(at: k) }
            cond.unlock()
            let was = ThreadFlags.get()
            ThreadFlags.set(was | ThreadFlags.region)
            r.body!(i)
            ThreadFlags.set(was)
            cond.lock()
            r.finished += 1
            if r.finished == r.blocks { r.finish() }
        }
    }

    /// Runs a region from an engine thread: free threads help, up to the width.
    func region(blocks: Int, body: @escaping (Int) -> Void) {
        cond.lock()
        let r = Region(blocks: blocks, maxHelpers: min(blocks, width) - 1, body: body)
        if r.maxHelpers > 0 {
            spawnToWidth()
            regions.append(r)
            arrivals.add(1, ordering: .releasing)
            wake(r.maxHelpers)
        }
        runBlocks(r)
        cond.unlock()
        r.waitDone()
        cond.lock(); r.body = nil; cond.unlock()
    }
}
