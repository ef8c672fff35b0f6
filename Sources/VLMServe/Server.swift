// `vlm serve`: an HTTP embedding server on Hummingbird 2 (SwiftNIO), over the batch jobs'
// encoders and the dynamic batcher (Batcher.swift). Endpoints:
//
//   POST /embed            text-embeddings-inference: {"inputs": str | [str], "normalize", "truncate"} → [[float]]
//   POST /v1/embeddings    OpenAI: {"input", "model", "encoding_format": float|base64, "dimensions"}
//   GET  /v1/models        OpenAI: the served models
//   POST /embed_image      {"inputs": base64 | data URL | [...]} or {"paths": [...]} under --root, or a multipart upload
//   POST /fuse             {"inputs": [{"image" | "path", "text"}]} → [[float]] (image ⧺ text)
//   GET  /health, /info, /metrics (Prometheus)
//
// Errors are JSON with the status that says whose fault it is: 400 unreadable body, 413 body,
// input count or text over a limit, 415 content type, 422 a body of the wrong shape or an
// undecodable image, 429 queue full, 503 queued past the deadline, stopping, or no such model.

import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Prometheus
import ServiceLifecycle
import UnixSignals
import VLMCore
import VLMIO
import VLMEmbed
import VLMModels
import VLMTokenizer

// MARK: - Configuration and models

public struct ServeConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// Bytes per request body.
    public var maxBodyBytes = 32 << 20
    /// Inputs (texts, images, pairs) per request.
    public var maxInputs = 256
    /// Requests that do not say whether to truncate over-long texts: truncate (else 413).
    public var autoTruncate = false
    /// The folder `paths` in image and fuse requests are read from; nil: paths refused.
    public var root: String?
    public var limits = Batcher.Limits(maxBatchItems: 256, maxBatchTokens: 8192, maxQueueItems: 1024, linger: 0.001, timeout: 30)
    /// Images (and pairs) per forward pass.
    public var maxImageBatch = 16
    /// Seconds a request's body may take to arrive (408 after).
    public var readTimeout = 60.0
    /// Seconds a connection may sit idle between requests before it is closed.
    public var idleTimeout = 60.0
    /// Bytes of request bodies held at once, across requests (429 beyond).
    public var maxBufferedBytes = 256 << 20
    /// Open connections at most; more wait in the listen backlog.
    public var maxConnections = 512
    /// Seconds SIGTERM's drain may take before requests still in flight are cancelled (a second
    /// signal cancels them at once).
    public var shutdownTimeout = 30.0
    /// Threads for the CPU work around the model (decoding JSON and images, tokenizing, writing
    /// answers).
    /// Requests prepared (read, tokenized, decoded) at once; their work itself runs on the
    /// engine's threads, within --threads.
    public var workThreads = max(1, Threads.count)

    public init() {}
}

/// The models a server runs — the embedding service's encoders, or why each is missing — and
/// the names it serves texts under.
public struct ServeModels {
    /// Where every vector is finished (normalised, projected, checked).
    public let service: EmbeddingService
    /// Texts' rows before normalisation (each request chooses it) and projection.
    public var text: Result<TextRowEncoder, Error>
    /// Whether requests that do not say get normalised text vectors (--normalize, else the model's default).
    public var textNormalize: Bool
    /// Whether image requests that do not say get normalised vectors (a CLIP image tower: yes).
    public var imageNormalize: Bool
    /// The names /v1/models lists for the text model (`--served-model-name`, repeatable; the
    /// first is the one /v1/embeddings reports when a request names none of them).
    public var textNames: [String]
    public var textName: String { textNames.first ?? "" }
    /// The names image answers of /v1/embeddings report (the first unless a request names
    /// another): the text model's when one CLIP serves both (set by the server), else the image
    /// model's; none when the image model did not load.
    public var imageNames: [String] = []
    public var imageName: String { imageNames.first ?? "" }
    public var image: Result<ImageRowEncoder, Error>
    public var pair: Result<PairRowEncoder, Error>
    /// Each kind's vector width (after any projection).
    public var dims: [ItemKind: Int]
    /// /info's body: models, dimensions, options.
    public var info: [String: JSONValue]

