// The test seams live in vlm-test-hooks only: vlm itself reads none of their variables.

import Foundation
import XCTest
import VLMIO

final class SeamsCLITests: XCTestCase {
    func testVLMReadsNoTestVariables() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-seams-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bert = fixtures.appendingPathComponent("bert/tiny").path
        let seams = "VLM_TEST_PAUSE_AFTER_UNITS=1 VLM_TEST_CRASH_ON_ID=x VLM_OVERLAP_UNITS=0"
        // A job of three units finishes (bounded: a pause would be killed by timeout, exit 124).
        let job = try runShell("\(seams) timeout 60 '\(vlmBinary().path)' embed-text --model '\(bert)' --batch-size 1 -o '\(dir)/a.npy' --quiet a b c")
        XCTAssertEqual(job.status, 0, job.stderr)
        XCTAssertFalse(job.stderr.contains("paused"), job.stderr)
        XCTAssertEqual(try NPY.read(path: dir + "/a.npy").shape, [3, 32])
        // The worker answers the request the hook binary would crash on.
        let worker = try runShell("echo '{\"id\": \"x\", \"text\": \"a\"}' | \(seams) timeout 60 '\(vlmBinary().path)' worker --text-model '\(bert)'")
        XCTAssertEqual(worker.status, 0, worker.stderr)
        XCTAssertTrue(worker.out.contains("\"vector\""), worker.out)
        // The hook binary does pause (the seam works where the tests use it).
        let paused = try runShell("VLM_TEST_PAUSE_AFTER_UNITS=1 timeout 3 '\(vlmTestHooksBinary().path)' embed-text --model '\(bert)' --batch-size 1 -o '\(dir)/b.npy' --quiet a b c")
        XCTAssertEqual(paused.status, 124, paused.stderr)
        XCTAssertTrue(paused.stderr.contains("vlm: test: paused after unit 1"), paused.stderr)
    }
}
