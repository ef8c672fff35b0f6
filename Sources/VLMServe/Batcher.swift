// Dynamic batching for `vlm serve`: requests that arrive while the model is busy (or within a
// short linger) run in one forward pass. Each kind of request (texts, images, image–text pairs)
// has its own lane; one model thread takes, from the lane whose oldest request is oldest, whole
// requests up to --max-batch-size items and --max-batch-tokens tokens (a larger request goes
// alone), merges their prepared inputs, runs the encoder — the batch jobs' encoders, which pack
// texts by tokens — and hands each request its own rows. Bounded: a request that would take the
// queue past its limit is refused at once (429), and one still queued at its deadline is
// answered with a timeout instead of being run.

import Foundation
import VLMEmbed

/// Why a request was not run.
public enum BatchRefusal: Error, Equatable {
    /// The queue holds `limit` items already.
    case queueFull(limit: Int)
    /// Still queued at its deadline.
    case deadline(seconds: Double)
    /// The server is shutting down.
    case stopping
}

/// What the batcher reports after each forward pass and while requests wait.
public protocol BatchObserver: AnyObject, Sendable {
    func batchRan(lane: String, requests: Int, items: Int, tokens: Int, seconds: Double)
    func queueChanged(items: Int)
    func waited(lane: String, seconds: Double)
}

/// One kind of request: how prepared inputs of several requests merge into one batch, and how
/// a batch runs.
public final class Lane<Prepared>: @unchecked Sendable {
    public let name: String
    let merge: ([Prepared]) -> Prepared
    let encode: (Prepared) throws -> EncodedBatch
    /// Floats per row.
    public let dim: Int

    public init(name: String, dim: Int, merge: @escaping ([Prepared]) -> Prepared, encode: @escaping (Prepared) throws -> EncodedBatch) {
        (self.name, self.dim, self.merge, self.encode) = (name, dim, merge, encode)
    }

    struct Pending {
        var prepared: Prepared
        var items: Int
        var tokens: Int
        var enqueued: Double
        var deadline: Double
        var ticket: Ticket
        var done: (Result<EncodedBatch, Error>) -> Void
    }
    var queue: [Pending] = []
    /// The abort answers of the batch last taken (`LaneQueue.abortAnswers`).
    var lastTaken: [() -> Void] = []
}

/// The lanes' common face for the model thread (called with the batcher's lock held, except `run`).
protocol LaneQueue: AnyObject {
    var name: String { get }
    var oldest: Double? { get }
    var earliestDeadline: Double? { get }
    var queuedItems: Int { get }
    var queuedTokens: Int { get }
    /// Removes the requests past their deadline and returns how to answer them.
    func expire(now: Double) -> [() -> Void]
    /// Removes every queued request and returns how to answer them (`stopping`).
    func removeAll() -> [() -> Void]
    /// Removes the request holding `ticket`, if still queued, and returns how to answer it.
    func remove(_ ticket: Ticket) -> (() -> Void)?
    /// Removes whole requests from the front, at least one, within the limits; returns the batch
    /// to run outside the lock and its size.
    func take(maxItems: Int, maxTokens: Int, now: Double) -> (run: () -> Void, requests: Int, items: Int, tokens: Int, waited: [Double])
    /// How to answer the requests of the batch `take` just returned (`stopping`), should the
    /// drain be cut short while it runs: each request is answered once, by whichever comes first.
    func abortAnswers(of run: Int) -> [() -> Void]
}

extension Lane: LaneQueue {
    var oldest: Double? { queue.first?.enqueued }
    var earliestDeadline: Double? { queue.map { (p: Pending) -> Double in p.deadline }.min() }
    var queuedItems: Int { queue.reduce(0) { $0 + $1.items } }
    var queuedTokens: Int { queue.reduce(0) { $0 + $1.tokens } }

    func expire(now: Double) -> [() -> Void] {
        var answers: [() -> Void] = []
        queue.removeAll { p in
            guard p.deadline <= now else { return false }
            let seconds = now - p.enqueued
            answers.append { p.done(.failure(BatchRefusal.deadline(seconds: seconds))) }
            return true
        }
        return answers
    }

    func removeAll() -> [() -> Void] {
        let all: [Pending] = queue
        queue.removeAll()
        return all.map { (p: Pending) -> () -> Void in { p.done(.failure(BatchRefusal.stopping)) } }
    }

    func abortAnswers(of run: Int) -> [() -> Void] {
        defer { lastTaken = [] }
        return lastTaken
    }