    /// Builds every encoder the service can now (a model that does not load leaves its
    /// endpoints answering 503). `info` is what /info shows of the service.
    public init(service: EmbeddingService, textNames: [String], info: (EmbeddingService) -> [String: JSONValue] = { $0.info() }) {
        self.service = service
        text = Result { try service.texts() }
        image = Result { try service.images() }
        pair = Result { try service.pairs() }
        textNormalize = (try? service.textNormalize()) ?? false
        imageNormalize = (try? service.imageNormalize()) ?? false
        self.textNames = textNames
        dims = [:]
        for kind in ItemKind.allCases { dims[kind] = try? service.dim(kind) }
        self.info = info(service)
    }
}

/// Why the server could not run.
public struct ServeError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// An error answered to the client.
struct APIError: Error {
    var status: HTTPResponse.Status
    /// TEI's error_type: Validation, Overloaded, Unhealthy, Backend; and Timeout.
    var type: String
    var message: String
    /// The connection closes after the answer (a body left unread).
    var closes = false
    /// An item's error kind (the shared ItemError's: not_an_image, non_finite, …), answered as
    /// "error_kind" (OpenAI's "code"), the message being the other front ends' own.
    var kind: String? = nil

    static func validation(_ m: String, _ status: HTTPResponse.Status = .unprocessableContent) -> APIError { APIError(status: status, type: "Validation", message: m) }
    static func tooLarge(_ m: String) -> APIError { APIError(status: .contentTooLarge, type: "Validation", message: m) }
}

// MARK: - The server

public final class EmbeddingServer: @unchecked Sendable {
    let config: ServeConfiguration
    let models: ServeModels
    let batcher: Batcher
    let metrics: ServeMetrics
    let textLane: Lane<PreparedTexts>?
    let imageLane: Lane<PreparedImages>?
    let pairLane: Lane<(PreparedImages, PreparedTexts)>?
    /// Requests answered 503 because the drain was cut short (queued, running or arriving).
    public var unrunAtCut: Int { drain.unrun }
    let drain = DrainState()
    let pool: WorkPool
    let bodyBudget: ByteBudget

    public init(config: ServeConfiguration, models: ServeModels) {
        (self.config, self.models) = (config, models)
        metrics = ServeMetrics()
        batcher = Batcher(limits: config.limits, observer: metrics)
        let drain = self.drain
        pool = WorkPool(width: config.workThreads, timeout: config.limits.timeout, stopping: { drain.isCut })
        bodyBudget = ByteBudget(limit: max(config.maxBufferedBytes, config.maxBodyBytes), changed: { [metrics] in metrics.bodyBytesHeld($0) })
        if case .success(let t) = models.text {
            let lane = Lane<PreparedTexts>(name: "text", dim: t.dim, merge: PreparedTexts.merged, encode: { try t.encode($0) })
            batcher.add(lane)
            textLane = lane
        } else { textLane = nil }
        if case .success(let i) = models.image {
            let lane = Lane<PreparedImages>(name: "image", dim: i.dim, merge: mergeImages, encode: { try i.encode($0) })
            batcher.add(lane, maxItems: config.maxImageBatch)
            imageLane = lane
        } else { imageLane = nil }
        if case .success(let p) = models.pair {
            let lane = Lane<(PreparedImages, PreparedTexts)>(name: "pair", dim: p.dim, merge: { parts in
                (mergeImages(parts.map(\.0)), PreparedTexts.merged(parts.map(\.1)))
            }, encode: { try p.encode($0) })
            batcher.add(lane, maxItems: config.maxImageBatch)
            pairLane = lane
        } else { pairLane = nil }
    }

