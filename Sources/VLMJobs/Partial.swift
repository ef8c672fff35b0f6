// A regular-file output's partial state (see Job.swift for the layout): appended unit by
// unit, verified record by record on resume, and turned into the final files at the end —
// the rows and ids files are linked into place (no copy of a large output) and renamed onto
// their targets, so each final file appears whole or not at all.

import Foundation
import VLMCore
import VLMEmbed
import VLMIO

#if canImport(Glibc)
import Glibc
#endif

/// One journal line: the job's state after a unit.
struct UnitRecord: Codable, Equatable {
    var unit: Int
    var end: Int
    var rows: Int
    var failures: Int
    var rowsBytes: UInt64
    var idsBytes: UInt64
    var errorsBytes: UInt64
    /// SHA-256 of the unit's input identities.
    var input: String
    /// SHA-256 of the bytes the unit appended to rows, ids and errors, in that order.
    var data: String

    /// The line: the record's JSON, a tab, the SHA-256 of that JSON.
    var line: Data {
        let json = JSONLines.encode(self).dropLast()
        var out = Data(json)
        out.append(0x09)
        out.append(contentsOf: Array(SHA256.hexDigest(Array(json)).utf8))
        out.append(0x0A)
        return out
    }

    /// nil when the line is torn, altered, or not a record.
    static func parse(_ line: [UInt8]) -> UnitRecord? {
        guard let tab = line.lastIndex(of: 0x09) else { return nil }
        let json = Array(line[..<tab])
        guard String(decoding: line[(tab + 1)...], as: UTF8.self) == SHA256.hexDigest(json) else { return nil }
        return try? JSONDecoder().decode(UnitRecord.self, from: Data(json))
    }
}

/// job.json: the definition and its fingerprint.
struct JobFile: Codable {
    var version: Int
    var fingerprint: String
    var definition: JobDefinition
}

final class PartialSink: RowSink {
    let folder: String
    let output: String
    let target: String
    let definition: JobDefinition
    let dim: Int
    let format: RowFormat
    /// Bytes reserved before the rows: the .npy header, written at the end.
    let rowsBase: UInt64
    private var rowsFile, idsFile, errorsFile, journalFile: FileSink
    private(set) var last: UnitRecord?
    /// The record before `last`: where the last unit's bytes begin.
    private var beforeLast: UnitRecord?

    /// The vlm version, for the output's description.
    let version: String
    /// SHA-256 over the input digests of the units done so far, in order: the whole job's
    /// inputs, for the output's description.
    private var inputsHash = SHA256()

    var doneItems: Int { last?.end ?? 0 }
    var failures: Int { last?.failures ?? 0 }

    static let headerBytes: UInt64 = 128

