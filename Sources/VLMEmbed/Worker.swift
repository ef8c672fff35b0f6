// The worker protocol: the contract between vlm and a distributed engine (Ray, Spark, Dask).
// Requests are JSON lines on stdin, responses JSON lines on stdout — exactly one per request,
// in request order. A window of requests (as many as are ready, up to a batch) is embedded
// with the same encoders the batch commands use, so a vector equals the CLI's.
//
//   {"id": "…", "image": "<path>"}                 image vector (embed-image)
//   {"id": "…", "image_bytes": "<base64>"}         the same from an encoded JPEG/PNG
//   {"id": "…", "text": "…"[, "pair": "…"]}        text vector (embed-text)
//   {"id": "…", "image": …, "text": "…"}           image ⧺ text (fuse; image_bytes works too)
//   {"info": true}                                 models, dimensions, options in force
// → {"id": …, "dim": D, "vector": "<base64 of D little-endian float32>"}   (or a JSON list)
// → {"id": …, "error": {"kind": "…", "message": "…"}}

import Foundation
import VLMCore
import VLMIO

/// One parsed request line.
public struct WorkerRequest {
    public enum Kind {
        case item(EmbedItem)
        case info
        /// A line that is not a request: answered with this error.
        case invalid(kind: String, message: String)
    }
    /// The request's id as given (any JSON value; null when there was none or the line was unreadable).
    public var id: JSONValue
    public var kind: Kind

    /// `number`: the 1-based line number, for messages.
    public static func parse(_ line: [UInt8], number: Int) -> WorkerRequest {
        func bad(_ id: JSONValue, _ message: String) -> WorkerRequest {
            WorkerRequest(id: id, kind: .invalid(kind: "bad_request", message: "request \(number): \(message)"))
        }
        guard let value = JSONValue.parse(Data(line)) else { return bad(.null, "not a JSON object") }
        guard let obj = value.objectValue else { return bad(.null, "not a JSON object (got \(value.typeName))") }
        let id = obj["id"] ?? .null
        if case .bool(true)? = obj["info"] { return WorkerRequest(id: id, kind: .info) }
        var image: ImageInput?
        switch (obj["image"], obj["image_bytes"]) {
        case (.string(let p)?, nil): image = .file(RawPath(p), walked: true)
        case (nil, .string(let b)?):
            guard let data = Data(base64Encoded: b, options: .ignoreUnknownCharacters) else {
                return bad(id, "\"image_bytes\" is not base64")
            }
            image = .bytes(data)
        case (nil, nil): image = nil
        case (.some, .some): return bad(id, "give \"image\" or \"image_bytes\", not both")
        default: return bad(id, "\"image\" must be a path (a string) and \"image_bytes\" base64 (a string)")
        }
        var text: TextInput?
        switch obj["text"] {
        case .string(let t)?:
            switch obj["pair"] {
            case nil, .null?: text = TextInput(t)
            case .string(let p)?:
                if image != nil { return bad(id, "\"pair\" (a second text segment) does not go with an image") }
                text = TextInput(t, pair: p)
            default: return bad(id, "\"pair\" must be a string")
            }
        case nil: text = nil
        default: return bad(id, "\"text\" must be a string")
        }
        switch (image, text) {
        case let (i?, t?): return WorkerRequest(id: id, kind: .item(.pair(i, t)))
        case let (i?, nil): return WorkerRequest(id: id, kind: .item(.image(i)))
        case let (nil, t?): return WorkerRequest(id: id, kind: .item(.text(t)))
        default: return bad(id, "no \"image\", \"image_bytes\" or \"text\" (or {\"info\": true})")
        }
    }

    /// The bytes errors name the item by: the id's text, or the request number.
    public func itemID(number: Int) -> [UInt8] {
        if case .string(let s) = id { return Array(s.utf8) }
        if case .null = id { return Array("request \(number)".utf8) }
        return Array(id.jsonText.utf8)
    }
}

/// Response lines.
public enum WorkerResponse {
    public enum VectorFormat: String, CaseIterable, Sendable { case base64, json }

