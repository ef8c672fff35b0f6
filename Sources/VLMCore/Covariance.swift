// The linear algebra of PCA: a covariance accumulated over rows in one streaming pass (OpenBLAS
// ssyrk per chunk, merged in double), and the eigen-decomposition of a symmetric matrix
// (LAPACKE). Both give OpenBLAS the engine's threads for their duration: nothing else runs then.
//
// Precision: every chunk is centred on its own mean before its Gram matrix is formed, so the
// products are of deviations, not of raw values (no cancellation when the mean is large next to
// the spread, wherever the mean drifts between chunks); each chunk's Gram is float32 over at
// most `chunkRows` rows (relative error ~√chunk · 2⁻²⁴), and the chunks' means and centred sums
// of products are merged in double with Chan, Golub & LeVeque's pairwise update
//     n = na + nb,  δ = mb − ma,  mean = ma + δ·nb/n,  M2 = M2a + M2b + δδᵀ·na·nb/n
// so the error grows with neither the number of chunks nor the drift of the mean: 10⁷ rows on
// offsets of 10⁴ and a mean that moves by 10⁴ from chunk to chunk are tested.

import COpenBLAS
import Foundation

public final class CovarianceAccumulator {
    public let dim: Int
    public private(set) var count = 0
    /// The mean of the rows merged so far, in double.
    private var merged: [Double]
    /// Σ (x − mean)(x − mean)ᵀ of the rows merged so far: the upper triangle of a dim × dim
    /// row-major matrix, in double.
    private var m2: [Double]
    private var chunkGram: [Float]
    private var chunkSum: [Float]
    private var centre: [Float]
    private var ones: [Float] = []

    public init(dim: Int) {
        precondition(dim > 0)
        self.dim = dim
        merged = [Double](repeating: 0, count: dim)
        m2 = [Double](repeating: 0, count: dim * dim)
        chunkGram = [Float](repeating: 0, count: dim * dim)
        chunkSum = [Float](repeating: 0, count: dim)
        centre = [Float](repeating: 0, count: dim)
    }

    /// Adds n rows (n × dim, row-major), centring them in place: `rows` is overwritten.
    public func add(centring rows: UnsafeMutablePointer<Float>, count n: Int) {
        guard n > 0 else { return }
        let d = dim
        if ones.count < n { ones = [Float](repeating: 1, count: n) }
        // The chunk's mean in double, rounded to float32: the centre c, so the deviations x − c
        // are of the spread's size, and their own sum below makes the chunk's mean c + Σ(x − c)/n
        // exact to double whatever c's rounding. (A float32 sum would
        // not do: 65,536 values of 10⁴ summed in float32 put c off by tens of units.)
        let parts = max(1, min(Threads.count, n / 256))
        var partial = [Double](repeating: 0, count: parts * d)
        partial.withUnsafeMutableBufferPointer { p in
            let base = p.baseAddress!
            Threads.parallelFor(parts, minChunk: 1) { range in
                for part in range {
                    let acc = base + part * d
                    for i in (part * n / parts)..<((part + 1) * n / parts) { for j in 0..<d { acc[j] += Double(rows[i * d + j]) } }
                }
            }
        }
        for j in 0..<d {
            var t = 0.0
            for part in 0..<parts { t += partial[part * d + j] }
            centre[j] = Float(t / Double(n))
        }
        centre.withUnsafeBufferPointer { s in
            Threads.parallelFor(n, minChunk: 64) { range in
                for i in range { for j in 0..<d { rows[i * d + j] -= s[j] } }
            }
        }
        chunkGram.withUnsafeMutableBufferPointer { g in
            chunkSum.withUnsafeMutableBufferPointer { cs in
                ones.withUnsafeBufferPointer { o in
                    OpenBLASThreads.with(Threads.count) {
                        upperGram(n: d, k: n, a: rows, c: g.baseAddress!)
                        // Column sums of the centred chunk: rowsᵀ · 1.
                        cblas_sgemv(CblasRowMajor, CblasTrans, Int32(n), Int32(d), 1, rows, Int32(d), o.baseAddress!, 1, 0, cs.baseAddress!, 1)
                    }
                }
            }
        }
        // The chunk alone: its mean mb and its M2b = G − s sᵀ / n (s the deviations' sum).
        let nb = Double(n), na = Double(count), total = na + nb
        let s = chunkSum.map { Double($0) }
        var delta = [Double](repeating: 0, count: d)
        for j in 0..<d {
            let mb = Double(centre[j]) + s[j] / nb
            delta[j] = mb - merged[j]
        }
        let weight = na * nb / total
        chunkGram.withUnsafeBufferPointer { g in
            m2.withUnsafeMutableBufferPointer { acc in
                delta.withUnsafeBufferPointer { dl in
                    s.withUnsafeBufferPointer { sp in
                        Threads.parallelFor(d, minChunk: 16) { range in
                            for i in range {
                                for j in i..<d {
                                    acc[i * d + j] += Double(g[i * d + j]) - sp[i] * sp[j] / nb + dl[i] * dl[j] * weight
                                }
                            }
                        }
                    }
                }
            }
        }
        for j in 0..<d { merged[j] += delta[j] * nb / total }
        count += n
    }

