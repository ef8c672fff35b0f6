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
        if files.count == 2 && files.contains("-") { notes = ["vlm: note: a file read from stdin has no .meta.json beside it: the two files' vector spaces are not checked"] }
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
    /// match): the products run as GEMMs on the BLAS backend, queries in chunks whose scores take
    /// at most 64 MiB, and each query keeps its best `k` in a heap (a NaN score is never a match).
    func best(_ a: Tensor, _ b: Tensor, top k: Int, rows: [String], cols: [String]) throws {
        let d = a.shape[1], n = a.shape[0], m = b.shape[0]
        if d == 0 { throw InputError("\(files.joined(separator: ", ")): rows of 0 values have no cosine") }
        if n == 0 || m == 0 { return }
        var ua = a.data
        l2NormalizeRows(&ua, dim: d)
        var ub: [Float] = []
        if files.count == 2 {
            ub = b.data
            l2NormalizeRows(&ub, dim: d)
        }
        let backend = BLASBackend()
        let chunk = max(1, min(256, (64 << 20) / 4 / m))
        let wanted = min(m, k + (files.count == 1 ? 1 : 0))
        for start in stride(from: 0, to: n, by: chunk) {
            let q = min(chunk, n - start)
            var scores = [Float](repeating: 0, count: q * m)
            ua.withUnsafeBufferPointer { pa in
                (files.count == 2 ? ub : ua).withUnsafeBufferPointer { pb in
                    scores.withUnsafeMutableBufferPointer { ps in
                        backend.gemm(transA: false, transB: true, m: q, n: m, k: d, a: pa.baseAddress! + start * d, lda: d,
                                     b: pb.baseAddress!, ldb: d, beta: 0, c: ps.baseAddress!, ldc: m, epilogue: .none)
                    }
                }
            }
            var out = Data()
            for i in 0..<q {
                var order = Self.bestIndices(scores[(i * m)..<((i + 1) * m)], wanted)
                if files.count == 1 { order.removeAll { $0 == start + i } }
                for (r, j) in order.prefix(k).enumerated() {
                    let score = scores[i * m + j]
                    if format == .jsonl {
                        out.append(JSONLines.encode(Match(query: rows[start + i], rank: r + 1, id: cols[j], score: score)))
                    } else {
                        out.append(Data("\(rows[start + i])\t\(r + 1)\t\(cols[j])\t\(String(format: "%.6f", score))\n".utf8))
                    }
                }
            }
            try FileSink.standardOutput.write(out)
        }
    }

    /// The indices of the `k` largest values, largest first (ties: lower index first), NaN never
    /// among them: a min-heap of k, O(M log k).
    static func bestIndices(_ row: ArraySlice<Float>, _ k: Int) -> [Int] {
        guard k > 0 else { return [] }
        let base = row.startIndex
        // Worse first: lower score, then higher index.
        func worse(_ x: (Float, Int), _ y: (Float, Int)) -> Bool { x.0 != y.0 ? x.0 < y.0 : x.1 > y.1 }
        var heap: [(Float, Int)] = []
        heap.reserveCapacity(k)
        func siftDown(_ i: Int) {
            var i = i
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && worse(heap[l], heap[m]) { m = l }
                if r < heap.count && worse(heap[r], heap[m]) { m = r }
                if m == i { return }
                heap.swapAt(i, m)
                i = m
            }
        }
        for (offset, v) in row.enumerated() where !v.isNaN {
            let item = (v, offset)
            if heap.count < k {
                heap.append(item)
                var c = heap.count - 1
                while c > 0, worse(heap[c], heap[(c - 1) / 2]) { heap.swapAt(c, (c - 1) / 2); c = (c - 1) / 2 }
            } else if worse(heap[0], item) {
                heap[0] = item
                siftDown(0)
            }
        }
        _ = base
        return heap.sorted { worse($1, $0) }.map(\.1)
    }
}
