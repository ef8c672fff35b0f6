// The dynamic batcher alone: requests queued together run in one batch and each gets its own
// rows and failures back; batches keep their limits; a full queue refuses at once; a request past
// its deadline is answered without running; a stop answers everything queued. No test depends on timing but the deadline's, which only waits past it.

import Foundation
import XCTest
import VLMEmbed
import VLMJobs
import VLMServe

final class BatcherTests: XCTestCase {
    final class Counter: BatchObserver, @unchecked Sendable {
        let lock = NSLock()
        var batches: [(requests: Int, items: Int)] = []
        func batchRan(lane: String, requests: Int, items: Int, tokens: Int, seconds: Double) {
            lock.lock(); batches.append((requests, items)); lock.unlock()
        }
        func queueChanged(items: Int) {}
        var count: Int { lock.lock(); defer { lock.unlock() }; return batches.count }
        func waited(lane: String, seconds: Double) {}
    }

    /// Items are numbers; a row is [x, 2x]; a negative number fails, as an undecodable image would.
    func lane() -> Lane<[Float]> {
        Lane(name: "numbers", dim: 2, merge: { $0.flatMap { $0 } }, encode: { xs in
            EncodedBatch(rows: xs.filter { $0 >= 0 }.flatMap { [$0, 2 * $0] },
                         failures: xs.map { $0 < 0 ? ItemError(id: Array("\($0)".utf8), kind: "bad", message: "\($0)") : nil })
        })
    }

    /// Waits (bounded) until the batcher holds `items` queued inputs.
    func waitQueued(_ b: Batcher, _ items: Int) async throws {
        for _ in 0..<2000 where b.queuedItems < items { try await Task.sleep(nanoseconds: 5_000_000) }
        XCTAssertEqual(b.queuedItems, items)
    }

    /// Waits (bounded) until `n` batches are counted: the observer hears of a batch just after
    /// its answers go out.
    func waitBatches(_ c: Counter, _ n: Int) async throws {
        for _ in 0..<2000 {
            if c.count >= n { return }
            try await Task.sleep(nanoseconds: 5_000_000)
        }
    }

    func testRequestsQueuedTogetherShareABatchAndGetTheirOwnRows() async throws {
        let counter = Counter()
        let b = Batcher(limits: .init(maxBatchItems: 100, maxBatchTokens: 1000, maxQueueItems: 100, linger: 0, timeout: 30), observer: counter)
        let l = lane()
        b.add(l)
        let inputs: [[Float]] = [[1, 2], [-1, 3, -2], [4], [5, 6, 7]]
        let results = try await withThrowingTaskGroup(of: (Int, EncodedBatch).self) { group in
            for (k, xs) in inputs.enumerated() {
                group.addTask { (k, try await b.submit(l, xs, items: xs.count, tokens: xs.count)) }
            }
            // Everything is queued before the model thread starts: one batch takes it all.
            try await waitQueued(b, inputs.reduce(0) { $0 + $1.count })
            b.start()
            var out: [Int: EncodedBatch] = [:]
            for try await (k, r) in group { out[k] = r }
            return out
        }
        for (k, xs) in inputs.enumerated() {
            let r = results[k]!
            XCTAssertEqual(r.failures.map { $0?.message }, xs.map { $0 < 0 ? "\($0)" : nil })
            XCTAssertEqual(r.rows, xs.filter { $0 >= 0 }.flatMap { [$0, 2 * $0] })
        }
        try await waitBatches(counter, 1)
        XCTAssertEqual(counter.batches.count, 1, "\(counter.batches)")
        XCTAssertEqual(counter.batches.first?.requests, 4)
        XCTAssertEqual(b.queuedItems, 0)
        b.stop()
        b.waitUntilDrained()
    }

    func testBatchesStayWithinTheLimitsAndALargeRequestRunsAlone() async throws {
        let counter = Counter()
        let b = Batcher(limits: .init(maxBatchItems: 3, maxBatchTokens: 1000, maxQueueItems: 100, linger: 0, timeout: 30), observer: counter)
        let l = lane()
        b.add(l)
        let sizes = [2, 2, 5, 1, 1, 1]
        let results = try await withThrowingTaskGroup(of: (Int, EncodedBatch).self) { group in
            var queued = 0
            for (k, n) in sizes.enumerated() {   // one at a time, in this order
                group.addTask { (k, try await b.submit(l, (0..<n).map { Float(k * 10 + $0) }, items: n)) }
                queued += n
                try await waitQueued(b, queued)
            }
            b.start()
            var out: [Int: EncodedBatch] = [:]
            for try await (k, r) in group { out[k] = r }
            return out
        }
        for (k, n) in sizes.enumerated() {
            var want: [Float] = []
            for j in 0..<n {
                let x = Float(k * 10 + j)
                want += [x, 2 * x]
            }
            XCTAssertEqual(results[k]!.rows, want)
        }
        try await waitBatches(counter, 4)
        XCTAssertEqual(counter.batches.map(\.items), [2, 2, 5, 3])
        b.stop()
        b.waitUntilDrained()
    }

