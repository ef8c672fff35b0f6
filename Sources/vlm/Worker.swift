// `vlm worker`: a long-lived process for distributed engines — JSON-lines requests on stdin,
// one response per request on stdout, in order (see VLMJobs/Worker.swift for the protocol).
// Models load once: those named by flags at start (a bad one ends the worker at once), the
// default ones on first use (a request needing a missing one gets an error response).

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMJobs
import VLMModels

extension WorkerResponse.VectorFormat: ExpressibleByArgument {}

struct WorkerCommand: ParsableCommand, ModelChoices {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Embed requests read as JSON lines on stdin; one JSON-line response each on stdout, in order.",
        discussion: """
        Requests: {"id": ID, "image": PATH} or {"id": ID, "image_bytes": BASE64} (embed-image),
        {"id": ID, "text": TEXT[, "pair": TEXT]} (embed-text), both an image and a text (fuse:
        image vector ⧺ text vector), {"info": true} (models, dimensions, options).
        Responses: {"id": ID, "dim": D, "vector": BASE64 of D little-endian float32} (--vectors
        json: a list of numbers), or {"id": ID, "error": {"kind": KIND, "message": TEXT}} for a
        bad item or line (id null when unreadable). Requests are read until a batch is full or no
        more arrive within --linger-ms; each batch is answered and flushed. At the end of stdin the
        worker finishes and exits 0. Vectors equal the commands' for the same options (bit for bit
        when the batch is the same). Threads: --threads, else $VLM_THREADS, else $OMP_NUM_THREADS.
        """)

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
    @OptionGroup var projection: ProjectionOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        try Limits.check("--image-batch-size", imageBatchSize, 1...Limits.maxBatch)
        try Limits.check("--text-batch-size", textBatchSize, 1...Limits.maxBatch)
        if !(0...10_000).contains(lingerMs) { throw ValidationError("--linger-ms must be from 0 to 10000") }
    }

    func run() throws {
        let backend = try engine.configure()
        let models = WorkerModels(command: self, backend: backend, pca: try projection.load())
        try models.loadNamed()
        let queue = RequestQueue(try InputFile("-", what: "the requests"))
        let crashOn = ProcessInfo.processInfo.environment["VLM_TEST_CRASH_ON_ID"]
        var number = 0
        while true {
            let lines = try queue.take(max: 4 * textBatchSize, linger: lingerMs / 1000)
            if lines.isEmpty { return }
            let requests = lines.enumerated().map { WorkerRequest.parse($0.element, number: number + $0.offset + 1) }
            if let crashOn, requests.contains(where: { $0.id == .string(crashOn) }) { abort() }   // tests only
            try FileSink.standardOutput.write(answer(requests, firstNumber: number + 1, models: models))
            number += lines.count
        }
    }

    /// The responses to a window of requests, in request order.
    func answer(_ requests: [WorkerRequest], firstNumber: Int, models: WorkerModels) -> Data {
        var out = [Data?](repeating: nil, count: requests.count)
        var images: [(Int, ImageInput)] = [], texts: [(Int, TextInput)] = [], pairs: [(Int, (image: ImageInput, text: TextInput))] = []
        for (k, r) in requests.enumerated() {
            switch r.kind {
            case .image(let i): images.append((k, i))
            case .text(let t): texts.append((k, t))
            case .pair(let i, let t): pairs.append((k, (i, t)))
            case .info:
                var info = models.info()
                info["vectors"] = .string(vectors.rawValue)
                out[k] = WorkerResponse.info(id: r.id, info)
            case .invalid(let kind, let message): out[k] = WorkerResponse.error(id: r.id, kind: kind, message: message)
            }
        }
        func embed<E: RowEncoder>(_ items: [(Int, E.Value)], chunk: Int, _ encoder: () throws -> E) {
            guard !items.isEmpty else { return }
            let e: E
            do { e = try encoder() } catch {
                for (k, _) in items { out[k] = WorkerResponse.error(id: requests[k].id, kind: "model", message: "\(error)") }
                return
            }
            for start in stride(from: 0, to: items.count, by: chunk) {
                let part = Array(items[start..<min(items.count, start + chunk)])
                do {
                    let ids = part.map { requests[$0.0].itemID(number: firstNumber + $0.0) }
                    var batch = try e.rows(part.map { (requests[$0.0].itemID(number: firstNumber + $0.0), $0.1) })
                    if !engine.allowNonfinite { batch = batch.rejectingNonFinite(dim: e.dim, ids: ids) }
                    var row = 0
                    for (j, (k, _)) in part.enumerated() {
                        if let err = batch.failures[j] {
                            out[k] = WorkerResponse.error(id: requests[k].id, kind: err.kind, message: err.message)
                        } else {
                            out[k] = WorkerResponse.vector(id: requests[k].id, batch.rows[(row * e.dim)..<((row + 1) * e.dim)], format: vectors)
                            row += 1
                        }
                    }
                } catch {
                    for (k, _) in part { out[k] = WorkerResponse.error(id: requests[k].id, kind: "error", message: "\(error)") }
                }
            }
        }
        embed(images, chunk: imageBatchSize) { try models.images() }
        embed(texts, chunk: 4 * textBatchSize) { try models.texts() }
        embed(pairs, chunk: imageBatchSize) { try models.pairs() }
        var data = Data()
        for d in out { data.append(d!) }
        return data
    }
}

