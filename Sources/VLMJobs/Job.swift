// The one batch-job pipeline of embed-image, embed-text and fuse. Items are cut into fixed
// units (a resumed job computes the same units); while the encoder's model runs on one unit,
// the next is read and prepared (decoded, tokenized) on other threads. Each finished unit is
// appended to the output's partial state and recorded, so a job killed at any point — SIGKILL
// included — resumes where it stopped and ends with output byte-identical to an uninterrupted
// run's. Bad items are recorded and skipped (exit 2), or stop the job (--errors fail).
//
// The partial state, <output>.partial/ beside the final target:
//   job.json       what the job is (its fingerprint: inputs, models, every setting that changes
//                  a row), written once
//   rows.f32       the rows, float32 (after a reserved 128-byte header when the output is .npy)
//   ids.txt        one escaped id per row
//   errors.jsonl   one record per failed item
//   journal.jsonl  one line per finished unit: item and row counts, the three files' sizes,
//                  the SHA-256 of the unit's input identities and of the bytes it appended,
//                  then a tab and the SHA-256 of the line itself
//   input.txt      (text jobs reading stdin) the texts, spooled so a resumed job reads the same
// On resume, every record is checked against the files and the inputs; the first that does not
// verify, and all after it, are cut off and recomputed (a note says so).

import Foundation
import VLMCore
import VLMEmbed
import VLMIO

#if canImport(Glibc)
import Glibc
#endif

public enum ErrorPolicy: String, CaseIterable, Sendable {
    case skip, fail
}

/// How a job runs, as its command's options say.
public struct JobSettings {
    public var output: String
    public var format: RowFormat
    public var resume: Bool
    public var errors: ErrorPolicy
    public var quiet: Bool
    /// What the items are called in messages: "images", "texts", "pairs".
    public var unitName: String
    /// Write rows that hold NaN or infinity instead of recording them as non_finite errors.
    public var allowNonFinite = false
    /// The vlm version, for the output's description.
    public var version = ""

    public init(output: String, format: RowFormat, resume: Bool, errors: ErrorPolicy, quiet: Bool, unitName: String) {
        (self.output, self.format, self.resume, self.errors, self.quiet, self.unitName) = (output, format, resume, errors, quiet, unitName)
    }
}

/// What a job is. Its SHA-256 (`fingerprint`) must match for a partial state to be resumed.
public struct JobDefinition: Codable, Equatable {
    public var command: String
    public var format: String
    public var dim: Int
    public var unitSize: Int
    public var items: Int
    /// SHA-256 of the item source's definition (the paths, or the input file and line count).
    public var inputs: String
    /// Each model's identity: its files' names, sizes and modification times, or a synthetic spec.
    public var models: [String]
    /// Backend, threads, kernels: what changes the last bits of a row.
    public var engine: [String: String]
    /// The encoder's settings and the command's row-changing options.
    public var settings: [String: String]
    /// The vector space of the rows (models by their files' SHA-256, resolved options), for
    /// jobs that embed items; nil for those that project feature files.
    public var space: VectorSpace?

    public init(command: String, format: RowFormat, dim: Int, unitSize: Int, items: Int, inputs: [UInt8], models: [String],
                engine: [String: String], settings: [String: String], space: VectorSpace? = nil) {
        self.space = space
        self.command = command
        self.format = format.rawValue
        (self.dim, self.unitSize, self.items) = (dim, unitSize, items)
        self.inputs = SHA256.hex(inputs)
        (self.models, self.engine, self.settings) = (models, engine, settings)
    }

    /// Without the vector space: that is derived from the models and settings already here
    /// (so a job started by a vlm that did not record it still resumes), and kept for the
    /// output's description.
    public var fingerprint: String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        var d = self
        d.space = nil
        return SHA256.hexDigest(Array((try? e.encode(d)) ?? Data()))
    }
}

