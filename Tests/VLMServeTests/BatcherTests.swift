// The dynamic batcher alone: requests queued together run in one batch and each gets its own
// rows and failures back; a full queue refuses at once; a request past its deadline is answered
// without running; a stop answers everything queued.

import Foundation
import XCTest
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
        func waited(lane: String, seconds: Double) {}
    }

    /// Items are numbers; a row is [x, 2x]; a negative number fails, as an undecodable image would.
    func lane() -> Lane<[Float]> {
        Lane(name: "numbers", dim: 2, merge: { $0.flatMap { $0 } }, encode: { xs in
            EncodedBatch(rows: xs.filter { $0 >= 0 }.flatMap { [$0, 2 * $0] },
                         failures: xs.map { $0 < 0 ? ItemError(id: Array("\($0)".utf8), kind: "bad", message: "\($0)") : nil })
        })
    }

    func testRequestsQueuedTogetherShareABatchAndGetTheirOwnRows() async throws {
        let counter = Counter()
        let b = Batcher(limits: .init(maxBatchItems: 100, maxBatchTokens: 1000, maxQueueItems: 100, linger: 0.5, timeout: 30), observer: counter)
        let l = lane()
        b.add(l)
        b.start()
        let holder = b.arrive()   // a request still arriving: the batch lingers for it
        let inputs: [[Float]] = [[1, 2], [-1, 3, -2], [4], [5, 6, 7]]
        let results = try await withThrowingTaskGroup(of: (Int, EncodedBatch).self) { group in
            for (k, xs) in inputs.enumerated() {
                group.addTask { (k, try await b.submit(l, xs, items: xs.count, tokens: xs.count)) }
            }
            try await Task.sleep(nanoseconds: 100_000_000)
            b.depart(holder)
            var out: [Int: EncodedBatch] = [:]
            for try await (k, r) in group { out[k] = r }
            return out
        }
        for (k, xs) in inputs.enumerated() {
            let r = results[k]!
            XCTAssertEqual(r.failures.map { $0?.message }, xs.map { $0 < 0 ? "\($0)" : nil })
            XCTAssertEqual(r.rows, xs.filter { $0 >= 0 }.flatMap { [$0, 2 * $0] })
        }
        XCTAssertEqual(counter.batches.count, 1, "\(counter.batches)")
        XCTAssertEqual(counter.batches.first?.requests, 4)
        XCTAssertEqual(b.queuedItems, 0)
        b.stop()
        b.waitUntilDrained()
    }

    func testBatchesStayWithinTheLimitsAndALargeRequestRunsAlone() async throws {
        let counter = Counter()
        let b = Batcher(limits: .init(maxBatchItems: 3, maxBatchTokens: 1000, maxQueueItems: 100, linger: 0.2, timeout: 30), observer: counter)
        let l = lane()
        b.add(l)
        let sizes = [2, 2, 5, 1, 1, 1]
        // Queued before the model thread starts, so the batches are decided by the limits alone.
        let results = try await withThrowingTaskGroup(of: (Int, EncodedBatch).self) { group in
            for (k, n) in sizes.enumerated() {
                group.addTask {
                    try await Task.sleep(nanoseconds: UInt64(k) * 20_000_000)
                    return (k, try await b.submit(l, (0..<n).map { Float(k * 10 + $0) }, items: n))
                }
            }
            try await Task.sleep(nanoseconds: 400_000_000)
            b.start()
            var out: [Int: EncodedBatch] = [:]
            for try await (k, r) in group { out[k] = r }
            return out
        }
        for (k, n) in sizes.enumerated() { XCTAssertEqual(results[k]!.rows.count, 2 * n) }
        XCTAssertEqual(counter.batches.map(\.items), [2, 2, 5, 3])
        b.stop()
        b.waitUntilDrained()
    }

    func testAFullQueueRefusesAndADeadlineAnswersWithoutRunning() async throws {
        let counter = Counter()
        let b = Batcher(limits: .init(maxBatchItems: 100, maxBatchTokens: 1000, maxQueueItems: 3, linger: 2, timeout: 0.2), observer: counter)
        let l = lane()
        b.add(l)
        b.start()
        let holder = b.arrive()
        async let first = b.submit(l, [1, 2, 3], items: 3)
        try await Task.sleep(nanoseconds: 50_000_000)
        do {
            _ = try await b.submit(l, [4], items: 1)
            XCTFail("a fourth item fits no queue of 3")
        } catch let e as BatchRefusal { XCTAssertEqual(e, .queueFull(limit: 3)) }
        do {
            _ = try await first
            XCTFail("lingering past the deadline, the request is not run")
        } catch let e as BatchRefusal {
            guard case .deadline(let s) = e else { return XCTFail("\(e)") }
            XCTAssertGreaterThanOrEqual(s, 0.2)
        }
        b.depart(holder)
        XCTAssertTrue(counter.batches.isEmpty)
        b.stop()
        do {
            _ = try await b.submit(l, [1], items: 1)
            XCTFail("a stopped batcher takes nothing")
        } catch let e as BatchRefusal { XCTAssertEqual(e, .stopping) }
        b.waitUntilDrained()
    }
}
