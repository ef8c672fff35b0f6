// `<output>.meta.json`: what made a batch job's output — the job's definition (inputs, model
// files, every row-changing setting, engine), the vlm version, the row and failure counts —
// and which files it published (size, modification time, inode), written last when a job
// publishes. `--resume` on an output whose job has finished reads it: the same job over
// unchanged inputs and unchanged files has nothing left to do.

import Foundation
import VLMCore
import VLMEmbed
import VLMIO

#if canImport(Glibc)
import Glibc
#endif

/// One published file, as the description knows it.
public struct PublishedFile: Codable, Equatable {
    public var size: UInt64
    public var mtimeNanoseconds: Int64
    public var inode: UInt64

    init(_ st: FileStatus) { (size, mtimeNanoseconds, inode) = (st.size, st.mtimeNanoseconds, st.inode) }
}

public struct OutputDescription: Codable {
    public static let suffix = ".meta.json"
    /// The largest description read (a job's definition is a few kilobytes).
    static let readLimit = 1 << 20

    public var version: Int = 1
    public var vlmVersion: String
    public var command: String
    public var dim: Int
    public var rows: Int
    public var failures: Int
    public var fingerprint: String
    public var definition: JobDefinition
    /// SHA-256 over the units' input digests, in order (file sizes and times, texts).
    public var inputs: String
    /// The published files by suffix ("" for the output itself, ".ids.txt", ".errors.jsonl").
    public var files: [String: PublishedFile]

    init(version: String, definition: JobDefinition, rows: Int, failures: Int, inputs: String, target: String) throws {
        (vlmVersion, command, dim, self.rows, self.failures) = (version, definition.command, definition.dim, rows, failures)
        (fingerprint, self.definition, self.inputs) = (definition.fingerprint, definition, inputs)
        files = [:]
        for suffix in Self.suffixes(definition) {
            if let st = FileStatus.of(target + suffix, followLinks: false), st.kind == .regular { files[suffix] = PublishedFile(st) }
        }
    }

    /// The files a job of this format publishes (an `.ids.txt` beside a JSON-lines output is
    /// not its own, whatever is there).
    static func suffixes(_ definition: JobDefinition) -> [String] {
        let binary = RowFormat(rawValue: definition.format)?.isBinary ?? true
        return [""] + (binary ? [".ids.txt"] : []) + [".errors.jsonl"]
    }

    func write(to path: String) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        var data = try e.encode(self)
        data.append(0x0A)
        try writeAtomically(data, to: path)
    }

    /// The description beside `target`, read without counting it among the files the job
    /// reads (it is the output's own, which the job may replace); nil when absent or not one.
    public static func read(beside target: String) -> OutputDescription? {
        let path = target + suffix
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard FileStatus.of(fd: fd)?.kind == .regular, let file = try? InputFile(duplicating: fd, name: path),
              let data = try? file.readAll(limit: readLimit) else { return nil }
        return try? JSONDecoder().decode(OutputDescription.self, from: data)
    }

    /// For `--resume` with no partial state: the summary of the finished job when `target`
    /// holds this very job's complete output — same definition, the files the description
    /// names untouched and no others beside them, the inputs' digests unchanged (`inputs`
    /// gives unit u's) — and nil, with a note saying why, when the job must run.
    /// `noted`: set when a note said why the job runs. `version`: this vlm's; `settings` say
    /// whether an input is a stream (whose changes no identity shows) and how failures count.
    static func complete(_ target: String, output: String, definition: JobDefinition, settings: JobSettings, streamedInput: Bool,
                         noted: inout Bool, inputs: (Int) throws -> String) throws -> JobSummary? {
        let quiet = settings.quiet
        var said = false
        defer { noted = said }
        func note(_ why: String) -> JobSummary? {
            if !quiet { writeStandardError("vlm: note: \(output): \(why); computing it anew\n") }
            said = true
            return nil
        }
        guard FileStatus.of(target) != nil else { return nil }
        guard let d = read(beside: target) else { return note("no \(suffix) beside it says which job made it") }
        guard d.version == 1, d.fingerprint == definition.fingerprint else {
            return note("made by another job (other \(PartialSink.difference(d.definition, definition)))")
        }
        guard d.vlmVersion == settings.version else { return note("made by vlm \(d.vlmVersion), this is \(settings.version)") }
        guard !streamedInput else { return note("an input is a stream, whose changes --resume cannot see") }
        guard d.failures == 0 || settings.errors == .skip else {
            return note("it has \(d.failures) failed item\(d.failures == 1 ? "" : "s") and --errors fail stops at the first")
        }
        for suffix in suffixes(definition) {
            let st = FileStatus.of(target + suffix, followLinks: false).flatMap { $0.kind == .regular ? PublishedFile($0) : nil }
            guard st == d.files[suffix] else {
                return note(suffix.isEmpty ? "changed since its job finished" : "its \(suffix.dropFirst()) changed since its job finished")
            }
        }
        var hash = SHA256()
        let units = (definition.items + definition.unitSize - 1) / definition.unitSize
        for u in 0..<units { hash.update(Array(try inputs(u).utf8)) }
        guard hash.finalizeHex() == d.inputs else { return note("its inputs changed since its job finished") }
        let errorsFile = d.failures > 0 ? target + ".errors.jsonl" : nil
        if !quiet {
            let failed = errorsFile.map { ", \(d.failures) failed item\(d.failures == 1 ? "" : "s") listed in \($0)" } ?? ""
            let retry = errorsFile == nil ? "" : " (failed items are not retried: delete the output to run them again)"
            writeStandardError("vlm: \(output) is complete (\(d.rows) rows\(failed)) and its inputs, models and options are unchanged; nothing to do\(retry)\n")
        }
        return JobSummary(items: definition.items, rows: d.rows, failures: d.failures, errorsFile: errorsFile, alreadyComplete: true)
    }
}

