// PCA and whitening of feature vectors, as scikit-learn's PCA(svd_solver="covariance_eigh")
// computes them: the mean and the sample covariance of the rows (one streaming pass,
// VLMCore.CovarianceAccumulator), its top eigenvectors as components with svd_flip's sign
// (u_based_decision=False: each component's largest-magnitude entry positive), the eigenvalues
// as explained_variance_, their share of the total variance (the covariance's trace) as
// explained_variance_ratio_. A float n_components picks the smallest K whose cumulative ratio
// exceeds it (numpy searchsorted, side="right", + 1). Upstream: sklearn/decomposition/_pca.py.
//
// Saved as safetensors: mean (D), components (K, D), explained_variance (K),
// explained_variance_ratio (K); metadata rows, dim_in, whiten, vlm_version.

import Foundation
import VLMCore
import VLMIO

public enum PCADimension: Equatable, Sendable {
    case count(Int)
    /// In (0, 1): the smallest K whose cumulative explained-variance ratio exceeds it.
    case fraction(Double)
}

public struct PCAError: VLMError {
    public let description: String
}

public struct PCAModel: Sendable {
    public var mean: [Float]
    /// (k, dimIn), row-major.
    public var components: [Float]
    public var explainedVariance: [Float]
    public var explainedVarianceRatio: [Float]
    public var whiten: Bool
    public var rows: Int
    public var dimIn: Int
    /// SHA-256 of the file it was loaded from (resume fingerprints); nil when fitted here.
    public var fileDigest: String?
    public var k: Int { explainedVariance.count }

    /// A component whose variance is at most this share of the largest has no variance: the
    /// float32 covariance does not resolve less (rank-deficient rows leave "zero" eigenvalues of
    /// ~1e-7 of the largest, rounding noise). They are reported, and whitening maps them to 0
    /// instead of dividing by √noise (scikit-learn divides, giving huge or infinite values).
    public static let zeroVarianceShare = 1e-6

    /// The widest rows vlm pca takes (a covariance of D² doubles: 32 GiB at this width).
    public static let maxDimension = 1 << 16

    /// Fits to the accumulated rows.
    /// `vectorLimit`: the most components a fractional dimension may keep (their vectors must
    /// fit in memory); nil for no limit. `allVectorsAffordable`: a fractional dimension that keeps
    /// most components may compute all D eigenvectors at once (2D² more doubles).
    public static func fit(_ acc: CovarianceAccumulator, dimension: PCADimension, whiten: Bool,
                           solver: EigenSolver = .auto, vectorLimit: Int? = nil, allVectorsAffordable: Bool = true) throws -> PCAModel {
        let d = acc.dim, n = acc.count
        guard n >= 2 else { throw PCAError(description: "PCA needs at least 2 rows, got \(n)") }
        var cov = acc.finishCovariance()
        // Finite values whose squares overflow float32 (|x| ≳ 1e19) make the chunk Grams infinite.
        guard cov.allSatisfy(\.isFinite) else {
            throw PCAError(description: "the rows' covariance overflows float32 (values too large to square); scale the features first")
        }
        let total = (0..<d).reduce(0.0) { $0 + cov[$1 * d + $1] }
        let k: Int
        let values: [Double], vectors: [Double]
        switch dimension {
        case .count(let c):
            guard c >= 1 else { throw PCAError(description: "--dim must be at least 1") }
            guard c <= d else { throw PCAError(description: "--dim \(c) is more than the \(d) dimensions of the rows") }
            guard c <= n - 1 else { throw PCAError(description: "--dim \(c) needs at least \(c + 1) rows; there are \(n)") }
            k = c
            (values, vectors) = try symmetricEigen(&cov, n: d, top: c, solver: solver)
        case .fraction(let f):
            guard f > 0 && f < 1 else { throw PCAError(description: "--dim as a fraction must be in (0, 1), got \(f)") }
            // K from every eigenvalue (numpy.searchsorted(cumsum, f, side="right") + 1, as
            // scikit-learn does), then only those K eigenvectors.
            (values, vectors) = try symmetricEigen(&cov, n: d, allVectorsAffordable: allVectorsAffordable) { all in
                var cum = 0.0, chosen = min(d, n - 1)
                for (i, v) in all.prefix(min(d, n - 1)).enumerated() {
                    cum += total > 0 ? max(v, 0) / total : 0
                    if cum > f { chosen = i + 1; break }
                }
                if let limit = vectorLimit, chosen > limit { throw PCAError(description: "--dim \(f) keeps \(chosen) components, whose vectors need more memory than there is (at most \(limit))") }
                return chosen
            }
            k = values.count
        }
        guard values.allSatisfy(\.isFinite), vectors.allSatisfy(\.isFinite) else {
            throw PCAError(description: "the eigen-decomposition gave NaN or infinity")
        }
        let variances = values.map { max($0, 0) }
        let ratios = variances.map { total > 0 ? $0 / total : 0 }
        var components = [Float](repeating: 0, count: k * d)
        for c in 0..<k {
            let row = vectors[(c * d)..<((c + 1) * d)]
            let big = row.indices.max { abs(row[$0]) < abs(row[$1]) }!
            let sign: Double = row[big] < 0 ? -1 : 1
            for j in 0..<d { components[c * d + j] = Float(sign * row[row.startIndex + j]) }
        }
        return PCAModel(mean: acc.mean.map { Float($0) }, components: components, explainedVariance: variances.prefix(k).map { Float($0) },
                        explainedVarianceRatio: ratios.prefix(k).map { Float($0) }, whiten: whiten, rows: n, dimIn: d)
    }