/// The identity of a model argument: for a file or folder, the names, sizes and modification
/// times of its files (a folder's, and one level below, e.g. 1_Pooling/); else the text itself.
public func modelIdentity(_ spec: String) -> String {
    guard let st = FileStatus.of(spec) else { return spec }
    func entry(_ p: String) -> String {
        guard let s = FileStatus.of(p) else { return "\(p):?" }
        return "\(p):\(s.size):\(s.mtimeNanoseconds)"
    }
    if st.kind != .directory { return entry(spec) }
    var parts: [String] = []
    let fm = FileManager.default
    for name in ((try? fm.contentsOfDirectory(atPath: spec)) ?? []).sorted() {
        let p = (spec as NSString).appendingPathComponent(name)
        if FileStatus.of(p)?.kind == .directory {
            for sub in ((try? fm.contentsOfDirectory(atPath: p)) ?? []).sorted() { parts.append(entry((p as NSString).appendingPathComponent(sub))) }
        } else {
            parts.append(entry(p))
        }
    }
    return parts.joined(separator: "|")
}

/// A finished job: what to report and exit with.
public struct JobSummary: Equatable {
    public var items: Int
    public var rows: Int
    public var failures: Int
    /// Where the failures are listed (nil for stream outputs: stderr only).
    public var errorsFile: String?
    /// True when `--resume` found the output already complete, as this very job would write
    /// it, and did nothing.
    public var alreadyComplete = false
}

/// A value computed on the engine's threads, inside its thread budget.
final class Future<T>: @unchecked Sendable {
    private let pending: Pending<T>
    init(_ work: @escaping () -> T) { pending = Threads.submit(work) }
    func wait() -> T { pending.wait() }
}

/// A flag set once, read from any thread.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

// MARK: - The job

public final class Job {
    public let settings: JobSettings
    public let target: OutputTarget
    /// The partial folder and its lock, for a regular-file output.
    let folder: String?
    let lock: OutputLock?
    /// True when this job made the partial folder and has not started running: a job that
    /// fails before its first unit (a model that does not load, say) leaves nothing behind.
    private var folderIsOnlyOurs = false
    /// True when a partial folder was there before this job (a job to resume, or to discard).
    private var hadPartial = false
    /// Set by the command when an input is read from a stream (an image or array on stdin, a
    /// FIFO named as an image): its items' identities cannot show a change, so a finished
    /// output is never taken as complete.
    public var streamedInput = false

    /// Checks the output and, for a file, takes its lock and sets up `<target>.partial/`
    /// (kept for --resume, else an old one is discarded) — before any model is loaded.
    public init(settings: JobSettings, target: OutputTarget) throws {
        self.settings = settings
        self.target = target
        switch target {
        case .stream(_, _), .fifo:
            var kind: FileKind? = .fifo
            if case .stream(_, let k) = target { kind = k }
            if settings.resume {
                throw OptionError("--resume needs an output file; \(settings.output) is \(kind?.phrase ?? "stdout"), written as a stream")
            }
            if settings.format.isBinary && target.isTerminal {
                throw InputError("refusing to write binary \(settings.format.rawValue) to a terminal; use -o FILE or --format jsonl|tsv")
            }
            folder = nil
            lock = nil
        case .file(let path, let resolved):
            lock = try OutputLock(target: resolved, output: path)
            // The sidecars are replaced as the output is: each must be a regular file or absent.
            for sidecar in (settings.format.isBinary ? [".ids.txt"] : []) + [".errors.jsonl", OutputDescription.suffix] {
                if let st = FileStatus.of(resolved + sidecar, followLinks: false), st.kind != .regular {
                    throw InputError("\(resolved + sidecar): \(st.kind.phrase), where the job would write its \(sidecar.dropFirst()) beside \(path); move it or choose another -o")
                }
            }
            let dir = resolved + ".partial"
            folder = dir
            let exists = FileStatus.of(dir, followLinks: false) != nil
            hadPartial = exists
            if exists && !settings.resume {
                if !settings.quiet { writeStandardError("vlm: note: discarding the unfinished job in \(dir) (use --resume to continue it)\n") }
                try removeTree(dir)
            }
            if FileStatus.of(dir, followLinks: false) == nil {
                if mkdir(dir, 0o755) != 0 { throw IOError.cannotWrite(path: dir, reason: "cannot create the job folder: \(errnoMessage())") }
                folderIsOnlyOurs = true
            } else if FileStatus.of(dir, followLinks: false)?.kind != .directory {
                throw InputError("\(dir): is not a folder; remove it, or choose another -o")
            }
        }
    }

    deinit {
        if folderIsOnlyOurs, let folder { try? removeTree(folder) }
    }

