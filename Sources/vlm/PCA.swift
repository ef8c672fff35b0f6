// `vlm pca fit` and `vlm pca apply`: PCA (and whitening) of feature files, fitted in one
// streaming pass over any number of files in O(D²) memory, applied as a resumable job; and
// `--pca` / `--normalize-output`, the same projection on every embed command and the worker.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMEmbed
import VLMJobs
import VLMModels

extension EigenSolver: ExpressibleByArgument {}

struct PCACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pca",
        abstract: "Fit a PCA (optionally whitened) to feature files, and project features with it.",
        discussion: paragraphs("""
        vlm pca fit features.npy --dim 256 -o pca.safetensors
        vlm pca apply pca.safetensors features.npy -o reduced.npy
        vlm embed-image photos/ --pca pca.safetensors -o reduced.npy    (the same, in one job)
        The fit equals scikit-learn's PCA(n_components=K, whiten=..., svd_solver="covariance_eigh").
        """),
        subcommands: [PCAFit.self, PCAApply.self])
}

/// `--dim K` or `--dim 0.95`.
extension PCADimension: ExpressibleByArgument {
    public init?(argument: String) {
        let t = argument.trimmingCharacters(in: .whitespaces)
        if let k = Int(t) { self = .count(k); return }
        guard let f = Double(t), f.isFinite else { return nil }
        self = .fraction(f)
    }
}

struct PCAFit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fit",
        abstract: "Fit a PCA to the rows of feature files (.npy, or raw float32 .f32 with --dim-in).",
        discussion: paragraphs("""
        The mean and covariance are accumulated in one pass over the files, a chunk of rows at a
        time (float32 products of each chunk centred on its own mean, merged in double), so
        files far larger than memory fit in O(D²) memory. The top eigenvectors of the covariance
        (LAPACK, on the engine's threads) are the components, signed as scikit-learn signs them
        (each one's largest-magnitude entry positive). Output: a safetensors file with mean (D),
        components (K, D), explained_variance (K), explained_variance_ratio (K), and metadata
        rows, dim_in, whiten, vlm_version. --whiten divides each projected value by the square
        root of its variance. A component whose variance is at most 1e-6 of the largest (below
        what the float32 covariance resolves: rank-deficient rows) has none: it is reported on
        stderr, and whitened it maps to 0 instead of dividing by rounding noise.
        """))

    @Argument(help: "Feature files: 2-D float32 .npy (N, D), or raw little-endian float32 rows (with --dim-in).")
    var features: [String]

    @Option(help: "Components to keep: a count K, or a fraction in (0, 1) — the fewest components whose explained-variance ratios sum past it.")
    var dim: PCADimension

    @Flag(help: "Whiten: scale each component to unit variance (as scikit-learn's whiten=True).")
    var whiten = false

    @Option(help: "Row width of raw .f32 files (a .npy says its own).")
    var dimIn: Int?

    @Option(help: "LAPACK eigen-solver: auto (ssyevr in float32 when its eigenpairs check out in double, else dsyevr), dsyevr (the top K eigenpairs in double), ssyevr (float32, unchecked) or dsyevd (all eigenpairs, divide and conquer; at most 32,766 dimensions). A fraction --dim finds every eigenvalue from one tridiagonal reduction, then only the K vectors it keeps (dsytrd, dsterf, dstemr, dormtr).")
    var solver: EigenSolver = .auto

    @Option(name: [.customShort("o"), .long], help: "The PCA file to write (.safetensors), or - for stdout.")
    var output: String

    @Flag(help: "No notes on stderr.")
    var quiet = false

    @OptionGroup var engine: EngineOptions

    func validate() throws {
        if features.isEmpty { throw ValidationError("give one or more feature files") }
        if let dimIn { try Limits.check("--dim-in", dimIn, 1...Limits.maxFeatureDim) }
        switch dim {
        case .count(let k): try Limits.check("--dim", k, 1...Limits.maxFeatureDim)
        case .fraction(let f): if !(f > 0 && f < 1) { throw ValidationError("--dim as a fraction must be in (0, 1), got \(f)") }
        }
    }

    func run() throws {
        _ = try engine.configure()
        try refuseOutput(output, overwriting: features, sidecars: false)
        let target = try OutputTarget.resolve(output)
        if target.isTerminal { throw InputError("refusing to write a binary safetensors file to a terminal; use -o FILE") }
        let files = try openFeatureFiles(features, dimIn: dimIn)
        let spaceNotes = try sharedSpace(of: features).notes
        let started = Date()
        let model = try PCAModel.fit(files: files, dimension: dim, whiten: whiten, solver: solver)
        let d = model.dimIn, total = model.rows
        let data = model.encoded(version: VLM.configuration.version)
        if let sink = try target.openStream() { try sink.write(data) } else { try writeAtomically(data, to: output) }
        if !quiet {
            spaceNotes.forEach(note)
            let explained = model.explainedVarianceRatio.reduce(0, +) * 100
            note("vlm: fitted \(model.k) components to \(total) rows of \(d) values (\(String(format: "%.2f", explained))% of the variance) in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
            let zero = model.zeroVarianceCount
            if zero > 0 {
                note("vlm: note: \(zero) of the \(model.k) components have no variance (the rows span fewer dimensions)\(whiten ? "; whitened, they map to 0" : "")")
            }
        }
    }
}

