// Long feature-extraction jobs: shards, a progress line, bad items skipped and recorded, and a
// resumable on-disk state so a job killed at any point (SIGKILL included) continues where it
// stopped and ends with output byte-identical to an uninterrupted run's.
//
// While running, <output>.partial/ holds rows.f32 (raw float32 rows), ids.txt, errors.jsonl
// and state.json (items done and the byte length of each file, written atomically after every
// batch). Batches are fixed slices of the item list, so a resumed job computes the same
// batches. At the end the final files are assembled, written to temporary names and renamed
// into place, and the folder is removed.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO

enum ErrorPolicy: String, ExpressibleByArgument, CaseIterable {
    case skip, fail
}

/// Output formats of batch jobs: the three of embed-text plus raw little-endian float32.
enum JobFormat: String, ExpressibleByArgument, CaseIterable {
    case npy, jsonl, tsv, f32

    static func inferred(from path: String) -> JobFormat? {
        if (path as NSString).pathExtension.lowercased() == "f32" { return .f32 }
        return OutputFormat.inferred(from: path).map { JobFormat(rawValue: $0.rawValue)! }
    }
}

struct JobOptions: ParsableArguments {
    @Option(help: "Take slice i of n (1-based) of the input list, e.g. --shard 2/8, so n processes split a job.")
    var shard: String?

    @Flag(help: "Continue a job that was interrupted, from <output>.partial/.")
    var resume = false

    @Option(help: "skip: record bad items in <output>.errors.jsonl and go on (exit 2 at the end); fail: stop at the first.")
    var errors: ErrorPolicy = .skip

    @Flag(help: "No progress on stderr.")
    var quiet = false

    func validate() throws { _ = try parsedShard() }

    /// (index, count), 0-based index.
    func parsedShard() throws -> (Int, Int)? {
        guard let shard else { return nil }
        let parts = shard.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 1, i <= n else {
            throw ValidationError("--shard must be i/n with 1 <= i <= n, got '\(shard)'")
        }
        return (i - 1, n)
    }

    /// The deterministic contiguous slice for this shard.
    func apply<T>(_ items: [T]) throws -> [T] {
        guard let (i, n) = try parsedShard() else { return items }
        let lo = items.count * i / n, hi = items.count * (i + 1) / n
        return Array(items[lo..<hi])
    }
}

/// One item's failure, as recorded.
struct ItemError {
    var id: String
    var kind: String
    var message: String
}

/// Exit code when some items were skipped.
let exitPartial: Int32 = 2

final class FeatureJob {
    let output: String
    let format: JobFormat
    let ids: [String]
    let dim: Int
    let quiet: Bool
    let policy: ErrorPolicy
    let partialDir: String
    private(set) var done = 0
    private(set) var failures = 0
    private var rowsHandle: FileHandle?, idsHandle: FileHandle?, errorsHandle: FileHandle?
    private var state = JobState()
    private let progress: Progress
    /// Rows kept in memory when writing to stdout.
    private var memoryRows = Data(), memoryIds: [String] = [], memoryErrors: [ItemError] = []

    struct JobState: Codable {
        var fingerprint = ""
        var done = 0
        var rows = 0
        var rowsBytes: UInt64 = 0
        var idsBytes: UInt64 = 0
        var errorsBytes: UInt64 = 0
        var failures = 0
    }

