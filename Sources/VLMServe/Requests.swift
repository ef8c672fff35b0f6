// The embedding endpoints' request handling: bodies read within their limits and deadline,
// decoded into typed requests (a field of the wrong type is a 422 naming it), then the CPU work —
// decoding JSON, tokenizing, decoding images, writing the answer — on a bounded pool of threads
// off the async ones, so a large body never stalls other connections and memory stays bounded
// by the pool's width, not by the number of clients.

import Foundation
import Hummingbird
import NIOCore
import VLMCore
import VLMIO
import VLMEmbed
import VLMModels
import VLMTokenizer

// MARK: - Typed requests

/// One string or a list of them (TEI's and OpenAI's `inputs` / `input`).
struct Strings: Decodable {
    var values: [String]
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let one = try? c.decode(String.self) { values = [one]; return }
        do { values = try c.decode([String].self) } catch DecodingError.typeMismatch(let t, let ctx) where ctx.codingPath.count > decoder.codingPath.count {
            throw DecodingError.typeMismatch(t, ctx)   // an element of the list: named by its index
        } catch {
            throw DecodingError.typeMismatch(Strings.self, .init(codingPath: decoder.codingPath, debugDescription: "a string or a list of strings"))
        }
    }
}

struct EmbedRequest: Decodable {
    var inputs: Strings
    var normalize: Bool?
    var truncate: Bool?
    var truncation_direction: String?
}

struct OpenAIRequest: Decodable {
    var input: Strings
    var model: String?
    var encoding_format: String?
    /// A number: whether it is a whole one in range is checked with the model's width.
    var dimensions: Double?
    var user: String?
    var normalize: Bool?
    var truncate: Bool?
    /// "text" (the default) or "image", as infinity takes CLIP images: data: URLs, or paths under --root.
    var modality: String?
}

struct ImageRequest: Decodable {
    var inputs: Strings?
    var paths: Strings?
    var normalize: Bool?
}

struct FuseRequest: Decodable {
    /// `image` is a path (under --root), as in `vlm fuse --pairs` and `vlm worker`; `image_bytes`
    /// base64 or a data: URL, as in the worker; `path` is an older name for `image`.
    struct Pair: Decodable {
        var image: String?
        var image_bytes: String?
        var path: String?
        var text: String
    }
    var inputs: [Pair]
    var normalize: Bool?
    var truncate: Bool?
}

/// A decoding error as one line naming the field: `inputs[2] must be a string`.
func describe(_ error: DecodingError) -> APIError {
    func path(_ keys: [CodingKey]) -> String {
        var s = ""
        for k in keys {
            if let i = k.intValue { s += "[\(i)]" } else { s += (s.isEmpty ? "" : ".") + k.stringValue }
        }
        return s
    }
    func name(_ t: Any.Type) -> String {
        switch t {
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        case is Int.Type: return "a whole number"
        case is Strings.Type: return "a string or a list of strings"
        case is [FuseRequest.Pair].Type: return "a list of {\"image\" | \"path\", \"text\"} objects"
        default:
            let n = String(describing: t)
            if n.hasPrefix("Array") { return "a list" }
            if n.hasPrefix("Dictionary") || n.hasSuffix("Request") || n == "Pair" { return "an object" }
            if n == "Double" || n == "Float" { return "a number" }
            return n
        }
    }
    switch error {
    case .typeMismatch(let t, let ctx):
        return .validation(ctx.codingPath.isEmpty ? "the body must be \(name(t))" : "\(path(ctx.codingPath)) must be \(name(t))")
    case .valueNotFound(let t, let ctx):
        return .validation(ctx.codingPath.isEmpty ? "the body must be \(name(t)), not null" : "\(path(ctx.codingPath)) must be \(name(t)), not null")
    case .keyNotFound(let k, let ctx):
        return .validation("\"\(path(ctx.codingPath + [k]))\" is missing")
    case .dataCorrupted(let ctx):
        if ctx.codingPath.isEmpty {
            let reason = (ctx.underlyingError.map { "\($0)" } ?? ctx.debugDescription).prefix(200)
            return .validation("the body is not JSON (\(reason))", .badRequest)
        }
        return .validation("\(path(ctx.codingPath)): \(ctx.debugDescription)")
    @unknown default:
        return .validation("the body does not decode: \(error)")
    }
}