    func remove(_ ticket: Ticket) -> (() -> Void)? {
        guard let k = queue.firstIndex(where: { (p: Pending) -> Bool in p.ticket === ticket }) else { return nil }
        let p: Pending = queue.remove(at: k)
        return { p.done(.failure(CancellationError())) }
    }

    func take(maxItems: Int, maxTokens: Int, now: Double) -> (run: () -> Void, requests: Int, items: Int, tokens: Int, waited: [Double]) {
        var n = 0, items = 0, tokens = 0
        while n < queue.count {
            let p = queue[n]
            if n > 0 && (items + p.items > maxItems || tokens + p.tokens > maxTokens) { break }
            items += p.items
            tokens += p.tokens
            n += 1
        }
        let batch = Array(queue.prefix(n))
        queue.removeFirst(n)
        lastTaken = batch.map { (p: Pending) -> () -> Void in { p.done(.failure(BatchRefusal.stopping)) } }
        let waited = batch.map { now - $0.enqueued }
        let run = { [self] in
            let result = Result { try self.encode(batch.count == 1 ? batch[0].prepared : self.merge(batch.map(\.prepared))) }
            switch result {
            case .failure(let e):
                for p in batch { p.done(.failure(e)) }
            case .success(let all):
                // Each request's failures are its slice; its rows follow the good items before it.
                var offset = 0, row = 0
                for p in batch {
                    let failures = Array(all.failures[offset..<(offset + p.items)])
                    let good = failures.filter { $0 == nil }.count
                    let rows = Array(all.rows[(row * self.dim)..<((row + good) * self.dim)])
                    offset += p.items
                    row += good
                    p.done(.success(EncodedBatch(rows: rows, failures: failures)))
                }
            }
        }
        return (run, n, items, tokens, waited)
    }
}

/// Set once: the first to claim it answers a request.
final class AnsweredFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var claimed = false
    func claim() -> Bool {
        lock.lock(); defer { lock.unlock() }
        if claimed { return false }
        claimed = true
        return true
    }
}

/// A queued request's handle, for cancelling it.
final class Ticket: @unchecked Sendable {
    /// Set under the batcher's lock.
    var cancelled = false
}

/// The model thread and the queue in front of it.
public final class Batcher: @unchecked Sendable {
    public struct Limits: Sendable {
        /// Items (texts, images, pairs) per forward pass; a larger request runs alone.
        public var maxBatchItems: Int
        /// Tokens per text forward pass.
        public var maxBatchTokens: Int
        /// Items queued at most, across lanes.
        public var maxQueueItems: Int
        /// Seconds to wait for more requests before running a batch that is not full.
        public var linger: Double
        /// Seconds a request may wait in the queue.
        public var timeout: Double

        public init(maxBatchItems: Int, maxBatchTokens: Int, maxQueueItems: Int, linger: Double, timeout: Double) {
            (self.maxBatchItems, self.maxBatchTokens, self.maxQueueItems, self.linger, self.timeout) =
                (maxBatchItems, maxBatchTokens, maxQueueItems, linger, timeout)
        }
    }

    public let limits: Limits
    /// Items per batch for each lane, when lower than `limits.maxBatchItems` (image batches).
    private var laneItemLimits: [String: Int] = [:]
    private let condition = NSCondition()
    private var lanes: [any LaneQueue] = []
    private var queued = 0
    private var stopping = false
    private var finished = false
    /// Stopped answering what it held (a cut drain): nothing is left to wait for.
    private var answeredAll = false
    private weak var observer: (any BatchObserver)?
    private var thread: Thread?
    /// Requests being read and prepared, not queued yet (`arrive` / `depart`).
    private var arriving = 0
    private var lastBatchRequests = 0
    private var lastBatchEnd: Double = 0
    /// Answers for the requests of the batch the model is running, used when the drain is cut
    /// short (`stop(answeringQueued:)`), so they get a 503 rather than a closed connection.
    private var runningAborts: [() -> Void] = []

    public init(limits: Limits, observer: (any BatchObserver)? = nil) {
        self.limits = limits
        self.observer = observer
    }

    /// Adds a lane; `maxItems` caps its batches below the common limit.
    public func add<P>(_ lane: Lane<P>, maxItems: Int? = nil) {
        condition.lock(); defer { condition.unlock() }
        lanes.append(lane)
        if let maxItems { laneItemLimits[lane.name] = maxItems }
    }

    /// Starts the model thread, and the watch that answers requests reaching their deadline
    /// while the model is busy with a long batch.
    public func start() {
        let t = Thread { [self] in loop() }
        t.name = "vlm-model"
        t.stackSize = 16 << 20
        thread = t
        t.start()
        let w = Thread { [self] in watchDeadlines() }
        w.name = "vlm-deadlines"
        w.start()
    }

