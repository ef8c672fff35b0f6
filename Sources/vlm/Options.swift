// Option groups shared by the commands, and the glue every batch command runs its job
// through: the output checked and locked first, then the model, then the one pipeline.

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMImage
import VLMEmbed
import VLMJobs
import VLMModels

extension ErrorPolicy: ExpressibleByArgument {}
extension ImageLayer: ExpressibleByArgument {}
extension Pooling: ExpressibleByArgument {}

/// Preprocessing and the pixel limit, for every command that reads image files.
struct ImageOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Resize the shorter side to this. Default: what the model declares (torchvision's V2 weights: 232), else 256.")
    var resize: Int?

    @Option(parsing: .unconditional, help: "Center-crop to this square size. Default: what the model declares, else 224.")
    var crop: Int?

    @Option(help: "Per-channel mean, R,G,B. Default: what the model declares, else ImageNet's.", transform: parseTriple)
    var mean: [Float]?

    @Option(help: "Per-channel standard deviation, R,G,B. Default: what the model declares, else ImageNet's.", transform: parseTriple)
    var std: [Float]?

    @Option(parsing: .unconditional, help: "Skip images with more pixels than this (decompression bombs); it also bounds every buffer an image's resize needs.")
    var maxPixels: UInt64 = ImageDecoder.defaultMaxPixels

    @Flag(help: "Decode JPEGs at the reduced DCT scale (1/2, 1/4, 1/8) Pillow's Image.draft(\"RGB\", (resize, resize)) picks, then resize as usual: on 12-megapixel phone photos a whole job ran 1.1× faster on 2 cores (the model bounds it) with a quarter less memory (BENCHMARKS.md §6); vectors differ slightly from a full decode.")
    var draft = false

    @Flag(inversion: .prefixedNo, help: "L2-normalise each image vector (before any --pca). Default: yes for a CLIP model (its space is compared by cosine), no for a ResNet.")
    var normalizeImages: Bool?

    func validate() throws {
        if let resize { try Limits.check("--resize", resize, 1...Limits.maxSide) }
        if let crop { try Limits.check("--crop", crop, 1...Limits.maxSide) }
        if let std, std.contains(where: { abs($0) < 1e-6 }) { throw ValidationError("--std values must be at least 1e-6 in size (pixels are divided by them)") }
        if maxPixels < 1 { throw ValidationError("--max-pixels must be positive") }
        if let crop, UInt64(crop) * UInt64(crop) > maxPixels {
            throw ValidationError("--crop \(crop) makes \(crop * crop)-pixel images, over --max-pixels \(maxPixels)")
        }
    }

    /// These options as the image part of a service's description, for `model`'s images.
    func image(model: String?, batchSize: Int = 16) -> EmbeddingDescription.Image {
        var i = EmbeddingDescription.Image(model: model)
        (i.resize, i.crop, i.mean, i.std, i.maxPixels, i.draft, i.batchSize) = (resize, crop, mean, std, maxPixels, draft, batchSize)
        i.normalize = normalizeImages
        return i
    }
}

func parseTriple(_ s: String) throws -> [Float] {
    let parts = s.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
    guard parts.count == 3, parts.allSatisfy({ $0 != nil && $0!.isFinite }) else {
        throw ValidationError("expected three numbers R,G,B, got '\(s)'")
    }
    return parts.map { $0! }
}

/// Upper bounds of the numbers a user gives, checked before anything is sized by them.
enum Limits {
    /// --resize and --crop.
    static let maxSide = ModelPreprocess.maxSide
    /// --batch-size (images, texts, pairs per forward pass).
    static let maxBatch = 1 << 16
    /// --batch-tokens.
    static let maxBatchTokens = 1 << 24
    /// --threads (and VLM_THREADS, OMP_NUM_THREADS).
    static let maxThreads = 1024
    /// --dim-in and --dim of vlm pca (a covariance of D² doubles).
    static let maxFeatureDim = PCAModel.maxDimension

    static func check(_ option: String, _ value: Int, _ range: ClosedRange<Int>) throws {
        guard range.contains(value) else {
            throw ValidationError("\(option) must be from \(range.lowerBound) to \(range.upperBound), got \(value)")
        }
    }
}