    init(folder: String, output: String, target: String, definition: JobDefinition, resume: Bool, quiet: Bool, unitName: String,
         version: String = "", identity: (Int) throws -> String) throws {
        (self.folder, self.output, self.target, self.definition, self.version) = (folder, output, target, definition, version)
        dim = definition.dim
        format = RowFormat(rawValue: definition.format) ?? .npy
        rowsBase = format == .npy ? Self.headerBytes : 0
        let jobPath = folder + "/job.json"
        let fresh: Bool
        if resume, FileStatus.of(jobPath, followLinks: false) != nil {
            guard let jobFile = try? Self.openPartialFile(jobPath, create: false), let data = try? InputFile(duplicating: jobFile.fd, name: jobPath).readAll(limit: 1 << 24),
                  let job = try? JSONDecoder().decode(JobFile.self, from: data), job.version == 1 else {
                throw InputError("\(jobPath): unreadable job state; delete \(folder) to start over")
            }
            guard job.fingerprint == definition.fingerprint else {
                throw InputError("\(folder): holds a different job (other inputs, model or options: \(Self.difference(job.definition, definition))); delete it or drop --resume")
            }
            fresh = false
        } else {
            if resume && !quiet { writeStandardError("vlm: note: nothing to resume in \(folder); starting the job\n") }
            for name in ["rows.f32", "ids.txt", "errors.jsonl", "journal.jsonl"] { unlink(folder + "/" + name) }
            try writeAtomically(JSONLines.encode(JobFile(version: 1, fingerprint: definition.fingerprint, definition: definition)), to: jobPath)
            fresh = true
        }
        func openFile(_ name: String) throws -> FileSink {
            let path = folder + "/" + name
            try breakHardLink(path)
            return try Self.openPartialFile(path, create: true)
        }
        rowsFile = try openFile("rows.f32")
        idsFile = try openFile("ids.txt")
        errorsFile = try openFile("errors.jsonl")
        journalFile = try openFile("journal.jsonl")
        if fresh {
            try truncate(rowsFile, to: rowsBase)
        } else {
            let (good, journalBytes, problem) = try verify(identity: identity)
            last = good
            if let problem, !quiet {
                writeStandardError("vlm: note: \(folder): \(problem); recomputing from item \((good?.end ?? 0) + 1)\n")
            }
            try truncate(rowsFile, to: good?.rowsBytes ?? rowsBase)
            try truncate(idsFile, to: good?.idsBytes ?? 0)
            try truncate(errorsFile, to: good?.errorsBytes ?? 0)
            try truncate(journalFile, to: journalBytes)
            if !quiet { writeStandardError("vlm: resuming \(output): \(doneItems) of \(definition.items) \(unitName) already done\n") }
        }
        for f in [rowsFile, idsFile, errorsFile, journalFile] { _ = lseek(f.fd, 0, SEEK_END) }
    }

    deinit { for f in [rowsFile, idsFile, errorsFile, journalFile] { close(f.fd) } }

    /// A partial file opened for reading and writing: never through a symbolic link, never
    /// blocking (a FIFO put in its place), and only a regular file — anything else there was
    /// not written by vlm, and following it could truncate a file elsewhere.
    static func openPartialFile(_ path: String, create: Bool) throws -> FileSink {
        let fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | (create ? O_CREAT : 0), 0o644)
        if fd < 0 {
            let reason = errno == ELOOP ? "is a symbolic link, which vlm never puts in a job folder" : errnoMessage()
            throw InputError("\(path): \(reason); delete \(parentPath(path)) to start over")
        }
        guard let st = FileStatus.of(fd: fd), st.kind == .regular else {
            close(fd)
            throw InputError("\(path): not a regular file, which vlm never puts in a job folder; delete \(parentPath(path)) to start over")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return FileSink(fd: fd, name: path)
    }

    /// Which parts of two definitions differ, for the refusal message.
    static func difference(_ a: JobDefinition, _ b: JobDefinition) -> String {
        var parts: [String] = []
        if a.inputs != b.inputs || a.items != b.items { parts.append("inputs") }
        if a.models != b.models { parts.append("model files") }
        if a.command != b.command || a.format != b.format { parts.append("command or format") }
        if a.unitSize != b.unitSize { parts.append("batch size") }
        for (k, v) in b.engine where a.engine[k] != v { parts.append(k) }
        for (k, v) in b.settings where a.settings[k] != v { parts.append(k) }
        return parts.isEmpty ? "settings" : parts.joined(separator: ", ")
    }

    // MARK: Appending

    func commit(unit: Int, end: Int, rows: [Float], ids: [[UInt8]], errors: [ItemError], inputDigest: String) throws {
        var hash = SHA256()
        let idText = Data(ids.map(RowText.idLine).joined().utf8)
        var errorText = Data()
        for e in errors { errorText.append(e.record) }
        do {
            try rows.withUnsafeBytes { b in
                hash.update(b)
                try rowsFile.write(b)
            }
            hash.update(idText)
            try idsFile.write(idText)
            hash.update(errorText)
            try errorsFile.write(errorText)
            for f in [rowsFile, idsFile, errorsFile] { try f.sync() }
            let record = UnitRecord(unit: unit, end: end, rows: (last?.rows ?? 0) + ids.count,
                                    failures: (last?.failures ?? 0) + errors.count,
                                    rowsBytes: try offset(rowsFile), idsBytes: try offset(idsFile), errorsBytes: try offset(errorsFile),
                                    input: inputDigest, data: hash.finalizeHex())
            try journalFile.write(record.line)
            try journalFile.sync()
            inputsHash.update(Array(record.input.utf8))
            beforeLast = last
            last = record
        } catch let IOError.cannotWrite(path, reason) {
            throw InputError("\(path): cannot write: \(reason); the \(doneItems) items done so far are kept in \(folder): run the same command with --resume once that is fixed")
        }
    }