    /// Whether component c has no variance (see `zeroVarianceShare`).
    public func hasNoVariance(_ c: Int) -> Bool {
        Double(explainedVariance[c]) <= Double(explainedVariance.first ?? 0) * PCAModel.zeroVarianceShare
    }

    /// Components without variance: the rows span fewer dimensions (rank-deficient data).
    public var zeroVarianceCount: Int { (0..<k).filter(hasNoVariance).count }

    // MARK: Saving and loading

    public func encoded(version: String) -> Data {
        SafetensorsWriter.encode([
            .init(name: "mean", shape: [dimIn], floats: mean),
            .init(name: "components", shape: [k, dimIn], floats: components),
            .init(name: "explained_variance", shape: [k], floats: explainedVariance),
            .init(name: "explained_variance_ratio", shape: [k], floats: explainedVarianceRatio),
        ], metadata: ["rows": "\(rows)", "dim_in": "\(dimIn)", "whiten": whiten ? "true" : "false", "vlm_version": version])
    }

    public static func load(path: String) throws -> PCAModel {
        let f = try SafetensorsFile(path: path)
        func t(_ name: String) throws -> Tensor {
            guard f.tensors[name] != nil else { throw PCAError(description: "\(path): not a PCA file: no tensor '\(name)' (make one with vlm pca fit)") }
            return try f.floatTensor(name)
        }
        let mean = try t("mean"), comp = try t("components"), ev = try t("explained_variance")
        let ratio = f.tensors["explained_variance_ratio"] != nil ? try t("explained_variance_ratio") : ev
        guard mean.rank == 1, comp.rank == 2, comp.shape[1] == mean.count, ev.rank == 1, ev.count == comp.shape[0], ratio.count == ev.count,
              comp.shape[0] >= 1 else {
            throw PCAError(description: "\(path): not a PCA file: mean \(mean.shape), components \(comp.shape), explained_variance \(ev.shape) do not fit together")
        }
        for (name, x) in [("mean", mean), ("components", comp), ("explained_variance", ev), ("explained_variance_ratio", ratio)]
        where x.data.contains(where: { !$0.isFinite }) {
            throw PCAError(description: "\(path): tensor '\(name)' holds NaN or infinity")
        }
        if let d = f.metadata["dim_in"], Int(d) != mean.count {
            throw PCAError(description: "\(path): not a PCA file: its metadata says dim_in \(d), but its mean holds \(mean.count) values")
        }
        if ev.data.contains(where: { $0 < 0 }) {
            throw PCAError(description: "\(path): tensor 'explained_variance' holds a negative variance")
        }
        let whiten: Bool
        switch f.metadata["whiten"] {
        case "true"?, "True"?, "1"?: whiten = true
        case nil, "false"?, "False"?, "0"?: whiten = false
        case let v?: throw PCAError(description: "\(path): metadata whiten is '\(v)', not true or false")
        }
        return PCAModel(mean: mean.data, components: comp.data, explainedVariance: ev.data, explainedVarianceRatio: ratio.data,
                        whiten: whiten, rows: Int(f.metadata["rows"] ?? "") ?? 0, dimIn: mean.count,
                        fileDigest: try SHA256.hexDigest(ofFile: path))
    }

    // MARK: Projecting