    init(output: String, format: JobFormat, ids: [String], dim: Int, fingerprint: String, options: JobOptions, unit: String) throws {
        self.output = output
        self.format = format
        self.ids = ids
        self.dim = dim
        quiet = options.quiet
        policy = options.errors
        partialDir = output + ".partial"
        progress = Progress(total: ids.count, unit: unit, quiet: options.quiet)
        if output == "-" {
            if options.resume { throw ValidationError("--resume needs an output file (-o FILE)") }
            return
        }
        let fm = FileManager.default
        let statePath = partialDir + "/state.json"
        if options.resume, let data = fm.contents(atPath: statePath) {
            guard let s = try? JSONDecoder().decode(JobState.self, from: data) else {
                throw CLIError("\(statePath): unreadable job state; delete \(partialDir) to start over")
            }
            guard s.fingerprint == fingerprint else {
                throw CLIError("\(partialDir): holds a different job (other inputs, model or options); delete it or drop --resume")
            }
            state = s
            rowsHandle = try openTruncated(partialDir + "/rows.f32", to: s.rowsBytes)
            idsHandle = try openTruncated(partialDir + "/ids.txt", to: s.idsBytes)
            errorsHandle = try openTruncated(partialDir + "/errors.jsonl", to: s.errorsBytes)
            done = s.done
            failures = s.failures
            if !quiet { note("vlm: resuming \(output): \(done) of \(ids.count) \(unit) already done") }
        } else {
            if fm.fileExists(atPath: partialDir) {
                if !options.resume && !quiet { note("vlm: note: discarding the unfinished job in \(partialDir) (use --resume to continue it)") }
                try? fm.removeItem(atPath: partialDir)
            }
            do {
                try fm.createDirectory(atPath: partialDir, withIntermediateDirectories: false)
            } catch {
                throw IOError.cannotWrite(path: partialDir, reason: "cannot create the job folder (does the output's folder exist and is it writable?)")
            }
            state.fingerprint = fingerprint
            rowsHandle = try openTruncated(partialDir + "/rows.f32", to: 0)
            idsHandle = try openTruncated(partialDir + "/ids.txt", to: 0)
            errorsHandle = try openTruncated(partialDir + "/errors.jsonl", to: 0)
            try saveState()
        }
        progress.start(at: done)
    }

    private func openTruncated(_ path: String, to length: UInt64) throws -> FileHandle {
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard let h = FileHandle(forUpdatingAtPath: path) else { throw IOError.cannotWrite(path: path, reason: "cannot open") }
        try h.truncate(atOffset: length)
        try h.seek(toOffset: length)
        return h
    }

