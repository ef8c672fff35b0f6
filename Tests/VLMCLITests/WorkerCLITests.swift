// `vlm worker` as an engine drives it: one response per request, in order, ids echoed; bad
// lines answered with errors; responses streamed before the end of input; and vectors equal to
// embed-image / embed-text / fuse — bit for bit when the batch is the same, within 1e-6 when it
// is not.

import Foundation
import XCTest
import VLMCore
import VLMIO

final class WorkerCLITests: XCTestCase {
    let resnet = fixtures.appendingPathComponent("resnet/bottleneck_f32").path
    let bert = fixtures.appendingPathComponent("bert/tiny").path
    var images: [String] { ["astronaut.jpg", "coffee.jpg", "palette.png", "cmyk.jpg"].map { imageFixtures.appendingPathComponent($0).path } }
    let texts = ["A cat sitting on a couch.", "", "naïve café 東京 😀", "a dog", String(repeating: "long text ", count: 40)]

    var worker: [String] { ["worker", "--image-model", resnet, "--text-model", bert] }

    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-worker-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// The responses of a worker run, which must have exited 0; with `count`, there must be
    /// exactly that many (an empty answer must not pass a loop over its lines).
    func responses(_ r: RunResult, count: Int? = nil, file: StaticString = #filePath, line: UInt = #line) throws -> [[String: Any]] {
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        let out = try r.out.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        if let count { XCTAssertEqual(out.count, count, "responses: \(r.out.prefix(300)) \(r.stderr)", file: file, line: line) }
        return out
    }