    /// The projection prepared for `backend`: rows ↦ (x − mean) · componentsᵀ, divided by
    /// √variance when whitening (0 for components without variance, see `zeroVarianceShare`).
    /// `rowsCentred`: the rows it will be given have had the mean subtracted already (`vlm pca
    /// apply` subtracts it as it reads them, while they are in cache).
    ///
    /// The mean is never folded into the product as a bias (x·Wᵀ − mean·Wᵀ, what scikit-learn's
    /// transform does): a row much nearer the mean than the fitted spread would then come out
    /// as the float32 difference of two large products — measured, relative errors of 1e-3 and
    /// more, and a row equal to the mean as rounding noise, which --normalize-output turns into
    /// an arbitrary unit vector. Centred first, such a row gives exactly 0.
    public func projection(_ backend: any Backend, rowsCentred: Bool = false) -> PCAProjection {
        var w = components
        if whiten {
            for c in 0..<k {
                let s: Float = hasNoVariance(c) ? 0 : Float(1 / Double(explainedVariance[c]).squareRoot())
                for j in 0..<dimIn { w[c * dimIn + j] *= s }
            }
        }
        return PCAProjection(backend: backend, mean: rowsCentred ? nil : mean,
                             weights: backend.prepareLinear(weight: w, bias: nil, inFeatures: dimIn, outFeatures: k))
    }
}

/// A PCA projection ready to run: one GEMM per batch of rows.
public struct PCAProjection: @unchecked Sendable {
    let backend: any Backend
    /// Subtracted from each row before the GEMM; nil when the rows come centred.
    let mean: [Float]?
    let weights: LinearWeights
    public var dimIn: Int { weights.inFeatures }
    public var dimOut: Int { weights.outFeatures }

    /// (n, dimOut) for rows (n, dimIn); `normalize`: each output row L2-normalised.
    public func apply(_ rows: [Float], normalize: Bool) -> [Float] {
        var copy = rows
        return apply(centring: &copy, normalize: normalize)
    }

    /// As `apply`, centring `rows` in place (no copy of a batch's rows), so they are
    /// overwritten — unless the projection was made for rows that come centred.
    public func apply(centring rows: inout [Float], normalize: Bool) -> [Float] {
        let n = rows.count / dimIn, d = dimIn
        guard n > 0 else { return [] }
        if let mean {
            rows.withUnsafeMutableBufferPointer { c in
                mean.withUnsafeBufferPointer { m in
                    Threads.parallelFor(n, minChunk: 64) { range in
                        for i in range { for j in 0..<d { c[i * d + j] -= m[j] } }
                    }
                }
            }
        }
        var out = [Float](unsafeUninitializedCapacity: n * dimOut) { o, initialized in
            rows.withUnsafeBufferPointer { c in backend.linear(out: o.baseAddress!, inp: c.baseAddress!, rows: n, weights: weights) }
            initialized = o.count
        }
        if normalize { l2NormalizeRows(&out, dim: dimOut) }
        return out
    }
}

/// Each row of `rows` (n × dim) L2-normalised in place, as `l2Normalize` does one vector.
public func l2NormalizeRows(_ rows: inout [Float], dim: Int) {
    guard dim > 0 else { return }
    rows.withUnsafeMutableBufferPointer { r in
        for start in stride(from: 0, to: r.count, by: dim) {
            var s = 0.0
            for j in start..<(start + dim) { s += Double(r[j]) * Double(r[j]) }
            let n = Swift.max(s.squareRoot(), 1e-12)
            for j in start..<(start + dim) { r[j] = Float(Double(r[j]) / n) }
        }
    }
}

// MARK: - Fitting to feature files

