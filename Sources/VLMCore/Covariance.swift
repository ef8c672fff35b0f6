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
        // exact to double whatever c's rounding. (A float32 sum would not do: 65,536 values of
        // 10⁴ summed in float32 put c off by tens of units.)
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

    /// The sample covariance (divided by count − 1), the full symmetric dim × dim matrix, made
    /// in place of the accumulated sums (no second D² copy): the accumulator is spent after it.
    public func finishCovariance() -> [Double] {
        precondition(count > 1 && !m2.isEmpty, "finishCovariance() once, after at least 2 rows")
        let d = dim, n = Double(count)
        var c = m2
        m2 = []
        chunkGram = []
        for i in 0..<d {
            for j in i..<d {
                let v = c[i * d + j] / (n - 1)
                c[i * d + j] = v
                c[j * d + i] = v
            }
        }
        return c
    }

    /// Bytes the accumulator holds for rows of `dim` values (its sums of products in double and
    /// a chunk's in float32), besides the chunk of rows itself.
    public static func bytes(dim: Int) -> UInt64 { 12 * UInt64(dim) * UInt64(dim) + 16 * UInt64(dim) }
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

// LAPACK is called in column-major order on the full symmetric matrix, so LAPACKE passes it
// straight through (row-major makes it transpose a copy of the n² matrix, and of the vectors);
// row-major upper is column-major lower, the same numbers.

