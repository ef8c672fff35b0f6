// Rows of feature files as a job's items (`vlm pca apply`): one item per row, across any
// number of .npy / .f32 files read in chunks, with the ids of each file's `<file>.ids.txt`
// sidecar (what embed writes beside binary output) or, without one, the row number.

import Foundation
import VLMCore
import VLMEmbed
import VLMIO

/// Every row of the files, in order.
public final class FeatureRowSource: ItemSource {
    public let files: [FeatureFile]
    /// Each file's first row in the concatenation, and the total at the end.
    let starts: [Int]
    let ids: [TextLines?]
    public let range: Range<Int>
    private let identities: [UInt8]

    /// `range`: the rows (of the concatenation) this job takes (a shard).
    public init(files: [FeatureFile], range: Range<Int>? = nil) throws {
        self.files = files
        var s = [0]
        for f in files { s.append(s.last! + f.rows) }
        starts = s
        self.range = range ?? 0..<s.last!
        ids = try files.map { f in
            let sidecar = f.path + ".ids.txt"
            guard FileStatus.of(sidecar)?.kind == .regular else { return nil }
            let lines = try TextLines(sidecar, spool: nil, reuseSpool: false, quiet: true)
            guard lines.lineCount == f.rows else {
                throw InputError("\(sidecar): \(lines.lineCount) ids for the \(f.rows) rows of \(f.path); remove it or give the ids of every row")
            }
            return lines
        }
        identities = Array(files.map { modelIdentity($0.path) + (FileStatus.of($0.path + ".ids.txt") != nil ? "+ids" : "") }.joined(separator: "\u{0}").utf8)
    }

    public var count: Int { range.count }
    public var definition: [UInt8] { identities + Array("\(range)".utf8) }

    /// The file and the row in it of row `i` of the concatenation.
    func locate(_ i: Int) -> (file: Int, row: Int) {
        var lo = 0, hi = files.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if starts[mid] <= i { lo = mid } else { hi = mid - 1 }
        }
        return (lo, i - starts[lo])
    }

    public func items(_ r: Range<Int>) throws -> [JobItem<FeatureRow>] {
        var out: [JobItem<FeatureRow>] = []
        out.reserveCapacity(r.count)
        var i = range.lowerBound + r.lowerBound
        let end = range.lowerBound + r.upperBound
        while i < end {
            let (f, row) = locate(i)
            let n = min(end - i, files[f].rows - row)
            let names: [[UInt8]]
            if let lines = ids[f] {
                names = try lines.lines(row..<(row + n)).map { line in
                    let text = String(decoding: line.bytes, as: UTF8.self)
                    return RawPath.unescape(text) ?? line.bytes
                }
            } else {
                let prefix = files.count > 1 ? files[f].path + ":" : ""
                names = (row..<(row + n)).map { Array((prefix + String($0)).utf8) }
            }
            for k in 0..<n {
                out.append(JobItem(id: names[k], identity: Array("\(f):\(row + k)".utf8) + names[k],
                                   content: .value(FeatureRow(file: f, row: row + k))))
            }
            i += n
        }
        return out
    }
}

public struct FeatureRow: Sendable {
    public var file: Int, row: Int
}

/// The rows themselves, read 256 KiB at a time, each piece checked for NaN and infinity (such
/// a row is an error naming its file and row) and, given a mean, centred right after it is
/// read while it is in cache: what `vlm pca apply` projects (a separate centring pass over a
/// unit's rows cost 11% of its CPU time, and a copy of them another 6%; BENCHMARKS.md §7).
public final class FeatureRowEncoder: RowEncoder {
    public let files: [FeatureFile]
    public let dim: Int
    let mean: [Float]?
    /// --allow-nonfinite: rows holding NaN or infinity are read as they are (and written).
    let allowNonFinite: Bool

    public init(files: [FeatureFile], subtracting mean: [Float]? = nil, allowNonFinite: Bool = false) {
        precondition(!files.isEmpty && (mean == nil || mean!.count == files[0].dim))
        (self.files, dim, self.mean, self.allowNonFinite) = (files, files[0].dim, mean, allowNonFinite)
    }

    public var settings: [String: String] { [:] }

    /// A unit's rows, and which of them hold NaN or infinity (by index in the unit).
    public struct Rows {
        var values: [Float]
        var nonFinite: [Int]
    }

    public func prepare(_ items: [(id: [UInt8], value: FeatureRow)]) -> Result<(Rows, [(id: [UInt8], value: FeatureRow)]), Error> {
        Result {
            var nonFinite: [Int] = []
            // Every value is read into it (no zero fill first: the rows are a unit's tens of MB).
            let values = try [Float](unsafeUninitializedCapacity: items.count * dim) { o, initialized in
                initialized = o.count
                var k = 0
                while k < items.count {
                    var n = 1
                    let first = items[k].value
                    while k + n < items.count, items[k + n].value.file == first.file, items[k + n].value.row == first.row + n { n += 1 }
                    try read(file: first.file, rows: first.row..<(first.row + n), into: o.baseAddress! + k * dim) { nonFinite.append(k + $0) }
                    k += n
                }
            }
            return (Rows(values: values, nonFinite: nonFinite), items)
        }
    }

    /// Rows `rows` of a file into `out`, 256 KiB at a time, each piece centred (with a mean)
    /// and checked while it is in cache; `bad(i)` for each row i (of `rows`) holding NaN or ±∞.
    private func read(file: Int, rows: Range<Int>, into out: UnsafeMutablePointer<Float>, bad: (Int) -> Void) throws {
        let piece = max(1, (64 << 10) / dim)
        try (mean ?? []).withUnsafeBufferPointer { m in
            for start in stride(from: rows.lowerBound, to: rows.upperBound, by: piece) {
                let n = min(piece, rows.upperBound - start)
                let p = out + (start - rows.lowerBound) * dim
                try files[file].read(start..<(start + n), into: p)
                for i in 0..<n {
                    let row = p + i * dim
                    // NaN and ±∞ are the floats whose magnitude bits exceed the largest finite
                    // one's; an integer max vectorises where a float test would not.
                    // One pass with the centring.
                    var magnitude: UInt32 = 0
                    if m.count == dim {
                        for j in 0..<dim {
                            let v = row[j]
                            magnitude = max(magnitude, v.bitPattern & 0x7FFF_FFFF)
                            row[j] = v - m[j]
                        }
                    } else {
                        for j in 0..<dim { magnitude = max(magnitude, row[j].bitPattern & 0x7FFF_FFFF) }
                    }
                    if magnitude > 0x7F7F_FFFF && !allowNonFinite { bad(start - rows.lowerBound + i) }
                }
            }
        }
    }

    /// Rows holding NaN or infinity are the unit's errors, named by their file and row.
    public func encode(_ prepared: Result<(Rows, [(id: [UInt8], value: FeatureRow)]), Error>) throws -> EncodedBatch {
        let (rows, items) = try prepared.get()
        var failures = [ItemError?](repeating: nil, count: items.count)
        guard !rows.nonFinite.isEmpty else { return EncodedBatch(rows: rows.values, failures: failures) }
        for k in rows.nonFinite {
            let at = items[k].value
            failures[k] = ItemError(id: items[k].id, kind: "non_finite",
                                    message: "\(files[at.file].path): row \(at.row) holds NaN or infinity")
        }
        var kept: [Float] = []
        kept.reserveCapacity((items.count - rows.nonFinite.count) * dim)
        for k in 0..<items.count where failures[k] == nil { kept += rows.values[(k * dim)..<((k + 1) * dim)] }
        return EncodedBatch(rows: kept, failures: failures)
    }
}