struct PCAApply: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Project the rows of feature files with a PCA file from vlm pca fit, as a resumable batch job.",
        discussion: paragraphs("""
        One row per input row, (x − mean) · componentsᵀ (whitened if the PCA was fitted with
        --whiten), in order. Ids come from each file's <file>.ids.txt (what embed writes beside
        .npy and .f32 output), else row numbers from 0 (path:row with several files); binary
        output gets its own <output>.ids.txt. Rows holding NaN or infinity are skipped and
        recorded (exit 2).
        """))

    @Argument(help: "The PCA file (vlm pca fit's output).")
    var pca: String

    @Argument(help: "Feature files: 2-D float32 .npy, or raw float32 rows with --dim-in.")
    var features: [String]

    @Option(help: "Row width of raw .f32 files (a .npy says its own).")
    var dimIn: Int?

    @Flag(help: "L2-normalise each projected row.")
    var normalizeOutput = false

    // 2,048 rows of 2,432 values are 20 MB: under glibc's largest mmap threshold (32 MB), so the
    // units' buffers are reused from the heap instead of mapped and faulted in afresh (20% faster
    // than 4,096 on 50,000 × 2,432 rows).
    @Option(parsing: .unconditional, help: "Rows per projection (and per resumable unit).")
    var batchSize: Int = 2048

    @OptionGroup var common: BatchOptions


    func validate() throws {
        if features.isEmpty { throw ValidationError("give the PCA file, then one or more feature files") }
        if let dimIn { try Limits.check("--dim-in", dimIn, 1...Limits.maxFeatureDim) }
        try Limits.check("--batch-size", batchSize, 1...Limits.maxBatch)
    }

    func run() throws {
        let (backend, batch) = try common.start("pca apply", unitName: "rows", inputs: [pca] + features + features.map { $0 + ".ids.txt" })
        let model = try PCAModel.load(path: pca)
        let files = try openFeatureFiles(features, dimIn: dimIn)
        if files[0].dim != model.dimIn {
            throw InputError("\(files[0].path): rows of \(files[0].dim) values, but \(pca) takes \(model.dimIn)")
        }
        // The inputs must share a vector space; the output's is theirs, projected.
        var (space, spaceNotes) = try sharedSpace(of: features)
        var succeeded = false
        // Said once the job has run (an error stays one line).
        defer { if !common.job.quiet && succeeded { spaceNotes.forEach(note) } }
        if var s = space {
            // The steps in order: an input's own projection and normalisation come before this one.
            let digest = model.fileDigest ?? "fitted in memory"
            let before = [s.options["pca"], s.options["normalize_output"] == "true" ? "normalize_output" : nil].compactMap { $0 }
            s.options["pca"] = (before + [digest]).joined(separator: " → ")
            s.options["normalize_output"] = normalizeOutput ? "true" : nil
            s.dim = model.k
            space = s
        }
        let source = try FeatureRowSource(files: files, range: common.job.slice(files.reduce(0) { $0 + $1.rows }))
        let rows = FeatureRowEncoder(files: files, subtracting: model.mean, allowNonFinite: common.engine.allowNonfinite)
        let encoder = try ProjectedRowEncoder(rows, pca: model, pcaName: pca,
                                              normalizeOutput: normalizeOutput, backend: backend, rowsCentred: true,
                                              allowNonFinite: common.engine.allowNonfinite)
        // One product per unit on rows read from a file: whole units per thread (BENCHMARKS.md §7).
        do {
            try batch.run(source, encoder, unitSize: batchSize, backend: backend, models: [pca], space: space,
                          concurrentUnits: Job.unitsAtOnce(units: (source.count + batchSize - 1) / batchSize,
                                                           unitBytes: UInt64(batchSize) * UInt64(model.dimIn + model.k) * 4))
        } catch let f as Finished {
            succeeded = true   // finished with failed rows (exit 2)
            throw f
        }
        succeeded = true
    }
}

/// `--pca FILE` and `--normalize-output`, for embed-image, embed-text, fuse and the worker.
struct ProjectionOptions: ParsableArguments {
    @Option(help: "Project every row with this PCA file (vlm pca fit), after the model's own normalisation.")
    var pca: String?

    @Flag(help: "L2-normalise each output row (after --pca).")
    var normalizeOutput = false

    /// The PCA file, loaded (and checked) now.
    func load() throws -> PCAModel? { try pca.map { try PCAModel.load(path: $0) } }

    /// These options in a service's description.
    func apply(to d: inout EmbeddingDescription) { (d.pca, d.normalizeOutput) = (pca, normalizeOutput) }
}