    // MARK: Verifying on resume

    /// The last record that verifies, the journal's length through it, and why the next did
    /// not (nil when every record verified).
    private func verify(identity: (Int) throws -> String) throws -> (UnitRecord?, UInt64, String?) {
        var reader = LineReader(try InputFile(duplicating: journalFile.fd, name: journalFile.name))
        var good: UnitRecord?
        var goodBytes: UInt64 = 0
        let sizes = (rows: fileSize(rowsFile), ids: fileSize(idsFile), errors: fileSize(errorsFile))
        let unitSize = definition.unitSize, total = definition.items
        while let line = try reader.nextLine() {
            let unit = (good?.unit ?? -1) + 1
            guard let r = UnitRecord.parse(line) else { return (good, goodBytes, "the record after unit \(unit) is torn or altered") }
            let prev = (rows: good?.rows ?? 0, failures: good?.failures ?? 0, end: good?.end ?? 0,
                        rowsBytes: good?.rowsBytes ?? rowsBase, idsBytes: good?.idsBytes ?? 0, errorsBytes: good?.errorsBytes ?? 0)
            let end = min(total, (unit + 1) * unitSize)
            // Counts no file can hold are refused before any arithmetic on them.
            let sane = 0...(1 << 48)
            guard sane.contains(r.unit), sane.contains(r.end), sane.contains(r.rows), sane.contains(r.failures) else {
                return (good, goodBytes, "the record of unit \(unit + 1) is inconsistent")
            }
            let newRows = r.rows - prev.rows, newFailures = r.failures - prev.failures
            guard r.unit == unit, r.end == end, newRows >= 0, newFailures >= 0, newRows + newFailures <= end - prev.end,
                  UInt64(r.rows).multipliedReportingOverflow(by: UInt64(dim) * 4) == (r.rowsBytes &- rowsBase, false), r.rowsBytes >= rowsBase,
                  r.idsBytes >= prev.idsBytes, r.errorsBytes >= prev.errorsBytes else {
                return (good, goodBytes, "the record of unit \(unit + 1) is inconsistent")
            }
            guard r.rowsBytes <= sizes.rows, r.idsBytes <= sizes.ids, r.errorsBytes <= sizes.errors else {
                return (good, goodBytes, "its files are shorter than the record of unit \(unit + 1) says")
            }
            var hash = SHA256()
            let idBytes = try readRange(idsFile, prev.idsBytes, r.idsBytes)
            let errorBytes = try readRange(errorsFile, prev.errorsBytes, r.errorsBytes)
            try hashRange(rowsFile, prev.rowsBytes, r.rowsBytes, into: &hash)
            hash.update(idBytes)
            hash.update(errorBytes)
            guard hash.finalizeHex() == r.data,
                  idBytes.filter({ $0 == 0x0A }).count == newRows, errorBytes.filter({ $0 == 0x0A }).count == newFailures else {
                return (good, goodBytes, "the rows, ids or errors of unit \(unit + 1) do not match their record")
            }
            guard try identity(unit) == r.input else {
                return (good, goodBytes, "the inputs of unit \(unit + 1) changed since they were embedded")
            }
            inputsHash.update(Array(r.input.utf8))
            beforeLast = good
            good = r
            goodBytes = reader.offset
        }
        return (good, goodBytes, nil)
    }

