// The batch-job pipeline in process, with a deterministic encoder: an interrupted job resumes to
// the bytes of an uninterrupted one, and a partial state damaged in any of the ways a crash, a
// full disk or a careless hand can damage it is repaired (cut back and recomputed) or refused
// with a clear error — never a wrong row. Also shards, text line indexing and the output lock.

import Foundation
import XCTest
import VLMCore
import VLMIO
import VLMEmbed
import VLMJobs

/// Items "0" … "n-1"; every seventh fails as it is read; identities can be changed to model an
/// input file edited in place.
final class NumberSource: ItemSource {
    let count: Int
    var identities: [String: String] = [:]
    init(_ n: Int) { count = n }
    var definition: [UInt8] { Array("numbers \(count)".utf8) }
    func items(_ range: Range<Int>) throws -> [JobItem<Int>] {
        range.map { i in
            let id = Array(String(i).utf8), identity = Array((identities[String(i)] ?? "v1 \(i)").utf8)
            if i % 7 == 3 {
                return JobItem(id: id, identity: identity, content: .failed(ItemError(id: id, kind: "corrupt", message: "\(i): bad")))
            }
            if i % 11 == 5 { return JobItem(id: id, identity: identity, content: .blank) }
            return JobItem(id: id, identity: identity, content: .value(i))
        }
    }
}

/// Rows derived from the value (and `salt`); items divisible by 13 fail in the model; it can be
/// told to crash (throw) after a number of units, as a killed job stops.
final class NumberEncoder: RowEncoder {
    let dim = 5
    var salt: Float = 0
    var crashAfter: Int?
    private var units = 0
    var settings: [String: String] { ["salt": "\(salt)"] }
    struct Crash: Error {}
    func prepare(_ items: [(id: [UInt8], value: Int)]) -> [(id: [UInt8], value: Int)] { items }
    func encode(_ items: [(id: [UInt8], value: Int)]) throws -> EncodedBatch {
        units += 1
        if let crashAfter, units > crashAfter { throw Crash() }
        var rows: [Float] = [], failures: [ItemError?] = []
        for (id, v) in items {
            if v % 13 == 0 { failures.append(ItemError(id: id, kind: "model", message: "\(v): model")); continue }
            failures.append(nil)
            rows += (0..<dim).map { Float(v) * 0.5 + Float($0) + salt }
        }
        return EncodedBatch(rows: rows, failures: failures)
    }
}

/// NumberEncoder's rows without its state, safe on several threads at once: each unit sleeps a
/// little (longer for some), so units finish out of order; a unit holding `throwAt` throws.
final class ConcurrentNumberEncoder: RowEncoder {
    let dim = 5
    let throwAt: Int?
    init(throwAt: Int? = nil) { self.throwAt = throwAt }
    var settings: [String: String] { [:] }
    struct Failure: Error {}
    func prepare(_ items: [(id: [UInt8], value: Int)]) -> [(id: [UInt8], value: Int)] { items }
    func encode(_ items: [(id: [UInt8], value: Int)]) throws -> EncodedBatch {
        XCTAssertTrue(Threads.inParallelRegion, "a concurrent unit runs serially")
        usleep(UInt32(items.first.map { $0.value % 3 == 0 ? 3000 : 200 } ?? 0))
        if let throwAt, items.contains(where: { $0.value == throwAt }) { throw Failure() }
        var rows: [Float] = [], failures: [ItemError?] = []
        for (id, v) in items {
            if v % 13 == 0 { failures.append(ItemError(id: id, kind: "model", message: "\(v): model")); continue }
            failures.append(nil)
            rows += (0..<dim).map { Float(v) * 0.5 + Float($0) }
        }
        return EncodedBatch(rows: rows, failures: failures)
    }
}