/// Where rows go.
struct OutputOptions: ParsableArguments {
    @Option(name: [.customShort("o"), .long], help: "Output file, or - for stdout.")
    var output: String = "-"

    @Option(help: "npy, jsonl, tsv or f32 (raw little-endian float32). Default: from the output's extension, else jsonl.")
    var format: RowFormat?

    var resolvedFormat: RowFormat { format ?? RowFormat.inferred(from: output) ?? .jsonl }
}

/// Long jobs: shards, resume, the error policy, progress.
struct JobOptions: ParsableArguments {
    @Option(help: "Take slice i of n (1-based) of the input, e.g. --shard 2/8, so n processes split a job.")
    var shard: String?

    @Flag(help: "Continue a job that was interrupted, from <output>.partial/.")
    var resume = false

    @Option(help: "skip: record bad items in <output>.errors.jsonl and go on (exit 2 at the end); fail: stop at the first.")
    var errors: ErrorPolicy = .skip

    @Flag(help: "No progress or notes on stderr (warnings about skipped items and errors still).")
    var quiet = false

    func validate() throws {
        if let shard, Shard(shard) == nil { throw ValidationError("--shard must be i/n with 1 <= i <= n, got '\(shard)'") }
    }

    var parsedShard: Shard? { shard.flatMap(Shard.init) }

    /// The slice of `0..<count` this shard takes.
    func slice(_ count: Int) -> Range<Int> { parsedShard?.range(of: count) ?? 0..<count }
}

/// What every batch command takes besides its inputs and model — where rows go, the job's
/// options, the engine — and the set-up they share, in order: the engine configured, then the
/// output checked and locked before any model is loaded.
struct BatchOptions: ParsableArguments {
    @OptionGroup var out: OutputOptions
    @OptionGroup var job: JobOptions
    @OptionGroup var engine: EngineOptions

    /// `inputs`: the files the job reads (besides images and models); -o may not be one of
    /// them, which the finished output would replace.
    func start(_ command: String, unitName: String, inputs: [String?] = []) throws -> (backend: any Backend, batch: BatchJob) {
        try refuseOutput(out.output, overwriting: inputs.compactMap { $0 })
        let backend = try engine.configure()
        return (backend, try BatchJob(command: command, output: out, options: job, unitName: unitName, allowNonFinite: engine.allowNonfinite))
    }

    func resnet(_ spec: String?, backend: any Backend) throws -> ResNet {
        try loadResNet(spec, backend: backend, quiet: job.quiet, allowNonFinite: engine.allowNonfinite)
    }

    func textEncoder(_ folder: String?, backend: any Backend) throws -> TextEncoder {
        try loadTextEncoder(folder, backend: backend, quiet: job.quiet, allowNonFinite: engine.allowNonfinite)
    }

    /// The embedding service a job gets its rows from: `d` with the engine's NaN/∞ policy; the
    /// PCA file is read now, the models load as the job asks for them (with notes unless --quiet).
    func service(_ d: EmbeddingDescription, backend: any Backend) throws -> EmbeddingService {
        var d = d
        d.allowNonFinite = engine.allowNonfinite
        return try EmbeddingService(d, backend: backend, version: VLM.configuration.version, quiet: job.quiet)
    }
}

/// The three steps of every batch command, in order: the output checked and locked (before
/// any work), the model and item source built by the command, then the pipeline.
struct BatchJob {
    let command: String
    let job: Job
    let format: RowFormat

    init(command: String, output: OutputOptions, options: JobOptions, unitName: String, allowNonFinite: Bool) throws {
        self.command = command
        format = output.resolvedFormat
        var settings = JobSettings(output: output.output, format: format, resume: options.resume, errors: options.errors,
                                   quiet: options.quiet, unitName: unitName)
        settings.allowNonFinite = allowNonFinite
        settings.version = VLM.configuration.version
        job = try Job(settings: settings, target: try OutputTarget.resolve(output.output))
    }