    /// Where a job may spool stdin so a resumed job reads the same input: inside the partial
    /// folder (nil for stream outputs, which cannot be resumed).
    public var spoolPath: String? { folder.map { $0 + "/input.txt" } }

    /// Runs every unit of `source` through `encoder` and writes the output. Units are
    /// `unitSize` consecutive items; `definition` must describe this very job.
    /// `concurrentUnits`: see `runUnits`.
    public func run<S: ItemSource, E: RowEncoder>(source: S, encoder: E, unitSize: Int, definition: JobDefinition,
                                                 concurrentUnits: Int = 1) throws -> JobSummary
    where S.Value == E.Value {
        precondition(unitSize > 0 && definition.items == source.count && definition.dim == encoder.dim)
        let total = source.count
        // Again now that the models are loaded: -o may not replace a file they were read from.
        try refuseOutput(settings.output, overwriting: [])
        var noted = false
        if settings.resume, !hadPartial, case .file(_, let resolved) = target,
           let done = try OutputDescription.complete(resolved, output: settings.output, definition: definition, settings: settings,
                                                     streamedInput: streamedInput, noted: &noted,
                                                     inputs: { Self.identityDigest(try source.items(Self.range($0, unitSize, total))) }) {
            // Nothing to resume because nothing is left to do: the job folder made for it goes.
            return done
        }
        folderIsOnlyOurs = false
        let sink: RowSink
        switch target {
        case .stream, .fifo:
            sink = try StreamSink(sink: try target.openStream()!, format: settings.format, dim: encoder.dim)
        case .file(let path, let resolved):
            sink = try PartialSink(folder: folder!, output: path, target: resolved, definition: definition, resume: settings.resume && !noted,
                                   quiet: settings.quiet, unitName: settings.unitName, version: settings.version) { unit in
                Self.identityDigest(try source.items(Self.range(unit, unitSize, total)))
            }
        }
        let progress = ProgressReporter(items: total, unit: settings.unitName, quiet: settings.quiet)
        var done = sink.doneItems, failures = sink.failures
        progress.start(at: done)

        try Self.runUnits(source: source, encoder: encoder, unitSize: unitSize, from: sink.doneItems / unitSize,
                          concurrentUnits: concurrentUnits) { unit, outcome in
            for e in outcome.errors {
                if settings.errors == .fail { throw InputError(e.message) }
                writeStandardError("vlm: warning: \(e.message) (skipped)\n")
            }
            let end = Self.range(unit, unitSize, total).upperBound
            try sink.commit(unit: unit, end: end, rows: outcome.rows, ids: outcome.ids, errors: outcome.errors,
                            inputDigest: outcome.inputDigest)
            done = end
            failures += outcome.errors.count
            progress.update(done: done, failures: failures)
            JobSeams.afterUnit?(unit + 1)
        }
        let summary = try sink.finish(items: total)
        // Counted in records (rows and failures): blank lines of a text or JSON-lines input are
        // no items.
        let records = summary.rows + summary.failures
        progress.finish(summary: String(format: "done: %d %@ in %@%@", records, settings.unitName, formatDuration(progress.elapsed),
                                        summary.failures > 0 ? ", \(summary.failures) skipped" : ""))
        if summary.failures > 0 && !settings.quiet {
            writeStandardError("vlm: \(summary.failures) of \(records) items skipped; " + (summary.errorsFile.map { "see \($0)" } ?? "listed above") + "\n")
        }
        return summary
    }

    static func range(_ unit: Int, _ size: Int, _ total: Int) -> Range<Int> { (unit * size)..<min(total, (unit + 1) * size) }

    /// What one unit gave: rows and their ids in item order, the items' errors, and the digest
    /// of the unit's input identities.
    public struct UnitOutcome {
        public var rows: [Float]
        public var ids: [[UInt8]]
        public var errors: [ItemError]
        public var inputDigest: String
    }

