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
import Logging
import MultipartKit
import NIOCore
import Prometheus
import VLMCore
import VLMIO
import VLMJobs
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
    /// Vectors holding NaN or infinity are answered instead of refused.
    public var allowNonFinite = false
    public var limits = Batcher.Limits(maxBatchItems: 256, maxBatchTokens: 8192, maxQueueItems: 1024, linger: 0.001, timeout: 30)
    /// Images (and pairs) per forward pass.
    public var maxImageBatch = 16

    public init() {}
}

/// The models a server runs: each encoder, or why it is missing.
public struct ServeModels {
    /// Texts, with normalisation left to each request.
    public var text: Result<TextRowEncoder, Error>
    /// Whether requests that do not say get normalised text vectors (the model's default).
    public var textNormalize: Bool
    /// The name /v1/embeddings answers to and reports.
    public var textName: String
    public var image: Result<ImageRowEncoder, Error>
    public var pair: Result<PairRowEncoder, Error>
    /// /info's body: models, dimensions, options.
    public var info: [String: JSONValue]

    public init(text: Result<TextRowEncoder, Error>, textNormalize: Bool, textName: String, image: Result<ImageRowEncoder, Error>,
                pair: Result<PairRowEncoder, Error>, info: [String: JSONValue]) {
        (self.text, self.textNormalize, self.textName, self.image, self.pair, self.info) = (text, textNormalize, textName, image, pair, info)
    }
}

/// An error answered to the client.
struct APIError: Error {
    var status: HTTPResponse.Status
    /// TEI's error_type: Validation, Overloaded, Unhealthy, Backend; and Timeout.
    var type: String
    var message: String

    static func validation(_ m: String, _ status: HTTPResponse.Status = .unprocessableContent) -> APIError { APIError(status: status, type: "Validation", message: m) }
    static func tooLarge(_ m: String) -> APIError { APIError(status: .contentTooLarge, type: "Validation", message: m) }
}

// MARK: - The server

public final class EmbeddingServer: @unchecked Sendable {
    let config: ServeConfiguration
    let models: ServeModels
    let batcher: Batcher
    let metrics: ServeMetrics
    let textLane: Lane<[Encoding]>?
    let imageLane: Lane<PreparedImages>?
    let pairLane: Lane<(PreparedImages, [Encoding])>?
    /// The port bound, once running (the one asked for, or the kernel's pick for 0).
    public private(set) var boundPort: Int?
    private let draining = ManagedFlag()