    private func saveState() throws {
        let tmp = partialDir + "/state.json.tmp"
        let data = try JSONEncoder().encode(state)
        guard FileManager.default.createFile(atPath: tmp, contents: data) else {
            throw IOError.cannotWrite(path: tmp, reason: "cannot write the job state")
        }
        let fd = open(tmp, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
        if rename(tmp, partialDir + "/state.json") != 0 {
            throw IOError.cannotWrite(path: partialDir + "/state.json", reason: String(cString: strerror(errno)))
        }
    }

    /// Records one finished batch: rows for the items that worked (in input order) and errors.
    /// `end` is the index after the batch's last item.
    func commit(end: Int, rows: [(index: Int, vector: [Float])], errors: [ItemError]) throws {
        precondition(rows.allSatisfy { $0.vector.count == dim })
        for e in errors {
            if policy == .fail { throw CLIError(e.message) }
            note("vlm: warning: \(e.message) (skipped)")
        }
        var rowData = Data()
        var idText = ""
        for r in rows {
            r.vector.withUnsafeBytes { rowData.append(contentsOf: $0) }
            idText += ids[r.index].replacingOccurrences(of: "\n", with: " ") + "\n"
        }
        let errText = errors.map { "{\"id\":\(jsonString($0.id)),\"kind\":\(jsonString($0.kind)),\"error\":\(jsonString($0.message))}\n" }.joined()
        failures += errors.count
        done = end
        if output == "-" {
            if format == .jsonl || format == .tsv {
                FileHandle.standardOutput.write(renderText(rowData, ids: rows.map { ids[$0.index] }))
            } else {
                memoryRows.append(rowData)
                memoryIds += rows.map { ids[$0.index] }
            }
            memoryErrors += errors
        } else {
            rowsHandle!.write(rowData); try rowsHandle!.synchronize()
            idsHandle!.write(Data(idText.utf8)); try idsHandle!.synchronize()
            errorsHandle!.write(Data(errText.utf8)); try errorsHandle!.synchronize()
            state.done = end
            state.rows += rows.count
            state.failures = failures
            state.rowsBytes = try rowsHandle!.offset()
            state.idsBytes = try idsHandle!.offset()
            state.errorsBytes = try errorsHandle!.offset()
            try saveState()
        }
        progress.update(done: end, failures: failures)
    }

    /// jsonl / tsv rows with ids.
    private func renderText(_ rows: Data, ids: [String]) -> Data {
        let t = Tensor(shape: [ids.count, dim], data: rows.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
        return FeatureWriter.encode(t, ids: ids, format: format == .jsonl ? .jsonl : .tsv)
    }

    /// Assembles and renames the final outputs into place; returns the process exit code.
    func finish() throws -> Int32 {
        progress.finish(done: done, failures: failures)
        if output == "-" {
            if format == .npy || format == .f32 {
                let n = memoryIds.count
                if format == .npy {
                    FileHandle.standardOutput.write(NPY.encode(Tensor(shape: [n, dim], data: memoryRows.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })))
                } else {
                    FileHandle.standardOutput.write(memoryRows)
                }
            }
            return failures > 0 ? exitPartial : 0
        }
        try rowsHandle?.close(); try idsHandle?.close(); try errorsHandle?.close()
        let rows = try Data(contentsOf: URL(fileURLWithPath: partialDir + "/rows.f32"))
        let idText = try String(contentsOfFile: partialDir + "/ids.txt", encoding: .utf8)
        let rowIds = idText.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        precondition(rows.count == rowIds.count * dim * 4, "job files disagree: \(rows.count) bytes for \(rowIds.count) rows")
        switch format {
        case .npy:
            let t = Tensor(shape: [rowIds.count, dim], data: rows.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
            try writeAtomically(NPY.encode(t), to: output)
            try writeAtomically(Data(idText.utf8), to: output + ".ids.txt")
        case .f32:
            try writeAtomically(rows, to: output)
            try writeAtomically(Data(idText.utf8), to: output + ".ids.txt")
        case .jsonl, .tsv:
            try writeAtomically(renderText(rows, ids: rowIds), to: output)
        }
        let errorsPath = output + ".errors.jsonl"
        if failures > 0 {
            try writeAtomically(try Data(contentsOf: URL(fileURLWithPath: partialDir + "/errors.jsonl")), to: errorsPath)
            note("vlm: \(failures) of \(ids.count) items skipped; see \(errorsPath)")
        } else {
            try? FileManager.default.removeItem(atPath: errorsPath)
        }
        try? FileManager.default.removeItem(atPath: partialDir)
        return failures > 0 ? exitPartial : 0
    }
}

/// done/total, items/s and ETA on stderr: a redrawn bar on a terminal, a plain line every
/// ten seconds otherwise.
final class Progress {
    let total: Int
    let unit: String
    let quiet: Bool
    let tty = isTerminal(2)
    private var startTime = Date()
    private var startDone = 0
    private var lastPrint = Date.distantPast

    init(total: Int, unit: String, quiet: Bool) {
        self.total = total
        self.unit = unit
        self.quiet = quiet
    }

    func start(at done: Int) {
        startTime = Date()
        startDone = done
    }

    func line(done: Int, failures: Int) -> String {
        let elapsed = Date().timeIntervalSince(startTime)
        let rate = elapsed > 0 ? Double(done - startDone) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let failed = failures > 0 ? ", \(failures) skipped" : ""
        return String(format: "%d/%d %@, %.1f/s, ETA %@%@", done, total, unit, rate, formatDuration(eta), failed)
    }

    func update(done: Int, failures: Int) {
        guard !quiet else { return }
        let now = Date()
        if tty {
            guard now.timeIntervalSince(lastPrint) >= 0.1 || done == total else { return }
            let width = 30
            let filled = total > 0 ? width * done / total : width
            let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
            FileHandle.standardError.write(Data("\r[\(bar)] \(line(done: done, failures: failures))\u{1B}[K".utf8))
        } else if now.timeIntervalSince(lastPrint) >= 10 {
            note("vlm: " + line(done: done, failures: failures))
        } else {
            return
        }
        lastPrint = now
    }

    func finish(done: Int, failures: Int) {
        guard !quiet else { return }
        if tty { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        let elapsed = Date().timeIntervalSince(startTime)
        note(String(format: "vlm: done: %d/%d %@ in %@%@", done, total, unit, formatDuration(elapsed),
                    failures > 0 ? ", \(failures) skipped" : ""))
    }
}

func formatDuration(_ s: Double) -> String {
    if !s.isFinite { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", (t % 3600) / 60))m" }
    if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
    return "\(t)s"
}

/// FNV-1a over a job's defining text, as hex.
func fingerprint(_ parts: [String]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for p in parts {
        for b in p.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        h = (h ^ 0xFF) &* 0x100_0000_01b3
    }
    return String(h, radix: 16)
}