    /// The pipeline itself: units `from`… of `source` through `encoder`, the next unit read and
    /// prepared on other threads while the model runs on this one; `body` gets each unit's
    /// outcome in order.
    ///
    /// `concurrentUnits` > 1: that many units at a time are read, prepared *and encoded*, each
    /// on a thread of its own with its products single-threaded (`Threads.serially`), while
    /// this thread hands finished units to `body` in order. For an encoder whose unit is one
    /// large product on rows read from a file (`vlm pca apply`): a product split across the
    /// threads waits at its end for the thread the reading took away, and the threads idle
    /// while `body` writes; whole units on each thread do neither. The encoder's `encode` must
    /// then be safe to call from several threads at once.
    public static func runUnits<S: ItemSource, E: RowEncoder>(source: S, encoder: E, unitSize: Int, from start: Int,
                                                             concurrentUnits: Int = 1,
                                                             _ body: (Int, UnitOutcome) throws -> Void) throws where S.Value == E.Value {
        let total = source.count
        let units = (total + unitSize - 1) / unitSize
        typealias Unit = (index: Int, items: [JobItem<S.Value>], prepared: E.Prepared)
        func read(_ u: Int) throws -> Unit {
            let items = try source.items(range(u, unitSize, total))
            var values: [(id: [UInt8], value: S.Value)] = []
            for item in items { if case .value(let v) = item.content { values.append((item.id, v)) } }
            return (u, items, encoder.prepare(values))
        }
        // Rows holding NaN or infinity are the encoder's to refuse (the embedding service
        // finishes every model's rows; feature files are checked as they are read).
        func finish(_ unit: Unit, _ encoded: EncodedBatch) -> UnitOutcome {
            var ids: [[UInt8]] = [], errors: [ItemError] = []
            var k = 0
            for item in unit.items {
                switch item.content {
                case .blank: continue
                case .failed(let e): errors.append(e)
                case .value:
                    if let e = encoded.failures[k] { errors.append(e) } else { ids.append(item.id) }
                    k += 1
                }
            }
            precondition(encoded.rows.count == ids.count * encoder.dim, "encoder gave \(encoded.rows.count) floats for \(ids.count) rows")
            return UnitOutcome(rows: encoded.rows, ids: ids, errors: errors, inputDigest: identityDigest(unit.items))
        }

        if concurrentUnits > 1 {
            // Two units more than the threads are scheduled, waiting for a slot, so the threads
            // go on while this one writes and syncs (medians of 15 runs of the benchmark in
            // BENCHMARKS.md §7: 0.516 s against 0.568 s with none ahead).
            let slots = DispatchSemaphore(value: concurrentUnits)
            let ahead = concurrentUnits + 2
            // Set when this function leaves early (a unit or `body` threw): units scheduled
            // ahead and not yet started then do no work.
            let stopped = Flag()
            defer { stopped.set() }
            func schedule(_ u: Int) -> Future<Result<UnitOutcome, Error>>? {
                guard u < units else { return nil }
                return Future {
                    slots.wait()
                    defer { slots.signal() }
                    if stopped.isSet { return .failure(CancellationError()) }
                    return Result {
                        try Threads.serially {
                            let unit = try read(u)
                            return finish(unit, try encoder.encode(unit.prepared))
                        }
                    }
                }
            }
            var inFlight = (start..<min(units, start + ahead)).compactMap(schedule)
            var u = start
            while !inFlight.isEmpty {
                let outcome = try inFlight.removeFirst().wait().get()
                if let next = schedule(u + ahead) { inFlight.append(next) }
                try body(u, outcome)
                u += 1
            }
            return
        }

        func schedule(_ u: Int) -> Future<Result<Unit, Error>>? {
            guard u < units else { return nil }
            return Future { Result { try read(u) } }
        }
        var next = schedule(start)
        while let current = next {
            let unit = try current.wait().get()
            if overlapUnits { next = schedule(unit.index + 1) }
            let encoded = try Threads.run { try encoder.encode(unit.prepared) }
            if !overlapUnits { next = schedule(unit.index + 1) }
            try body(unit.index, Threads.run { finish(unit, encoded) })
        }
    }

    /// How many units to work on at once (`runUnits`' `concurrentUnits`) for a job of `units`
    /// units, each holding `unitBytes` while it runs: one per thread, but 1 (each product
    /// split across the threads instead) when there are fewer than two units per thread, which
    /// would leave threads idle at the end; and no more than a quarter of the memory there is
    /// can hold.
    public static func unitsAtOnce(units: Int, unitBytes: UInt64) -> Int {
        let threads = Threads.count
        guard threads > 1, units >= 2 * threads else { return 1 }
        let affordable = MemoryBudget.available().bytes / 4 / max(1, unitBytes)
        return Int(max(1, min(UInt64(threads), affordable)))
    }