// MARK: - Bounds

/// Bytes held across requests at most.
final class ByteBudget: @unchecked Sendable {
    private let lock = NSLock()
    private var used = 0
    let limit: Int
    /// Told the bytes held after each change, under the lock (so in order): /metrics' gauge.
    private let changed: @Sendable (Int) -> Void
    init(limit: Int, changed: @escaping @Sendable (Int) -> Void = { _ in }) { (self.limit, self.changed) = (limit, changed) }

    /// Takes `n` bytes if they fit.
    func take(_ n: Int) -> Bool {
        lock.lock(); defer { lock.unlock() }
        if used + n > limit { return false }
        used += n
        changed(used)
        return true
    }

    func give(_ n: Int) {
        lock.lock(); used -= n; changed(used); lock.unlock()
    }
}

/// Runs CPU work on at most `width` threads at a time, outside Swift's async threads. Work not
/// started when its task is cancelled never runs (the task gets CancellationError at once).
final class WorkPool: @unchecked Sendable {
    private let queue = OperationQueue()
    /// --request-timeout: a request whose turn comes after it is answered, not worked on.
    private let timeout: Double
    /// True once the server's drain was cut short: work not begun is answered `stopping` at once.
    private let stopping: @Sendable () -> Bool
    init(width: Int, timeout: Double = .infinity, stopping: @escaping @Sendable () -> Bool = { false }) {
        queue.maxConcurrentOperationCount = max(1, width)
        queue.qualityOfService = .userInitiated
        self.timeout = timeout
        self.stopping = stopping
    }

    func run<T>(_ work: @escaping () throws -> T) async throws -> T {
        let once = Once<T>()
        // Only work before the request is queued counts against its deadline (not its answer's
        // writing, after the forward pass).
        let arrival: Batcher.Arrival? = Batcher.current
        let since: Double? = arrival.flatMap { $0.isArriving ? $0.since : nil }
        return try await withTaskCancellationHandler(operation: { () async throws -> T in
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) -> Void in
                guard once.install(c) else { return }
                queue.addOperation { [timeout, stopping] () -> Void in
                    guard once.begin() else { return }
                    if stopping() { return once.resume(.failure(BatchRefusal.stopping)) }
                    // The deadline covers the wait for the pool too (behind a long tokenization).
                    if let since, arrival?.isArriving == true, Batcher.now() - since > timeout {
                        return once.resume(.failure(BatchRefusal.deadline(seconds: Batcher.now() - since)))
                    }
                    // On the engine's threads: this one waits, inside the one thread budget.
                    let result: Result<T, Error> = Result { try Threads.run(work) }
                    once.resume(result)
                }
            }
        }, onCancel: { () -> Void in
            once.cancel()
        })
    }
}

/// A continuation resumed exactly once: by the work's result, or by a cancellation that came
/// before the work began.
final class Once<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, Error>?
    private var cancelled = false
    private var begun = false

    /// Holds `c`; false (and `c` resumed with CancellationError) when cancelled already.
    func install(_ c: CheckedContinuation<T, Error>) -> Bool {
        lock.lock()
        if cancelled {
            lock.unlock()
            c.resume(throwing: CancellationError())
            return false
        }
        continuation = c
        lock.unlock()
        return true
    }

    /// The work starts unless cancelled first.
    func begin() -> Bool {
        lock.lock(); defer { lock.unlock() }
        if cancelled { return false }
        begun = true
        return true
    }

    func resume(_ result: Result<T, Error>) {
        lock.lock()
        let c: CheckedContinuation<T, Error>? = continuation
        continuation = nil
        lock.unlock()
        c?.resume(with: result)
    }

    /// Before the work begins: resumes with CancellationError. After: the work's result stands.
    func cancel() {
        lock.lock()
        if begun { lock.unlock(); return }
        cancelled = true
        let c: CheckedContinuation<T, Error>? = continuation
        continuation = nil
        lock.unlock()
        c?.resume(throwing: CancellationError())
    }
}