    /// The mean of the rows added, in double.
    public var mean: [Double] { merged }

    /// The sample covariance (divided by count − 1), the full symmetric dim × dim matrix.
    public func covariance() -> [Double] {
        precondition(count > 1)
        let d = dim, n = Double(count)
        var c = [Double](repeating: 0, count: d * d)
        for i in 0..<d {
            for j in i..<d {
                let v = m2[i * d + j] / (n - 1)
                c[i * d + j] = v
                c[j * d + i] = v
            }
        }
        return c
    }
}

/// The upper triangle of C (n, n) = Aᵀ A for A (k, n) row-major (OpenBLAS ssyrk: half a full
/// product's work; measured on 2 Zen 3 cores as fast as a blocked-sgemm upper triangle, 2.7 against
/// 2.9 s on 50,000 × 2,432 rows, so the library's own routine is kept).
func upperGram(n: Int, k: Int, a: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
    precondition(n > 0 && k > 0 && n <= Int(Int32.max) && k <= Int(Int32.max))
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(k), 1, a, Int32(n), 0, c, Int32(n))
}

/// Runs body with OpenBLAS's own pool at `n` threads (the engine keeps it at one otherwise).
public enum OpenBLASThreads {
    public static func with<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
        openblas_set_num_threads(Int32(max(1, n)))
        defer { openblas_set_num_threads(1) }
        return try body()
    }
}

public enum EigenSolver: String, CaseIterable, Sendable {
    /// LAPACKE_dsyevd: every eigenpair, divide and conquer.
    case dsyevd
    /// LAPACKE_dsyevr: only the wanted top eigenpairs (MRRR).
    case dsyevr
    /// LAPACKE_ssyevr: dsyevr's method on a float32 copy of the covariance.
    case ssyevr
    /// ssyevr (twice as fast here), kept only when every eigenpair checks out against the double
    /// covariance — residual ‖C v − λ v‖ ≤ 1e-5 λ, eigenvalue the double Rayleigh quotient vᵀ C v —
    /// else dsyevr. Wide spectra and zero variances fail the check and get the double solve.
    case auto
}

public struct EigenError: VLMError {
    public let description: String
}

