// `vlm models fetch` against a local HTTP server on 127.0.0.1 (python3 -m http.server), never
// the real hub: checksums verified, mismatches and HTTP errors place nothing.

import Foundation
import XCTest
import VLMIO

final class ModelsCLITests: XCTestCase {
    var dir: URL!
    var server: Process?

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-hub-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("hub/org/tiny/resolve/v1/sub"), withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        server?.terminate()
        server?.waitUntilExit()
        try? FileManager.default.removeItem(at: dir)
    }

    /// Serves dir/hub on a free port; returns the base URL.
    func startServer() throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "0", "--directory", dir.appendingPathComponent("hub").path]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        server = p
        var text = ""
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !text.contains("port ") {
            text += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        }
        guard let r = text.range(of: #"port (\d+)"#, options: .regularExpression) else { throw NSError(domain: "server", code: 1) }
        return "http://127.0.0.1:" + text[r].dropFirst(5)
    }

    func testFetchVerifiesChecksumsAndPlacesFilesAtomically() throws {
        let base = dir.appendingPathComponent("hub/org/tiny/resolve/v1")
        let weights = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try weights.write(to: base.appendingPathComponent("model.safetensors"))
        try Data("{\"a\": 1}".utf8).write(to: base.appendingPathComponent("sub/config.json"))
        func sha(_ d: Data) -> String { var h = SHA256(); h.update(d); return h.finalizeHex() }
        let registry: [String: Any] = ["models": [
            ["name": "tiny", "kind": "text", "repo": "org/tiny", "revision": "v1", "files": [
                ["path": "model.safetensors", "size": weights.count, "sha256": sha(weights)],
                ["path": "sub/config.json", "size": 8, "sha256": sha(Data("{\"a\": 1}".utf8))]]],
            ["name": "tampered", "kind": "text", "repo": "org/tiny", "revision": "v1", "files": [
                ["path": "model.safetensors", "size": weights.count, "sha256": String(repeating: "0", count: 64)]]],
            ["name": "missing", "kind": "image", "repo": "org/nothing", "revision": "v1", "files": [
                ["path": "model.safetensors", "size": NSNull(), "sha256": NSNull()]]],
        ]]
        let regPath = dir.appendingPathComponent("registry.json").path
        try JSONSerialization.data(withJSONObject: registry).write(to: URL(fileURLWithPath: regPath))
        let hub = try startServer()
        let models = dir.appendingPathComponent("models").path
        let env = ["VLM_HUB_URL": hub, "VLM_REGISTRY": regPath, "VLM_MODELS": models]

        let list = try runVLM(["models", "list"], env: env)
        XCTAssertEqual(list.status, 0, list.stderr)
        XCTAssertTrue(list.out.contains("tiny\ttext\torg/tiny@v1\tnot fetched"), list.out)

        let ok = try runVLM(["models", "fetch", "tiny"], env: env)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: models + "/tiny/model.safetensors")), weights)
        XCTAssertTrue(FileManager.default.fileExists(atPath: models + "/tiny/sub/config.json"))
        XCTAssertTrue(try runVLM(["models", "list"], env: env).out.contains("tiny\ttext\torg/tiny@v1\tpresent"))
        // Fetching again verifies what is there and downloads nothing.
        let again = try runVLM(["models", "fetch", "tiny"], env: env)
        XCTAssertTrue(again.stderr.contains("already present and verified"), again.stderr)

        let bad = try runVLM(["models", "fetch", "tampered"], env: env)
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("sha256 mismatch"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: models + "/tampered"), "nothing placed: no file, no temporary, no empty folder")

        let unpinned = try runVLM(["models", "fetch", "missing"], env: env)
        XCTAssertEqual(unpinned.status, 1)
        XCTAssertTrue(unpinned.stderr.contains("--allow-unpinned"), unpinned.stderr)
        let notFound = try runVLM(["models", "fetch", "missing", "--allow-unpinned"], env: env)
        XCTAssertEqual(notFound.status, 1)
        XCTAssertTrue(notFound.stderr.contains("HTTP 404"), notFound.stderr)
        XCTAssertEqual(try runVLM(["models", "fetch", "nope"], env: env).status, 1)
    }
}