extension PCAModel {
    /// Fits to the rows of `files` (all of one width) in one streaming pass: memory sized first
    /// against `MemoryBudget` (refused with one line naming the need and the limit before any is
    /// taken), chunks of about 64 MiB read, checked for NaN and infinity, and accumulated.
    public static func fit(files: [FeatureFile], dimension: PCADimension, whiten: Bool, solver: EigenSolver) throws -> PCAModel {
        precondition(!files.isEmpty)
        let names = files.map(\.path).joined(separator: ", ")
        let d = files[0].dim
        let total = files.reduce(0) { $0 + $1.rows }
        if case .count(let k) = dimension {
            if k > d { throw OptionError("\(files[0].path): --dim \(k) is more than the \(d) values of each row") }
            if k > total - 1 { throw InputError("\(names): --dim \(k) needs at least \(k + 1) rows; there are \(total)") }
        } else if total < 2 {
            throw InputError("\(names): PCA needs at least 2 rows; there are \(total)")
        }
        // Chunks of about 64 MiB: large enough for ssyrk to run at speed, small next to D².
        let chunkRows = min(max(64, min(1 << 16, (64 << 20) / (4 * d))), files.map(\.rows).max()!)
        // Memory, before any is taken: the sums of products (double) and a chunk's (float32)
        // while reading; then the covariance (made in their place) and what the solver adds.
        let budget = MemoryBudget.available()
        let square = 8 * UInt64(d) * UInt64(d)
        let reading = CovarianceAccumulator.bytes(dim: d) + 4 * UInt64(chunkRows * d)
        var solving = square
        var vectorLimit: Int?
        var allVectorsAffordable = false
        switch dimension {
        case .count(let k):
            if solver == .dsyevd && EigenMemory.dsyevdWorkspace(d) > UInt64(Int32.max) {
                throw OptionError("\(files[0].path): --solver dsyevd cannot take rows of \(d) values (its 2D² workspace overflows LAPACK's 32-bit sizes); use --solver dsyevr or auto")
            }
            solving += EigenMemory.bytes(n: d, k: k, solver: solver) + 4 * UInt64(k * d)
        case .fraction:
            solving += EigenMemory.bytes(n: d, k: 1, solver: nil)
            // Each component kept costs its vector three times (dstemr's, the double rows, the
            // float32 components): K is capped by what is left.
            let left = budget.bytes > solving ? budget.bytes - solving : 0
            vectorLimit = Int(min(UInt64(d), left / (20 * UInt64(d))))
            allVectorsAffordable = left >= 2 * square + 20 * UInt64(d) * UInt64(d)
        }
        let need = max(reading, solving)
        if need > budget.bytes {
            let hint = solver == .dsyevd ? " (--solver dsyevr needs less)" : ""
            throw InputError("\(files[0].path): a PCA of rows of \(d) values needs about \(MemoryBudget.gib(need)) for its covariance and eigen-solve\(hint); \(budget.limit) \(MemoryBudget.gib(budget.bytes))")
        }
        let acc = CovarianceAccumulator(dim: d)
        var buffer = [Float](repeating: 0, count: chunkRows * d)
        for f in files {
            var start = 0
            while start < f.rows {
                let n = min(chunkRows, f.rows - start)
                try buffer.withUnsafeMutableBufferPointer { b in
                    try f.read(start..<(start + n), into: b.baseAddress!)
                    if let bad = firstNonFiniteRow(b.baseAddress!, rows: n, dim: d) {
                        throw InputError("\(f.path): row \(start + bad) (counting from 0) holds NaN or infinity; PCA needs finite rows")
                    }
                    acc.add(centring: b.baseAddress!, count: n)
                }
                start += n
            }
        }
        let model: PCAModel
        do {
            model = try PCAModel.fit(acc, dimension: dimension, whiten: whiten, solver: solver, vectorLimit: vectorLimit,
                                     allVectorsAffordable: allVectorsAffordable)
        } catch let e as VLMError {
            throw InputError("\(names): \(e.description)")
        }
        return model
    }
}

/// The files, all with rows of one width and at least one row each.
public func openFeatureFiles(_ paths: [String], dimIn: Int?) throws -> [FeatureFile] {
    let files = try paths.map { try FeatureFile(path: $0, dimIn: dimIn) }
    for f in files {
        if f.dim > PCAModel.maxDimension { throw InputError("\(f.path): rows of \(f.dim) values; vlm pca takes at most \(PCAModel.maxDimension)") }
        if f.rows == 0 { throw InputError("\(f.path): no rows (an empty feature file)") }
        if f.dim != files[0].dim {
            throw InputError("\(f.path): rows of \(f.dim) values, but \(files[0].path) has rows of \(files[0].dim); all feature files must have the same width")
        }
    }
    return files
}

/// The first row holding NaN or infinity, if any.
public func firstNonFiniteRow(_ p: UnsafePointer<Float>, rows: Int, dim: Int) -> Int? {
    let flags = UnsafeMutablePointer<Bool>.allocate(capacity: rows)
    defer { flags.deallocate() }
    Threads.parallelFor(rows, minChunk: 256) { range in
        for i in range {
            var ok = true
            for j in 0..<dim where !p[i * dim + j].isFinite { ok = false; break }
            flags[i] = !ok
        }
    }
    return (0..<rows).first { flags[$0] }
}
