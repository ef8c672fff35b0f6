// The `vlm` executable as a user runs it: outputs that numpy can load and that match PyTorch,
// and bad input that gets one line on stderr naming the file, exit code 1, and no crash.

import Foundation
import XCTest
import VLMCore
import VLMIO
import VLMModels

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

struct RunResult {
    var status: Int32
    var stdout: Data
    var stderr: String
    var out: String { String(decoding: stdout, as: UTF8.self) }
}

/// Where the vlm processes of these tests keep their digest cache (`VLM_CACHE_DIR`).
let testCacheFolder: String = {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-test-cache-\(getpid())").path
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    // Removed when the test process ends.
    atexit { try? FileManager.default.removeItem(atPath: testCacheFolder) }
    return d
}()

/// vlm-test-hooks beside vlm: the same commands with the test seams set from its environment
/// (VLM_TEST_PAUSE_AFTER_UNITS, VLM_TEST_CRASH_ON_ID, VLM_OVERLAP_UNITS), which vlm never reads.
func vlmTestHooksBinary() -> URL {
    vlmBinary().deletingLastPathComponent().appendingPathComponent("vlm-test-hooks")
}

/// The vlm binary beside the test bundle (SwiftPM builds both into the same products folder).
func vlmBinary() -> URL {
    // Every vlm these tests start (whichever helper starts it) keeps its digest cache in the
    // tests' own temporary folder, never the user's ~/.cache.
    setenv("VLM_CACHE_DIR", testCacheFolder, 1)
    let testBinary = URL(fileURLWithPath: CommandLine.arguments[0])
    for dir in [testBinary.deletingLastPathComponent(), Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()] {
        let candidate = dir.appendingPathComponent("vlm")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
    }
    fatalError("vlm binary not found next to \(testBinary.path); build it with `swift build` first")
}

@discardableResult
func runVLM(_ args: [String], stdin: Data? = nil, env: [String: String] = [:]) throws -> RunResult {
    try runProcess(vlmBinary().path, args, stdin: stdin, env: env)
}

/// Runs `executable` to the end, feeding `stdin`, reading stdout and stderr concurrently.
func runProcess(_ executable: String, _ args: [String], stdin: Data? = nil, env: [String: String] = [:]) throws -> RunResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    for (k, v) in env { environment[k] = v }
    p.environment = environment
    let out = Pipe(), err = Pipe(), inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inp
    try p.run()
    // Written from another thread, so a child that does not read all of it cannot block us.
    let feed = inp.fileHandleForWriting
    let input = stdin ?? Data()
    DispatchQueue.global().async {
        if !input.isEmpty { try? feed.write(contentsOf: input) }
        try? feed.close()
    }
    // Read both pipes concurrently so a large output cannot deadlock the child.
    final class Box: @unchecked Sendable { var data = Data() }
    let errBox = Box()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    let errData = errBox.data
    p.waitUntilExit()
    return RunResult(status: p.terminationStatus, stdout: outData, stderr: String(decoding: errData, as: UTF8.self))
}

