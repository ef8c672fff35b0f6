// The server's application driven in-process by Hummingbird's testing support (no socket):
// its routes answer the embedding service's own vectors, and every error is JSON with the
// status that says whose fault it is, in the endpoint's style (text-embeddings-inference's or
// OpenAI's). The batcher runs as the application's service, as under `vlm serve`. The socket,
// its limits and the drain are tested from Python (test_serve*.py).

import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import XCTest
import VLMCore
import VLMEmbed
import VLMIO
import VLMModels
import VLMServe

final class ApplicationTests: XCTestCase {
    let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    var tinyBert: String { fixtures.appendingPathComponent("bert/tiny").path }
    var tinyResNet: String { fixtures.appendingPathComponent("resnet/bottleneck_f32").path }

    /// A server on the tiny BERT (normalised vectors) and, when `image`, the tiny ResNet; else
    /// the image model is missing and its endpoints answer 503.
    func server(image: Bool = false, configure: (inout ServeConfiguration) -> Void = { _ in }) throws -> (EmbeddingServer, EmbeddingService) {
        var d = EmbeddingDescription()
        d.text.model = tinyBert
        d.text.normalize = true
        d.image.model = image ? tinyResNet : fixtures.appendingPathComponent("no-such-model").path
        let service = try EmbeddingService(d, backend: BLASBackend(), version: "test", quiet: true)
        var config = ServeConfiguration()
        config.maxInputs = 4
        configure(&config)
        return (EmbeddingServer(config: config, models: ServeModels(service: service, textNames: ["tiny", "other-name"])), service)
    }

    static let jsonHeaders: HTTPFields = [.contentType: "application/json"]