// MARK: - Handlers

extension EmbeddingServer {
    /// The request body, at most --max-body-bytes, read within --read-timeout, its bytes counted
    /// against --max-buffered-bytes while the request lives.
    func body(_ request: Request, json: Bool = true) async throws -> ByteBuffer {
        if json { try requireJSON(request) }
        if let text = request.headers[.contentLength], let length = Int(text), length > config.maxBodyBytes {
            throw APIError.tooLarge("the request body is \(length) bytes, over the limit of \(config.maxBodyBytes) (--max-body-bytes)")
        }
        let arrival: Batcher.Arrival? = Batcher.current
        let limit: Int = config.maxBodyBytes
        let seconds: Double = config.readTimeout
        let budget: ByteBudget = bodyBudget
        let source: RequestBody = request.body
        do {
            let buffer: ByteBuffer = try await withThrowingTaskGroup(of: ByteBuffer?.self) { (group: inout ThrowingTaskGroup<ByteBuffer?, Error>) -> ByteBuffer in
                group.addTask { () async throws -> ByteBuffer? in
                    try await Self.collect(source, limit: limit, budget: budget, arrival: arrival)
                }
                group.addTask { () async throws -> ByteBuffer? in
                    try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let buffer = first else {
                    throw APIError(status: .requestTimeout, type: "Validation",
                                   message: String(format: "the request body did not arrive within %g s (--read-timeout)", seconds))
                }
                return buffer
            }
            // Cancelled, the connection's input is closed and the body may have ended early.
            try Task.checkCancellation()
            if let arrival { batcher.bodyArrived(arrival) }
            return buffer
        } catch let e as APIError {
            throw e
        } catch is CancellationError {
            throw CancellationError()
        } catch where Task.isCancelled {
            // The drain was cut short while the body arrived: the connection's input was closed.
            throw CancellationError()
        } catch {
            // A bad chunked encoding, a client gone mid-body: the request, not the server.
            throw APIError.validation("the request body could not be read: \(error)", .badRequest)
        }
    }

    /// Reads a body chunk by chunk within the byte limits.
    static func collect(_ body: RequestBody, limit: Int, budget: ByteBudget, arrival: Batcher.Arrival?) async throws -> ByteBuffer {
        var buffer = ByteBuffer()
        for try await chunk in body {
            let n: Int = chunk.readableBytes
            if buffer.readableBytes + n > limit {
                throw APIError.tooLarge("the request body is over the limit of \(limit) bytes (--max-body-bytes)")
            }
            if let arrival {
                guard budget.take(n) else {
                    throw APIError(status: .tooManyRequests, type: "Overloaded",
                                   message: "this body would take the request bodies held at once past \(budget.limit) bytes (--max-buffered-bytes); retry later", closes: true)
                }
                arrival.heldBytes += n
            }
            if buffer.readableBytes == 0 {
                buffer = chunk
            } else {
                var part: ByteBuffer = chunk
                buffer.writeBuffer(&part)
            }
        }
        return buffer
    }

    /// JSON endpoints take application/json (or any +json type), or no Content-Type at all.
    func requireJSON(_ request: Request) throws {
        guard let type = request.headers[.contentType] else { return }
        let media = type.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        if media == "application/json" || media.hasSuffix("+json") { return }
        throw APIError(status: .unsupportedMediaType, type: "Validation",
                       message: "Content-Type \(jsonString(type)) is not JSON; send Content-Type: application/json")
    }

    func decode<T: Decodable>(_ type: T.Type, _ buffer: ByteBuffer) throws -> T {
        do {
            // A request of --max-inputs inputs needs a few values each (a pair is an object of
            // three); the rest is slack for options.
            let maxValues: Int = 16 * config.maxInputs + 4096
            try buffer.withUnsafeReadableBytes { (bytes: UnsafeRawBufferPointer) throws -> Void in try StrictJSON.check(bytes, maxValues: maxValues) }
        } catch let e as JSONSyntaxError {
            throw APIError.validation("the body is not JSON (at byte \(e.offset): \(e.reason))", .badRequest)
        }
        do { return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView)) } catch let e as DecodingError {
            if case .dataCorrupted(let ctx) = e, ctx.codingPath.isEmpty {
                // The grammar was checked: what JSONDecoder cannot read now is a number.
                throw APIError.validation("a number in the body is beyond what a field takes (a whole number past 64 bits, or past float64's range)")
            }
            throw describe(e)
        }
    }

    func checkCount(_ n: Int, field: String) throws {
        if n == 0 { throw APIError.validation("\(field) is empty") }
        if n > config.maxInputs {
            throw APIError.tooLarge("\(field) holds \(n) inputs, over the limit of \(config.maxInputs) per request (--max-inputs)")
        }
    }

    // MARK: Texts

    func textEncoder() throws -> (TextRowEncoder, Lane<PreparedTexts>) {
        switch models.text {
        case .success(let t): return (t, textLane!)
        case .failure: throw APIError(status: .serviceUnavailable, type: "Unhealthy", message: "no text model is loaded here (its load error is in the server's log; start vlm serve with --text-model DIR)")
        }
    }

    /// Tokenized texts: over-long ones are cut when `truncate`, else the request is refused
    /// (413) with the item error every front end gives such a text (kind too_long).
    func tokenize(_ texts: [String], encoder: TextRowEncoder, truncate: Bool, field: String) throws -> PreparedTexts {
        try checkCount(texts.count, field: field)
        let prepared = encoder.prepare(texts.map { (id: [], value: TextInput($0)) }, truncate: true)
        if !truncate, let k = prepared.encodings.firstIndex(where: \.truncated) {
            throw tooLong(encoder.tooLong(TextInput(texts[k]), id: Array("\(field)[\(k)]".utf8)))
        }
        return prepared
    }

    /// A text over the maximum length, truncation off: the request is over a limit.
    func tooLong(_ e: ItemError) -> APIError {
        APIError(status: .contentTooLarge, type: "Validation", message: e.message, kind: e.kind)
    }

    /// Vectors of tokenized texts from the batcher, each normalised when `normalize` (before any
    /// projection), and their width.
    func textRows(_ texts: PreparedTexts, normalize: Bool, field: String) async throws -> (rows: [Float], dim: Int) {
        let (_, lane) = try textEncoder()
        let batch = try await batcher.submit(lane, texts, items: texts.failures.count, tokens: texts.tokens)
        return try await finished(.text, batch, names: texts.failures.indices.map { "\(field)[\($0)]" }, normalize: normalize)
    }

    func embedTexts(_ request: Request) async throws -> Response {
        let (encoder, _) = try textEncoder()
        let buffer = try await body(request)
        let (encodings, normalize) = try await pool.run { [self] in
            let r = try decode(EmbedRequest.self, buffer)
            if let d = r.truncation_direction, d.lowercased() != "right" {
                throw APIError.validation("truncation_direction \(jsonString(d)) is not supported; texts are cut on the right")
            }
            return (try tokenize(r.inputs.values, encoder: encoder, truncate: r.truncate ?? config.autoTruncate, field: "inputs"),
                    r.normalize ?? models.textNormalize)
        }
        let (rows, dim) = try await textRows(encodings, normalize: normalize, field: "inputs")
        return try await pool.run { json(VectorText.jsonRows(rows, dim: dim)) }
    }

    func openAIEmbeddings(_ request: Request) async throws -> Response {
        let buffer = try await body(request)
        struct Modality: Decodable { var modality: String? }
        // Parsed on the work threads, as every body is (the full decode, with its errors, follows).
        let modality = try await pool.run { (try? JSONDecoder().decode(Modality.self, from: Data(buffer.readableBytesView)))?.modality }
        switch modality {
        case nil, "text": return try await openAITexts(buffer)
        case "image": return try await openAIImages(buffer)
        case let m?: throw APIError.validation("modality must be \"text\" or \"image\", not \(jsonString(m))")
        }
    }

    func openAITexts(_ buffer: ByteBuffer) async throws -> Response {
        let (encoder, _) = try textEncoder()
        let (r, encodings) = try await pool.run { [self] in
            let r = try decode(OpenAIRequest.self, buffer)
            try checkOpenAI(r, width: models.dims[.text] ?? encoder.dim)
            return (r, try tokenize(r.input.values, encoder: encoder, truncate: r.truncate ?? config.autoTruncate, field: "input"))
        }
        let normalize = r.normalize ?? models.textNormalize
        let (rows, dim) = try await textRows(encodings, normalize: normalize, field: "input")
        let name = r.model.flatMap { models.textNames.contains($0) ? $0 : nil } ?? models.textName
        return try await openAIAnswer(r, name: name, rows: rows, dim: dim, count: encodings.failures.count, unit: unitVectors(.text, normalize: normalize),
                                      tokens: encodings.tokens)
    }

    /// Images as infinity takes them on /v1/embeddings ("modality": "image"): each input a data:
    /// URL or, under --root, a path. vlm fetches nothing: an http(s) URL is a 400.
    func openAIImages(_ buffer: ByteBuffer) async throws -> Response {
        let (encoder, lane) = try imageEncoder()
        let (r, prepared, names) = try await pool.run { [self] in
            let r = try decode(OpenAIRequest.self, buffer)
            if r.truncate != nil { throw APIError.validation("truncate applies to texts, not to images") }
            try checkOpenAI(r, width: models.dims[.image] ?? encoder.dim)
            try checkCount(r.input.values.count, field: "input")
            let inputs: [(name: String, input: ImageInput, path: String?)] = try r.input.values.enumerated().map { k, s in
                let lower = s.prefix(8).lowercased()
                if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
                    throw APIError.validation("input[\(k)]: vlm fetches nothing; send the image as a data: URL (data:image/jpeg;base64,…) or, with --root, a path under it",
                                              .badRequest)
                }
                if lower.hasPrefix("data:") { return ("input[\(k)]", .bytes(try decodeBase64Image(s, name: "input[\(k)]")), nil) }
                // Named by its first 100 characters: an answer does not echo a whole body.
                let shown = s.count > 100 ? String(s.prefix(100)) + "…" : s
                let name = "input[\(k)] (\(jsonString(shown)))"
                let full = try resolve(s, name: name)
                return (name, .file(RawPath(full), walked: true), full)
            }
            let prepared = encoder.prepare(inputs.map { (id: Array($0.name.utf8), value: $0.input) })
            try refuseFailures(prepared.failures, inputs.map { ($0.name, $0.path) })
            return (r, prepared, inputs.map(\.name))
        }
        let normalize = r.normalize ?? models.imageNormalize
        let batch = try await batcher.submit(lane, prepared, items: names.count)
        let (rows, dim) = try await finished(.image, batch, names: names, normalize: normalize)
        let name = r.model.flatMap { models.imageNames.contains($0) ? $0 : nil } ?? models.imageName
        return try await openAIAnswer(r, name: name, rows: rows, dim: dim, count: names.count, unit: unitVectors(.image, normalize: normalize), tokens: 0)
    }

    /// encoding_format and dimensions, checked against the vectors' width.
    func checkOpenAI(_ r: OpenAIRequest, width: Int) throws {
        // One model serves each modality here: any `model` a client sends picks it (clients such as
        // LangChain send names like "text-embedding-3-small"), as text-embeddings-inference
        // and llama-server do. A name would be refused only where it picks between models.
        switch r.encoding_format {
        case nil, "float", "base64": break
        case let f?: throw APIError.validation("encoding_format must be \"float\" or \"base64\", not \(jsonString(f))")
        }
        if let d = r.dimensions, !(d >= 1 && d <= Double(width) && d == d.rounded()) {
            let shown: String = d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)"
            throw APIError.validation("dimensions must be a whole number from 1 to \(width), not \(shown)")
        }
    }

    /// OpenAI's answer: the rows (cut to `dimensions` when asked), as floats or base64.
    /// `name`: the model the answer reports.
    func openAIAnswer(_ r: OpenAIRequest, name: String, rows: [Float], dim: Int, count: Int, unit: Bool, tokens: Int) async throws -> Response {
        return try await pool.run {
            var (rows, dim) = (rows, dim)
            if let d = r.dimensions.map({ (x: Double) -> Int in Int(x) }), d < dim {
                // The first d values (normalised again when the vectors were unit vectors, as
                // OpenAI's shortened embeddings are: after --pca, only --normalize-output makes them so).
                var cut = [Float]()
                cut.reserveCapacity(count * d)
                for k in 0..<count { cut += rows[(k * dim)..<(k * dim + d)] }
                rows = unit ? normalized(cut, dim: d) : cut
                dim = d
            }
            let base64 = r.encoding_format == "base64"
            var s = "{\"object\":\"list\",\"data\":["
            s.reserveCapacity(count * dim * 12)
            for k in 0..<count {
                if k > 0 { s += "," }
                s += "{\"object\":\"embedding\",\"index\":\(k),\"embedding\":"
                let row = rows[(k * dim)..<((k + 1) * dim)]
                if base64 { s += "\"" + VectorText.base64(row) + "\"" } else { VectorText.appendJSON(row, to: &s) }
                s += "}"
            }
            s += "],\"model\":\(jsonString(name)),\"usage\":{\"prompt_tokens\":\(tokens),\"total_tokens\":\(tokens)}}"
            return json(s)
        }
    }

    // MARK: Images

    func imageEncoder() throws -> (ImageRowEncoder, Lane<PreparedImages>) {
        switch models.image {
        case .success(let i): return (i, imageLane!)
        case .failure: throw APIError(status: .serviceUnavailable, type: "Unhealthy", message: "no image model is loaded here (its load error is in the server's log; start vlm serve with --image-model PATH)")
        }
    }

    /// The images a request names — inline bytes (JSON base64 or multipart parts) or paths —
    /// decoded and preprocessed; the first that fails refuses the request.
    func preparedImages(_ request: Request, encoder: ImageRowEncoder) async throws -> (PreparedImages, names: [String], normalize: Bool) {
        let type = request.headers[.contentType] ?? ""
        let multipart = type.lowercased().hasPrefix("multipart/form-data")
        if !multipart && !type.isEmpty { try requireJSON(request) }
        let buffer = try await body(request, json: false)
        return try await pool.run { [self] in
            var inputs: [(name: String, input: ImageInput, path: String?)] = []
            var normalize = models.imageNormalize
            if multipart {
                let form = try MultipartForm.parse(buffer, contentType: type)
                if form.files.isEmpty {
                    let names = form.fields.keys.filter { $0 != "normalize" }.sorted().prefix(5).map { jsonString($0) }
                    throw APIError.validation("the multipart body holds no image part" + (names.isEmpty ? "" : " (the text fields \(names.joined(separator: ", ")) are not images)")
                                              + "; send each image as a part named \"files\" (curl -F files=@cat.jpg)")
                }
                try checkCount(form.files.count, field: "files")
                if let v = form.fields["normalize"] {
                    guard let b = ["true": true, "false": false][v.lowercased()] else {
                        throw APIError.validation("form field \"normalize\" must be true or false, not \(jsonString(v))")
                    }
                    normalize = b
                }
                inputs = form.files.enumerated().map { ("files[\($0)] (\(jsonString($1.name)))", .bytes($1.data), nil) }
            } else {
                let r = try decode(ImageRequest.self, buffer)
                normalize = r.normalize ?? models.imageNormalize
                switch (r.inputs, r.paths) {
                case (nil, nil): throw APIError.validation("give \"inputs\" (base64 images) or \"paths\" (files under the server's --root)")
                case (.some, .some): throw APIError.validation("give \"inputs\" or \"paths\", not both")
                case (let list?, nil):
                    try checkCount(list.values.count, field: "inputs")
                    inputs = try list.values.enumerated().map { k, s in ("inputs[\(k)]", .bytes(try decodeBase64Image(s, name: "inputs[\(k)]")), nil) }
                case (nil, let list?):
                    try checkCount(list.values.count, field: "paths")
                    inputs = try list.values.enumerated().map { k, p in
                        let name = "paths[\(k)] (\(jsonString(p)))"
                        let full = try resolve(p, name: name)
                        return (name, .file(RawPath(full), walked: true), full)
                    }
                }
            }
            let prepared = encoder.prepare(inputs.map { (id: Array($0.name.utf8), value: $0.input) })
            try refuseFailures(prepared.failures, inputs.map { ($0.name, $0.path) })
            return (prepared, inputs.map(\.name), normalize)
        }
    }

    /// The first item that failed, as a 422 naming it by its field (not by the server's path).
    func refuseFailures(_ failures: [ItemError?], _ names: [(name: String, path: String?)]) throws {
        guard let k = failures.firstIndex(where: { $0 != nil }), let e = failures[k] else { return }
        var message = e.message
        if let path = names[k].path { message = message.replacingOccurrences(of: path, with: names[k].name) }
        if !message.hasPrefix(names[k].name) { message = names[k].name + ": " + message }
        throw APIError(status: .unprocessableContent, type: "Validation", message: message, kind: e.kind)
    }

    /// Standard or URL-safe base64, whitespace and missing padding allowed, or a data: URL's base64.
    func decodeBase64Image(_ s: String, name: String) throws -> Data {
        var text = Substring(s)
        if text.prefix(5).lowercased() == "data:" {
            guard let comma = text.firstIndex(of: ","), text[..<comma].lowercased().hasSuffix(";base64") else {
                throw APIError.validation("\(name): a data: URL must be base64 (data:image/…;base64,…)")
            }
            text = text[text.index(after: comma)...]
        }
        var chars = [UInt8]()
        chars.reserveCapacity(text.utf8.count)
        for c in text.utf8 {
            switch c {
            case 0x20, 0x09, 0x0A, 0x0D: continue
            case UInt8(ascii: "-"): chars.append(UInt8(ascii: "+"))
            case UInt8(ascii: "_"): chars.append(UInt8(ascii: "/"))
            default: chars.append(c)
            }
        }
        while chars.count % 4 != 0 { chars.append(UInt8(ascii: "=")) }
        guard let data = Data(base64Encoded: Data(chars)), !data.isEmpty else {
            throw APIError.validation("\(name) is not base64 image data")
        }
        return data
    }

    /// A path under --root: relative, no "..", and still under the root once links are resolved.
    /// A path that does not exist is 404 only when its deepest existing folder is under the root
    /// (else 403), so answers tell nothing of files outside it.
    func resolve(_ path: String, name: String) throws -> String {
        guard let root = config.root else {
            throw APIError(status: .forbidden, type: "Validation", message: "\(name): this server reads no files; start vlm serve with --root DIR to allow paths under DIR")
        }
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        if path.hasPrefix("/") || parts.contains("..") || parts.isEmpty || path.utf8.contains(0) {
            throw APIError(status: .forbidden, type: "Validation", message: "\(name) must be a relative path under the server's root, without ..")
        }
        func real(_ p: String) -> String? {
            guard let r = realpath(p, nil) else { return nil }
            defer { free(r) }
            return String(cString: r)
        }
        func inside(_ p: String) -> Bool { p == root || p.hasPrefix(root.hasSuffix("/") ? root : root + "/") }
        func isEntry(_ p: String) -> Bool { var st = stat(); return lstat(p, &st) == 0 }
        let full = (root as NSString).appendingPathComponent(path)
        guard let resolved = real(full) else {
            // A link that leads nowhere answers as one leading outside (403) wherever it points,
            // so no answer tells whether a file outside the root exists.
            if isEntry(full) { throw APIError(status: .forbidden, type: "Validation", message: "\(name) leads outside the server's root") }
            var folder = parentPath(full)
            while real(folder) == nil && folder.count > root.count {
                if isEntry(folder) { throw APIError(status: .forbidden, type: "Validation", message: "\(name) leads outside the server's root") }
                folder = parentPath(folder)
            }
            if let f = real(folder), inside(f) {
                throw APIError(status: .notFound, type: "Validation", message: "\(name): no such file under the server's root")
            }
            throw APIError(status: .forbidden, type: "Validation", message: "\(name) leads outside the server's root")
        }
        guard inside(resolved) else {
            throw APIError(status: .forbidden, type: "Validation", message: "\(name) leads outside the server's root")
        }
        // A file is held in memory as an uploaded body is: over --max-body-bytes is refused
        // before it is read (the reader checks again on the descriptor it opens).
        if let st = FileStatus.of(resolved), st.kind == .regular, st.size > UInt64(config.maxBodyBytes) {
            throw APIError.tooLarge("\(name) is \(st.size) bytes, over the server's --max-body-bytes \(config.maxBodyBytes)")
        }
        return resolved
    }

    func embedImages(_ request: Request) async throws -> Response {
        let (encoder, lane) = try imageEncoder()
        let (prepared, names, normalize) = try await preparedImages(request, encoder: encoder)
        let batch = try await batcher.submit(lane, prepared, items: names.count)
        let (rows, dim) = try await finished(.image, batch, names: names, normalize: normalize)
        return try await pool.run { json(VectorText.jsonRows(rows, dim: dim)) }
    }

    // MARK: Pairs

    func fuse(_ request: Request) async throws -> Response {
        let encoder: PairRowEncoder
        switch models.pair {
        case .success(let p): encoder = p
        case .failure: throw APIError(status: .serviceUnavailable, type: "Unhealthy", message: "no image–text model is loaded here (both --image-model and --text-model must load)")
        }
        let buffer = try await body(request)
        let (prepared, names, normalize) = try await pool.run { [self] in
            let r = try decode(FuseRequest.self, buffer)
            try checkCount(r.inputs.count, field: "inputs")
            var items: [(id: [UInt8], value: (image: ImageInput, text: TextInput))] = []
            var names: [(name: String, path: String?)] = []
            for (k, p) in r.inputs.enumerated() {
                let name = "inputs[\(k)]"
                let given = [p.image, p.image_bytes, p.path].compactMap { $0 }.count
                guard given == 1 else {
                    throw APIError.validation("\(name) needs one of \"image\" (a path under the server's --root) and \"image_bytes\" (base64 or a data: URL)")
                }
                if let b = p.image_bytes {
                    items.append((Array(name.utf8), (.bytes(try decodeBase64Image(b, name: name + ".image_bytes")), TextInput(p.text))))
                    names.append((name, nil))
                } else if let path = p.image ?? p.path {
                    let key = p.image != nil ? "image" : "path"
                    if path.hasPrefix("data:") || (path.utf8.count > 512 && !path.contains(".")) {
                        throw APIError.validation("\(name).\(key) is a path under the server's --root; send image data (base64 or a data: URL) as \"image_bytes\"")
                    }
                    let n = "\(name).\(key) (\(jsonString(path)))"
                    let full = try resolve(path, name: n)
                    items.append((Array(n.utf8), (.file(RawPath(full), walked: true), TextInput(p.text))))
                    names.append((n, full))
                }
            }
            let prepared = encoder.prepare(items, truncate: true)
            try refuseFailures(prepared.0.failures, names)
            if !(r.truncate ?? config.autoTruncate), let k = prepared.1.encodings.firstIndex(where: \.truncated) {
                // The k-th text tokenized is the k-th pair's: every image decoded (else refused above).
                throw tooLong(encoder.texts.tooLong(items[k].value.text, id: Array("inputs[\(k)].text".utf8)))
            }
            return (prepared, names.map(\.name), r.normalize ?? false)
        }
        let batch = try await batcher.submit(pairLane!, prepared, items: names.count, tokens: prepared.1.tokens)
        let (rows, dim) = try await finished(.pair, batch, names: names, normalize: normalize)
        return try await pool.run { json(VectorText.jsonRows(rows, dim: dim)) }
    }
}