    public init(config: ServeConfiguration, models: ServeModels) {
        (self.config, self.models) = (config, models)
        metrics = ServeMetrics()
        batcher = Batcher(limits: config.limits, observer: metrics)
        if case .success(let t) = models.text {
            let lane = Lane<[Encoding]>(name: "text", dim: t.dim, merge: { $0.flatMap { $0 } }, encode: { try t.encode($0) })
            batcher.add(lane)
            textLane = lane
        } else { textLane = nil }
        if case .success(let i) = models.image {
            let lane = Lane<PreparedImages>(name: "image", dim: i.dim, merge: mergeImages, encode: { try i.encode($0) })
            batcher.add(lane, maxItems: config.maxImageBatch)
            imageLane = lane
        } else { imageLane = nil }
        if case .success(let p) = models.pair {
            let lane = Lane<(PreparedImages, [Encoding])>(name: "pair", dim: p.dim, merge: { parts in
                (mergeImages(parts.map(\.0)), parts.flatMap(\.1))
            }, encode: { try p.encode($0) })
            batcher.add(lane, maxItems: config.maxImageBatch)
            pairLane = lane
        } else { pairLane = nil }
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, answers every request in flight,
    /// and returns. `ready` is called with the bound port once the socket listens.
    public func run(ready: @escaping @Sendable (Int) -> Void) async throws {
        batcher.start()
        let router = Router()
        routes(router)
        var logger = Logger(label: "vlm-serve")
        logger.logLevel = .warning
        let app = Application(router: router, configuration: .init(address: .hostname(config.host, port: config.port), serverName: "vlm"),
                              onServerRunning: { [self] channel in
                                  let port = channel.localAddress?.port ?? config.port
                                  boundPort = port
                                  ready(port)
                              }, logger: logger)
        defer {
            batcher.stop()
            batcher.waitUntilDrained()
        }
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
        draining.set()
    }

    // MARK: Routes

    func routes(_ router: Router<BasicRequestContext>) {
        router.post("embed") { [self] request, _ in await answer("/embed", style: .tei) { try await embedTexts(request) } }
        router.post("v1/embeddings") { [self] request, _ in await answer("/v1/embeddings", style: .openAI) { try await openAIEmbeddings(request) } }
        router.get("v1/models") { [self] _, _ in await answer("/v1/models", style: .openAI) { try openAIModels() } }
        router.post("embed_image") { [self] request, _ in await answer("/embed_image", style: .tei) { try await embedImages(request) } }
        router.post("fuse") { [self] request, _ in await answer("/fuse", style: .tei) { try await fuse(request) } }
        router.get("health") { [self] _, _ in
            await answer("/health", style: .tei) {
                if draining.isSet { throw APIError(status: .serviceUnavailable, type: "Unhealthy", message: "stopping") }
                return json("{\"status\":\"ok\"}")
            }
        }
        router.get("info") { [self] _, _ in await answer("/info", style: .tei) { try info() } }
        router.get("metrics") { [self] _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
        }
    }

    enum ErrorStyle { case tei, openAI }

    /// Runs a handler, turning its errors into JSON answers and counting the request.
    func answer(_ endpoint: String, style: ErrorStyle, _ body: () async throws -> Response) async -> Response {
        let start = Batcher.now()
        var response: Response
        do {
            response = try await body()
        } catch let e as APIError {
            response = errorResponse(e, style: style)
        } catch let e as BatchRefusal {
            switch e {
            case .queueFull(let limit):
                response = errorResponse(APIError(status: .tooManyRequests, type: "Overloaded",
                                                  message: "the queue is full (\(limit) inputs waiting); retry later"), style: style)
                response.headers[.retryAfter] = "1"
            case .deadline(let s):
                response = errorResponse(APIError(status: .serviceUnavailable, type: "Timeout",
                                                  message: String(format: "not run: still queued after %.1f s (the --request-timeout)", s)), style: style)
            case .stopping:
                response = errorResponse(APIError(status: .serviceUnavailable, type: "Unhealthy", message: "the server is stopping"), style: style)
            }
        } catch {
            response = errorResponse(APIError(status: .internalServerError, type: "Backend", message: "\(error)"), style: style)
        }
        metrics.request(endpoint: endpoint, status: Int(response.status.code), seconds: Batcher.now() - start)
        return response
    }

    func errorResponse(_ e: APIError, style: ErrorStyle) -> Response {
        let body: String
        switch style {
        case .tei: body = "{\"error\":\(jsonString(e.message)),\"error_type\":\(jsonString(e.type))}"
        case .openAI:
            let type = e.status.code == 429 ? "rate_limit_exceeded" : e.status.code >= 500 ? "server_error" : "invalid_request_error"
            body = "{\"error\":{\"message\":\(jsonString(e.message)),\"type\":\"\(type)\",\"param\":null,\"code\":null}}"
        }
        return json(body, status: e.status)
    }

    // MARK: Bodies

    /// The request body, at most --max-body-bytes.
    func body(_ request: Request) async throws -> ByteBuffer {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > config.maxBodyBytes {
            throw APIError.tooLarge("the request body is \(length) bytes, over the limit of \(config.maxBodyBytes) (--max-body-bytes)")
        }
        do {
            return try await request.body.collect(upTo: config.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError.tooLarge("the request body is over the limit of \(config.maxBodyBytes) bytes (--max-body-bytes)")
        }
    }

    /// The body as a JSON object.
    func jsonObject(_ request: Request) async throws -> [String: JSONValue] {
        let buffer = try await body(request)
        guard let value = JSONValue.parse(Data(buffer.readableBytesView)) else {
            throw APIError.validation("the body is not JSON", .badRequest)
        }
        guard let object = value.objectValue else { throw APIError.validation("the body must be a JSON object, not \(value.typeName)") }
        return object
    }

    /// A list of 1…--max-inputs strings, or one string.
    func strings(_ value: JSONValue?, field: String) throws -> [String] {
        let list: [JSONValue]
        switch value {
        case .string?: list = [value!]
        case .array(let a)?: list = a
        case nil: throw APIError.validation("\"\(field)\" is missing")
        default: throw APIError.validation("\"\(field)\" must be a string or a list of strings, not \(value!.typeName)")
        }
        try checkCount(list.count, field: field)
        return try list.enumerated().map { k, v in
            guard case .string(let s) = v else { throw APIError.validation("\(field)[\(k)] must be a string, not \(v.typeName)") }
            return s
        }
    }

    func checkCount(_ n: Int, field: String) throws {
        if n == 0 { throw APIError.validation("\"\(field)\" is empty") }
        if n > config.maxInputs {
            throw APIError.tooLarge("\"\(field)\" holds \(n) inputs, over the limit of \(config.maxInputs) per request (--max-inputs)")
        }
    }

    func bool(_ object: [String: JSONValue], _ key: String, default d: Bool) throws -> Bool {
        switch object[key] {
        case nil, .null?: return d
        case .bool(let b)?: return b
        case let v?: throw APIError.validation("\"\(key)\" must be true or false, not \(v.typeName)")
        }
    }

    // MARK: Texts

    func textEncoder() throws -> (TextRowEncoder, Lane<[Encoding]>) {
        switch models.text {
        case .success(let t): return (t, textLane!)
        case .failure(let e): throw APIError(status: .serviceUnavailable, type: "Unhealthy", message: "no text model: \(e)")
        }
    }

    /// Tokenized texts: over-long ones are cut when `truncate`, else refused (413).
    func tokenize(_ texts: [String], encoder: TextRowEncoder, truncate: Bool, field: String) throws -> [Encoding] {
        let encodings = encoder.prepare(texts.map { (id: [], value: TextInput($0)) })
        if !truncate, let k = encodings.firstIndex(where: \.truncated) {
            let full = encoder.encoder.tokenizer.encode(texts[k]).count   // untruncated, for the message
            throw APIError.tooLarge("\(field)[\(k)] is \(full) tokens, over the model's \(encoder.maxLength) (send \"truncate\": true, or start vlm serve with --auto-truncate)")
        }
        return encodings
    }

    /// Vectors of `texts`, each normalised when `normalize`; and the tokens they took.
    func textVectors(_ texts: [String], normalize: Bool, truncate: Bool, field: String) async throws -> (rows: [Float], dim: Int, tokens: Int) {
        let (encoder, lane) = try textEncoder()
        let encodings = try tokenize(texts, encoder: encoder, truncate: truncate, field: field)
        let tokens = encodings.reduce(0) { $0 + $1.count }
        let batch = try await batcher.submit(lane, encodings, items: encodings.count, tokens: tokens)
        let rows = try checked(batch, dim: encoder.dim, names: texts.indices.map { "\(field)[\($0)]" })
        return (normalize ? normalized(rows, dim: encoder.dim) : rows, encoder.dim, tokens)
    }

    func embedTexts(_ request: Request) async throws -> Response {
        let object = try await jsonObject(request)
        let texts = try strings(object["inputs"], field: "inputs")
        if case .string(let d)? = object["truncation_direction"], d.lowercased() != "right" {
            throw APIError.validation("truncation_direction \(jsonString(d)) is not supported; texts are cut on the right")
        }
        let v = try await textVectors(texts, normalize: try bool(object, "normalize", default: models.textNormalize),
                                      truncate: try bool(object, "truncate", default: config.autoTruncate), field: "inputs")
        return json(vectorsJSON(v.rows, dim: v.dim))
    }

    func openAIEmbeddings(_ request: Request) async throws -> Response {
        let object = try await jsonObject(request)
        if case .string(let m)? = object["model"], m != models.textName {
            throw APIError(status: .notFound, type: "Validation", message: "model \(jsonString(m)) is not served here; this server serves \(jsonString(models.textName))")
        }
        let texts = try strings(object["input"], field: "input")
        var base64 = false
        switch object["encoding_format"] {
        case nil, .null?, .string("float")?: break
        case .string("base64")?: base64 = true
        case let v?: throw APIError.validation("\"encoding_format\" must be \"float\" or \"base64\", not \(v.jsonText)")
        }
        var v = try await textVectors(texts, normalize: try bool(object, "normalize", default: models.textNormalize),
                                      truncate: try bool(object, "truncate", default: config.autoTruncate), field: "input")
        switch object["dimensions"] {
        case nil, .null?: break
        case .integer(let d)? where d >= 1 && d <= Int64(v.dim):
            // The first d values, normalised again (as OpenAI's shortened embeddings are).
            let d = Int(d)
            var cut = [Float]()
            cut.reserveCapacity(texts.count * d)
            for r in 0..<texts.count { cut += v.rows[(r * v.dim)..<(r * v.dim + d)] }
            v = (normalized(cut, dim: d), d, v.tokens)
        case let d?: throw APIError.validation("\"dimensions\" must be a whole number from 1 to \(v.dim), not \(d.jsonText)")
        }
        var s = "{\"object\":\"list\",\"data\":["
        s.reserveCapacity(texts.count * v.dim * 12)
        for r in 0..<texts.count {
            if r > 0 { s += "," }
            s += "{\"object\":\"embedding\",\"index\":\(r),\"embedding\":"
            let row = v.rows[(r * v.dim)..<((r + 1) * v.dim)]
            s += base64 ? "\"" + base64Floats(row) + "\"" : vectorJSON(row)
            s += "}"
        }
        s += "],\"model\":\(jsonString(models.textName)),\"usage\":{\"prompt_tokens\":\(v.tokens),\"total_tokens\":\(v.tokens)}}"
        return json(s)
    }

    func openAIModels() throws -> Response {
        var data: [String] = []
        if case .success = models.text {
            data.append("{\"id\":\(jsonString(models.textName)),\"object\":\"model\",\"created\":0,\"owned_by\":\"vlm\"}")
        }
        return json("{\"object\":\"list\",\"data\":[" + data.joined(separator: ",") + "]}")
    }

    // MARK: Images

    func imageEncoder() throws -> (ImageRowEncoder, Lane<PreparedImages>) {
        switch models.image {
        case .success(let i): return (i, imageLane!)
        case .failure(let e): throw APIError(status: .serviceUnavailable, type: "Unhealthy", message: "no image model: \(e)")
        }
    }

    /// The images a request names: inline bytes (JSON base64 or multipart parts) or paths.
    func imageInputs(_ request: Request) async throws -> (inputs: [ImageInput], names: [String], normalize: Bool) {
        let type = request.headers[.contentType] ?? ""
        if type.lowercased().hasPrefix("multipart/form-data") {
            let buffer = try await body(request)
            let form = try MultipartForm.parse(buffer, contentType: type)
            try checkCount(form.files.count, field: "files")
            let normalize = try form.fields["normalize"].map { v -> Bool in
                guard let b = ["true": true, "false": false][v.lowercased()] else {
                    throw APIError.validation("form field \"normalize\" must be true or false, not \(jsonString(v))")
                }
                return b
            } ?? false
            return (form.files.map { .bytes($0.data) }, form.files.enumerated().map { "files[\($0)] (\(jsonString($1.name)))" }, normalize)
        }
        if !type.isEmpty && !type.lowercased().hasPrefix("application/json") {
            throw APIError(status: .unsupportedMediaType, type: "Validation",
                           message: "Content-Type \(jsonString(type)) is not served; send application/json or multipart/form-data")
        }
        let object = try await jsonObject(request)
        let normalize = try bool(object, "normalize", default: false)
        switch (object["inputs"], object["paths"]) {
        case (nil, nil): throw APIError.validation("give \"inputs\" (base64 images) or \"paths\" (files under the server's --root)")
        case (.some, .some): throw APIError.validation("give \"inputs\" or \"paths\", not both")
        case (let inputs?, nil):
            let list = try strings(inputs, field: "inputs")
            return (try list.enumerated().map { try .bytes(decodeBase64Image($1, name: "inputs[\($0)]")) }, list.indices.map { "inputs[\($0)]" }, normalize)
        case (nil, let paths?):
            let list = try strings(paths, field: "paths")
            return (try list.enumerated().map { try .file(RawPath(resolve($1, name: "paths[\($0)]")), walked: true) }, list.enumerated().map { "paths[\($0)] (\($1))" }, normalize)
        }
    }

    /// Base64 or a data: URL's base64.
    func decodeBase64Image(_ s: String, name: String) throws -> Data {
        var text = Substring(s)
        if text.hasPrefix("data:") {
            guard let comma = text.firstIndex(of: ","), text[..<comma].hasSuffix(";base64") else {
                throw APIError.validation("\(name): a data: URL must be base64 (data:image/…;base64,…)")
            }
            text = text[text.index(after: comma)...]
        }
        guard let data = Data(base64Encoded: String(text), options: .ignoreUnknownCharacters), !data.isEmpty else {
            throw APIError.validation("\(name) is not base64 image data")
        }
        return data
    }

    /// A path under --root: relative, no "..", and still under the root once links are resolved.
    func resolve(_ path: String, name: String) throws -> String {
        guard let root = config.root else {
            throw APIError(status: .forbidden, type: "Validation", message: "\(name): this server reads no files; start vlm serve with --root DIR to allow paths under DIR")
        }
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        if path.hasPrefix("/") || parts.contains("..") || parts.isEmpty || path.utf8.contains(0) {
            throw APIError(status: .forbidden, type: "Validation", message: "\(name): \(jsonString(path)) must be a relative path under the server's root, without ..")
        }
        let full = (root as NSString).appendingPathComponent(path)
        guard let real = realpath(full, nil) else {
            throw APIError(status: .notFound, type: "Validation", message: "\(name): \(jsonString(path)): no such file under the server's root")
        }
        defer { free(real) }
        let resolved = String(cString: real)
        guard resolved.hasPrefix(root.hasSuffix("/") ? root : root + "/") else {
            throw APIError(status: .forbidden, type: "Validation", message: "\(name): \(jsonString(path)) leads outside the server's root")
        }
        return resolved
    }

    /// Decodes and preprocesses off the async threads; the first failure refuses the request.
    func prepareImages(_ inputs: [ImageInput], names: [String], encoder: ImageRowEncoder) async throws -> PreparedImages {
        let items = zip(names, inputs).map { (id: Array($0.0.utf8), value: $0.1) }
        let prepared = await withCheckedContinuation { c in
            DispatchQueue.global().async { c.resume(returning: encoder.prepare(items)) }
        }
        if let k = prepared.failures.firstIndex(where: { $0 != nil }), let e = prepared.failures[k] {
            throw APIError(status: .unprocessableContent, type: "Validation", message: e.message + " (\(e.kind))")
        }
        return prepared
    }

    func embedImages(_ request: Request) async throws -> Response {
        let (encoder, lane) = try imageEncoder()
        let (inputs, names, normalize) = try await imageInputs(request)
        let prepared = try await prepareImages(inputs, names: names, encoder: encoder)
        let batch = try await batcher.submit(lane, prepared, items: inputs.count)
        let rows = try checked(batch, dim: encoder.dim, names: names)
        return json(vectorsJSON(normalize ? normalized(rows, dim: encoder.dim) : rows, dim: encoder.dim))
    }

    // MARK: Pairs

    func fuse(_ request: Request) async throws -> Response {
        let encoder: PairRowEncoder
        switch models.pair {
        case .success(let p): encoder = p
        case .failure(let e): throw APIError(status: .serviceUnavailable, type: "Unhealthy", message: "no image–text model: \(e)")
        }
        let object = try await jsonObject(request)
        guard case .array(let list)? = object["inputs"] else {
            throw APIError.validation("\"inputs\" must be a list of {\"image\": BASE64 or \"path\": PATH, \"text\": TEXT}")
        }
        try checkCount(list.count, field: "inputs")
        var items: [(id: [UInt8], value: (image: ImageInput, text: TextInput))] = []
        for (k, v) in list.enumerated() {
            let name = "inputs[\(k)]"
            guard let o = v.objectValue else { throw APIError.validation("\(name) must be an object, not \(v.typeName)") }
            guard case .string(let text)? = o["text"] else { throw APIError.validation("\(name).text must be a string") }
            let image: ImageInput
            switch (o["image"], o["path"]) {
            case (.string(let b)?, nil): image = .bytes(try decodeBase64Image(b, name: name + ".image"))
            case (nil, .string(let p)?): image = .file(RawPath(try resolve(p, name: name + ".path")), walked: true)
            default: throw APIError.validation("\(name) needs \"image\" (base64) or \"path\" (a string), one of them")
            }
            items.append((Array(name.utf8), (image, TextInput(text))))
        }
        let truncate = try bool(object, "truncate", default: config.autoTruncate)
        let normalize = try bool(object, "normalize", default: false)
        let pairs = items
        let prepared = await withCheckedContinuation { c in
            DispatchQueue.global().async { c.resume(returning: encoder.prepare(pairs)) }
        }
        if let e = prepared.0.failures.compactMap({ $0 }).first {
            throw APIError(status: .unprocessableContent, type: "Validation", message: e.message + " (\(e.kind))")
        }
        if !truncate, let k = prepared.1.firstIndex(where: \.truncated) {
            throw APIError.tooLarge("inputs[\(k)].text is over the model's \(encoder.texts.maxLength) tokens (send \"truncate\": true, or start vlm serve with --auto-truncate)")
        }
        let batch = try await batcher.submit(pairLane!, prepared, items: items.count, tokens: prepared.1.reduce(0) { $0 + $1.count })
        let rows = try checked(batch, dim: encoder.dim, names: items.map { String(decoding: $0.id, as: UTF8.self) })
        return json(vectorsJSON(normalize ? normalized(rows, dim: encoder.dim) : rows, dim: encoder.dim))
    }

    // MARK: Info

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
        out["root"] = config.root.map { .string($0) } ?? .null
        out["served_model_name"] = .string(models.textName)
        out["text_normalize_default"] = .bool(models.textNormalize)
        return json(JSONValue.object(out).jsonText)
    }

    // MARK: Rows

    /// The rows of a batch that must have no failures (inputs were checked before queueing; a
    /// row holding NaN or infinity is still refused unless --allow-nonfinite).
    func checked(_ batch: EncodedBatch, dim: Int, names: [String]) throws -> [Float] {
        let b = config.allowNonFinite ? batch : batch.rejectingNonFinite(dim: dim, ids: names.map { Array($0.utf8) })
        if let e = b.failures.compactMap({ $0 }).first {
            throw APIError(status: e.kind == "non_finite" ? .internalServerError : .unprocessableContent, type: "Backend", message: e.message)
        }
        return b.rows
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

func json(_ s: String, status: HTTPResponse.Status = .ok) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: s)))
}