    private func watchDeadlines() {
        condition.lock()
        while !finished {
            let now: Double = Self.now()
            var answers: [() -> Void] = []
            for lane in lanes { answers += lane.expire(now: now) }
            if !answers.isEmpty {
                condition.unlock()
                for a in answers { a() }
                condition.lock()
                continue
            }
            let next: Double? = lanes.compactMap { (l: any LaneQueue) -> Double? in l.earliestDeadline }.min()
            if let next {
                _ = condition.wait(until: Date(timeIntervalSinceNow: max(0.001, next - now)))
            } else {
                condition.wait()
            }
        }
        condition.unlock()
    }

    /// Stops taking requests; the model thread finishes what is queued (or, `answeringQueued`,
    /// only the batch it is running: the rest is answered `stopping`), then `wait` returns.
    /// Returns how many queued requests were answered so.
    @discardableResult
    public func stop(answeringQueued: Bool = false) -> Int {
        condition.lock()
        stopping = true
        var answers: [() -> Void] = []
        if answeringQueued {
            for lane in lanes { answers += lane.removeAll() }
            answers += runningAborts
            runningAborts = []
            answeredAll = true
        }
        condition.broadcast()
        condition.unlock()
        for a in answers { a() }
        return answers.count
    }

    /// Blocks until the model thread has answered everything queued before `stop` — or, after a
    /// `stop(answeringQueued: true)`, not at all: every request has its answer, and the forward
    /// pass still running is not waited for.
    public func waitUntilDrained() {
        condition.lock()
        while !finished && !answeredAll && thread != nil { condition.wait() }
        condition.unlock()
    }

    /// A request that has begun arriving: its body is being read, decoded, tokenized.
    public final class Arrival: @unchecked Sendable {
        fileprivate var departed = false
        /// When its body was in (the deadline counts from then); until then, when it began.
        fileprivate var time: Double
        fileprivate init(time: Double) { self.time = time }
        /// Bytes of its body the server holds for it (the server's own accounting).
        public var heldBytes = 0
        /// When its deadline began counting (set before the request's work is handed on).
        public var since: Double { time }
        /// Not queued (nor refused, nor answered) yet: still read, decoded or tokenized.
        public var isArriving: Bool { !departed }
    }
    /// The arrival of the request this task serves; `submit` counts it as queued.
    @TaskLocal public static var current: Arrival?

    /// Admits a request before its body is read: refused (`queueFull`) when the items queued and
    /// the requests arriving (one item each at least) already reach --max-queue.
    public func arrive() throws -> Arrival {
        condition.lock(); defer { condition.unlock() }
        if queued + arriving + 1 > limits.maxQueueItems { throw BatchRefusal.queueFull(limit: limits.maxQueueItems) }
        arriving += 1
        return Arrival(time: Self.now())
    }

    /// Whether a request arriving now would be admitted.
    public var hasRoom: Bool {
        condition.lock(); defer { condition.unlock() }
        return queued + arriving + 1 <= limits.maxQueueItems
    }

    /// The request's body is in: its deadline counts from now.
    public func bodyArrived(_ a: Arrival) {
        let t: Double = Self.now()
        condition.lock(); a.time = t; condition.unlock()
    }

    /// The request is queued, refused or answered: no longer arriving (idempotent).
    public func depart(_ a: Arrival) {
        condition.lock(); defer { condition.unlock() }
        departLocked(a)
    }

    private func departLocked(_ a: Arrival?) {
        guard let a, !a.departed else { return }
        a.departed = true
        arriving -= 1
        condition.broadcast()
    }

    /// Requests being read and prepared now.
    public var arrivingRequests: Int { condition.lock(); defer { condition.unlock() }; return arriving }

    /// Items waiting now.
    public var queuedItems: Int { condition.lock(); defer { condition.unlock() }; return queued }