    /// The application: the routes, the HTTP server with vlm's connection limits, and the
    /// batcher as one of its services (started with it; listed before the HTTP server, it is
    /// shut down after it, so every request the drain lets finish still gets its forward pass).
    /// Swift tests drive it with Hummingbird's testing support; `run` serves it. `ready` is
    /// called with the bound port once the socket listens.
    public func application(ready: @escaping @Sendable (Int) -> Void = { _ in }) -> some ApplicationProtocol {
        let router = Router()
        routes(router)
        var logger = Logger(label: "vlm-serve")
        logger.logLevel = .critical
        let maxBody: Int = config.maxBodyBytes
        let hasRoom: @Sendable () -> Bool = { [batcher] () -> Bool in batcher.hasRoom }
        let rejected: @Sendable () -> Void = { [metrics] () -> Void in metrics.request(endpoint: "(unparsed)", status: 400, seconds: 0) }
        let headersTimedOut: @Sendable () -> Void = { [metrics] () -> Void in metrics.request(endpoint: "(unparsed)", status: 408, seconds: 0) }
        let (idle, read, port) = (config.idleTimeout, config.readTimeout, config.port)
        // No idle timeout of Hummingbird's: ConnectionClock keeps the connection's time limits.
        return Application(router: router,
                           server: .http1(configuration: .init(additionalChannelHandlers: [
                               ContinueHandler(maxBodyBytes: maxBody, hasRoom: hasRoom, rejected: rejected,
                                               idleTimeout: idle, readTimeout: read, headersTimedOut: headersTimedOut)])),
                           configuration: .init(address: .hostname(config.host, port: config.port), serverName: "vlm",
                                                availableConnectionsDelegate: MaximumAvailableConnections(config.maxConnections)),
                           services: [BatcherService(batcher: batcher, drain: drain)],
                           onServerRunning: { channel in ready(channel.localAddress?.port ?? port) },
                           logger: logger)
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, answers every request in flight,
    /// and returns true; false when the drain was cut short (--shutdown-timeout, or a second
    /// signal) with requests in flight: those queued and those of the forward pass running are
    /// answered 503 at once, those still arriving are cancelled and answered 503 too
    /// (`unrunAtCut` counts them all). `ready` is called with the bound port once the socket
    /// listens.
    ///
    /// On swift-service-lifecycle: the group's graceful shutdown on the first SIGTERM or SIGINT
    /// (the drain: the HTTP server stops accepting and lets requests in flight finish, then the
    /// batcher stops), `UnixSignalsSequence` for the second signal, and the group's cancellation
    /// to end what a cut drain leaves. Two small parts are vlm's own, where the library has no
    /// place for them: DrainWatch (health answers 503 from the first moment of the drain, before
    /// the HTTP server's turn to stop) and ShutdownWatch. The library acts on a signal either as
    /// graceful shutdown or as cancellation, and on the first only, while `timeout` and
    /// supervisors send a second; and its `maximumGracefulShutdownDuration` escalates straight
    /// to cancellation, after which Hummingbird closes each connection's input and answers are
    /// no longer delivered (tried: a request queued at the cut got "Remote end closed connection
    /// without response"). ShutdownWatch answers what is left first, then cancels the group.
    public func run(ready: @escaping @Sendable (Int) -> Void) async throws -> Bool {
        var logger = Logger(label: "vlm-serve")
        logger.logLevel = .critical
        let group = ServiceGroupConfiguration(
            services: [.init(service: ShutdownWatch(drain: drain, timeout: config.shutdownTimeout, cut: { [self] in await cutShort() })),
                       .init(service: application(ready: ready)),
                       .init(service: DrainWatch(drain: drain), successTerminationBehavior: .ignore)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        var failure: Error? = nil
        do {
            try await ServiceGroup(configuration: group).run()
        } catch let e as NIOCore.IOError where e.errnoCode == EADDRINUSE {
            throw ServeError("the address is already in use")
        } catch let e as NIOCore.IOError {
            throw ServeError(String(cString: strerror(e.errnoCode)).lowercased())
        } catch is DrainCut {
            // The drain was cut short, whether or not anything was left to cut.
        } catch {
            failure = error
        }
        let (wasCut, leftUnanswered) = drain.finish()
        if let failure, !wasCut { throw failure }
        return !leftUnanswered
    }

    /// Cuts the drain short: what is queued and the batch running are answered 503 now; requests
    /// still being read or prepared get 503 as soon as their work comes round (the pool refuses to
    /// begin more), for up to 2 s; then a moment for those answers to be written before the
    /// group's cancellation ends whatever still reads a body.
    func cutShort() async {
        drain.cutShort()
        batcher.stop(answeringQueued: true)
        for _ in 0..<40 where batcher.arrivingRequests > 0 { try? await Task.sleep(nanoseconds: 50_000_000) }
        try? await Task.sleep(nanoseconds: 200_000_000)
    }

    // MARK: Routes

    /// Each route's method, for 405 answers.
    static let routeMethods: [String: HTTPRequest.Method] = [
        "/embed": .post, "/v1/embeddings": .post, "/v1/models": .get, "/embed_image": .post, "/fuse": .post,
        "/health": .get, "/info": .get, "/metrics": .get,
    ]

    func routes(_ router: Router<BasicRequestContext>) {
        router.add(middleware: JSONNotFound(metrics: metrics))
        router.post("embed") { [self] request, _ in await answer("/embed", style: .tei) { try await embedTexts(request) } }
        router.post("v1/embeddings") { [self] request, _ in await answer("/v1/embeddings", style: .openAI) { try await openAIEmbeddings(request) } }
        router.get("v1/models") { [self] _, _ in await answer("/v1/models", style: .openAI, arrives: false) { try openAIModels() } }
        router.post("embed_image") { [self] request, _ in await answer("/embed_image", style: .tei) { try await embedImages(request) } }
        router.post("fuse") { [self] request, _ in await answer("/fuse", style: .tei) { try await fuse(request) } }
        router.get("health") { [self] _, _ in
            await answer("/health", style: .tei, arrives: false) {
                if drain.isDraining { throw APIError(status: .serviceUnavailable, type: "Unhealthy", message: "stopping") }
                return json("{\"status\":\"ok\"}")
            }
        }
        router.get("info") { [self] _, _ in await answer("/info", style: .tei, arrives: false) { try info() } }
        router.get("metrics") { [self] _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
        }
    }

    enum ErrorStyle { case tei, openAI }

    /// Runs a handler, turning its errors into JSON answers and counting the request.
    func answer(_ endpoint: String, style: ErrorStyle, arrives: Bool = true, _ body: () async throws -> Response) async -> Response {
        let start = Batcher.now()
        var response: Response
        var arrival: Batcher.Arrival? = nil
        defer {
            if let arrival {
                batcher.depart(arrival)
                bodyBudget.give(arrival.heldBytes)
            }
        }
        do {
            // Admitted before the body is read, so a full queue costs no reading.
            if arrives { arrival = try batcher.arrive() }
            let current: Batcher.Arrival? = arrival
            response = try await Batcher.$current.withValue(current) { () async throws -> Response in try await body() }
        } catch let e as APIError {
            response = errorResponse(e, style: style)
            // A body over a limit or too slow is left unread: the connection cannot go on.
            if e.closes || e.status == .contentTooLarge || e.status == .requestTimeout { response.headers[.connection] = "close" }
            if e.status == .tooManyRequests { response.headers[.retryAfter] = "1" }
        } catch let e as BatchRefusal {
            switch e {
            case .queueFull(let limit):
                response = errorResponse(APIError(status: .tooManyRequests, type: "Overloaded",
                                                  message: "the queue is full: \(limit) inputs waiting or arriving (--max-queue); retry later"), style: style)
                response.headers[.retryAfter] = "1"
            case .deadline(let s):
                response = errorResponse(APIError(status: .serviceUnavailable, type: "Timeout",
                                                  message: String(format: "not run: still queued after %.1f s (the --request-timeout)", s)), style: style)
            case .stopping:
                response = stopping(style)
            }
        } catch is CancellationError {
            response = stopping(style)
        } catch {
            // Cancelled (the drain cut short) while it read or prepared: whatever broke is the
            // cut's doing (a body ends early when the connection's input is closed).
            response = Task.isCancelled ? stopping(style)
                : errorResponse(APIError(status: .internalServerError, type: "Backend", message: "\(error)"), style: style)
        }
        metrics.request(endpoint: endpoint, status: Int(response.status.code), seconds: Batcher.now() - start)
        return response
    }

    /// The answer to a request the drain, cut short, did not run: queued, in the forward pass
    /// running, or still arriving. Counted for the note at exit and the exit status.
    func stopping(_ style: ErrorStyle) -> Response {
        drain.answeredUnrun()
        return errorResponse(APIError(status: .serviceUnavailable, type: "Unhealthy", message: "the server is stopping"), style: style)
    }

    func errorResponse(_ e: APIError, style: ErrorStyle) -> Response {
        let body: String
        switch style {
        case .tei:
            body = "{\"error\":\(jsonString(e.message)),\"error_type\":\(jsonString(e.type))"
                + (e.kind.map { ",\"error_kind\":" + jsonString($0) } ?? "") + "}"
        case .openAI:
            let type = e.status.code == 429 ? "rate_limit_exceeded" : e.status.code >= 500 ? "server_error" : "invalid_request_error"
            body = "{\"error\":{\"message\":\(jsonString(e.message)),\"type\":\"\(type)\",\"param\":null,\"code\":\(e.kind.map(jsonString) ?? "null")}}"
        }
        return json(body, status: e.status)
    }

    // MARK: Info

    func openAIModels() throws -> Response {
        var data: [String] = []
        if case .success = models.text {
            for name in models.textNames {
                data.append("{\"id\":\(jsonString(name)),\"object\":\"model\",\"created\":0,\"owned_by\":\"vlm\"}")
            }
        }
        // The image model answers /v1/embeddings too ("modality": "image"): listed when its name is another.
        if case .success = models.image, !models.imageName.isEmpty, !models.textNames.contains(models.imageName) {
            data.append("{\"id\":\(jsonString(models.imageName)),\"object\":\"model\",\"created\":0,\"owned_by\":\"vlm\"}")
        }
        return json("{\"object\":\"list\",\"data\":[" + data.joined(separator: ",") + "]}")
    }

    func info() throws -> Response {
        var out = models.info
        var limits: [String: JSONValue] = [:]
        limits["max_batch_size"] = .integer(Int64(config.limits.maxBatchItems))
        limits["max_batch_tokens"] = .integer(Int64(config.limits.maxBatchTokens))
        limits["max_image_batch_size"] = .integer(Int64(config.maxImageBatch))
        limits["max_queue"] = .integer(Int64(config.limits.maxQueueItems))
        limits["max_inputs"] = .integer(Int64(config.maxInputs))
        limits["max_body_bytes"] = .integer(Int64(config.maxBodyBytes))
        limits["linger_ms"] = .number(config.limits.linger * 1000)
        limits["request_timeout_s"] = .number(config.limits.timeout)
        out["limits"] = .object(limits)
        out["auto_truncate"] = .bool(config.autoTruncate)
        out["paths_under_root"] = .bool(config.root != nil)   // whether "paths" are read; not where from
        out["served_model_name"] = .string(models.textName)
        out["served_model_names"] = .array(models.textNames.map { .string($0) })
        out["served_image_model_name"] = .string(models.imageName)
        out["text_normalize_default"] = .bool(models.textNormalize)
        out["image_normalize_default"] = .bool(models.imageNormalize)
        return json(JSONValue.object(out).jsonText)
    }

    // MARK: Rows

    /// A batch's rows finished by the service (normalised when `normalize`, projected, checked)
    /// and their width. Inputs were checked before queueing, so any item error fails the
    /// request: a row holding NaN or infinity (unless --allow-nonfinite) with 500.
    /// On the work pool: the projection is a GEMM on the engine, which a cooperative thread must
    /// not wait for.
    func finished(_ kind: ItemKind, _ batch: EncodedBatch, names: [String], normalize: Bool?) async throws -> (rows: [Float], dim: Int) {
        try await pool.run { [self] in
            let b = try models.service.finish(kind, batch, ids: names.map { Array($0.utf8) }, normalize: normalize)
            if let e = b.failures.compactMap({ $0 }).first {
                throw APIError(status: e.kind == "non_finite" ? .internalServerError : .unprocessableContent, type: "Backend", message: e.message,
                               kind: e.kind)
            }
            return (b.rows, try models.service.dim(kind))
        }
    }

    /// Whether the server's vectors of `kind` are unit vectors when a request asks `normalize`
    /// (for OpenAI's `dimensions`, whose shortened vectors are normalised again when they were).
    func unitVectors(_ kind: ItemKind, normalize: Bool) -> Bool {
        models.service.description.normalizeOutput || (normalize && models.service.pca == nil)
    }
}

/// A request no route takes: 405 with Allow for a known path asked with another method, else 404,
/// both as JSON like every other error.
/// Counted in /metrics: 405 under the route's path, 404 under "(unknown)" (never the path asked,
/// which would let clients grow the label set without bound).
struct JSONNotFound: RouterMiddleware {
    let metrics: ServeMetrics
    func handle(_ request: Request, context: BasicRequestContext,
                next: (Request, BasicRequestContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound {
            let path = request.uri.path
            if let method = EmbeddingServer.routeMethods[path] {
                var r = json("{\"error\":\(jsonString("\(path) takes \(method.rawValue), not \(request.method.rawValue)")),\"error_type\":\"Validation\"}",
                             status: .methodNotAllowed)
                r.headers[.allow] = method.rawValue
                metrics.request(endpoint: path, status: 405, seconds: 0)
                return r
            }
            metrics.request(endpoint: "(unknown)", status: 404, seconds: 0)
            return json("{\"error\":\(jsonString("no such endpoint: \(path)")),\"error_type\":\"Validation\"}", status: .notFound)
        }
    }
}

/// Prepared images of several requests as one batch.
func mergeImages(_ parts: [PreparedImages]) -> PreparedImages {
    PreparedImages(tensor: parts.flatMap(\.tensor), failures: parts.flatMap(\.failures))
}

/// Each row L2-normalised (as torch.nn.functional.normalize, which the CLI's --normalize is).
func normalized(_ rows: [Float], dim: Int) -> [Float] {
    var out = rows
    l2NormalizeRows(&out, dim: dim)
    return out
}

/// A JSON answer, ending in a newline: `curl … >> vectors.jsonl` in a shell loop then writes one
/// line per answer (JSON readers ignore the newline).
func json(_ s: String, status: HTTPResponse.Status = .ok) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    var buffer = ByteBuffer()
    buffer.reserveCapacity(s.utf8.count + 1)
    buffer.writeString(s)
    buffer.writeInteger(UInt8(ascii: "\n"))
    return Response(status: status, headers: headers, body: .init(byteBuffer: buffer))
}

/// The drain's course, set from any thread: begun (so /health answers 503), finished, or cut
/// short — judged by what happened, not by the clock.
final class DrainState: Sendable {
    private struct State {
        var draining = false
        var finished = false
        var cut = false
        var unrun = 0
    }
    private let state = NIOLockedValueBox(State())
    /// Yields once, when the drain begins (ShutdownWatch starts --shutdown-timeout's clock).
    let begun: AsyncStream<Void>
    private let beginning: AsyncStream<Void>.Continuation

    init() { (begun, beginning) = AsyncStream.makeStream(of: Void.self) }

    var isDraining: Bool { state.withLockedValue { $0.draining } }
    var isCut: Bool { state.withLockedValue { $0.cut } }
    var unrun: Int { state.withLockedValue { $0.unrun } }

    /// Graceful shutdown has begun.
    func begin() {
        state.withLockedValue { $0.draining = true }
        beginning.yield()
        beginning.finish()
    }

    /// The drain is cut short (a second signal, --shutdown-timeout): work not begun is refused.
    /// Not before the drain began (a server that failed to start is not a cut drain) nor after
    /// it finished.
    func cutShort() {
        state.withLockedValue { if $0.draining && !$0.finished { $0.cut = true } }
    }

    /// A request was answered 503 "stopping" (counted toward the cut's note and exit status,
    /// which only ShutdownWatch's cut sets: a group cancelled by a failure reports the failure).
    func answeredUnrun() { state.withLockedValue { $0.unrun += 1 } }

    /// The group has returned: whether the drain was cut short, and whether that cut answered
    /// requests 503 (a cut of an idle server — two signals in a row, as `timeout` sends —
    /// answered none).
    func finish() -> (cut: Bool, answered503: Bool) {
        state.withLockedValue {
            $0.finished = true
            return ($0.cut, $0.cut && $0.unrun > 0)
        }
    }
}

/// The batcher's model thread as a service: started with the application; at its graceful
/// shutdown (after the HTTP server's, so the drain's requests are all answered) it finishes
/// what is queued and stops; cancelled (the drain cut short) it answers what is queued and the
/// batch running `stopping` at once, and does not wait for that batch (seconds for large images).
struct BatcherService: Service {
    let batcher: Batcher
    let drain: DrainState
    func run() async throws {
        batcher.start()
        await withTaskCancellationHandler {
            try? await gracefulShutdown()
            batcher.stop()
            // Off Swift's threads: the wait blocks until the model thread is done (or cut).
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                Thread.detachNewThread { batcher.waitUntilDrained(); c.resume() }
            }
        } onCancel: {
            // A cut drain (ShutdownWatch has marked it) or a failure elsewhere in the group:
            // either way what is queued is answered now.
            batcher.stop(answeringQueued: true)
        }
    }
}

/// Marks the drain begun when graceful shutdown begins. (Listed last, it is the first the group
/// shuts down, so /health answers 503 while the requests in flight finish.)
struct DrainWatch: Service {
    let drain: DrainState
    func run() async throws {
        // Cancelled instead (a failure elsewhere in the group): no drain began.
        do { try await gracefulShutdown() } catch { return }
        drain.begin()
    }
}

/// The drain cut short (a second signal, or --shutdown-timeout): the group is cancelled.
struct DrainCut: Error {}

/// Cuts the drain short at a second SIGTERM or SIGINT (counted beside ServiceLifecycle's own
/// handlers, which act on the first) or when it has lasted --shutdown-timeout: `cut` answers
/// what is left, then this service throws, which cancels the group. Listed first, it is the
/// last the group shuts down: it watches the whole drain, and returns at its own turn.
struct ShutdownWatch: Service {
    let drain: DrainState
    let timeout: Double
    let cut: @Sendable () async -> Void

    func run() async throws {
        let (drain, timeout) = (self.drain, self.timeout)
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        let cutNow: Bool = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                var seen = 0
                for await _ in signals {
                    seen += 1
                    if seen == 1 { drain.begin() }   // DrainWatch may come later
                    if seen == 2 { return true }
                }
                return false
            }
            group.addTask {
                for await _ in drain.begun {
                    try? await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
                    return !Task.isCancelled
                }
                return false
            }
            group.addTask {
                try? await gracefulShutdown()   // this service's turn: the drain is over
                return false
            }
            let first: Bool = await group.next() ?? false
            group.cancelAll()
            return first
        }
        guard cutNow else { return }
        await cut()
        throw DrainCut()
    }
}