    func object(_ r: TestResponse, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let o = try JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: Any]
        return try XCTUnwrap(o, String(buffer: r.body), file: file, line: line)
    }

    func testRoutesAnswerTheServicesVectors() async throws {
        let (server, service) = try server()
        let texts = ["A cat sitting on a couch.", "naïve café 東京 🙂"]
        let expected = try texts.map { t -> [Float] in try service.embed([(Array(t.utf8), EmbedItem.text(TextInput(t)))])[0].get() }
        // One request holds both texts in one forward pass, as the service's own call of both does.
        let together = try service.embed(texts.map { (Array($0.utf8), EmbedItem.text(TextInput($0))) }).map { try $0.get() }
        try await server.application().test(.router) { client in
            try await client.execute(uri: "/embed", method: .post, headers: Self.jsonHeaders,
                                     body: ByteBuffer(string: #"{"inputs": ["A cat sitting on a couch.", "naïve café 東京 🙂"]}"#)) { r in
                XCTAssertEqual(r.status, .ok)
                XCTAssertEqual(r.headers[.contentType], "application/json")
                let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [[Double]])
                XCTAssertEqual(rows.map { $0.map { Float($0) } }, together, "bit for bit: the same items in the same forward pass")
            }
            // OpenAI's endpoint takes any model name when one model serves texts, and reports a
            // served name: the one asked for, else the first.
            for (asked, reported) in [("text-embedding-3-small", "tiny"), ("other-name", "other-name")] {
                try await client.execute(uri: "/v1/embeddings", method: .post, headers: Self.jsonHeaders,
                                         body: ByteBuffer(string: #"{"input": "naïve café 東京 🙂", "model": "\#(asked)"}"#)) { r in
                    XCTAssertEqual(r.status, .ok)
                    let o = try self.object(r)
                    XCTAssertEqual(o["model"] as? String, reported)
                    let data = try XCTUnwrap(o["data"] as? [[String: Any]])
                    XCTAssertEqual((data[0]["embedding"] as? [Double])?.map { Float($0) }, expected[1])
                }
            }
            try await client.execute(uri: "/v1/models", method: .get) { r in
                let ids = (try self.object(r)["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
                XCTAssertEqual(ids, ["tiny", "other-name"])
            }
            try await client.execute(uri: "/health", method: .get) { r in
                XCTAssertEqual(r.status, .ok)
                XCTAssertEqual(try self.object(r)["status"] as? String, "ok")
            }
            try await client.execute(uri: "/info", method: .get) { r in
                let o = try self.object(r)
                XCTAssertEqual(o["served_model_names"] as? [String], ["tiny", "other-name"])
                let options = try XCTUnwrap(o["options"] as? [String: Any], "\(o)")
                XCTAssertEqual((options["text"] as? [String: Any])?["normalize"] as? Bool, true)
                XCTAssertNotNil(o["image_error"], "the missing image model is reported")
            }
        }
    }

    func testErrorsAreJSONWithTheStatusThatSaysWhoseFault() async throws {
        let (server, _) = try server()
        let long = Array(repeating: "word", count: 300).joined(separator: " ")
        // (method, path, content type, body) → status, TEI error_type, start of the message
        let cases: [(HTTPRequest.Method, String, String?, String, HTTPResponse.Status, String, String)] = [
            (.post, "/embed", "application/json", "{", .badRequest, "Validation", "the body is not JSON"),
            (.post, "/embed", "text/plain", #"{"inputs": "a"}"#, .unsupportedMediaType, "Validation", "Content-Type"),
            (.post, "/embed", "application/json", #"{"inputs": 5}"#, .unprocessableContent, "Validation", "inputs must be a string or a list of strings"),
            (.post, "/embed", "application/json", #"{"inputs": ["a", "b", "c", "d", "e"]}"#, .contentTooLarge, "Validation", "inputs holds 5 inputs, over the limit of 4 per request (--max-inputs)"),
            (.post, "/embed", "application/json", #"{"inputs": "\#(long)", "truncate": false}"#, .contentTooLarge, "Validation", "inputs[0]: 302 tokens, over the maximum length of 128, and truncation is off"),
            (.post, "/embed_image", "application/json", #"{"inputs": ["aGVsbG8="]}"#, .serviceUnavailable, "Unhealthy", "no image model is loaded here"),
            (.get, "/embed", nil, "", .methodNotAllowed, "Validation", "/embed takes POST, not GET"),
            (.get, "/no/such/thing", nil, "", .notFound, "Validation", "no such endpoint: /no/such/thing"),
        ]
        try await server.application().test(.router) { client in
            for (method, path, type, body, status, errorType, start) in cases {
                var headers: HTTPFields = [:]
                if let type { headers[.contentType] = type }
                try await client.execute(uri: path, method: method, headers: headers, body: method == .post ? ByteBuffer(string: body) : nil) { r in
                    let what = "\(method) \(path) \(body.prefix(40))"
                    XCTAssertEqual(r.status, status, what)
                    let o = try self.object(r)
                    XCTAssertEqual(o["error_type"] as? String, errorType, what)
                    let message = try XCTUnwrap(o["error"] as? String, what)
                    XCTAssertTrue(message.hasPrefix(start) && !message.isEmpty && !message.contains("\n"), "\(what): \(message)")
                    if status == .methodNotAllowed { XCTAssertEqual(r.headers[.allow], "POST") }
                }
            }
            // The same text truncated on request is answered.
            try await client.execute(uri: "/embed", method: .post, headers: Self.jsonHeaders,
                                     body: ByteBuffer(string: #"{"inputs": "\#(long)", "truncate": true}"#)) { r in
                XCTAssertEqual(r.status, .ok)
            }
            // OpenAI's endpoint answers in OpenAI's error shape.
            try await client.execute(uri: "/v1/embeddings", method: .post, headers: Self.jsonHeaders,
                                     body: ByteBuffer(string: #"{"input": 5, "model": "tiny"}"#)) { r in
                XCTAssertEqual(r.status, .unprocessableContent)
                let error = try XCTUnwrap(try self.object(r)["error"] as? [String: Any])
                XCTAssertEqual(error["type"] as? String, "invalid_request_error")
                XCTAssertFalse((error["message"] as? String ?? "").isEmpty)
            }
        }
    }

    func testAnUndecodableImageIsAnItemErrorWithItsKind() async throws {
        let (server, service) = try server(image: true)
        // The same error kind and message as the service gives every other front end.
        let direct = service.embed([(Array("0".utf8), EmbedItem.image(.bytes(Data("not an image".utf8))))])[0]
        guard case .failure(let e) = direct else { return XCTFail("decoded") }
        try await server.application().test(.router) { client in
            let b64 = Data("not an image".utf8).base64EncodedString()
            try await client.execute(uri: "/embed_image", method: .post, headers: Self.jsonHeaders,
                                     body: ByteBuffer(string: #"{"inputs": ["\#(b64)"]}"#)) { r in
                XCTAssertEqual(r.status, .unprocessableContent)
                let o = try self.object(r)
                XCTAssertEqual(o["error_kind"] as? String, e.kind)
                XCTAssertEqual(e.kind, "not_an_image")
            }
        }
    }

    /// One CLIP checkpoint serves texts and images on /v1/embeddings (images as infinity takes
    /// them: "modality": "image", data: URLs or paths under --root; http(s) URLs refused — vlm
    /// fetches nothing), each normalised by default, equal to the service's own vectors.
    func testCLIPServesTextsAndImagesInOneSpace() async throws {
        let clip = fixtures.appendingPathComponent("generated/clip-models")
        guard FileManager.default.fileExists(atPath: clip.appendingPathComponent("done").path) else { throw FixtureMissing(path: clip.path) }
        var d = EmbeddingDescription()
        d.text.model = clip.appendingPathComponent("hf-vit").path
        d.image.model = d.text.model
        let service = try EmbeddingService(d, backend: BLASBackend(), version: "test", quiet: true)
        var config = ServeConfiguration()
        config.root = clip.appendingPathComponent("images").path
        let server = EmbeddingServer(config: config, models: ServeModels(service: service, textNames: ["clip"]))
        let png = clip.appendingPathComponent("images/a-wide.png")
        // Two images in one forward pass, as the request below sends them (bit for bit).
        let images = try service.embed([(Array("a".utf8), .image(.file(RawPath(png.path), walked: false))),
                                        (Array("b".utf8), .image(.bytes(try Data(contentsOf: png))))]).map { try $0.get() }
        let image = images[0]
        let text = try service.embed([(Array("t".utf8), .text(TextInput("a photo of a cat")))])[0].get()
        XCTAssertEqual(image.reduce(0) { $0 + $1 * $1 }, 1, accuracy: 1e-5, "CLIP image vectors are unit vectors by default")
        let dataURL = "data:image/png;base64," + (try Data(contentsOf: png)).base64EncodedString()
        try await server.application().test(.router) { client in
            func embeddings(_ body: String) async throws -> (HTTPResponse.Status, [String: Any]) {
                try await client.execute(uri: "/v1/embeddings", method: .post, headers: Self.jsonHeaders, body: ByteBuffer(string: body)) { r in
                    (r.status, try self.object(r))
                }
            }
            func rows(_ o: [String: Any]) -> [[Float]] {
                (o["data"] as? [[String: Any]] ?? []).map { ($0["embedding"] as? [Double] ?? []).map { Float($0) } }
            }
            var (status, o) = try await embeddings(#"{"input": ["a-wide.png", "\#(dataURL)"], "modality": "image"}"#)
            XCTAssertEqual(status, .ok, "\(o)")
            XCTAssertEqual(rows(o), images)
            XCTAssertEqual(images[0], images[1])
            (status, o) = try await embeddings(#"{"input": "a photo of a cat"}"#)
            XCTAssertEqual(rows(o), [text])
            (status, o) = try await embeddings(#"{"input": "a photo of a cat", "modality": "text"}"#)
            XCTAssertEqual(rows(o), [text])
            (status, o) = try await embeddings(#"{"input": ["https://example.com/cat.jpg"], "modality": "image"}"#)
            XCTAssertEqual(status, .badRequest)
            XCTAssertTrue(((o["error"] as? [String: Any])?["message"] as? String ?? "").contains("vlm fetches nothing"), "\(o)")
            (status, o) = try await embeddings(#"{"input": ["../x.png"], "modality": "image"}"#)
            XCTAssertEqual(status, .forbidden)
            (status, o) = try await embeddings(#"{"input": ["x"], "modality": "video"}"#)
            XCTAssertEqual(status, .unprocessableContent)
            (status, o) = try await embeddings(#"{"input": ["a-wide.png"], "modality": "image", "truncate": false}"#)
            XCTAssertEqual(status, .unprocessableContent)
        }
    }
}

struct FixtureMissing: Error, CustomStringConvertible {
    let path: String
    var description: String { "fixture missing: \(path) (run `make fixtures`)" }
}
