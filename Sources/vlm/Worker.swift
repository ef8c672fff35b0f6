// `vlm worker`: a long-lived process for distributed engines — JSON-lines requests on stdin,
// one response per request on stdout, in order (see VLMJobs/Worker.swift for the protocol).
// Models load once: those named by flags at start (a bad one ends the worker at once), the
// default ones on first use (a request needing a missing one gets an error response).

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMEmbed
import VLMJobs
import VLMModels

extension WorkerResponse.VectorFormat: ExpressibleByArgument {}

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Embed requests read as JSON lines on stdin; one JSON-line response each on stdout, in order.",
        discussion: paragraphs("""
        Requests: {"id": ID, "image": PATH} or {"id": ID, "image_bytes": BASE64} (embed-image),
        {"id": ID, "text": TEXT[, "pair": TEXT]} (embed-text), both an image and a text (fuse:
        image vector ⧺ text vector), {"info": true} (models, dimensions, options).
        Responses: {"id": ID, "dim": D, "vector": BASE64 of D little-endian float32} (--vectors
        json: a list of numbers), or {"id": ID, "error": {"kind": KIND, "message": TEXT}} for a
        bad item or line (id null when unreadable). Requests are read until a batch is full or no
        more arrive within --linger-ms; each batch is answered and flushed. At the end of stdin the
        worker finishes and exits 0. Vectors equal the commands' for the same options (bit for bit
        when the batch is the same). Threads: --threads, else $VLM_THREADS, else $OMP_NUM_THREADS.
        """))

    @OptionGroup var served: ServedModelOptions

    @Option(parsing: .unconditional, help: "Images (and image–text pairs) per forward pass, as embed-image's --batch-size.")
    var imageBatchSize: Int = 16

    @Option(parsing: .unconditional, help: "Texts per forward pass, as embed-text's --batch-size; a batch of requests holds up to 4× this many texts.")
    var textBatchSize: Int = TextEncoder.defaultBatchSize

    @Option(help: "How vectors are written: base64 (little-endian float32) or json (a list of numbers).")
    var vectors: WorkerResponse.VectorFormat = .base64

    @Option(parsing: .unconditional, help: "Milliseconds to wait for more requests before running a batch.")
    var lingerMs: Double = 5

    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var text: TextModelOptions
    @OptionGroup var truncation: TruncationOptions
    @OptionGroup var projection: ProjectionOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        try Limits.check("--image-batch-size", imageBatchSize, 1...Limits.maxBatch)
        try Limits.check("--text-batch-size", textBatchSize, 1...Limits.maxBatch)
        if !(0...10_000).contains(lingerMs) { throw ValidationError("--linger-ms must be from 0 to 10000") }
    }

    func run() throws {
        try served.pair.clipConfig.check(served.pair.imageModelOption, served.pair.textModelOption)
        let backend = try engine.configure()
        var description = served.embeddingDescription(imageBatchSize: imageBatchSize, textBatchSize: textBatchSize, imageOptions: imageOptions,
                                                      text: text, projection: projection, engine: engine)
        truncation.apply(to: &description.text)
        let service = try EmbeddingService(description, backend: backend, version: VLM.configuration.version)
        try service.loadNamed()
        let queue = RequestQueue(try InputFile("-", what: "the requests"))
        var number = 0
        while true {
            let lines = try queue.take(max: 4 * textBatchSize, linger: lingerMs / 1000)
            if lines.isEmpty { return }
            let requests = lines.enumerated().map { WorkerRequest.parse($0.element, number: number + $0.offset + 1) }
            WorkerSeams.beforeAnswering?(requests)
            try FileSink.standardOutput.write(service.answer(requests, firstNumber: number + 1, vectors: vectors))
            number += lines.count
        }
    }
}

/// The two models of image–text pairs and how their vectors join: fuse's, and the worker's and
/// the server's for pair requests (which also take image and text requests alone).
struct PairModelOptions: ParsableArguments {
    @Option(name: .customLong("image-model"), help: "ResNet checkpoint (folder, .safetensors, .pth/.pt/.bin, or synthetic:resnet50), or a CLIP checkpoint (folder, OpenAI's .pt, or with --clip-config). Default: models/resnet50.")
    var imageModelOption: String?

    @Option(name: .customLong("text-model"), help: "BERT-family model folder, or a CLIP checkpoint (one CLIP serves both towers). Default: models/all-MiniLM-L6-v2.")
    var textModelOption: String?

    @OptionGroup var clipConfig: CLIPConfigOption
    var imageModel: String? { clipConfig.apply(imageModelOption) }
    var textModel: String? { clipConfig.apply(textModelOption) }

    @Option(help: "Image part of a pair: pooled (2048-d for ResNet-50) or logits (the seed snippet's choice).")
    var imageLayer: ImageLayer = .pooled

    @Flag(help: "L2-normalise the image part and the text part of a pair before concatenating.")
    var normalizeParts = false

    /// Not an option here (two models are in play), but what a user of the one-model commands
    /// types: caught to name the two that are.
    @Option(name: .customLong("model"), help: .hidden)
    var oneModel: String?

    func validate() throws {
        try clipConfig.requireModel(imageModelOption, textModelOption, option: "--image-model or --text-model")
        if let oneModel {
            let isText = FileStatus.of(oneModel + "/config.json") != nil
            throw ValidationError("--model names one model; pairs take two: --image-model (a ResNet checkpoint) and --text-model (a BERT-family folder): here --\(isText ? "text" : "image")-model \(oneModel)")
        }
    }

    /// The models' identities for a job's fingerprint (the defaults resolved).
    var identities: [String] { [imageModel ?? resolveModelsFolder(defaultResNetName), textModel ?? defaultTextModel()] }
}

/// The models of the worker and the server, and which of their outputs each kind of request gets.
struct ServedModelOptions: ParsableArguments {
    @OptionGroup var pair: PairModelOptions

    @Option(help: "Image requests: pooled or logits (as embed-image --layer).")
    var layer: ImageLayer = .pooled
}

extension ServedModelOptions {
    /// The embedding service's description, out of the worker's and the server's flags.
    func embeddingDescription(imageBatchSize: Int, textBatchSize: Int, imageOptions: ImageOptions, text: TextModelOptions,
                     projection: ProjectionOptions, engine: EngineOptions) -> EmbeddingDescription {
        var d = EmbeddingDescription()
        d.image = imageOptions.image(model: pair.imageModel, batchSize: imageBatchSize)
        (d.image.layer, d.image.pairLayer) = (layer, pair.imageLayer)
        d.text = text.text(model: pair.textModel, batchSize: textBatchSize)
        d.normalizeParts = pair.normalizeParts
        projection.apply(to: &d)
        d.allowNonFinite = engine.allowNonfinite
        return d
    }
}