/// The models of the worker and the server, and which of their outputs each kind of request gets.
struct ServedModelOptions: ParsableArguments {
    @Option(help: "ResNet checkpoint for image requests (folder, .safetensors, .pth/.pt/.bin, synthetic:resnet50). Default: models/resnet50.")
    var imageModel: String?

    @Option(help: "BERT-family model folder for text requests. Default: models/all-MiniLM-L6-v2.")
    var textModel: String?

    @Option(help: "Image requests: pooled or logits (as embed-image --layer).")
    var layer: ImageLayer = .pooled

    @Option(help: "Image part of image–text requests: pooled or logits (as fuse --image-layer).")
    var imageLayer: ImageLayer = .pooled

    @Flag(help: "Image–text requests: L2-normalise each part before concatenating (as fuse --normalize-parts).")
    var normalizeParts = false
}

/// What the worker and the server take from their flags to build their encoders.
protocol ModelChoices {
    var served: ServedModelOptions { get }
    var imageBatchSize: Int { get }
    var textBatchSize: Int { get }
    var imageOptions: ImageOptions { get }
    var text: TextModelOptions { get }
    var projection: ProjectionOptions { get }
    var engine: EngineOptions { get }
}

/// The encoders of the worker and the server, each built once on first use.
final class WorkerModels {
    let command: any ModelChoices
    let backend: any Backend
    /// --pca: applied to every kind of request whose vectors it fits.
    let pca: PCAModel?
    private var net: Result<ResNet, Error>?
    private var textEncoder: Result<TextEncoder, Error>?
    private var imageRows: ProjectedRowEncoder<ImageRowEncoder>?
    private var textRows: ProjectedRowEncoder<TextRowEncoder>?
    private var pairRows: ProjectedRowEncoder<PairRowEncoder>?

    init(command: any ModelChoices, backend: any Backend, pca: PCAModel?) { (self.command, self.backend, self.pca) = (command, backend, pca) }

    /// Loads the models named by flags now, so a bad path ends the worker at start.
    func loadNamed() throws {
        if command.served.imageModel != nil { _ = try resnet() }
        if command.served.textModel != nil { _ = try bert() }
    }

    func resnet() throws -> ResNet {
        if net == nil {
            net = Result { try loadResNet(command.served.imageModel, backend: backend, allowNonFinite: command.engine.allowNonfinite) }
        }
        return try net!.get()
    }

    func bert() throws -> TextEncoder {
        if textEncoder == nil {
            textEncoder = Result { try loadTextEncoder(command.served.textModel, backend: backend, allowNonFinite: command.engine.allowNonfinite) }
        }
        return try textEncoder!.get()
    }

    func images() throws -> ProjectedRowEncoder<ImageRowEncoder> {
        if let imageRows { return imageRows }
        let e = try command.projection.wrap(try command.imageOptions.encoder(try resnet(), layer: command.served.layer, model: command.served.imageModel), pca: pca, backend: backend)
        imageRows = e
        return e
    }

    func texts() throws -> ProjectedRowEncoder<TextRowEncoder> {
        if let textRows { return textRows }
        let e = try command.projection.wrap(try rawTexts(normalize: nil), pca: pca, backend: backend)
        textRows = e
        return e
    }

    /// Text rows without projection; `normalize` overrides the flags' normalisation.
    func rawTexts(normalize: Bool?) throws -> TextRowEncoder {
        try command.text.encoder(try bert(), batchSize: command.textBatchSize, pairs: false, normalize: normalize)
    }

    func pairs() throws -> ProjectedRowEncoder<PairRowEncoder> {
        if let pairRows { return pairRows }
        let i = try command.imageOptions.encoder(try resnet(), layer: command.served.imageLayer, model: command.served.imageModel)
        let t = try command.text.encoder(try bert(), batchSize: command.imageBatchSize, pairs: false)
        let e = try command.projection.wrap(PairRowEncoder(images: i, texts: t, normalizeParts: command.served.normalizeParts), pca: pca, backend: backend)
        pairRows = e
        return e
    }

    /// What {"info": true} answers: models loaded so far, their dimensions, the options in force.
    func info() -> [String: JSONValue] {
        var out: [String: JSONValue] = ["version": .string(VLM.configuration.version), "threads": .integer(Int64(Threads.count)),
                                        "backend": .string(backend.settings["backend"] ?? "")]
        out["image_model"] = .string(command.served.imageModel ?? resolveModelsFolder(defaultResNetName))
        out["text_model"] = .string(command.served.textModel ?? defaultTextModel())
        if let e = try? images() {
            out["image_dim"] = .integer(Int64(e.dim))
            out["image_options"] = .object(e.settings.mapValues { .string($0) })
        }
        if let e = try? texts() {
            out["text_dim"] = .integer(Int64(e.dim))
            out["text_options"] = .object(e.settings.mapValues { .string($0) })
        }
        if let e = try? pairs() { out["pair_dim"] = .integer(Int64(e.dim)) }
        return out
    }
}
