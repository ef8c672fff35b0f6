// The embedding service on its own: its description round-trips through JSON; it finishes
// every batch in one place (the model's normalisation, the NaN/∞ check, an allowed NaN kept);
// and it answers each item with its vector or an item error of the shared type.

import Foundation
import XCTest
import VLMCore
import VLMEmbed
import VLMIO
import VLMModels

final class EmbeddingServiceTests: XCTestCase {
    let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    var tinyBert: String { fixtures.appendingPathComponent("bert/tiny").path }
    var tinyResNet: String { fixtures.appendingPathComponent("resnet/bottleneck_f32").path }

    func testDescriptionRoundTripsThroughJSON() throws {
        var d = EmbeddingDescription()
        d.image.model = "/models/r50"
        (d.image.layer, d.image.pairLayer, d.image.crop, d.image.mean) = (.logits, .pooled, 160, [0.5, 0.25, 0.125])
        (d.text.model, d.text.pooling, d.text.normalize, d.text.maxLength) = ("/models/minilm", .cls, false, 64)
        (d.normalizeParts, d.pca, d.normalizeOutput, d.allowNonFinite) = (true, "/p/pca.safetensors", true, true)
        let data = try EmbeddingDescription.encoder.encode(d)
        XCTAssertEqual(try EmbeddingDescription.decoder.decode(EmbeddingDescription.self, from: data), d)
        guard case .object(let o) = d.json, case .object(let text)? = o["text"] else { return XCTFail("\(d.json)") }
        XCTAssertEqual(o["normalize_output"], .bool(true))
        XCTAssertEqual(text["max_length"], .integer(64))
        XCTAssertEqual(text["pooling"], .string("cls"))
        // Paths cut to their last component for clients.
        let shown = d.withoutFolders
        XCTAssertEqual([shown.image.model, shown.text.model, shown.pca], ["r50", "minilm", "pca.safetensors"])
        XCTAssertNotEqual(shown, d)
    }

    func testTextsAreNormalisedOnceAndEqualTheModel() throws {
        var d = EmbeddingDescription()
        d.text.model = tinyBert
        d.text.normalize = true
        let service = try EmbeddingService(d, backend: BLASBackend(), version: "test", quiet: true)
        try service.loadNamed()
        let texts = ["A cat sitting on a couch.", "", "naïve café 東京 🙂"]
        let answers = service.embed(texts.enumerated().map { (Array("t\($0.offset)".utf8), EmbedItem.text(TextInput($0.element))) })
        let direct = try service.textEncoder().embed(texts, normalize: true).vectors
        XCTAssertEqual(try service.dim(.text), 32)
        for (k, a) in answers.enumerated() {
            let v = try a.get()
            XCTAssertEqual(v, Array(direct.data[(k * 32)..<((k + 1) * 32)]), "text \(k): normalised once, as the model does it")
            XCTAssertEqual(v.reduce(0) { $0 + Double($1) * Double($1) }, 1, accuracy: 1e-5)
        }
        // Not normalised when the asker says so (a server request's "normalize": false).
        let raw = try service.finish(.text, try service.texts().rows([(Array("x".utf8), TextInput(texts[0]))]), ids: [Array("x".utf8)], normalize: false)
        XCTAssertEqual(raw.rows, try service.textEncoder().embed([texts[0]], normalize: false).vectors.data)
    }

    func testNonFiniteRowsBecomeItemErrorsUnlessAllowed() throws {
        var d = EmbeddingDescription()
        d.text.model = tinyBert
        d.text.normalize = false
        let ids = [Array("a".utf8), Array("b".utf8), Array("c".utf8)]
        var rows = [Float](repeating: 0.5, count: 3 * 32)
        rows[32 + 7] = .nan
        let failed = ItemError(id: ids[2], kind: "not_an_image", message: "c: not an image")
        let batch = EncodedBatch(rows: Array(rows[0..<64]), failures: [nil, nil, failed])
        let service = try EmbeddingService(d, backend: BLASBackend(), version: "test", quiet: true)
        let out = try service.finish(.text, batch, ids: ids)
        XCTAssertEqual(out.failures[0], nil)
        XCTAssertEqual(out.failures[1]?.kind, "non_finite")
        XCTAssertTrue(out.failures[1]?.message.hasPrefix("b: ") ?? false, "\(out.failures)")
        XCTAssertEqual(out.failures[2], failed)
        XCTAssertEqual(out.rows, Array(rows[0..<32]))
        d.allowNonFinite = true
        let allowed = try EmbeddingService(d, backend: BLASBackend(), version: "test", quiet: true).finish(.text, batch, ids: ids)
        XCTAssertEqual(allowed.failures, [nil, nil, failed])
        XCTAssertTrue(allowed.rows[32 + 7].isNaN)
    }

    func testEachItemGetsItsVectorOrItsError() throws {
        var d = EmbeddingDescription()
        d.image.model = tinyResNet
        d.text.model = fixtures.appendingPathComponent("no-such-model").path
        let service = try EmbeddingService(d, backend: BLASBackend(), version: "test", quiet: true)
        let image = fixtures.appendingPathComponent("generated/images/astronaut.jpg").path
        let answers = service.embed([
            (Array("img".utf8), .image(.file(RawPath(image), walked: false))),
            (Array("bytes".utf8), .image(.bytes(Data("not an image".utf8)))),
            (Array("txt".utf8), .text(TextInput("a text"))),
            (Array("pair".utf8), .pair(.file(RawPath(image), walked: false), TextInput("a text"))),
        ])
        XCTAssertEqual(try answers[0].get().count, 256)
        for (k, kind) in [(1, "not_an_image"), (2, "model"), (3, "model")] {
            guard case .failure(let e) = answers[k] else { return XCTFail("item \(k) gave a vector") }
            XCTAssertEqual(e.kind, kind, e.message)
            XCTAssertFalse(e.message.contains("\n"))
        }
        guard case .failure(let e) = answers[2] else { return }
        XCTAssertTrue(e.message.contains("no-such-model"), e.message)
    }
}