    /// Runs the job; throws `Finished(.partial)` when items were skipped. `streamedInput`: an
    /// input is a stream (see `Job.streamedInput`).
    func run<S: ItemSource, E: RowEncoder>(_ source: S, _ encoder: E, unitSize: Int, backend: any Backend, models: [String],
                                            settings: [String: String] = [:], space: VectorSpace? = nil, concurrentUnits: Int = 1,
                                            streamedInput: Bool = false) throws where S.Value == E.Value {
        job.streamedInput = streamedInput
        var all = encoder.settings
        for (k, v) in settings { all[k] = v }
        // NaN rows written or recorded: the output differs.
        if job.settings.allowNonFinite { all["allow_nonfinite"] = "true" }
        // Only a file gets a description; a stream's rows go without one (and no weights are hashed).
        var describes = false
        if case .file = job.target { describes = true }
        let definition = JobDefinition(command: command, format: format, dim: encoder.dim, unitSize: unitSize, items: source.count,
                                       inputs: source.definition, models: models.map(modelIdentity),
                                       engine: EngineOptions.fingerprint(backend), settings: all,
                                       space: describes ? try space ?? (encoder as? DescribesSpace)?.vectorSpace() : nil)
        let summary = try job.run(source: source, encoder: encoder, unitSize: unitSize, definition: definition,
                                  concurrentUnits: concurrentUnits)
        // The finished job's outcome, also when --resume found it complete.
        if summary.failures > 0 { throw Finished(status: .partial) }
    }
}

/// `--clip-config NAME`: the open_clip architecture of a bare CLIP state dict (torch.save's, as
/// open_clip's training writes epoch_N.pt), which says neither its activation nor its heads. The
/// model argument becomes "open_clip:NAME:PATH", the form every front end (the worker, the
/// server, the Python package) takes as a model.
struct CLIPConfigOption: ParsableArguments {
    @Option(help: ArgumentHelp("The open_clip architecture of a bare CLIP state dict given as the model (RN50, RN50-quickgelu, ViT-B-32, ViT-L-14-336, …: the names of open_clip's model configs).",
                               valueName: "name"))
    var clipConfig: String?

    // An unknown NAME is refused when the model is located (one line, exit 64), as other
    // usage errors found at run time are.

    /// The model argument with the architecture attached, when it is a bare open_clip state dict
    /// (a file, or a folder holding one without a config); anything else (the default, a
    /// ResNet, a BERT, a CLIP folder with its config, synthetic weights) is left as it is — the
    /// other model of a pair.
    func apply(_ model: String?) -> String? {
        guard let clipConfig, let model, CLIPConfigOption.isBareOpenCLIP(model) else { return model }
        return CLIPCheckpointFiles.configuredPrefix + clipConfig + ":" + model
    }

    static func isBareOpenCLIP(_ model: String) -> Bool {
        guard !model.hasPrefix("synthetic:"), CLIPCheckpointFiles.configured(model) == nil else { return false }
        let resolved = resolveModelSpec(model, defaultName: defaultResNetName)
        guard let st = FileStatus.of(resolved) else { return false }
        var weights = resolved
        if st.kind == .directory {
            func p(_ n: String) -> String { (resolved as NSString).appendingPathComponent(n) }
            if FileStatus.of(p("config.json")) != nil || FileStatus.of(p("open_clip_config.json")) != nil { return false }
            guard let w = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"].map(p).first(where: { FileStatus.of($0) != nil })
                    ?? (try? weightsInFolder(resolved)) else { return false }
            weights = w
        }
        if TorchCheckpoint.isTorchScriptArchive(weights) { return false }
        guard let c = try? Checkpoints.open(weights) else { return false }
        return CLIPLayout.of(c.tensorNames) == .openCLIP
    }

    /// --clip-config names the architecture of a model given on the command line (a usage error
    /// when the parse sees none).
    func requireModel(_ models: String?..., option: String = "--model") throws {
        if clipConfig != nil && models.allSatisfy({ $0 == nil }) {
            throw ValidationError("--clip-config names the architecture of a bare CLIP state dict: give the checkpoint with \(option)")
        }
    }

    /// --clip-config must fit one of the models given: checked when the command runs (one line).
    func check(_ models: String?...) throws {
        guard let clipConfig else { return }
        let given = models.compactMap { $0 }
        if !given.isEmpty && !given.contains(where: CLIPConfigOption.isBareOpenCLIP) {
            throw OptionError("--clip-config \(clipConfig.prefix(80)): \(given.joined(separator: " and ").prefix(300)) \(given.count == 1 ? "is not a" : "holds no") bare open_clip state dict (a CLIP folder with its config, OpenAI's .pt, a ResNet or a BERT needs none)")
        }
    }
}
