// `vlm serve`: the HTTP embedding server (VLMServe) on the worker's models and options, so a
// vector equals the CLI's for the same input and options. Models named by flags must load (a
// bad one ends the server at start); a default one that is not there leaves its endpoints
// answering 503 with the reason.

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMEmbed
import VLMJobs
import VLMModels
import VLMServe

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve embeddings over HTTP, batching concurrent requests into shared forward passes.",
        discussion: paragraphs("""
        Endpoints: POST /embed (text-embeddings-inference: {"inputs": str | [str], "normalize", "truncate"} → [[float]]),
        POST /v1/embeddings (OpenAI: input, model, encoding_format float|base64, dimensions), GET /v1/models,
        POST /embed_image ({"inputs": [base64 or data: URL]}, {"paths": [...]} under --root, or multipart/form-data
        file parts), POST /fuse ({"inputs": [{"image": base64 | "path": PATH, "text": TEXT}]}), GET /health,
        GET /info, GET /metrics (Prometheus). Errors are JSON: 400 unreadable, 413 over a limit, 415 content type,
        422 wrong shape or undecodable image, 403 a path outside --root, 404 a model or file not served,
        408 a body not in by --read-timeout, 429 queue full, 503 past the deadline, stopping, or no model
        of that kind loaded.
        SIGTERM or SIGINT: stop accepting, answer every request in flight, exit 0 (exit 1 when the drain
        passes --shutdown-timeout or a second signal comes: what is left is cancelled).
        Listens on 127.0.0.1 unless --host says otherwise; --port 0 takes any free port. The address is
        printed on stderr as "vlm: serving on http://HOST:PORT".
        """))

    @Option(help: "Address to listen on (0.0.0.0 or :: for every interface).")
    var host = "127.0.0.1"

    @Option(parsing: .unconditional, help: "Port to listen on; 0: any free port (printed on stderr).")
    var port = 8080

    @OptionGroup var served: ServedModelOptions

    @Option(help: ArgumentHelp("A name /v1/models lists for the text model (repeatable); /v1/embeddings takes any model name, as one model serves texts, and reports the name asked for when it is one of these, else the first. Default: the text model folder's name.", valueName: "name"))
    var servedModelName: [String] = []

    @Option(parsing: .unconditional, help: "Texts per forward pass at most (requests arriving together share one; a larger request runs alone).")
    var maxBatchSize: Int = TextEncoder.defaultBatchSize

    @Option(parsing: .unconditional, help: "Tokens per text forward pass at most (a longer request runs alone). Default: --batch-tokens, 8192.")
    var maxBatchTokens: Int?

    @Option(parsing: .unconditional, help: "Images or image–text pairs per forward pass at most.")
    var maxImageBatchSize: Int = 16

    @Option(parsing: .unconditional, help: "Milliseconds a batch that is not full waits for more requests.")
    var lingerMs: Double = 1

    @Option(parsing: .unconditional, help: "Inputs waiting at most; a request that would pass it is answered 429.")
    var maxQueue: Int = 1024

    @Option(name: .customLong("max-inputs"), parsing: .unconditional,
            help: "Inputs (texts, images, pairs) per request at most (413 beyond). Default: 256, or --max-queue when lower.")
    var maxInputsOption: Int?
    var maxInputs: Int { maxInputsOption ?? min(256, maxQueue) }

    @Option(parsing: .unconditional, help: "Bytes per request body at most (413 beyond).")
    var maxBodyBytes: Int = 32 << 20

    @Option(parsing: .unconditional, help: "Bytes of request bodies held at once across requests (a body that would pass it is answered 429). Default: 256 MiB, at least --max-body-bytes.")
    var maxBufferedBytes: Int?

    @Option(parsing: .unconditional, help: "Seconds a request may wait for the model before it is answered 503.")
    var requestTimeout: Double = 30

    @Option(parsing: .unconditional, help: "Seconds a request's body may take to arrive before it is answered 408.")
    var readTimeout: Double = 60

    @Option(parsing: .unconditional, help: "Seconds a connection may sit idle between requests before it is closed.")
    var idleTimeout: Double = 60

    @Option(parsing: .unconditional, help: "Open connections at most (more wait to be accepted).")
    var maxConnections: Int = 512

    @Option(parsing: .unconditional, help: "Seconds SIGTERM's drain may take; then requests still in flight are cancelled and vlm exits 1 (as at a second SIGTERM or SIGINT).")
    var shutdownTimeout: Double = 30

    @Flag(help: "Truncate over-long texts of requests that do not say \"truncate\" (else they are answered 413).")
    var autoTruncate = false

    @Option(help: "A folder whose files /embed_image and /fuse may read by relative \"paths\" (none without it).")
    var root: String?

    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var text: TextModelOptions
    @OptionGroup var projection: ProjectionOptions
    @OptionGroup var engine: EngineOptions

    func validate() throws {
        try Limits.check("--port", port, 0...65535)
        try Limits.check("--max-batch-size", maxBatchSize, 1...Limits.maxBatch)
        if let maxBatchTokens { try Limits.check("--max-batch-tokens", maxBatchTokens, 1...Limits.maxBatchTokens) }
        try Limits.check("--max-image-batch-size", maxImageBatchSize, 1...Limits.maxBatch)
        try Limits.check("--max-queue", maxQueue, 1...(1 << 24))
        try Limits.check("--max-inputs", maxInputs, 1...maxQueue)
        try Limits.check("--max-body-bytes", maxBodyBytes, 1...(1 << 31))
        if let maxBufferedBytes { try Limits.check("--max-buffered-bytes", maxBufferedBytes, maxBodyBytes...(1 << 40)) }
        if !(0...10_000).contains(lingerMs) { throw ValidationError("--linger-ms must be from 0 to 10000") }
        for (name, v) in [("--request-timeout", requestTimeout), ("--read-timeout", readTimeout), ("--idle-timeout", idleTimeout), ("--shutdown-timeout", shutdownTimeout)] {
            if !(v > 0 && v <= 86_400) { throw ValidationError("\(name) must be above 0 and at most 86400 seconds") }
        }
        try Limits.check("--max-connections", maxConnections, 1...(1 << 20))
        if host.isEmpty { throw ValidationError("--host must not be empty") }
        if servedModelName.contains(where: { $0.isEmpty }) { throw ValidationError("--served-model-name must not be empty") }
    }

    /// /info names model files by their last component: clients need not see the server's paths.
    static func publicInfo(_ info: [String: JSONValue], description: EmbeddingDescription) -> [String: JSONValue] {
        var out = info
        out["options"] = description.withoutFolders.json
        var paths: [String] = description.pca.map { [$0] } ?? []
        for kind in ["image", "text"] {
            guard case .string(let path)? = info[kind + "_model"] else { continue }
            out[kind + "_model"] = .string((path as NSString).lastPathComponent)
            paths.append(path)
        }
        // Errors name the files they are about by the same last component (longest path first).
        for kind in ["image", "text"] {
            guard case .string(var error)? = info[kind + "_error"] else { continue }
            for path in paths.sorted(by: { $0.count > $1.count }) {
                error = error.replacingOccurrences(of: path, with: (path as NSString).lastPathComponent)
            }
            out[kind + "_error"] = .string(error)
        }
        return out
    }

    func run() async throws {
        try served.pair.clipConfig.check(served.pair.imageModelOption, served.pair.textModelOption)
        let backend = try engine.configure()
        var config = ServeConfiguration()
        config.port = port
        config.maxBodyBytes = maxBodyBytes
        config.maxInputs = maxInputs
        config.maxBufferedBytes = maxBufferedBytes ?? max(256 << 20, maxBodyBytes)
        config.autoTruncate = autoTruncate
        config.maxImageBatch = maxImageBatchSize
        config.readTimeout = readTimeout
        config.idleTimeout = idleTimeout
        config.maxConnections = maxConnections
        config.shutdownTimeout = shutdownTimeout
        config.host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        config.limits = Batcher.Limits(maxBatchItems: maxBatchSize, maxBatchTokens: maxBatchTokens ?? text.batchTokens, maxQueueItems: maxQueue,
                                       linger: lingerMs / 1000, timeout: requestTimeout)
        if let root {
            guard FileStatus.of(root)?.kind == .directory, let real = realpath(root, nil) else {
                throw InputError("\(root): --root must be a folder")
            }
            config.root = String(cString: real)
            free(real)
        }
        let service = try EmbeddingService(served.embeddingDescription(imageBatchSize: maxImageBatchSize, textBatchSize: maxBatchSize, imageOptions: imageOptions,
                                                              text: text, projection: projection, engine: engine),
                                           backend: backend, version: VLM.configuration.version)
        try service.loadNamed()
        let textFolder = served.pair.textModel ?? defaultTextModel()
        let names = servedModelName.isEmpty ? [displayModelName(textFolder)] : servedModelName
        var serving = ServeModels(service: service, textNames: names, info: { Self.publicInfo($0.info(), description: $0.description) })
        // One checkpoint serving both towers (under any spelling) answers images under the texts' names.
        let imageFolder = served.pair.imageModel ?? resolveModelsFolder(defaultResNetName)
        if case .success = serving.image {
            serving.imageNames = canonicalModelSpec(imageFolder) == canonicalModelSpec(textFolder) ? names : [displayModelName(imageFolder)]
        }
        let textRows = serving.text
        let kinds: [(String, String, Result<Void, Error>)] = [
            ("texts", "/embed and /v1/embeddings", textRows.map { _ in () }), ("images", "/embed_image", serving.image.map { _ in () }),
            ("image–text pairs", "/fuse", serving.pair.map { _ in () }),
        ]
        for (what, endpoints, r) in kinds {
            if case .failure(let e) = r { note("vlm: note: no vectors for \(what) (\(oneLine("\(e)"))); \(endpoints) answer 503") }
        }
        // A server that can answer nothing is an error; one kind is enough (a PCA fitted on
        // pairs leaves only /fuse).
        if kinds.allSatisfy({ if case .failure = $0.2 { return true }; return false }) {
            throw InputError("nothing can be served: no model loads, or --pca fits none of their vectors; give --text-model or --image-model")
        }

        let server = EmbeddingServer(config: config, models: serving)
        let display = config.host.contains(":") ? "[\(config.host)]" : config.host
        let everywhere = ["0", "0.0.0.0", "::", "0:0:0:0:0:0:0:0"].contains(config.host)
        let anyAddress = config.host.contains(":") ? "http://[::]" : "http://0.0.0.0"
        let outcome: Result<Bool, Error> = await Result(catching: { try await server.run { port in
            note(everywhere ? "vlm: serving on port \(port) of all interfaces (\(anyAddress):\(port))" : "vlm: serving on http://\(display):\(port)")
        } })
        switch outcome {
        case .success(true): return
        case .success(false):
            note("vlm: note: the drain was cut short (--shutdown-timeout or a second signal): \(server.unrunAtCut) requests queued, running or arriving were answered 503")
            // Every request is answered; the forward pass still running on the model thread is
            // abandoned: _exit, not exit, whose teardown of libraries under that thread crashed.
            _exit(ExitStatus.failure.rawValue)
        case .failure(let e):
            throw InputError("cannot listen on \(display):\(port): \(Self.listenError(e))")
        }
    }
}

extension ServeCommand {
    /// Why listening failed, in words (NIO's errors print as Swift type names).
    static func listenError(_ e: Error) -> String {
        let text = "\(e)"
        if text.contains("SocketAddressError") || text.contains("unknown") || text.contains("getaddrinfo") || text.contains("NIOConnectionError") {
            return "not an address or host name this machine can listen on (\(text.prefix(120)))"
        }
        return text
    }
}

extension Result where Failure == Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