/// The vector space feature files share, from the descriptions beside them. A file whose space
/// disagrees with the first described one is refused in one line naming both and what differs;
/// a file without a description is accepted with a note; what does not define the space (the
/// models' paths, batch limits, threads, the vlm version) is reported in a note, never refused.
/// The notes are returned, for the caller to print once its work has succeeded (an error must
/// stay the one line on stderr).
public func sharedSpace(of files: [String]) throws -> (space: VectorSpace?, notes: [String]) {
    var first: (path: String, description: OutputDescription, space: VectorSpace)?
    var notes: [String] = []
    for path in files {
        guard let d = OutputDescription.read(beside: path) else {
            notes.append("\(path) has no \(OutputDescription.suffix) saying which models and options made it: its vector space is not checked")
            continue
        }
        guard let space = d.definition.space else {
            notes.append("\(path): its \(OutputDescription.suffix) names no vector space (made by \(d.command)): not checked")
            continue
        }
        guard let f = first else { first = (path, d, space); continue }
        let differences = f.space.differences(from: space)
        if !differences.isEmpty {
            throw InputError("\(path) is not in the vector space of \(f.path): \(differences.joined(separator: "; ")) (from their \(OutputDescription.suffix) files)")
        }
        var reported: [String] = []
        if d.vlmVersion != f.description.vlmVersion { reported.append("vlm \(f.description.vlmVersion) vs \(d.vlmVersion)") }
        if d.definition.models != f.description.definition.models { reported.append("the models' paths or file times") }
        if d.definition.engine != f.description.definition.engine { reported.append("the engine (threads, backend, kernels)") }
        let batch = { (s: [String: String]) in s.filter { $0.key.hasPrefix("batch") || $0.key.hasSuffix("batch_texts") || $0.key.hasSuffix("batch_tokens") } }
        if batch(d.definition.settings) != batch(f.description.definition.settings) { reported.append("batch limits") }
        if !reported.isEmpty {
            notes.append("\(path) and \(f.path) share a vector space but differ in \(reported.joined(separator: ", ")) (not part of it)")
        }
    }
    return (first?.space, notes.map { "vlm: note: " + $0 })
}

/// Whether the rows of two feature files may be compared by cosine, from the descriptions beside
/// them: the same vector space, or the image and the text space of one CLIP checkpoint (the same
/// weights made both, with the same projection and final normalisation). Refused in one line
/// naming both and what differs; a file without a description is compared with a note.
public func comparableSpaces(_ a: String, _ b: String) throws -> [String] {
    guard let da = OutputDescription.read(beside: a), let sa = da.definition.space,
          let db = OutputDescription.read(beside: b), let sb = db.definition.space else {
        return ["vlm: note: \(a) or \(b) has no \(OutputDescription.suffix) naming its vector space: not checked"]
    }
    if sa.kind == sb.kind {
        let differences = sa.differences(from: sb)
        if !differences.isEmpty {
            throw InputError("\(b) is not in the vector space of \(a): \(differences.joined(separator: "; ")) (from their \(OutputDescription.suffix) files)")
        }
        return []
    }
    // One CLIP checkpoint's two towers: the same weights named by the image rows and the text rows.
    let kinds = Set([sa.kind, sb.kind])
    // The same weights and the same config and tokenizer files (a config decides the activation).
    let same = kinds == ["image", "text"] && sa.models.count == 1 && sb.models.count == 1 && sa.models[0].sha256 == sb.models[0].sha256
        && sa.models[0].files == sb.models[0].files
    guard same else {
        let name = { (s: VectorSpace) in s.models.map(\.name).joined(separator: " + ") }
        throw InputError("\(b) (\(sb.kind) rows of \(name(sb))) is not comparable with \(a) (\(sa.kind) rows of \(name(sa))): only one CLIP checkpoint's image and text rows share a space (from their \(OutputDescription.suffix) files)")
    }
    // Cosine does not see a row's length, but a projection does: normalising before it counts then.
    // An unset normalize is false (image rows record it only when on).
    let keys = sa.options["pca"] == nil ? ["pca", "normalize_output"] : ["pca", "normalize_output", "normalize"]
    let unset = ["normalize": "false", "normalize_output": "false"]
    for key in keys where (sa.options[key] ?? unset[key]) != (sb.options[key] ?? unset[key]) {
        throw InputError("\(b) is not comparable with \(a): \(key) \(sa.options[key] ?? unset[key] ?? "unset") vs \(sb.options[key] ?? unset[key] ?? "unset") (from their \(OutputDescription.suffix) files)")
    }
    return []
}