/// The `top` largest eigenvalues of the symmetric n × n matrix `a` (row-major, double), in
/// descending order, and their eigenvectors as rows (top × n). `a` is overwritten.
public func symmetricEigen(_ a: inout [Double], n: Int, top: Int, solver: EigenSolver) throws -> (values: [Double], vectors: [Double]) {
    precondition(a.count == n * n && top >= 1 && top <= n && n <= Int(Int32.max))
    let upper = CChar(UInt8(ascii: "U")), vectorsToo = CChar(UInt8(ascii: "V")), range = CChar(UInt8(ascii: "I"))
    var values: [Double] = [], vectors: [Double] = []
    let info: Int32 = OpenBLASThreads.with(Threads.count) {
        switch solver {
        case .dsyevd:
            var w = [Double](repeating: 0, count: n)
            let r = a.withUnsafeMutableBufferPointer { LAPACKE_dsyevd(LAPACK_ROW_MAJOR, vectorsToo, upper, Int32(n), $0.baseAddress!, Int32(n), &w) }
            if r == 0 {
                // Ascending eigenvalues, eigenvectors as columns of a: take the last `top`, reversed.
                values = (0..<top).map { w[n - 1 - $0] }
                vectors = [Double](repeating: 0, count: top * n)
                for k in 0..<top { for j in 0..<n { vectors[k * n + j] = a[j * n + (n - 1 - k)] } }
            }
            return r
        case .dsyevr:
            let (r, v, z) = topBySyevr(&a, n: n, top: top) { ap, m, w, z, support in
                LAPACKE_dsyevr(LAPACK_ROW_MAJOR, vectorsToo, range, upper, Int32(n), ap, Int32(n), 0, 0,
                               Int32(n - top + 1), Int32(n), 0, m, w, z, Int32(top), support)
            }
            (values, vectors) = (v, z)
            return r
        case .ssyevr, .auto:
            var af = a.map { Float($0) }
            let (r, v, z) = topBySyevr(&af, n: n, top: top) { ap, m, w, z, support in
                LAPACKE_ssyevr(LAPACK_ROW_MAJOR, vectorsToo, range, upper, Int32(n), ap, Int32(n), 0, 0,
                               Int32(n - top + 1), Int32(n), 0, m, w, z, Int32(top), support)
            }
            (values, vectors) = (v, z)
            return r
        }
    }
    if info != 0 { throw EigenError(description: "the eigen-decomposition (\(solver.rawValue)) failed: LAPACK info \(info)") }
    if solver == .auto {
        if let refined = refinedInDouble(a, n: n, top: top, vectors: vectors) { return (refined, vectors) }
        return try symmetricEigen(&a, n: n, top: top, solver: .dsyevr)
    }
    return (values, vectors)
}

/// ?syevr over the index range of the `top` largest eigenvalues: LAPACK's info, then the
/// eigenvalues descending and their eigenvectors as rows (top × n), in double.
func topBySyevr<T: BinaryFloatingPoint>(
    _ a: inout [T], n: Int, top: Int,
    _ solve: (UnsafeMutablePointer<T>, UnsafeMutablePointer<Int32>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<Int32>) -> Int32
) -> (Int32, [Double], [Double]) {
    var m: Int32 = 0
    var w = [T](repeating: 0, count: n), z = [T](repeating: 0, count: n * top)
    var support = [Int32](repeating: 0, count: 2 * top)
    let r = a.withUnsafeMutableBufferPointer { solve($0.baseAddress!, &m, &w, &z, &support) }
    guard r == 0 else { return (r, [], []) }
    let values = (0..<top).map { Double(w[top - 1 - $0]) }
    var vectors = [Double](repeating: 0, count: top * n)
    for k in 0..<top { for j in 0..<n { vectors[k * n + j] = Double(z[j * top + (top - 1 - k)]) } }
    return (0, values, vectors)
}

/// The Rayleigh quotients vᵀ A v of `vectors` (top × n rows) in double, if every residual
/// ‖A v − λ v‖ is within 1e-5 of λ (and λ > 0); nil otherwise.
func refinedInDouble(_ a: [Double], n: Int, top: Int, vectors: [Double]) -> [Double]? {
    var av = [Double](repeating: 0, count: top * n)
    OpenBLASThreads.with(Threads.count) {
        // (V A) = (A V)ᵀ rows, A symmetric.
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(top), Int32(n), Int32(n), 1, vectors, Int32(n), a, Int32(n), 0, &av, Int32(n))
    }
    var values = [Double](repeating: 0, count: top)
    for k in 0..<top {
        var vav = 0.0, vv = 0.0
        for j in 0..<n { vav += vectors[k * n + j] * av[k * n + j]; vv += vectors[k * n + j] * vectors[k * n + j] }
        let lambda = vav / vv
        var r = 0.0
        for j in 0..<n { let e = av[k * n + j] - lambda * vectors[k * n + j]; r += e * e }
        guard lambda > 0, (r / vv).squareRoot() <= 1e-5 * lambda else { return nil }
        values[k] = lambda
    }
    return values
}