    func testAFullQueueRefusesAndADeadlineAnswersWithoutRunning() async throws {
        let counter = Counter()
        let b = Batcher(limits: .init(maxBatchItems: 100, maxBatchTokens: 1000, maxQueueItems: 5, linger: 0, timeout: 0.2), observer: counter)
        let l = lane()
        b.add(l)
        async let first = b.submit(l, [1, 2, 3], items: 3)
        try await waitQueued(b, 3)
        do {
            _ = try await b.submit(l, [4, 5, 6], items: 3)
            XCTFail("three more items fit no queue of 5")
        } catch let e as BatchRefusal { XCTAssertEqual(e, .queueFull(limit: 5)) }
        // The model thread starts after the deadline: the first request is answered, not run.
        try await Task.sleep(nanoseconds: 300_000_000)
        b.start()
        do {
            _ = try await first
            XCTFail("past its deadline, the request is not run")
        } catch let e as BatchRefusal {
            guard case .deadline(let s) = e else { return XCTFail("\(e)") }
            XCTAssertGreaterThanOrEqual(s, 0.2)
        }
        XCTAssertTrue(counter.batches.isEmpty)
        b.stop()
        do {
            _ = try await b.submit(l, [1], items: 1)
            XCTFail("a stopped batcher takes nothing")
        } catch let e as BatchRefusal { XCTAssertEqual(e, .stopping) }
        b.waitUntilDrained()
    }

    func testAStopAnswersEverythingQueuedFirst() async throws {
        let b = Batcher(limits: .init(maxBatchItems: 2, maxBatchTokens: 1000, maxQueueItems: 100, linger: 0, timeout: 30))
        let l = lane()
        b.add(l)
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for k in 0..<5 { group.addTask { try await b.submit(l, [Float(k)], items: 1).rows.count } }
            try await waitQueued(b, 5)
            b.stop()        // before the model thread even starts
            b.start()
            var n = 0
            for try await rows in group { n += rows }
            return n
        }
        XCTAssertEqual(results, 10)
        b.waitUntilDrained()
    }

    func testACancelledRequestLeavesTheQueueAndTheOthersRun() async throws {
        let counter = Counter()
        let b = Batcher(limits: .init(maxBatchItems: 100, maxBatchTokens: 1000, maxQueueItems: 100, linger: 0, timeout: 30), observer: counter)
        let l = lane()
        b.add(l)
        let kept = Task { try await b.submit(l, [1, 2], items: 2) }
        try await waitQueued(b, 2)
        let cancelled = Task { try await b.submit(l, [3, 4, 5], items: 3) }
        try await waitQueued(b, 5)
        cancelled.cancel()
        do {
            _ = try await cancelled.value
            XCTFail("a cancelled request is not run")
        } catch is CancellationError {}
        XCTAssertEqual(b.queuedItems, 2)
        b.start()
        let rows = try await kept.value.rows
        XCTAssertEqual(rows, [1, 2, 2, 4])
        try await waitBatches(counter, 1)
        XCTAssertEqual(counter.batches.map(\.items), [2])
        // Cancelled before it is queued: refused when it would be, never queued.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await b.submit(l, [6], items: 1)
        }
        do {
            _ = try await early.value
            XCTFail("a request cancelled before it is queued is not run")
        } catch is CancellationError {}
        XCTAssertEqual(b.queuedItems, 0)
        b.stop()
        b.waitUntilDrained()
    }

    func testAdmissionCountsRequestsArrivingAndACutStopAnswersTheQueue() async throws {
        let b = Batcher(limits: .init(maxBatchItems: 100, maxBatchTokens: 1000, maxQueueItems: 3, linger: 0, timeout: 30))
        let l = lane()
        b.add(l)
        // Two items queued and one request arriving fill a queue of 3: the next is refused
        // before its body is read.
        let queued = Task { try await b.submit(l, [1, 2], items: 2) }
        try await waitQueued(b, 2)
        let arriving = try b.arrive()
        XCTAssertThrowsError(try b.arrive()) { XCTAssertEqual($0 as? BatchRefusal, .queueFull(limit: 3)) }
        b.depart(arriving)
        b.depart(arriving)        // idempotent
        let again = try b.arrive()
        b.depart(again)
        // A stop that answers the queue: the queued request is refused, not run.
        XCTAssertEqual(b.stop(answeringQueued: true), 1)
        b.start()
        do {
            _ = try await queued.value
            XCTFail("a request queued at a cut stop is not run")
        } catch let e as BatchRefusal { XCTAssertEqual(e, .stopping) }
        b.waitUntilDrained()
        XCTAssertEqual(b.queuedItems, 0)
    }

    /// A drain cut short while a batch runs answers that batch's requests at once (stopping),
    /// instead of leaving them to a connection that closes; the pass's late result is dropped.
    func testACutStopAnswersTheBatchRunningToo() async throws {
        let started = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let slow = Lane<[Float]>(name: "slow", dim: 1, merge: { $0.flatMap { $0 } }, encode: { xs in
            started.signal()
            release.wait()
            return EncodedBatch(rows: xs, failures: xs.map { _ in nil })
        })
        let b = Batcher(limits: .init(maxBatchItems: 10, maxBatchTokens: 100, maxQueueItems: 10, linger: 0, timeout: 60))
        b.add(slow)
        b.start()
        let running = Task { try await b.submit(slow, [1], items: 1) }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async { started.wait(); c.resume() }
        }
        let queued = Task { try await b.submit(slow, [2], items: 1) }
        try await waitQueued(b, 2)
        XCTAssertEqual(b.stop(answeringQueued: true), 2)
        for t in [running, queued] {
            do {
                _ = try await t.value
                XCTFail("answered with rows after the cut")
            } catch let e as BatchRefusal { XCTAssertEqual(e, .stopping) }
        }
        release.signal()
        b.waitUntilDrained()
        XCTAssertEqual(b.queuedItems, 0)
    }
}