    public static func vector(id: JSONValue, _ v: ArraySlice<Float>, format: VectorFormat) -> Data {
        var s = "{\"id\":" + id.jsonText + ",\"dim\":\(v.count),\"vector\":"
        switch format {
        case .base64: s += "\"" + VectorText.base64(v) + "\""
        case .json: VectorText.appendJSON(v, to: &s)
        }
        return Data((s + "}\n").utf8)
    }

    public static func error(id: JSONValue, kind: String, message: String) -> Data {
        struct E: Encodable { var kind: String; var message: String }
        struct R: Encodable { var id: JSONValue; var error: E }
        return JSONLines.encode(R(id: id, error: E(kind: kind, message: message)))
    }

    public static func info(id: JSONValue, _ info: [String: JSONValue]) -> Data {
        struct R: Encodable { var id: JSONValue; var info: [String: JSONValue] }
        return JSONLines.encode(R(id: id, info: info))
    }
}

extension EmbeddingService {
    /// The worker's responses to a window of requests, in request order (`firstNumber`: the
    /// first one's 1-based line number, naming requests without an id in errors).
    public func answer(_ requests: [WorkerRequest], firstNumber: Int, vectors: WorkerResponse.VectorFormat) -> Data {
        var out = [Data?](repeating: nil, count: requests.count)
        var items: [(id: [UInt8], item: EmbedItem)] = [], at: [Int] = []
        for (k, r) in requests.enumerated() {
            switch r.kind {
            case .item(let item):
                items.append((r.itemID(number: firstNumber + k), item))
                at.append(k)
            case .info:
                var info = self.info()
                info["vectors"] = .string(vectors.rawValue)
                out[k] = WorkerResponse.info(id: r.id, info)
            case .invalid(let kind, let message): out[k] = WorkerResponse.error(id: r.id, kind: kind, message: message)
            }
        }
        for (j, result) in embed(items).enumerated() {
            let k = at[j]
            switch result {
            case .success(let v): out[k] = WorkerResponse.vector(id: requests[k].id, v[...], format: vectors)
            case .failure(let e): out[k] = WorkerResponse.error(id: requests[k].id, kind: e.kind, message: e.message)
            }
        }
        var data = Data()
        for d in out { data.append(d!) }
        return data
    }
}

/// Where tests reach the worker's moments (set by the vlm-test-hooks binary, never by vlm itself).
public enum WorkerSeams {
    /// Called with each window of requests before it is answered.
    nonisolated(unsafe) public static var beforeAnswering: (([WorkerRequest]) -> Void)?
}

/// Lines of stdin read on their own thread, so the worker can take what is ready: the first
/// request waits, the rest of a window is whatever arrives within `linger`.
public final class RequestQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var lines: [[UInt8]] = []
    private var ended = false
    private var failure: Error?

    public init(_ file: InputFile) {
        let thread = Thread { [self] in
            var reader = LineReader(file, maxLineBytes: 1 << 30)
            while true {
                do {
                    guard let line = try reader.nextLine() else { break }
                    // Lines that arrived together are queued together, so a batch written at
                    // once is taken at once, whatever the scheduling.
                    var arrived = [line]
                    while reader.hasBufferedLine, let more = try reader.nextLine() { arrived.append(more) }
                    condition.lock(); lines += arrived; condition.signal(); condition.unlock()
                } catch {
                    condition.lock(); failure = error; condition.unlock()
                    break
                }
            }
            condition.lock(); ended = true; condition.broadcast(); condition.unlock()
        }
        thread.start()
    }

    /// Up to `max` lines: blocks for the first, then takes what arrives while lines keep coming
    /// within `linger` seconds of each other. Empty at the end of the input.
    public func take(max: Int, linger: Double) throws -> [[UInt8]] {
        condition.lock()
        defer { condition.unlock() }
        while lines.isEmpty && !ended { condition.wait() }
        while lines.count < max && !ended {
            let before = lines.count
            _ = condition.wait(until: Date().addingTimeInterval(linger))
            if lines.count == before { break }
        }
        if lines.isEmpty, let failure { throw failure }
        let n = Swift.min(max, lines.count)
        defer { lines.removeFirst(n) }
        return Array(lines.prefix(n))
    }
}
