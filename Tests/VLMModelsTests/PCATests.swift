// The PCA arithmetic without the CLI: the streaming covariance does not drift over 10⁷ rows on a
// large offset, the eigen-solvers agree with a matrix whose spectrum is known (the checked
// float32 solve falls back to double when the spectrum is wide), and whitening maps directions
// without variance to 0. Parity with scikit-learn on fixtures is in VLMCLITests/PCACLITests.

import Foundation
import XCTest
import VLMCore
import VLMModels

/// A small seeded generator (splitmix64), uniform in [0, 1), then Gaussian by Box–Muller.
struct SeededNormal {
    var state: UInt64
    mutating func uniform() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
    }
    mutating func next() -> Double {
        let u = max(uniform(), 1e-300), v = uniform()
        return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
    }
}

final class PCATests: XCTestCase {
    /// Rows of 6 values on offsets of 10⁴ with standard deviations 0.5…3 and one correlated pair:
    /// a float32 Σx² would lose every digit of the variance (10⁸ next to 1). The covariance of
    /// 10⁷ rows, streamed in chunks, equals the covariance computed in double to 2e-5 — as
    /// close as that of the first 10⁴ rows is to its own: the error does not grow with the rows.
    func testCovarianceDoesNotDriftOverTenMillionRows() throws {
        let d = 6, chunk = 1 << 16
        let offsets: [Double] = [1e4, -2e4, 3e4, 5e3, 1e4, 7.5e3]
        let scales: [Double] = [3, 2, 1.5, 1, 0.75, 0.5]
        func check(rows total: Int) -> Double {
            var gen = SeededNormal(state: 42)
            let acc = CovarianceAccumulator(dim: d)
            // The reference: Welford's update in double, on the same float32 values.
            var mean = [Double](repeating: 0, count: d), m2 = [Double](repeating: 0, count: d * d), seen = 0.0
            var buffer = [Float](repeating: 0, count: chunk * d)
            var done = 0
            while done < total {
                let n = min(chunk, total - done)
                for i in 0..<n {
                    var z = (0..<d).map { _ in gen.next() }
                    z[1] = 0.8 * z[0] + 0.6 * z[1]
                    var x = [Double](repeating: 0, count: d)
                    for j in 0..<d { x[j] = Double(Float(offsets[j] + scales[j] * z[j])); buffer[i * d + j] = Float(x[j]) }
                    seen += 1
                    var delta = [Double](repeating: 0, count: d)
                    for j in 0..<d { delta[j] = x[j] - mean[j]; mean[j] += delta[j] / seen }
                    for a in 0..<d { for b in a..<d { m2[a * d + b] += delta[a] * (x[b] - mean[b]) } }
                }
                buffer.withUnsafeMutableBufferPointer { acc.add(centring: $0.baseAddress!, count: n) }
                done += n
            }
            XCTAssertEqual(acc.count, total)
            let cov = acc.finishCovariance()
            var worst = 0.0
            for a in 0..<d {
                XCTAssertEqual(acc.mean[a], mean[a], accuracy: 1e-6 * abs(offsets[a]))
                for b in a..<d {
                    let ref = m2[a * d + b] / (seen - 1)
                    // Relative to the scale of the entry (off-diagonal entries may be ~0).
                    worst = max(worst, abs(cov[a * d + b] - ref) / (scales[a] * scales[b]))
                    XCTAssertEqual(cov[b * d + a], cov[a * d + b], "symmetric")
                }
            }
            return worst
        }
        let small = check(rows: 10_000), large = check(rows: 10_000_000)
        XCTAssertLessThanOrEqual(small, 2e-5)
        XCTAssertLessThanOrEqual(large, 2e-5, "10⁷ rows drift (10⁴ rows: \(small))")
    }