    /// Whether the next unit is prepared while the model runs (the default), or only after
    /// (VLM_OVERLAP_UNITS=0: the balance experiment in BENCHMARKS.md).
    static var overlapUnits: Bool { JobSeams.overlapUnits }

    static func identityDigest<V>(_ items: [JobItem<V>]) -> String {
        var h = SHA256()
        for item in items {
            var n = UInt64(item.identity.count).littleEndian
            withUnsafeBytes(of: &n) { h.update($0) }
            h.update(item.identity)
        }
        return h.finalizeHex()
    }
}

/// Removes a folder tree (the job's own partial folder).
func removeTree(_ path: String) throws {
    do { try FileManager.default.removeItem(atPath: path) } catch {
        throw IOError.cannotWrite(path: path, reason: "cannot remove the old job folder")
    }
}

// MARK: - Sinks

protocol RowSink: AnyObject {
    /// Items already done (resumed).
    var doneItems: Int { get }
    var failures: Int { get }
    func commit(unit: Int, end: Int, rows: [Float], ids: [[UInt8]], errors: [ItemError], inputDigest: String) throws
    func finish(items: Int) throws -> JobSummary
}

/// stdout or another non-regular file: jsonl, tsv and f32 rows are written as each unit
/// finishes; .npy rows are spooled to an unlinked temporary file until the count is known.
final class StreamSink: RowSink {
    let sink: FileSink
    let format: RowFormat
    let dim: Int
    var spool: FileSink?
    var rows = 0
    var failures = 0
    var doneItems: Int { 0 }

    init(sink: FileSink, format: RowFormat, dim: Int) throws {
        (self.sink, self.format, self.dim) = (sink, format, dim)
        if format == .npy {
            var template = Array((NSTemporaryDirectory() as NSString).appendingPathComponent("vlm-rows-XXXXXX").utf8CString)
            let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            if fd < 0 { throw IOError.cannotWrite(path: NSTemporaryDirectory(), reason: "cannot create a spool file for the rows: \(errnoMessage())") }
            template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
            spool = FileSink(fd: fd, name: "the row spool in \(NSTemporaryDirectory())")
        }
    }

    deinit { if let spool { close(spool.fd) } }

    func commit(unit: Int, end: Int, rows r: [Float], ids: [[UInt8]], errors: [ItemError], inputDigest: String) throws {
        rows += ids.count
        failures += errors.count
        switch format {
        case .jsonl, .tsv: try r.withUnsafeBufferPointer { try sink.write(RowText.render($0, dim: dim, ids: ids, format: format)) }
        case .f32: try r.withUnsafeBytes { try sink.write($0) }
        case .npy: try r.withUnsafeBytes { try spool!.write($0) }
        }
    }

    func finish(items: Int) throws -> JobSummary {
        if let spool {
            try sink.write(NPY.header(shape: [rows, dim]))
            if lseek(spool.fd, 0, SEEK_SET) < 0 { throw IOError.cannotWrite(path: spool.name, reason: errnoMessage()) }
            try copyAll(from: spool.fd, name: spool.name, to: sink)
        }
        return JobSummary(items: items, rows: rows, failures: failures, errorsFile: nil)
    }
}

/// Copies the rest of `fd` to `sink` in 4 MiB pieces.
func copyAll(from fd: Int32, name: String, to sink: FileSink, limit: UInt64 = .max) throws {
    var buffer = [UInt8](repeating: 0, count: 4 << 20)
    var left = limit
    while left > 0 {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, Int(min(UInt64($0.count), left))) }
        if n < 0 { if errno == EINTR { continue }; throw IOError.cannotOpen(path: name, reason: errnoMessage()) }
        if n == 0 { break }
        try buffer.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        left -= UInt64(n)
    }
}

/// Where tests reach a job's moments (set by the vlm-test-hooks binary, never by vlm itself).
public enum JobSeams {
    /// Called after each unit is recorded, with the count recorded so far.
    nonisolated(unsafe) public static var afterUnit: ((Int) -> Void)?
    /// Whether the next unit is read and prepared while the model runs the current one (off: the
    /// balance experiment of BENCHMARKS.md §6).
    nonisolated(unsafe) public static var overlapUnits = true
}