final class CLITests: XCTestCase {
    var dir: URL!
    let tiny = fixtures.appendingPathComponent("resnet/bottleneck_f32")

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// Exit 1, exactly one line on stderr, naming `mentions`.
    func expectFailure(_ args: [String], mentions: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try runVLM(args)
        XCTAssertEqual(r.status, 1, "stderr: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stdout.isEmpty, "no data on stdout on failure", file: file, line: line)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true)
        XCTAssertEqual(lines.count, 1, "one line on stderr, got: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.hasPrefix("vlm: error: "), r.stderr, file: file, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "stderr should mention \(m): \(r.stderr)", file: file, line: line) }
    }

    // MARK: - Working paths

    func testEmbedImageNPYMatchesTorchOnBothBackends() throws {
        let ref = try NPY.read(path: tiny.appendingPathComponent("pooled.npy").path)
        let logitsRef = try NPY.read(path: tiny.appendingPathComponent("logits.npy").path)
        for backend in ["blas", "naive"] {
            let out = path("f-\(backend).npy")
            let r = try runVLM(["embed-image", "--model", tiny.path, "--input-npy", tiny.appendingPathComponent("input.npy").path,
                             "-o", out, "--backend", backend, "--batch-size", "2", "--threads", "1"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let got = try NPY.read(path: out)
            XCTAssertEqual(got.shape, ref.shape)
            XCTAssertLessThanOrEqual(relativeError(got.data, ref.data), 1e-4)
        }
        // Logits, via VLM_BACKEND and a .safetensors path.
        let out = path("logits.npy")
        let r = try runVLM(["embed-image", "--model", tiny.appendingPathComponent("model.safetensors").path,
                         "--input-npy", tiny.appendingPathComponent("input.npy").path, "--layer", "logits", "-o", out],
                        env: ["VLM_BACKEND": "naive"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertLessThanOrEqual(relativeError(try NPY.read(path: out).data, logitsRef.data), 1e-4)
    }

    func testJSONLinesAndTSVOnStdout() throws {
        let input = tiny.appendingPathComponent("input.npy").path
        let jl = try runVLM(["embed-image", "--model", tiny.path, "--input-npy", input])
        XCTAssertEqual(jl.status, 0, jl.stderr)
        XCTAssertTrue(jl.stderr.isEmpty, "nothing on stderr on success: \(jl.stderr)")
        let rows = jl.out.split(separator: "\n")
        XCTAssertEqual(rows.count, 3)
        let obj = try JSONSerialization.jsonObject(with: Data(rows[2].utf8)) as! [String: Any]
        XCTAssertEqual(obj["id"] as? String, "2", "rows of an array are numbered from 0")
        XCTAssertEqual((obj["vector"] as? [Any])?.count, 256)
        // The vectors are torchvision's pooled rows, as the .npy and TSV outputs are.
        let pooled = try NPY.read(path: tiny.appendingPathComponent("pooled.npy").path)
        let vectors = try rows.flatMap { line -> [Float] in
            ((try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any])["vector"] as! [NSNumber]).map(\.floatValue)
        }
        XCTAssertLessThanOrEqual(relativeError(vectors, pooled.data), 1e-4)

        let tsv = try runVLM(["embed-image", "--model", tiny.path, "--input-npy", "-", "--format", "tsv"],
                          stdin: try Data(contentsOf: URL(fileURLWithPath: input)))
        XCTAssertEqual(tsv.status, 0, tsv.stderr)
        let ref = try NPY.read(path: tiny.appendingPathComponent("pooled.npy").path)
        let values = tsv.out.split(separator: "\n").flatMap { $0.split(separator: "\t").dropFirst().map { Float($0)! } }
        XCTAssertLessThanOrEqual(relativeError(values, ref.data), 1e-4)
    }

    func testInspect() throws {
        let r = try runVLM(["inspect", tiny.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.out.contains("layer4.0.conv3.weight\tF32\t[256, 64, 1, 1]"), r.out)
        XCTAssertTrue(r.out.contains("bn1.num_batches_tracked\tI64\t[]"), r.out)
        XCTAssertTrue(r.out.contains("architecture: resnet (custom bottleneck [1, 2, 1, 1]"), r.out)
        XCTAssertTrue(r.out.contains("fc to 10 classes"), r.out)
        // The summary comes first, the tensors after it; --summary leaves them out.
        let arch = try XCTUnwrap(r.out.range(of: "architecture:")), tensor = try XCTUnwrap(r.out.range(of: "layer4.0.conv3.weight"))
        XCTAssertLessThan(arch.lowerBound, tensor.lowerBound)
        let short = try runVLM(["inspect", tiny.path, "--summary"])
        XCTAssertTrue(short.out.contains("architecture:") && !short.out.contains("layer4.0.conv3.weight"), short.out)
    }

    func testBenchJSON() throws {
        let r = try runVLM(["bench", "resnet18", "--batch", "2", "--size", "64", "--min-time", "0", "--min-iterations", "1",
                         "--threads", "2", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try JSONSerialization.jsonObject(with: r.stdout) as! [String: Any]
        let results = obj["results"] as! [[String: Any]]
        XCTAssertEqual(results.map { $0["backend"] as! String }, ["blas", "naive"])
        XCTAssertTrue(results.allSatisfy { ($0["itemsPerSecond"] as! Double) > 0 && ($0["threads"] as! Int) == 2 })
        XCTAssertNotNil(obj["blasOverNaive"] as? Double)
        XCTAssertLessThanOrEqual(obj["naiveVsBlasRelativeError"] as! Double, 1e-5)
    }

    /// `--layers`: one row per convolution of ResNet-18 in execution order (stem, then per
    /// block downsample/conv1/conv2), each with a positive time, and the sum of them.
    func testBenchLayers() throws {
        let r = try runVLM(["bench", "resnet18", "--batch", "2", "--size", "64", "--min-time", "0", "--min-iterations", "2",
                            "--backend", "blas", "--layers"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = r.out.split(separator: "\n").filter { $0.hasPrefix("conv1 ") || $0.hasPrefix("layer") }
        XCTAssertEqual(rows.count, 1 + 8 * 2 + 3, r.out)
        XCTAssertEqual(rows.first.map { String($0.split(separator: " ")[0]) }, "conv1")
        XCTAssertEqual(rows.map { String($0.split(separator: " ")[0]) }.filter { $0.hasSuffix("downsample") },
                       ["layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"])
        XCTAssertTrue(rows.allSatisfy { row in Double(row.split(separator: " ").last!).map { $0 > 0 } ?? false }, r.out)
        XCTAssertTrue(r.out.contains("sum of the convolutions' best times"), r.out)
        for bad in [["bench", "resnet18", "--layers"], ["bench", "bert-base", "--backend", "blas", "--layers"],
                    ["bench", "resnet18", "--backend", "blas", "--layers", "--json"]] {
            XCTAssertEqual(try runVLM(bad).status, 64, bad.joined(separator: " "))
        }
    }

    /// `vlm bench peak` measures what other results are shares of (values not asserted: speed
    /// is for benchmarks, not tests).
    func testBenchPeakJSON() throws {
        let r = try runVLM(["bench", "peak", "--json", "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try JSONSerialization.jsonObject(with: r.stdout) as! [String: Any]
        XCTAssertEqual(obj["threads"] as? Int, 1)
        XCTAssertEqual(obj["sgemmSize"] as? Int, 2048)
        XCTAssertTrue((obj["fmaGFLOPs"] as? Double).map { $0 > 0 && $0.isFinite } ?? false, r.out)
        XCTAssertTrue((obj["sgemmGFLOPs"] as? Double).map { $0 > 0 && $0.isFinite } ?? false, r.out)
    }

    func testHelpListsExitCodes() throws {
        let r = try runVLM(["--help"])
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.out.contains("EXIT CODES"), r.out)
        XCTAssertTrue(r.out.contains("invalid VLM_* variable"), r.out)
        // Help is wrapped once, to the width: at 80 columns every line fits, and a paragraph
        // wrapped in the source is one line at 200 (issue 28: it was wrapped twice).
        for sub in [[], ["embed-image"], ["serve"], ["pca", "fit"]] {
            let narrow = try runVLM(sub + ["--help"], env: ["COLUMNS": "80"])
            for line in narrow.out.split(separator: "\n") where !line.hasPrefix("USAGE:") { XCTAssertLessThanOrEqual(line.count, 80, "\(sub): \(line)") }
        }
        let wide = try runVLM(["embed-image", "--help"], env: ["COLUMNS": "200"])
        XCTAssertTrue(wide.out.contains("--list FILE|- (one path per line, as find prints them), --list0 FILE|-"), wide.out)
    }

    // MARK: - Bad input: one line, exit 1, no crash

    func testBadSafetensors() throws {
        let input = tiny.appendingPathComponent("input.npy").path
        let good = try Data(contentsOf: tiny.appendingPathComponent("model.safetensors"))
        // Truncated: the download stopped half-way.
        let truncated = path("truncated.safetensors")
        FileManager.default.createFile(atPath: truncated, contents: good.prefix(good.count / 2))
        try expectFailure(["embed-image", "--model", truncated, "--input-npy", input], mentions: [truncated, "truncated"])
        // Header length past the end.
        let past = path("past.safetensors")
        FileManager.default.createFile(atPath: past, contents: safetensors(#"{}"#, headerLength: 999_999))
        try expectFailure(["embed-image", "--model", past, "--input-npy", input], mentions: [past, "header length 999999"])
        // Header that is not JSON.
        let notJSON = path("notjson.safetensors")
        FileManager.default.createFile(atPath: notJSON, contents: safetensors("this is not json"))
        try expectFailure(["inspect", notJSON], mentions: [notJSON, "not a JSON"])
        // Unknown dtype.
        let dtype = path("dtype.safetensors")
        FileManager.default.createFile(atPath: dtype, contents: safetensors(#"{"conv1.weight":{"dtype":"Z7","shape":[1],"data_offsets":[0,4]}}"#, data: 4))
        try expectFailure(["inspect", dtype], mentions: [dtype, "conv1.weight", "unknown dtype 'Z7'"])
        // A shape that disagrees with its byte range.
        let shape = path("shape.safetensors")
        FileManager.default.createFile(atPath: shape, contents: safetensors(#"{"conv1.weight":{"dtype":"F32","shape":[64,3,7,7],"data_offsets":[0,400]}}"#, data: 400))
        try expectFailure(["embed-image", "--model", shape, "--input-npy", input], mentions: [shape, "conv1.weight", "[64, 3, 7, 7]", "37632", "400"])
        // Not a file at all.
        try expectFailure(["embed-image", "--model", path("nope"), "--input-npy", input], mentions: [path("nope"), "no such file"])
        try expectFailure(["embed-image", "--model", dir.path, "--input-npy", input], mentions: [dir.path, "no model.safetensors"])
    }

    func testCheckpointMissingLayer4Conv3() throws {
        // A resnet50 state dict from which layer4.2.conv3.weight was dropped.
        let st = path("r50-missing.safetensors")
        try writeSyntheticResNet50(to: st, dropping: "layer4.2.conv3.weight")
        try expectFailure(["embed-image", "--model", st, "--input-npy", tiny.appendingPathComponent("input.npy").path],
                          mentions: [st, "missing tensor 'layer4.2.conv3.weight'"])
    }

    func testBadInputNPY() throws {
        // Wrong shape: rank 3.
        let wrongShape = path("rank3.npy")
        try writeAtomically(NPY.encode(Tensor(zeros: [3, 8, 8])), to: wrongShape)
        try expectFailure(["embed-image", "--model", tiny.path, "--input-npy", wrongShape], mentions: [wrongShape, "(N, 3, H, W)", "[3, 8, 8]"])
        // Wrong channel count.
        let wrongC = path("c4.npy")
        try writeAtomically(NPY.encode(Tensor(zeros: [1, 4, 8, 8])), to: wrongC)
        try expectFailure(["embed-image", "--model", tiny.path, "--input-npy", wrongC], mentions: [wrongC, "[1, 4, 8, 8]"])
        // Wrong dtype: float64.
        var f8 = NPY.encode(Tensor(zeros: [1, 3, 4, 4]))
        let r = f8.range(of: Data("<f4".utf8))!
        f8.replaceSubrange(r, with: Data("<f8".utf8))
        f8.append(Data(count: 1 * 3 * 4 * 4 * 4))
        let wrongDType = path("f8.npy")
        try writeAtomically(f8, to: wrongDType)
        try expectFailure(["embed-image", "--model", tiny.path, "--input-npy", wrongDType], mentions: [wrongDType, "'<f8'"])
        // Zero images.
        let empty = path("empty.npy")
        try writeAtomically(NPY.encode(Tensor(zeros: [0, 3, 8, 8])), to: empty)
        try expectFailure(["embed-image", "--model", tiny.path, "--input-npy", empty], mentions: [empty, "no images"])
        // Missing file, and not an npy.
        try expectFailure(["embed-image", "--model", tiny.path, "--input-npy", path("missing.npy")], mentions: [path("missing.npy")])
        let text = path("text.npy")
        try writeAtomically(Data("hello".utf8), to: text)
        try expectFailure(["embed-image", "--model", tiny.path, "--input-npy", text], mentions: [text, "not a .npy"])
    }

    func testLogitsWithoutFC() throws {
        // A checkpoint without fc: write one from the tiny model's F32 tensors.
        let st = path("nofc.safetensors")
        let src = try SafetensorsFile(path: tiny.appendingPathComponent("model.safetensors").path)
        var entries: [(String, Tensor)] = []
        for k in src.names where src.tensors[k]!.dtype.isFloat && !k.hasPrefix("fc.") { entries.append((k, try src.floatTensor(k))) }
        try writeSafetensors(entries, to: st)
        try expectFailure(["embed-image", "--model", st, "--input-npy", tiny.appendingPathComponent("input.npy").path, "--layer", "logits"],
                          mentions: [st, "no fc"])
        let ok = try runVLM(["embed-image", "--model", st, "--input-npy", tiny.appendingPathComponent("input.npy").path, "-o", path("p.npy")])
        XCTAssertEqual(ok.status, 0, ok.stderr)
    }

    func testUsageErrorsExit64() throws {
        let r = try runVLM(["embed-image", "--batch-size", "0", "--input-npy", "x.npy"])
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertEqual(try runVLM(["bench", "resnet7"]).status, 64)
    }
}

// MARK: - Helpers that write checkpoints

func safetensors(_ header: String, headerLength: UInt64? = nil, data: Int = 0) -> Data {
    var out = Data()
    var len = (headerLength ?? UInt64(header.utf8.count)).littleEndian
    withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
    out.append(contentsOf: Array(header.utf8))
    out.append(Data(count: data))
    return out
}

func writeSafetensors(_ entries: [(String, Tensor)], to path: String) throws {
    var header: [String: Any] = [:]
    var data = Data()
    for (name, t) in entries {
        let begin = data.count
        t.data.withUnsafeBytes { data.append(contentsOf: $0) }
        header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [begin, data.count]]
    }
    let h = try JSONSerialization.data(withJSONObject: header)
    var out = Data()
    var len = UInt64(h.count).littleEndian
    withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
    out.append(h)
    out.append(data)
    try writeAtomically(out, to: path)
}

/// A torchvision-layout resnet50 (the project's seeded synthetic one), minus `dropping`.
func writeSyntheticResNet50(to path: String, dropping: String) throws {
    let source = Synthetic.resnet(depth: 50, seed: 1)!
    try writeSafetensors(source.keys.filter { $0 != dropping }.map { ($0, source.state[$0]!) }, to: path)
}

// MARK: - Killing a job at a known point

/// Runs vlm with the test hook that pauses the job after `afterUnits` recorded units, waits for
/// it to say so, and kills it with SIGKILL: a kill at a known point, never a raced one.
func killPaused(_ args: [String], afterUnits: Int, env: [String: String] = [:], file: StaticString = #filePath, line: UInt = #line) throws {
    let p = Process()
    p.executableURL = vlmTestHooksBinary()
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    for (k, v) in env { environment[k] = v }
    environment["VLM_TEST_PAUSE_AFTER_UNITS"] = String(afterUnits)
    p.environment = environment
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    var text = ""
    while !text.contains("vlm: test: paused after unit \(afterUnits)") {
        let chunk = err.fileHandleForReading.availableData
        if chunk.isEmpty { break }   // the job ended without pausing
        text += String(decoding: chunk, as: UTF8.self)
    }
    kill(p.processIdentifier, SIGKILL)
    p.waitUntilExit()
    XCTAssertTrue(text.contains("paused after unit \(afterUnits)"), "the job did not reach unit \(afterUnits): \(text)", file: file, line: line)
    XCTAssertEqual(p.terminationReason, .uncaughtSignal, "killed mid-job", file: file, line: line)
}

/// `killPaused` with data on the child's stdin.
func killPausedWithStdin(_ args: [String], afterUnits: Int, stdin: Data, file: StaticString = #filePath, line: UInt = #line) throws {
    let p = Process()
    p.executableURL = vlmTestHooksBinary()
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    environment["VLM_TEST_PAUSE_AFTER_UNITS"] = String(afterUnits)
    p.environment = environment
    let err = Pipe(), inp = Pipe()
    p.standardError = err
    p.standardInput = inp
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    DispatchQueue.global().async {
        inp.fileHandleForWriting.write(stdin)
        try? inp.fileHandleForWriting.close()
    }
    var text = ""
    while !text.contains("vlm: test: paused after unit \(afterUnits)") {
        let chunk = err.fileHandleForReading.availableData
        if chunk.isEmpty { break }
        text += String(decoding: chunk, as: UTF8.self)
    }
    kill(p.processIdentifier, SIGKILL)
    p.waitUntilExit()
    XCTAssertTrue(text.contains("paused after unit \(afterUnits)"), "the job did not reach unit \(afterUnits): \(text)", file: file, line: line)
}

/// Runs vlm to the end and returns its exit status and peak resident set (KiB, from wait4's
/// rusage of that child alone). The child is started by a small Python process, not from here:
/// a child spawned straight from this large test process (vfork) counts this process's memory
/// in its peak until it execs.
func runMeasured(_ args: [String]) throws -> (Int32, Int) {
    let script = """
    import os, subprocess, sys
    env = dict(os.environ, MALLOC_ARENA_MAX="1")  # one arena: the peak must not depend on which threads allocated
    p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
    """
    let r = try runProcess("/usr/bin/env", ["python3", "-c", script, vlmBinary().path] + args)
    let parts = r.out.split(separator: " ").map { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1 }
    guard parts.count == 2 else { throw NSError(domain: "measure", code: 1, userInfo: [NSLocalizedDescriptionKey: r.stderr]) }
    return (Int32(parts[0]), parts[1])
}