/// The `top` largest eigenvalues of the symmetric n × n matrix `a` (row-major, double, both
/// triangles), in descending order, and their eigenvectors as rows (top × n). `a` is
/// overwritten (except with .ssyevr and .auto, which solve a float32 copy).
public func symmetricEigen(_ a: inout [Double], n: Int, top: Int, solver: EigenSolver) throws -> (values: [Double], vectors: [Double]) {
    precondition(a.count == n * n && top >= 1 && top <= n && n <= Int(Int32.max))
    if solver == .dsyevd && EigenMemory.dsyevdWorkspace(n) > UInt64(Int32.max) {
        throw EigenError(description: "dsyevd cannot take \(n) dimensions (its workspace of 2n² values overflows LAPACK's 32-bit sizes); use --solver dsyevr or auto")
    }
    let lower = CChar(UInt8(ascii: "L")), vectorsToo = CChar(UInt8(ascii: "V")), range = CChar(UInt8(ascii: "I"))
    var values: [Double] = [], vectors: [Double] = []
    let info: Int32 = OpenBLASThreads.with(Threads.count) {
        switch solver {
        case .dsyevd:
            var w = [Double](repeating: 0, count: n)
            let r = a.withUnsafeMutableBufferPointer { LAPACKE_dsyevd(LAPACK_COL_MAJOR, vectorsToo, lower, Int32(n), $0.baseAddress!, Int32(n), &w) }
            if r == 0 {
                // Ascending eigenvalues, eigenvectors as the columns of a (contiguous in
                // column-major order): take the last `top`, reversed.
                values = (0..<top).map { w[n - 1 - $0] }
                vectors = [Double](repeating: 0, count: top * n)
                for k in 0..<top { for j in 0..<n { vectors[k * n + j] = a[(n - 1 - k) * n + j] } }
            }
            return r
        case .dsyevr:
            let (r, v, z) = topBySyevr(&a, n: n, top: top) { ap, m, w, z, support in
                LAPACKE_dsyevr(LAPACK_COL_MAJOR, vectorsToo, range, lower, Int32(n), ap, Int32(n), 0, 0,
                               Int32(n - top + 1), Int32(n), 0, m, w, z, Int32(n), support)
            }
            (values, vectors) = (v, z)
            return r
        case .ssyevr, .auto:
            var af = a.map { Float($0) }
            let (r, v, z) = topBySyevr(&af, n: n, top: top) { ap, m, w, z, support in
                LAPACKE_ssyevr(LAPACK_COL_MAJOR, vectorsToo, range, lower, Int32(n), ap, Int32(n), 0, 0,
                               Int32(n - top + 1), Int32(n), 0, m, w, z, Int32(n), support)
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
    // z is n × top column-major: eigenvector k (ascending) is z[k n ..< (k + 1) n].
    let values = (0..<top).map { Double(w[top - 1 - $0]) }
    var vectors = [Double](repeating: 0, count: top * n)
    for k in 0..<top { for j in 0..<n { vectors[k * n + j] = Double(z[(top - 1 - k) * n + j]) } }
    return (0, values, vectors)
}

/// The top eigenpairs of the symmetric n × n matrix `a` (row-major, double, both triangles),
/// as many as `choose` asks for after seeing every eigenvalue (descending): one tridiagonal
/// reduction (dsytrd), every eigenvalue of it (dsterf), then the K chosen eigenvectors of the
/// tridiagonal matrix carried back to a's (dormtr). Memory: `a` itself, O(n), and the K
/// vectors — not dsyevd's 2n² workspace, nor a copy to find the eigenvalues first. The vectors
/// come from dstemr (MRRR, K of them) when K ≤ n/2; above that, when `allVectorsAffordable`
/// (2n² more doubles: all n vectors and dstedc's workspace), from dstedc (divide and conquer, all n, of which K are kept): measured
/// on 2,432 dimensions, dstemr took 5.1–5.3 s for 2,079 vectors where dstedc's whole solve
/// took 3.4–4.1 s, and 1.6–1.7 s for 502 where it took 2.1–2.2 s. `a` is overwritten.
public func symmetricEigen(_ a: inout [Double], n: Int, allVectorsAffordable: Bool = true,
                           choosing choose: ([Double]) throws -> Int) throws -> (values: [Double], vectors: [Double]) {
    precondition(a.count == n * n && n >= 1 && n <= Int(Int32.max))
    let lower = CChar(UInt8(ascii: "L"))
    var diag = [Double](repeating: 0, count: n), off = [Double](repeating: 0, count: n), tau = [Double](repeating: 0, count: max(1, n - 1))
    var info = OpenBLASThreads.with(Threads.count) {
        a.withUnsafeMutableBufferPointer { LAPACKE_dsytrd(LAPACK_COL_MAJOR, lower, Int32(n), $0.baseAddress!, Int32(n), &diag, &off, &tau) }
    }
    if info != 0 { throw EigenError(description: "the tridiagonal reduction (dsytrd) failed: LAPACK info \(info)") }
    var all = diag, allOff = off
    info = LAPACKE_dsterf(Int32(n), &all, &allOff)
    if info != 0 { throw EigenError(description: "the eigenvalues (dsterf) failed: LAPACK info \(info)") }
    let top = try choose(Array(all.reversed()))
    precondition(top >= 1 && top <= n)
    // w: the K eigenvalues ascending; z: their vectors as the columns of an n × K block.
    var w: [Double], z: [Double]
    if 2 * top > n && allVectorsAffordable {
        var all = [Double](repeating: 0, count: n * n)
        info = OpenBLASThreads.with(Threads.count) { LAPACKE_dstedc(LAPACK_COL_MAJOR, CChar(UInt8(ascii: "I")), Int32(n), &diag, &off, &all, Int32(n)) }
        if info != 0 { throw EigenError(description: "the eigenvectors (dstedc) failed: LAPACK info \(info)") }
        w = Array(diag[(n - top)...])
        z = Array(all[((n - top) * n)...])
    } else {
        var m: Int32 = 0, tryRelative: Int32 = 1
        var support = [Int32](repeating: 0, count: 2 * top)
        w = [Double](repeating: 0, count: n)
        z = [Double](repeating: 0, count: n * top)
        info = LAPACKE_dstemr(LAPACK_COL_MAJOR, CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "I")), Int32(n), &diag, &off, 0, 0,
                              Int32(n - top + 1), Int32(n), &m, &w, &z, Int32(n), Int32(top), &support, &tryRelative)
        if info != 0 || Int(m) != top { throw EigenError(description: "the eigenvectors (dstemr) failed: LAPACK info \(info), \(m) of \(top)") }
    }
    info = OpenBLASThreads.with(Threads.count) {
        a.withUnsafeBufferPointer {
            LAPACKE_dormtr(LAPACK_COL_MAJOR, CChar(UInt8(ascii: "L")), lower, CChar(UInt8(ascii: "N")), Int32(n), Int32(top),
                           $0.baseAddress!, Int32(n), tau, &z, Int32(n))
        }
    }
    if info != 0 { throw EigenError(description: "carrying the eigenvectors back (dormtr) failed: LAPACK info \(info)") }
    let values = (0..<top).map { w[top - 1 - $0] }
    var vectors = [Double](repeating: 0, count: top * n)
    for k in 0..<top { for j in 0..<n { vectors[k * n + j] = z[(top - 1 - k) * n + j] } }
    return (values, vectors)
}

/// What the eigen-solvers need besides the n × n matrix itself, in bytes.
public enum EigenMemory {
    /// dsyevd's workspace in values: 1 + 6n + 2n² doubles (LAPACK sizes it with a 32-bit int).
    public static func dsyevdWorkspace(_ n: Int) -> UInt64 { 1 + 6 * UInt64(n) + 2 * UInt64(n) * UInt64(n) }

    /// For the top `k` of n with `solver` (nil: chosen from every eigenvalue, `symmetricEigen(_:n:choosing:)`).
    public static func bytes(n: Int, k: Int, solver: EigenSolver?) -> UInt64 {
        let n = UInt64(n), k = UInt64(k), linear = 64 * n
        switch solver {
        case nil: return 16 * n * k + linear                           // z, the vectors
        case .dsyevr?: return 16 * n * k + 40 * n + linear              // z, the vectors, workspace (26n doubles, 10n ints)
        case .ssyevr?, .auto?: return 4 * n * n + 28 * n * k + linear   // the float32 copy, z, the vectors, A·V for the check
        case .dsyevd?: return 8 * dsyevdWorkspace(Int(n)) + 8 * n * k + linear
        }
    }
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
