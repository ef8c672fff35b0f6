// Every seed of the fuzz corpora and every input a fuzzer ever crashed on (Fuzz/regressions/,
// kept after the fix) through the same harness the fuzzers run: each must return, not trap.
// The long fuzzing runs are `make fuzz`; this keeps the inputs they found in every test run.

import Foundation
import XCTest
import FuzzHarness

final class FuzzReplayTests: XCTestCase {
    func testEverySeedAndRegressionInputReturns() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz")
        defer { FuzzHarness.removeScratch() }  // the harness's files, nothing left in the temp folder
        var replayed = 0
        for kind in ["corpus", "regressions"] {
            for (name, harness) in FuzzHarness.targets.sorted(by: { $0.key < $1.key }) {
                let dir = root.appendingPathComponent(kind).appendingPathComponent(name)
                let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
                // Every target has seeds: a missing or emptied corpus folder fails, never replays nothing.
                if kind == "corpus" { XCTAssertFalse(files.isEmpty, "no seed inputs in \(dir.path)") }
                for f in files {
                    let data = try Data(contentsOf: dir.appendingPathComponent(f))
                    data.withUnsafeBytes { harness($0) }
                    replayed += 1
                }
            }
        }
        XCTAssertGreaterThanOrEqual(replayed, 20, "the seed corpora are in Fuzz/corpus")
    }
}
