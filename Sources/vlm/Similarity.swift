// `vlm similarity`: cosine similarities between the rows of feature files, as a table.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMJobs
import VLMModels

struct Similarity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cosine similarity between the rows of a .npy feature file (or between two files), as a table; or each row's best matches (--top K).",
        discussion: "Two files must be in one vector space, as the .meta.json files beside them say: the same models and options, or the image and text rows of one CLIP checkpoint (photos found by sentences). --top K prints, for each row of the first file, the K rows of the second (of the same file: the others) with the highest cosine, as TSV (query, rank, id, score) or JSON lines, ids from the .ids.txt files.")

    @Argument(help: "A (N, D) float32 .npy (- for stdin); a second (M, D) one compares across the two.")
    var files: [String]

    @Option(help: "Row labels, one per line (for the first file's rows). Default: the file's <file>.ids.txt, else row numbers.")
    var labels: String?

    @Option(help: "Column labels, one per line (for the second file's rows). Default: the row labels.")
    var columnLabels: String?

    @Option(help: "Cut labels to this many characters.")
    var width: Int = 24

    @Option(parsing: .unconditional, help: "For each row of the first file, the K best rows of the second (or, with one file, of the others), instead of the table.")
    var top: Int?

    @Option(help: "With --top: tsv (query, rank, id, score) or jsonl.")
    var format: RowFormat = .tsv

    func validate() throws {
        if files.isEmpty || files.count > 2 { throw ValidationError("give one or two .npy files") }
        try Limits.check("--width", width, 4...1000)
        if let top { try Limits.check("--top", top, 1...1_000_000) }
        if format.isBinary { throw ValidationError("similarity writes tsv or jsonl") }
        if format == .jsonl && top == nil { throw ValidationError("--format jsonl is for --top; the table is text") }
    }

    func run() throws {
        let a = try NPY.read(argument: files[0])
        let b = files.count == 2 ? try NPY.read(argument: files[1]) : a
        guard a.rank == 2, b.rank == 2, a.shape[1] == b.shape[1] else {
            throw InputError("\(files.joined(separator: ", ")): need (N, D) arrays with the same D, got \(a.shape) and \(b.shape)")
        }
        /// --labels, else the file's own ids (`.ids.txt` beside it, as the batch commands write
        /// it), else row numbers.
        func readLabels(_ p: String?, _ n: Int, file: String) throws -> [String] {
            let ids = file + ".ids.txt"
            guard let p = p ?? (file != "-" && FileStatus.of(ids)?.kind == .regular ? ids : nil) else { return (0..<n).map { "#\($0)" } }
            let l = try readLines(p, what: "the labels", lossy: true)
            guard l.count == n else { throw InputError("\(p): \(l.count) labels for \(n) rows; give one label per row") }
            return l
        }
        let rows = try readLabels(labels, a.shape[0], file: files[0])
        let cols = try readLabels(columnLabels ?? (files.count == 1 ? labels : nil), b.shape[0], file: files[files.count - 1])
        var notes: [String] = []
        if files.count == 2 && !files.contains("-") { notes = try comparableSpaces(files[0], files[1]) }
        if let top {
            try best(a, b, top: top, rows: rows, cols: cols)
            for n in notes { note(n) }
            return
        }
        let d = a.shape[1]
        func unit(_ t: Tensor, _ i: Int) -> [Float] {
            var v = Array(t.data[(i * d)..<((i + 1) * d)])
            l2Normalize(&v)
            return v
        }
        let ua = (0..<a.shape[0]).map { unit(a, $0) }, ub = (0..<b.shape[0]).map { unit(b, $0) }
        func cut(_ s: String) -> String {
            // A path keeps its end (the file name), any other label its start.
            let c = s.count <= width ? s : s.contains("/") ? "…" + String(s.suffix(width - 1)) : String(s.prefix(width - 1)) + "…"
            return c.padding(toLength: width, withPad: " ", startingAt: 0)
        }
        var out = cut("") + " " + (0..<ub.count).map { "[\($0)]".leftPadded(6) }.joined(separator: " ") + "\n"
        for (i, v) in ua.enumerated() {
            out += cut(rows[i]) + " "
            out += ub.map { u in String(format: "%6.3f", zip(v, u).reduce(Float(0)) { $0 + $1.0 * $1.1 }) }.joined(separator: " ") + "\n"
        }
        out += (0..<ub.count).map { "[\($0)] \(cols[$0])" }.joined(separator: "\n") + "\n"
        try FileSink.standardOutput.write(out)
        for n in notes { note(n) }
    }

    struct Match: Encodable { var query: String; var rank: Int; var id: String; var score: Float }

    /// Each row of `a`'s `k` best rows of `b` by cosine (with one file, a row is not its own
    /// match): the products run as GEMMs on the BLAS backend, 256 queries at a time, so memory
    /// stays at 256 × M scores whatever N is.
    func best(_ a: Tensor, _ b: Tensor, top k: Int, rows: [String], cols: [String]) throws {
        let d = a.shape[1], n = a.shape[0], m = b.shape[0]
        func units(_ t: Tensor) -> [Float] {
            var out = t.data
            l2NormalizeRows(&out, dim: d)
            return out
        }
        let ua = units(a), ub = files.count == 2 ? units(b) : ua
        let backend = BLASBackend()
        let chunk = 256
        for start in stride(from: 0, to: n, by: chunk) {
            let q = min(chunk, n - start)
            var scores = [Float](repeating: 0, count: q * m)
            ua.withUnsafeBufferPointer { pa in
                ub.withUnsafeBufferPointer { pb in
                    scores.withUnsafeMutableBufferPointer { ps in
                        backend.gemm(transA: false, transB: true, m: q, n: m, k: d, a: pa.baseAddress! + start * d, lda: d,
                                     b: pb.baseAddress!, ldb: d, beta: 0, c: ps.baseAddress!, ldc: m, epilogue: .none)
                    }
                }
            }
            var out = Data()
            for i in 0..<q {
                let row = Array(scores[(i * m)..<((i + 1) * m)])
                var order = topIndices(row, min(m, k + (files.count == 1 ? 1 : 0)))
                if files.count == 1 { order.removeAll { $0 == start + i } }
                for (r, j) in order.prefix(k).enumerated() {
                    if format == .jsonl {
                        out.append(JSONLines.encode(Match(query: rows[start + i], rank: r + 1, id: cols[j], score: row[j])))
                    } else {
                        out.append(Data("\(rows[start + i])\t\(r + 1)\t\(cols[j])\t\(String(format: "%.6f", row[j]))\n".utf8))
                    }
                }
            }
            try FileSink.standardOutput.write(out)
        }
    }
}