    private func readRange(_ f: FileSink, _ from: UInt64, _ to: UInt64) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(to - from))
        var got = 0
        while got < out.count {
            let n = out.withUnsafeMutableBytes { pread(f.fd, $0.baseAddress! + got, $0.count - got, off_t(from) + off_t(got)) }
            if n < 0 { if errno == EINTR { continue }; throw IOError.cannotOpen(path: f.name, reason: errnoMessage()) }
            if n == 0 { throw IOError.cannotOpen(path: f.name, reason: "shorter than expected") }
            got += n
        }
        return out
    }

    private func hashRange(_ f: FileSink, _ from: UInt64, _ to: UInt64, into hash: inout SHA256) throws {
        var at = from
        while at < to {
            let chunk = try readRange(f, at, min(to, at + (4 << 20)))
            hash.update(chunk)
            at += UInt64(chunk.count)
        }
    }

    // MARK: Finishing

    func finish(items: Int) throws -> JobSummary {
        let rows = last?.rows ?? 0, failures = last?.failures ?? 0
        let rowsEnd = rowsBase + UInt64(rows) * UInt64(dim) * 4
        guard fileSize(rowsFile) == rowsEnd, fileSize(idsFile) == (last?.idsBytes ?? 0) else {
            throw InputError("\(folder): the job's files disagree with its journal; run again with --resume to repair, or delete the folder")
        }
        try checkOwnFiles()
        try refuseOutput(output, overwriting: [])
        // An older description goes first: it must never sit beside files it does not describe.
        let descriptionPath = target + OutputDescription.suffix
        if FileStatus.of(descriptionPath, followLinks: false) != nil, unlink(descriptionPath) != 0 {
            throw IOError.cannotWrite(path: descriptionPath, reason: "cannot remove the old description: \(errnoMessage())")
        }
        // Sidecars first, the main file last: when it exists, its sidecars do.
        let errorsPath = target + ".errors.jsonl"
        if failures > 0 {
            try publish(errorsFile, to: errorsPath)
        } else if FileStatus.of(errorsPath, followLinks: false) != nil {
            unlink(errorsPath)
        }
        switch format {
        case .npy:
            let header = NPY.header(shape: [rows, dim])
            precondition(UInt64(header.count) == rowsBase, ".npy header of \(header.count) bytes for shape (\(rows), \(dim))")
            try header.withUnsafeBytes { b in
                if pwrite(rowsFile.fd, b.baseAddress!, b.count, 0) != b.count { throw IOError.cannotWrite(path: rowsFile.name, reason: errnoMessage()) }
            }
            try rowsFile.sync()
            try publish(idsFile, to: target + ".ids.txt")
            try publish(rowsFile, to: target)
        case .f32:
            try publish(idsFile, to: target + ".ids.txt")
            try publish(rowsFile, to: target)
        case .jsonl, .tsv:
            try renderText(rows: rows)
        }
        // The description last (a kill before it leaves the folder, and a resumed job ends
        // here again): what made the files, and which files they are, for --resume to know a
        // complete output.
        try OutputDescription(version: version, definition: definition, rows: rows, failures: failures,
                              inputs: inputsHash.finalizeHex(), target: target).write(to: descriptionPath)
        try removeTree(folder)
        return JobSummary(items: items, rows: rows, failures: failures, errorsFile: failures > 0 ? errorsPath : nil)
    }

    /// Before publishing: each partial file is still the one this job opened (no other process
    /// put a file of its own under its name), and the rows, ids and errors end in the bytes the
    /// last unit's record hashed — only that unit is read again, never the whole output.
    private func checkOwnFiles() throws {
        for f in [rowsFile, idsFile, errorsFile, journalFile] {
            guard let mine = FileStatus.of(fd: f.fd), let named = FileStatus.of(f.name, followLinks: false), mine.isSameFile(as: named) else {
                throw InputError("\(f.name): no longer the file this job wrote (replaced by another process?); nothing was published: run again with --resume")
            }
        }
        guard let last else { return }
        var hash = SHA256()
        try hashRange(rowsFile, beforeLast?.rowsBytes ?? rowsBase, last.rowsBytes, into: &hash)
        hash.update(try readRange(idsFile, beforeLast?.idsBytes ?? 0, last.idsBytes))
        hash.update(try readRange(errorsFile, beforeLast?.errorsBytes ?? 0, last.errorsBytes))
        guard hash.finalizeHex() == last.data, fileSize(errorsFile) == last.errorsBytes else {
            throw InputError("\(folder): the last unit's rows, ids or errors no longer match its record (changed by another process?); nothing was published: run again with --resume")
        }
    }

    /// Puts a partial file in place as `path`: a hard link under a temporary name, renamed onto
    /// the target (a copy where the file system has no hard links). The partial keeps its file
    /// until the folder is removed, so a kill in between leaves a job that resumes and finishes.
    private func publish(_ f: FileSink, to path: String) throws {
        let dir = parentPath(path)
        let tmp = ((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent(".\((path as NSString).lastPathComponent).tmp-\(getpid())")
        unlink(tmp)
        if link(f.name, tmp) != 0 {
            let w = try AtomicFileWriter(path: path)
            _ = lseek(f.fd, 0, SEEK_SET)
            try copyAll(from: f.fd, name: f.name, to: FileSinkWriter(w))
            try w.commit()
            return
        }
        if rename(tmp, path) != 0 {
            let reason = errnoMessage()
            unlink(tmp)
            throw IOError.cannotWrite(path: path, reason: reason)
        }
    }

    /// jsonl / tsv: rendered from rows.f32 and ids.txt, a few thousand rows at a time.
    private func renderText(rows: Int) throws {
        let w = try AtomicFileWriter(path: target)
        var ids = LineReader(try InputFile(duplicating: idsFile.fd, name: idsFile.name))
        let chunk = max(1, (1 << 22) / max(1, dim * 4))
        var done = 0
        while done < rows {
            let n = min(chunk, rows - done)
            let bytes = try readRange(rowsFile, rowsBase + UInt64(done * dim * 4), rowsBase + UInt64((done + n) * dim * 4))
            var chunkIds: [[UInt8]] = []
            for _ in 0..<n {
                guard let line = try ids.nextLine(), let raw = RawPath.unescape(String(decoding: line, as: UTF8.self)) else {
                    throw InputError("\(idsFile.name): fewer or malformed ids than rows; run again with --resume to repair")
                }
                chunkIds.append(raw)
            }
            let floats = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            try floats.withUnsafeBufferPointer { try w.write(RowText.render($0, dim: dim, ids: chunkIds, format: format)) }
            done += n
        }
        try w.commit()
    }
}

/// An AtomicFileWriter seen as a FileSink target for `copyAll`.
struct FileSinkWriter {
    let writer: AtomicFileWriter
    init(_ w: AtomicFileWriter) { writer = w }
}

func copyAll(from fd: Int32, name: String, to w: FileSinkWriter) throws {
    var buffer = [UInt8](repeating: 0, count: 4 << 20)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if n < 0 { if errno == EINTR { continue }; throw IOError.cannotOpen(path: name, reason: errnoMessage()) }
        if n == 0 { return }
        try buffer.withUnsafeBytes { try w.writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
    }
}

func fileSize(_ f: FileSink) -> UInt64 { FileStatus.of(fd: f.fd)?.size ?? 0 }

func offset(_ f: FileSink) throws -> UInt64 {
    let o = lseek(f.fd, 0, SEEK_CUR)
    if o < 0 { throw IOError.cannotWrite(path: f.name, reason: errnoMessage()) }
    return UInt64(o)
}

func truncate(_ f: FileSink, to length: UInt64) throws {
    if ftruncate(f.fd, off_t(length)) != 0 { throw IOError.cannotWrite(path: f.name, reason: errnoMessage()) }
}

/// A partial file that is also linked elsewhere (a finished output, after a kill between
/// publishing and cleaning up) is replaced by a copy of itself before it is written again, so
/// appending can never change a published file.
func breakHardLink(_ path: String) throws {
    var st = stat()
    guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_nlink > 1 else { return }
    let w = try AtomicFileWriter(path: path)
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw IOError.cannotOpen(path: path, reason: errnoMessage()) }
    defer { close(fd) }
    try copyAll(from: fd, name: path, to: FileSinkWriter(w))
    try w.commit()
}