    /// A symmetric matrix Q diag(λ) Qᵀ with eigenvalues 1 … 10⁻⁸: every solver returns the top
    /// eigenvalues to 1e-6 relative and their eigenvectors (|cos| ≥ 0.99999); the default
    /// (auto) gets there although float32 cannot resolve λ ≪ 10⁻⁷ — its check sends it to dsyevr.
    /// On a narrow spectrum auto keeps the float32 solve and still agrees to 1e-5.
    func testEigenSolversOnKnownSpectra() throws {
        let n = 64, top = 40
        var gen = SeededNormal(state: 7)
        // Q: Gram–Schmidt on seeded Gaussian columns, as rows q_k.
        var q = [[Double]]()
        while q.count < n {
            var v = (0..<n).map { _ in gen.next() }
            for u in q {
                let p = zip(u, v).reduce(0) { $0 + $1.0 * $1.1 }
                for j in 0..<n { v[j] -= p * u[j] }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            q.append(v.map { $0 / norm })
        }
        let wide: [Double] = (0..<n).map { pow(10.0, -Double($0) / 5.0) }
        let narrow: [Double] = (0..<n).map { 2.0 - Double($0) / 64.0 }
        let spectra: [(String, [Double])] = [("wide", wide), ("narrow", narrow)]
        for (name, lambda) in spectra {
            var a = [Double](repeating: 0, count: n * n)
            for k in 0..<n { for i in 0..<n { for j in 0..<n { a[i * n + j] += lambda[k] * q[k][i] * q[k][j] } } }
            for solver in [EigenSolver.auto, .dsyevr, .dsyevd] {
                var copy = a
                let (values, vectors) = try symmetricEigen(&copy, n: n, top: top, solver: solver)
                XCTAssertEqual(values.count, top)
                for k in 0..<top {
                    let tol = name == "wide" || solver != .auto ? 1e-6 : 1e-5
                    XCTAssertEqual(values[k], lambda[k], accuracy: tol * lambda[k], "\(name) \(solver) λ\(k)")
                    let cos = abs((0..<n).reduce(0) { $0 + vectors[k * n + $1] * q[k][$1] })
                    XCTAssertGreaterThanOrEqual(cos, 0.99999, "\(name) \(solver) vector \(k)")
                }
            }
            // K chosen from every eigenvalue: a few (dstemr), most (dstedc), most without room
            // for all n vectors (dstemr again).
            for (keep, affordable) in [(8, true), (n - 3, true), (n - 3, false)] {
                var copy = a
                var seen: [Double] = []
                let (values, vectors) = try symmetricEigen(&copy, n: n, allVectorsAffordable: affordable) { all in seen = all; return keep }
                XCTAssertEqual(seen.count, n)
                for k in 0..<n { XCTAssertEqual(seen[k], lambda[k], accuracy: 1e-6 * lambda[0], "\(name) all λ\(k)") }
                XCTAssertEqual(values.count, keep)
                for k in 0..<keep {
                    XCTAssertEqual(values[k], lambda[k], accuracy: 1e-6 * lambda[k] + 1e-12 * lambda[0], "\(name) K=\(keep) λ\(k)")
                    // Vectors of near-equal eigenvalues may mix: checked where the gap is clear.
                    guard k + 1 < n, lambda[k] - lambda[k + 1] > 1e-3 * lambda[k], k == 0 || lambda[k - 1] - lambda[k] > 1e-3 * lambda[k] else { continue }
                    let cos = abs((0..<n).reduce(0) { $0 + vectors[k * n + $1] * q[k][$1] })
                    XCTAssertGreaterThanOrEqual(cos, 0.99999, "\(name) K=\(keep) \(affordable) vector \(k)")
                }
            }
        }
    }

    /// Rows of rank 3 in 8 dimensions: the components past the third have no variance; they are
    /// counted, and whitened they project to 0 (never to rounding noise divided by its root).
    func testRankDeficientRowsWhitenToZero() throws {
        let d = 8, n = 500
        var gen = SeededNormal(state: 3)
        let basis = (0..<3).map { _ in (0..<d).map { _ in gen.next() } }
        var rows = [Float](repeating: 0, count: n * d)
        for i in 0..<n {
            let z = [3 * gen.next(), 2 * gen.next(), gen.next()]
            for j in 0..<d { rows[i * d + j] = Float(5 + z[0] * basis[0][j] + z[1] * basis[1][j] + z[2] * basis[2][j]) }
        }
        let original = rows
        let acc = CovarianceAccumulator(dim: d)
        rows.withUnsafeMutableBufferPointer { acc.add(centring: $0.baseAddress!, count: n) }
        let model = try PCAModel.fit(acc, dimension: .count(6), whiten: true)
        XCTAssertEqual(model.zeroVarianceCount, 3)
        let out = model.projection(NaiveBackend()).apply(original, normalize: false)
        for i in 0..<n {
            for c in 0..<3 { XCTAssertTrue(out[i * 6 + c].isFinite) }
            for c in 3..<6 { XCTAssertEqual(out[i * 6 + c], 0, "row \(i), component \(c)") }
        }
        // The whitened components with variance have unit sample variance.
        for c in 0..<3 {
            let v = (0..<n).reduce(0.0) { $0 + Double(out[$1 * 6 + c] * out[$1 * 6 + c]) } / Double(n - 1)
            XCTAssertEqual(v, 1, accuracy: 1e-4)
        }
    }
    /// Rows far nearer the mean than the fitted spread (a PCA of spread ~10⁴ applied to the
    /// mean plus noise of 1) project to within 1e-6 of the float64 projection, and the mean
    /// itself to exactly 0, centred in place or given centred. Folding the mean into the
    /// product as a bias (x·Wᵀ − mean·Wᵀ, scikit-learn's transform) would cancel two large
    /// float32 products — which is why vlm centres.
    func testRowsNearTheMeanProjectPrecisely() throws {
        let d = 64, n = 300, k = 8
        var gen = SeededNormal(state: 11)
        var train = [Float](repeating: 0, count: 2000 * d)
        for i in 0..<2000 { for j in 0..<d { train[i * d + j] = Float(1e4 + 1e4 * Double(1 + j % 5) * gen.next()) } }
        let acc = CovarianceAccumulator(dim: d)
        train.withUnsafeMutableBufferPointer { acc.add(centring: $0.baseAddress!, count: 2000) }
        let model = try PCAModel.fit(acc, dimension: .count(k), whiten: false)
        var rows = [Float](repeating: 0, count: n * d)
        for i in 0..<n { for j in 0..<d { rows[i * d + j] = i == 0 ? model.mean[j] : model.mean[j] + Float(gen.next()) } }
        // The reference: (x − mean) · componentsᵀ in double, from the same float32 values.
        var reference = [Double](repeating: 0, count: n * k)
        for i in 0..<n {
            for c in 0..<k {
                var s = 0.0
                for j in 0..<d { s += (Double(rows[i * d + j]) - Double(model.mean[j])) * Double(model.components[c * d + j]) }
                reference[i * k + c] = s
            }
        }
        func worstRowError(_ y: [Float]) -> Double {
            (1..<n).map { i -> Double in
                var e = 0.0, r = 0.0
                for c in 0..<k { e += pow(Double(y[i * k + c]) - reference[i * k + c], 2); r += reference[i * k + c] * reference[i * k + c] }
                return (e / r).squareRoot()
            }.max()!
        }
        var centred = rows
        for i in 0..<n { for j in 0..<d { centred[i * d + j] -= model.mean[j] } }
        for backend in [BLASBackend() as any Backend, NaiveBackend()] {
            var input = rows
            let y = model.projection(backend).apply(centring: &input, normalize: false)
            XCTAssertLessThanOrEqual(worstRowError(y), 1e-6, "\(backend.kind)")
            XCTAssertEqual(Array(y[0..<k]), [Float](repeating: 0, count: k), "the mean itself")
            var given = centred
            XCTAssertEqual(model.projection(backend, rowsCentred: true).apply(centring: &given, normalize: false), y)
            XCTAssertEqual(given, centred, "rows given centred are not changed")
        }
        // What folding the mean into a bias would have given.
        let blas = BLASBackend()
        var bias = [Float](repeating: 0, count: k)
        for c in 0..<k {
            var s = 0.0
            for j in 0..<d { s += Double(model.components[c * d + j]) * Double(model.mean[j]) }
            bias[c] = Float(-s)
        }
        let weights = blas.prepareLinear(weight: model.components, bias: bias, inFeatures: d, outFeatures: k)
        var folded = [Float](repeating: 0, count: n * k)
        folded.withUnsafeMutableBufferPointer { o in
            rows.withUnsafeBufferPointer { blas.linear(out: o.baseAddress!, inp: $0.baseAddress!, rows: n, weights: weights) }
        }
        XCTAssertGreaterThan(worstRowError(folded), 1e-4)
    }
}
