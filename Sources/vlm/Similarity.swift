// `vlm similarity`: cosine similarities between the rows of feature files, as a table.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMModels

struct Similarity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cosine similarity between the rows of a .npy feature file (or between two files), as a table.")

    @Argument(help: "A (N, D) float32 .npy (- for stdin); a second (M, D) one compares across the two.")
    var files: [String]

    @Option(help: "Row labels, one per line (for the first file's rows). Default: the file's <file>.ids.txt, else row numbers.")
    var labels: String?

    @Option(help: "Column labels, one per line (for the second file's rows). Default: the row labels.")
    var columnLabels: String?

    @Option(help: "Cut labels to this many characters.")
    var width: Int = 24

    func validate() throws {
        if files.isEmpty || files.count > 2 { throw ValidationError("give one or two .npy files") }
        try Limits.check("--width", width, 4...1000)
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
    }
}