func vectorJSON(_ row: ArraySlice<Float>) -> String {
    var s = "["
    var first = true
    for x in row {
        if !first { s += "," }
        first = false
        s += jsonNumber(x)
    }
    return s + "]"
}

/// [[float]]: one list per row.
func vectorsJSON(_ rows: [Float], dim: Int) -> String {
    var s = "["
    s.reserveCapacity(rows.count * 12 + 8)
    for r in 0..<(dim == 0 ? 0 : rows.count / dim) {
        if r > 0 { s += "," }
        s += vectorJSON(rows[(r * dim)..<((r + 1) * dim)])
    }
    return s + "]"
}

/// Little-endian float32 bytes in base64 (OpenAI's encoding_format "base64").
func base64Floats(_ row: ArraySlice<Float>) -> String {
    var bytes = [UInt8]()
    bytes.reserveCapacity(row.count * 4)
    for x in row { withUnsafeBytes(of: x.bitPattern.littleEndian) { bytes += $0 } }
    return Data(bytes).base64EncodedString()
}

/// A flag set once, read from any thread.
final class ManagedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

// MARK: - Multipart uploads

/// A multipart/form-data body: its file parts in order (every part with a filename, or a
/// non-text content type), and its plain fields.
struct MultipartForm {
    struct File { var name: String; var data: Data }
    var files: [File] = []
    var fields: [String: String] = [:]