    func vector(_ obj: [String: Any]) -> [Float] {
        let data = Data(base64Encoded: obj["vector"] as! String)!
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    func request(_ fields: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]), as: UTF8.self)
    }

    /// Rows of a CLI job written as .npy.
    func cli(_ args: [String], stdin: Data? = nil) throws -> Tensor {
        // Inside the test's own folder (its lock file and sidecars go with it).
        let out = dir.appendingPathComponent("w-\(UUID().uuidString).npy").path
        let r = try runVLM(args + ["-o", out, "--quiet"], stdin: stdin)
        XCTAssertEqual(r.status, 0, r.stderr)
        return try NPY.read(path: out)
    }

    func testEveryRequestIsAnsweredInOrder() throws {
        let jpeg = try Data(contentsOf: URL(fileURLWithPath: images[1]))
        let lines = [
            request(["id": "t1", "text": texts[0]]),
            request(["id": "i1", "image": images[0]]),
            "not json at all",
            request(["id": "p1", "image": images[1], "text": texts[3]]),
            "[1, 2, 3]",
            request(["id": "b1", "image_bytes": jpeg.base64EncodedString()]),
            request(["id": "bad64", "image_bytes": "%%%"]),
            request(["id": "none"]),
            request(["id": "both", "image": images[0], "image_bytes": "AAAA"]),
            request(["id": "missing", "image": "/no/such.jpg"]),
            request(["info": true]),
            request(["id": 42, "text": "a number as id"]),
            request(["id": "t2", "text": texts[2]]),
        ]
        let r = try runVLM(worker, stdin: Data((lines.joined(separator: "\n") + "\n").utf8))
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = try responses(r, count: lines.count)  // exactly one response per request
        guard out.count == lines.count else { return }
        XCTAssertEqual(out[0]["id"] as? String, "t1")
        XCTAssertEqual(out[0]["dim"] as? Int, 32)
        XCTAssertEqual(out[1]["dim"] as? Int, 256)
        XCTAssertTrue(out[2]["id"] is NSNull)
        XCTAssertEqual((out[2]["error"] as? [String: Any])?["kind"] as? String, "bad_request")
        XCTAssertEqual(out[3]["dim"] as? Int, 256 + 32)
        XCTAssertEqual((out[4]["error"] as? [String: Any])?["kind"] as? String, "bad_request")
        XCTAssertEqual(out[5]["dim"] as? Int, 256)
        // image_bytes = the same file by path (another batch: within the last bits).
        XCTAssertLessThanOrEqual(relativeError(vector(out[5]), try cli(["embed-image", images[1], "--model", resnet]).data), 1e-6)
        for k in [6, 7, 8] {
            XCTAssertEqual((out[k]["error"] as? [String: Any])?["kind"] as? String, "bad_request", "\(out[k])")
            XCTAssertEqual(out[k]["id"] as? String, ["bad64", "none", "both"][k - 6])
        }
        XCTAssertEqual((out[9]["error"] as? [String: Any])?["kind"] as? String, "unreadable")
        let info = out[10]["info"] as! [String: Any]
        XCTAssertEqual(info["image_dim"] as? Int, 256)
        XCTAssertEqual(info["text_dim"] as? Int, 32)
        XCTAssertEqual(out[11]["id"] as? Int, 42)
        XCTAssertEqual(out[12]["id"] as? String, "t2")
        // Nothing but responses on stdout; at EOF the worker exits 0. Empty input: no output.
        let empty = try runVLM(worker, stdin: Data())
        XCTAssertEqual(empty.status, 0)
        XCTAssertTrue(empty.stdout.isEmpty)
    }

    /// The same items in the same batch as the CLI: the same bits; other batches: within 1e-6.
    func testVectorsEqualTheCommandsOutputs() throws {
        let textLines = texts.map { request(["id": $0, "text": $0]) }
        let imageLines = images.map { request(["id": $0, "image": $0]) }
        let pairLines = zip(images, texts).map { request(["id": $0, "image": $0, "text": $1]) }
        // One window each (all lines arrive together): the CLI's single batch.
        for (lines, cliRows) in [(textLines, try cli(["embed-text", "--model", bert] + texts)),
                                 (imageLines, try cli(["embed-image"] + images + ["--model", resnet])),
                                 (pairLines, try cli(["fuse", "--pairs", "-", "--image-model", resnet, "--text-model", bert],
                                                     stdin: Data(zip(images, texts).map { "\($0)\t\($1)\n" }.joined().utf8)))] {
            let out = try responses(try runVLM(worker, stdin: Data((lines.joined(separator: "\n") + "\n").utf8)), count: lines.count)
            let d = cliRows.shape[1]
            XCTAssertEqual(cliRows.shape[0], lines.count)
            for (k, o) in out.enumerated() {
                XCTAssertEqual(vector(o), Array(cliRows.data[(k * d)..<((k + 1) * d)]), "row \(k) bit for bit")
            }
        }
        // Other batches: texts two at a time, images one at a time, interleaved with each other.
        let mixed = zip(textLines, imageLines).flatMap { [$0, $1] }
        let out = try responses(try runVLM(worker + ["--text-batch-size", "2", "--image-batch-size", "1"],
                                           stdin: Data((mixed.joined(separator: "\n") + "\n").utf8)), count: mixed.count)
        let textRows = try cli(["embed-text", "--model", bert] + texts), imageRows = try cli(["embed-image"] + images + ["--model", resnet])
        for (k, o) in out.enumerated() {
            let ref = k % 2 == 0 ? Array(textRows.data[((k / 2) * 32)..<((k / 2 + 1) * 32)]) : Array(imageRows.data[((k / 2) * 256)..<((k / 2 + 1) * 256)])
            XCTAssertLessThanOrEqual(relativeError(vector(o), ref), 1e-6, "response \(k)")
        }
        // --vectors json carries the same numbers.
        let json = try responses(try runVLM(worker + ["--vectors", "json"], stdin: Data((textLines[0] + "\n").utf8)), count: 1)
        let b64 = try responses(try runVLM(worker, stdin: Data((textLines[0] + "\n").utf8)), count: 1)
        XCTAssertEqual((json[0]["vector"] as! [NSNumber]).map(\.floatValue), vector(b64[0]))
    }

    /// A response comes back while the input is still open: an engine can wait for it.
    func testResponsesArriveBeforeTheEndOfInput() throws {
        let p = Process()
        p.executableURL = vlmBinary()
        p.arguments = worker
        let inp = Pipe(), out = Pipe()
        p.standardInput = inp
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        var reader = LineReader(try InputFile(duplicating: out.fileHandleForReading.fileDescriptor, name: "worker"))
        for k in 0..<3 {
            inp.fileHandleForWriting.write(Data((request(["id": "q\(k)", "text": "query \(k)"]) + "\n").utf8))
            let line = try XCTUnwrap(try reader.nextLine(), "response \(k) before EOF")
            let obj = try JSONSerialization.jsonObject(with: Data(line)) as! [String: Any]
            XCTAssertEqual(obj["id"] as? String, "q\(k)")
        }
        try inp.fileHandleForWriting.close()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
    }

    func testBadStartAndThreads() throws {
        // A model named by a flag that does not load ends the worker at once, with one line.
        let bad = try runVLM(["worker", "--text-model", "/no/such/model"], stdin: Data())
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.hasPrefix("vlm: error: /no/such/model"), bad.stderr)
        // A default model that is missing: its requests get errors, the others are answered.
        let r = try runVLM(["worker", "--text-model", bert], stdin: Data((request(["id": "i", "image": images[0]]) + "\n" + request(["id": "t", "text": "x"]) + "\n").utf8),
                           env: ["VLM_MODELS": "/no/such/models"])
        let out = try responses(r, count: 2)
        guard out.count == 2 else { return }
        XCTAssertEqual((out[0]["error"] as? [String: Any])?["kind"] as? String, "model")
        XCTAssertEqual(out[1]["dim"] as? Int, 32)
        // OMP_NUM_THREADS sets the threads when --threads does not.
        let info = try responses(try runVLM(worker, stdin: Data("{\"info\": true}\n".utf8), env: ["OMP_NUM_THREADS": "1"]), count: 1)
        XCTAssertEqual((info.first?["info"] as? [String: Any])?["threads"] as? Int, 1)
    }
}