final class JobTests: XCTestCase {
    /// Units worked on at once give every unit's outcome in order, as one at a time does; a
    /// unit that throws ends the run after the units before it, and none after.
    func testConcurrentUnitsAreHandedOverInOrder() throws {
        typealias Seen = (unit: Int, rows: [Float], ids: [[UInt8]], errors: [String], digest: String)
        func outcomes(_ concurrent: Int, throwAt: Int? = nil) throws -> [Seen] {
            var seen: [Seen] = []
            try Job.runUnits(source: NumberSource(203), encoder: ConcurrentNumberEncoder(throwAt: throwAt), unitSize: 4, from: 2,
                             concurrentUnits: concurrent) { u, o in
                seen.append((u, o.rows, o.ids, o.errors.map(\.message), o.inputDigest))
            }
            return seen
        }
        var serial: [Seen] = []
        Threads.serially { serial = try! outcomes(1) }
        XCTAssertEqual(serial.map(\.unit), Array(2..<51))
        for concurrent in [2, 3, 8] {
            let got = try outcomes(concurrent)
            XCTAssertEqual(got.map(\.unit), serial.map(\.unit), "\(concurrent) at once")
            for (a, b) in zip(got, serial) {
                XCTAssertEqual(a.rows, b.rows)
                XCTAssertEqual(a.ids, b.ids)
                XCTAssertEqual(a.errors, b.errors)
                XCTAssertEqual(a.digest, b.digest)
            }
        }
        var handed: [Int] = []
        XCTAssertThrowsError(try Job.runUnits(source: NumberSource(203), encoder: ConcurrentNumberEncoder(throwAt: 102), unitSize: 4, from: 0,
                                              concurrentUnits: 3) { u, _ in handed.append(u) }) { XCTAssertTrue($0 is ConcurrentNumberEncoder.Failure) }
        XCTAssertEqual(handed, Array(0..<25), "unit 25 holds 102")
    }