    static func parse(_ body: ByteBuffer, contentType: String) throws -> MultipartForm {
        guard let boundary = Self.boundary(contentType) else {
            throw APIError.validation("a multipart/form-data body needs a boundary in its Content-Type", .badRequest)
        }
        let parser = MultipartParser(boundary: boundary)
        var form = MultipartForm()
        var headers: [(String, String)] = []
        var data = Data()
        var open = false
        parser.onHeader = { name, value in open = true; headers.append((name.lowercased(), value)) }
        parser.onBody = { buffer in open = true; data.append(contentsOf: buffer.readableBytesView) }
        parser.onPartComplete = {
            let disposition = headers.first { $0.0 == "content-disposition" }?.1 ?? ""
            let type = headers.first { $0.0 == "content-type" }?.1.lowercased() ?? ""
            let name = Self.parameter("name", in: disposition) ?? ""
            if let filename = Self.parameter("filename", in: disposition) {
                form.files.append(File(name: filename.isEmpty ? name : filename, data: data))
            } else if !type.isEmpty && !type.hasPrefix("text/") {
                form.files.append(File(name: name, data: data))
            } else {
                form.fields[name] = String(decoding: data, as: UTF8.self)
            }
            (headers, data, open) = ([], Data(), false)
        }
        do { try parser.execute(body) } catch {
            throw APIError.validation("the multipart body is malformed: \(error)", .badRequest)
        }
        if open { throw APIError.validation("the multipart body ends inside a part (no closing boundary)", .badRequest) }
        return form
    }

    static func boundary(_ contentType: String) -> String? {
        guard let b = parameter("boundary", in: contentType), !b.isEmpty, b.utf8.count <= 200 else { return nil }
        return b
    }

    /// `key=value` or `key="value"` in a header's parameters.
    static func parameter(_ key: String, in header: String) -> String? {
        for part in header.split(separator: ";").dropFirst() {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0].trimmingCharacters(in: .whitespaces).lowercased() == key else { continue }
            var v = kv[1].trimmingCharacters(in: .whitespaces)
            if v.count >= 2 && v.hasPrefix("\"") && v.hasSuffix("\"") { v = String(v.dropFirst().dropLast()) }
            return v
        }
        return nil
    }
}