    /// Runs `prepared` (`items` items, `tokens` tokens) in a batch of `lane`; its rows and failures.
    /// Cancelling the task takes the request out of the queue (a batch already running finishes).
    public func submit<P>(_ lane: Lane<P>, _ prepared: P, items: Int, tokens: Int = 0) async throws -> EncodedBatch {
        let ticket = Ticket()
        let arrival: Arrival? = Self.current
        return try await withTaskCancellationHandler(operation: { () async throws -> EncodedBatch in
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<EncodedBatch, Error>) -> Void in
                let resume: (Result<EncodedBatch, Error>) -> Void = { (r: Result<EncodedBatch, Error>) -> Void in c.resume(with: r) }
                self.enqueue(lane, prepared, items: items, tokens: tokens, ticket: ticket, arrival: arrival, done: resume)
            }
        }, onCancel: { () -> Void in
            self.cancel(ticket)
        })
    }

    /// Answers a queued request with CancellationError; one not queued yet is refused when it is.
    func cancel(_ ticket: Ticket) {
        condition.lock()
        ticket.cancelled = true
        var answer: (() -> Void)? = nil
        for lane in lanes where answer == nil { answer = lane.remove(ticket) }
        condition.unlock()
        answer?()
    }

    func enqueue<P>(_ lane: Lane<P>, _ prepared: P, items: Int, tokens: Int, ticket: Ticket, arrival: Arrival?,
                    done: @escaping (Result<EncodedBatch, Error>) -> Void) {
        condition.lock()
        departLocked(arrival)
        if ticket.cancelled {
            condition.unlock()
            return done(.failure(CancellationError()))
        }
        if stopping {
            condition.unlock()
            return done(.failure(BatchRefusal.stopping))
        }
        if queued + items > limits.maxQueueItems {
            condition.unlock()
            return done(.failure(BatchRefusal.queueFull(limit: limits.maxQueueItems)))
        }
        let now: Double = Self.now()
        let start: Double = arrival?.time ?? now
        let deadline: Double = start + limits.timeout
        queued += items
        observer?.queueChanged(items: queued)
        // The answer counts the items out of the queue when it is given, whatever the outcome.
        let answered = AnsweredFlag()
        let finish: (Result<EncodedBatch, Error>) -> Void = { [self] (result: Result<EncodedBatch, Error>) -> Void in
            guard answered.claim() else { return }   // a cut drain answered it already
            condition.lock()
            queued -= items
            observer?.queueChanged(items: queued)
            condition.unlock()
            done(result)
        }
        let pending = Lane<P>.Pending(prepared: prepared, items: items, tokens: tokens, enqueued: now, deadline: deadline, ticket: ticket, done: finish)
        lane.queue.append(pending)
        condition.broadcast()
        condition.unlock()
    }

    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    private func loop() {
        while true {
            condition.lock()
            while !stopping && lanes.allSatisfy({ $0.oldest == nil }) { condition.wait() }
            var expired: [() -> Void] = []
            for lane in lanes { expired += lane.expire(now: Self.now()) }
            guard let lane = lanes.filter({ $0.oldest != nil }).min(by: { $0.oldest! < $1.oldest! }) else {
                condition.unlock()
                expired.forEach { $0() }
                if stopping { break }
                continue
            }
            let maxItems = min(limits.maxBatchItems, laneItemLimits[lane.name] ?? .max)
            // Linger: a batch that is not full waits a little for more requests, counted from
            // its oldest request's arrival (a stop ends it; requests past their deadline then
            // are answered, not run).
            // Only under concurrent load — the last batch, just ended, held several requests, or
            // one is being read and tokenized now — so a lone client's request never waits for
            // company.
            let burst: Bool = lastBatchRequests > 1 && Self.now() - lastBatchEnd < 0.05
            if limits.linger > 0 && (burst || arriving > 0) {
                // At most half the deadline, so lingering never times a request out.
                let linger: Double = min(limits.linger, limits.timeout / 2)
                let until: Double = lane.oldest! + linger
                while !stopping && lane.queuedItems < maxItems && lane.queuedTokens < limits.maxBatchTokens && Self.now() < until {
                    _ = condition.wait(until: Date(timeIntervalSinceNow: until - Self.now()))
                }
            }
            for lane in lanes { expired += lane.expire(now: Self.now()) }
            guard lane.oldest != nil else {   // everything lingering expired
                condition.unlock()
                expired.forEach { $0() }
                continue
            }
            let batch = lane.take(maxItems: maxItems, maxTokens: limits.maxBatchTokens, now: Self.now())
            lastBatchRequests = batch.requests
            runningAborts = lane.abortAnswers(of: batch.requests)
            condition.unlock()
            expired.forEach { $0() }
            for w in batch.waited { observer?.waited(lane: lane.name, seconds: w) }
            let start = Self.now()
            batch.run()
            let end: Double = Self.now()
            condition.lock(); lastBatchEnd = end; runningAborts = []; condition.unlock()
            observer?.batchRan(lane: lane.name, requests: batch.requests, items: batch.items, tokens: batch.tokens, seconds: Self.now() - start)
        }
        condition.lock(); finished = true; condition.broadcast(); condition.unlock()
    }
}