    /// One unit per thread, but one at a time for a job too short to keep every thread busy
    /// to its end, or units too large for memory.
    func testUnitsAtOnce() {
        defer { Threads.set(Threads.defaultCount()) }
        Threads.set(4)
        XCTAssertEqual(Job.unitsAtOnce(units: 100, unitBytes: 20 << 20), 4)
        XCTAssertEqual(Job.unitsAtOnce(units: 7, unitBytes: 20 << 20), 1)
        XCTAssertEqual(Job.unitsAtOnce(units: 100, unitBytes: 1 << 62), 1)
        Threads.set(1)
        XCTAssertEqual(Job.unitsAtOnce(units: 100, unitBytes: 1 << 20), 1)
    }

    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-jobs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ n: String) -> String { dir.appendingPathComponent(n).path }

    let unit = 4

    func run(_ out: String, _ source: NumberSource, _ encoder: NumberEncoder, format: RowFormat = .npy, resume: Bool = false) throws -> JobSummary {
        let settings = JobSettings(output: out, format: format, resume: resume, errors: .skip, quiet: true, unitName: "numbers")
        let job = try Job(settings: settings, target: try OutputTarget.resolve(out))
        let def = JobDefinition(command: "test", format: format, dim: encoder.dim, unitSize: unit, items: source.count,
                                inputs: source.definition, models: ["m"], engine: [:], settings: encoder.settings)
        return try job.run(source: source, encoder: encoder, unitSize: unit, definition: def)
    }

    func files(_ out: String, _ format: RowFormat = .npy) throws -> [Data] {
        let names = format.isBinary ? ["", ".ids.txt", ".errors.jsonl"] : ["", ".errors.jsonl"]
        return try names.map { try Data(contentsOf: URL(fileURLWithPath: out + $0)) }
    }

    /// Runs a job that crashes after `units`, so out.partial holds that many units.
    func crashed(_ out: String, after units: Int, source: NumberSource = NumberSource(50), format: RowFormat = .npy) throws {
        for suffix in ["", ".ids.txt", ".errors.jsonl"] { try? FileManager.default.removeItem(atPath: out + suffix) }
        let e = NumberEncoder()
        e.crashAfter = units
        XCTAssertThrowsError(try run(out, source, e, format: format))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "no output before the job ends")
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + ".partial/journal.jsonl"))
    }

    func testInterruptedJobResumesToTheSameBytesInEveryFormat() throws {
        for format in RowFormat.allCases {
            let ref = path("ref.\(format.rawValue)"), out = path("job.\(format.rawValue)")
            let summary = try run(ref, NumberSource(50), NumberEncoder(), format: format)
            XCTAssertEqual(summary.failures, (0..<50).filter { $0 % 7 == 3 || ($0 % 11 != 5 && $0 % 13 == 0) }.count)
            XCTAssertEqual(summary.rows, (0..<50).filter { $0 % 7 != 3 && $0 % 11 != 5 && $0 % 13 != 0 }.count)
            for stop in [1, 5, 9] {
                try crashed(out, after: stop, format: format)
                _ = try run(out, NumberSource(50), NumberEncoder(), format: format, resume: true)
                XCTAssertEqual(try files(out, format), try files(ref, format), "\(format) stopped after \(stop) units")
                XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".partial"))
            }
        }
        let rows = try NPY.read(path: path("ref.npy"))
        XCTAssertEqual(rows.shape, [(0..<50).filter { $0 % 7 != 3 && $0 % 11 != 5 && $0 % 13 != 0 }.count, 5])
        let ids = try String(contentsOfFile: path("ref.npy.ids.txt"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(ids.count, rows.shape[0])
        for (i, id) in ids.enumerated() { XCTAssertEqual(rows.data[i * 5], Float(Int(id)!) * 0.5, "row \(i) is item \(id)") }
    }

    /// Each way the partial state can be damaged: the job resumes to the right bytes (what does
    /// not verify is recomputed), or refuses with a clear error.
    func testDamagedPartialIsRepairedOrRefused() throws {
        let ref = path("ref.npy")
        _ = try run(ref, NumberSource(50), NumberEncoder())
        let out = path("job.npy"), partial = out + ".partial"
        let fm = FileManager.default
        func size(_ f: String) throws -> Int { (try fm.attributesOfItem(atPath: partial + "/" + f)[.size] as! NSNumber).intValue }
        func truncate(_ f: String, by n: Int) throws {
            let h = try FileHandle(forUpdating: URL(fileURLWithPath: partial + "/" + f))
            try h.truncate(atOffset: UInt64(max(0, try size(f) - n)))
            try h.close()
        }
        func rewrite(_ f: String, _ change: (inout [UInt8]) -> Void) throws {
            var b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: partial + "/" + f)))
            change(&b)
            try Data(b).write(to: URL(fileURLWithPath: partial + "/" + f))
        }
        let damages: [(String, () throws -> Void)] = [
            ("rows.f32 shortened by a few bytes", { try truncate("rows.f32", by: 7) }),
            ("rows.f32 cut to its header", { try truncate("rows.f32", by: try size("rows.f32") - 128) }),
            ("rows.f32 deleted", { try fm.removeItem(atPath: partial + "/rows.f32") }),
            ("a row's bytes changed", { try rewrite("rows.f32") { $0[200] ^= 0x40 } }),
            ("ids.txt shortened", { try truncate("ids.txt", by: 3) }),
            ("ids.txt deleted", { try fm.removeItem(atPath: partial + "/ids.txt") }),
            ("errors.jsonl deleted", { try fm.removeItem(atPath: partial + "/errors.jsonl") }),
            ("the journal's last line torn", { try truncate("journal.jsonl", by: 20) }),
            ("a journal line altered", { try rewrite("journal.jsonl") { b in
                let i = b.firstIndex(of: 0x0A)! + 30
                b[i] = b[i] == 0x31 ? 0x32 : 0x31
            } }),
            ("the journal deleted", { try fm.removeItem(atPath: partial + "/journal.jsonl") }),
            ("a forged record claiming more rows", { try rewrite("journal.jsonl") { b in
                // A well-formed line (its checksum right) whose counts the files do not hold.
                let json = #"{"data":"00","end":28,"errorsBytes":1,"failures":99,"idsBytes":1,"input":"00","rows":999,"rowsBytes":20108,"unit":6}"#
                b += Array(json.utf8) + [0x09] + Array(SHA256.hexDigest(Array(json.utf8)).utf8) + [0x0A]
            } }),
        ]
        for (what, damage) in damages {
            try crashed(out, after: 6)
            try damage()
            _ = try run(out, NumberSource(50), NumberEncoder(), resume: true)
            XCTAssertEqual(try files(out), try files(ref), what)
        }
        // An input edited in place after it was embedded: its unit and those after are recomputed.
        try crashed(out, after: 6)
        let changed = NumberSource(50)
        changed.identities["9"] = "v2 9"
        _ = try run(out, changed, NumberEncoder(), resume: true)
        XCTAssertEqual(try files(out), try files(ref), "recomputed rows of unchanged content equal the originals")
        // A job state that cannot be read, or that is another job's: refused, with a clear line.
        try crashed(out, after: 3)
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: partial + "/job.json"))
        XCTAssertThrowsError(try run(out, NumberSource(50), NumberEncoder(), resume: true)) {
            XCTAssertTrue("\($0)".contains("unreadable job state; delete \(partial) to start over"), "\($0)")
        }
        try crashed(out, after: 3)
        let other = NumberEncoder()
        other.salt = 1
        XCTAssertThrowsError(try run(out, NumberSource(50), other, resume: true)) {
            XCTAssertTrue("\($0)".contains("holds a different job (other inputs, model or options: salt)"), "\($0)")
        }
        // Without --resume the old state is discarded and the job starts over.
        _ = try run(out, NumberSource(50), NumberEncoder())
        XCTAssertEqual(try files(out), try files(ref))
    }

    /// A second job on the same output — by its own path or through a symbolic link to it — is
    /// refused at once while the first holds the lock; the lock is free again afterwards.
    func testSecondJobOnTheSameOutputIsRefused() throws {
        let out = path("x.npy")
        try FileManager.default.createSymbolicLink(atPath: path("link.npy"), withDestinationPath: out)
        let settings = JobSettings(output: out, format: .npy, resume: false, errors: .skip, quiet: true, unitName: "n")
        var first: Job? = try Job(settings: settings, target: try OutputTarget.resolve(out))
        for name in [out, path("link.npy")] {
            var s = settings
            s.output = name
            XCTAssertThrowsError(try Job(settings: s, target: try OutputTarget.resolve(name))) {
                XCTAssertTrue("\($0)".contains("another vlm job is writing this output"), "\($0)")
            }
        }
        XCTAssertNotNil(first)
        first = nil
        XCTAssertNoThrow(try Job(settings: settings, target: try OutputTarget.resolve(out)))
    }

    func testShardsPartitionEveryCount() {
        for total in [0, 1, 7, 100, 1001] {
            for n in 1...9 {
                let ranges = (1...n).map { Shard("\($0)/\(n)")!.range(of: total) }
                XCTAssertEqual(ranges.first?.lowerBound, 0)
                XCTAssertEqual(ranges.last?.upperBound, total)
                for (a, b) in zip(ranges, ranges.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
            }
        }
        XCTAssertEqual(Shard("1/1")!.range(of: Int.max), 0..<Int.max)
        for bad in ["0/3", "4/3", "1/0", "x/2", "1/2/3", "", "-1/2"] { XCTAssertNil(Shard(bad), bad) }
    }

    /// Any range of lines read through the sparse index equals a plain split, across the index's
    /// 1024-line steps, with CRLF ends and without a final newline.
    func testTextLinesReadAnyRange() throws {
        var text = ""
        var expected: [String] = []
        for i in 0..<3000 {
            let line = i % 97 == 0 ? "" : "line \(i) " + String(repeating: "x", count: i % 13)
            expected.append(line)
            text += line + (i % 5 == 0 ? "\r\n" : "\n")
        }
        text.removeLast()   // no newline after the last line
        let file = path("t.txt")
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
        let lines = try TextLines(file, spool: nil, reuseSpool: false, quiet: true)
        XCTAssertEqual(lines.lineCount, 3000)
        for r in [0..<1, 1020..<1030, 1023..<2049, 2999..<3000, 0..<3000, 500..<500] {
            let got = try lines.lines(r)
            XCTAssertEqual(got.map { String(decoding: $0.bytes, as: UTF8.self) }, Array(expected[r]), "\(r)")
            XCTAssertEqual(got.map(\.number), r.map { $0 + 1 })
        }
    }

    /// Another process writing into a running job's partial state: a rows file put in place of
    /// the job's, or bytes added to it. The job notices before publishing (its files are the ones
    /// it opened, of the sizes its journal implies) and publishes nothing, instead of passing
    /// another's bytes off as its output.
    func testAJobPublishesNothingWhenItsPartialFilesWereReplacedOrChanged() throws {
        for damage in ["replace rows", "grow rows"] {
            let out = path("tampered-\(damage.count).npy")
            final class Tamper: RowEncoder {
                let inner = NumberEncoder()
                let folder: String, damage: String, atUnit: Int
                var units = 0
                init(folder: String, damage: String, atUnit: Int) { (self.folder, self.damage, self.atUnit) = (folder, damage, atUnit) }
                var dim: Int { inner.dim }
                var settings: [String: String] { inner.settings }
                func prepare(_ items: [(id: [UInt8], value: Int)]) -> [(id: [UInt8], value: Int)] { items }
                func encode(_ items: [(id: [UInt8], value: Int)]) throws -> EncodedBatch {
                    units += 1
                    if units == atUnit {
                        let rows = folder + "/rows.f32"
                        if damage == "replace rows" {
                            let copy = try Data(contentsOf: URL(fileURLWithPath: rows))
                            try copy.write(to: URL(fileURLWithPath: rows + ".other"))
                            XCTAssertEqual(rename(rows + ".other", rows), 0)
                        }
                    }
                    if units == atUnit && damage == "grow rows" {
                        // Bytes past what the job will write: its rows file is then longer
                        // than its journal says.
                        let h = try FileHandle(forUpdating: URL(fileURLWithPath: folder + "/rows.f32"))
                        try h.seekToEnd()
                        h.write(Data(count: 1 << 20))
                        try h.close()
                    }
                    return try inner.encode(items)
                }
            }
            let source = NumberSource(20)
            let settings = JobSettings(output: out, format: .npy, resume: false, errors: .skip, quiet: true, unitName: "numbers")
            let job = try Job(settings: settings, target: try OutputTarget.resolve(out))
            // 20 items in units of 4: five units; the damage lands after the fourth is recorded.
            let tamper = Tamper(folder: out + ".partial", damage: damage, atUnit: 5)
            let def = JobDefinition(command: "test", format: .npy, dim: tamper.dim, unitSize: unit, items: source.count,
                                    inputs: source.definition, models: ["m"], engine: [:], settings: tamper.settings)
            XCTAssertThrowsError(try job.run(source: source, encoder: tamper, unitSize: unit, definition: def), damage) { e in
                XCTAssertTrue("\(e)".contains("nothing was published") || "\(e)".contains("disagree with its journal"), "\(damage): \(e)")
            }
            XCTAssertNil(FileStatus.of(out), damage)
            XCTAssertNil(FileStatus.of(out + ".ids.txt"), damage)
        }
    }

    /// The vector space recorded in a job's definition is not part of its fingerprint: a job
    /// started by a vlm that did not record one still resumes.
    func testTheVectorSpaceIsNotPartOfTheFingerprint() {
        var d = JobDefinition(command: "embed-text", format: .npy, dim: 4, unitSize: 8, items: 3, inputs: [1, 2, 3], models: ["m"],
                              engine: ["threads": "2"], settings: ["pooling": "mean"])
        let before = d.fingerprint
        d.space = VectorSpace(kind: "text", models: [], options: ["pooling": "mean"], dim: 4)
        XCTAssertEqual(d.fingerprint, before)
        d.settings["pooling"] = "cls"
        XCTAssertNotEqual(d.fingerprint, before)
    }
}
