// `vlm embed-text` and `vlm tokenize` as a user runs them: inputs from arguments, files, stdin
// and JSON lines; outputs equal to the library's; bad input as one line on stderr.

import Foundation
import XCTest
import VLMCore
import VLMIO

final class TextCLITests: XCTestCase {
    let tiny = fixtures.appendingPathComponent("bert/tiny").path
    let minilm = fixtures.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("models/all-MiniLM-L6-v2").path
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-text-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ n: String) -> String { dir.appendingPathComponent(n).path }

    func vectors(_ r: RunResult) throws -> [[Float]] {
        try r.out.split(separator: "\n").map { line in
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return (obj["vector"] as! [NSNumber]).map { $0.floatValue }
        }
    }

    func testMiniLMDefaultsMatchSentenceTransformers() throws {
        guard FileManager.default.fileExists(atPath: minilm) else { throw FixtureMissing(path: minilm + " (run `make models`)") }
        let sentences = try JSONDecoder().decode([String].self, from: Data(contentsOf: fixtures.appendingPathComponent("bert/minilm_sentences.json")))
        let ref = try NPY.read(path: fixtures.appendingPathComponent("bert/minilm_embeddings.npy").path)
        // JSON lines input (some sentences hold newlines), npy output; no --model: the default folder.
        let jl = sentences.map { "{\"text\":\(jsonString($0))}" }.joined(separator: "\n") + "\n"
        let inputFile = path("in.jsonl")
        try Data(jl.utf8).write(to: URL(fileURLWithPath: inputFile))
        let out = path("out.npy")
        let r = try runVLM(["embed-text", "--file", inputFile, "--jsonl-field", "text", "-o", out, "--batch-size", "4"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("1 of 25 texts were truncated to 256 tokens"), r.stderr)
        let got = try NPY.read(path: out)
        XCTAssertEqual(got.shape, ref.shape)
        let d = ref.shape[1]
        for i in 0..<sentences.count {
            let a = Array(got.data[(i * d)..<((i + 1) * d)]), b = Array(ref.data[(i * d)..<((i + 1) * d)])
            func norm(_ v: [Float]) -> Double { v.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }
            XCTAssertLessThanOrEqual(relativeError(a, b), 1e-5, "sentence \(i)")  // per row, not a cosine (issue 29)
            // MiniLM's Normalize module: vlm's rows are unit vectors, as sentence-transformers' are.
            XCTAssertEqual(norm(a), 1, accuracy: 1e-5, "sentence \(i)")
        }
    }

    func testArgumentsFileAndStdinAgree() throws {
        let texts = ["A cat sitting on a couch.", "", "naïve café 東京 😀"]
        let args = try runVLM(["embed-text", "--model", tiny] + texts)
        XCTAssertEqual(args.status, 0, args.stderr)
        let file = path("lines.txt")
        try Data((texts.joined(separator: "\r\n") + "\r\n").utf8).write(to: URL(fileURLWithPath: file))
        let fromFile = try runVLM(["embed-text", "--model", tiny, "--file", file, "--backend", "naive"])
        XCTAssertEqual(fromFile.status, 0, fromFile.stderr)
        let fromStdin = try runVLM(["embed-text", "--model", tiny, "--file", "-"], stdin: Data(texts.joined(separator: "\n").utf8))
        XCTAssertEqual(fromStdin.status, 0, fromStdin.stderr)
        let a = try vectors(args), b = try vectors(fromFile), c = try vectors(fromStdin)
        XCTAssertEqual(a.count, 3)
        XCTAssertEqual(b.count, 3)
        for i in 0..<3 {
            XCTAssertLessThanOrEqual(relativeError(b[i], a[i]), 1e-5)
            XCTAssertEqual(c[i], a[i])
        }
        // The empty text embeds as "[CLS] [SEP]" does: the same as the tokenizer's empty encoding.
        let tok = try runVLM(["tokenize", "--model", tiny, ""])
        XCTAssertEqual(tok.out, "{\"ids\":[101,102],\"tokens\":[\"[CLS]\",\"[SEP]\"]}\n")
        XCTAssertTrue(args.stderr.contains("ignoring 2 task-head tensors"), args.stderr)
    }

    func testPoolingNormalizeAndFormats() throws {
        let r = try runVLM(["embed-text", "--model", tiny, "--pooling", "cls", "--normalize", "--format", "tsv", "hello", "world"])
        XCTAssertEqual(r.status, 0, r.stderr)
        // TSV rows: the id (the argument's number), then the values.
        XCTAssertEqual(r.out.split(separator: "\n").map { String($0.split(separator: "\t")[0]) }, ["1", "2"])
        let rows = r.out.split(separator: "\n").map { $0.split(separator: "\t").dropFirst().map { Float($0)! } }
        XCTAssertEqual(rows.count, 2)
        XCTAssertEqual(rows[0].count, 32)
        for row in rows { XCTAssertEqual(row.reduce(0) { $0 + $1 * $1 }, 1, accuracy: 1e-4) }
        let pooler = try runVLM(["embed-text", "--model", tiny, "--pooling", "pooler", "hello"])
        XCTAssertEqual(pooler.status, 0, pooler.stderr)
        XCTAssertTrue(try vectors(pooler)[0].allSatisfy { abs($0) <= 1 }, "tanh output")
    }

    func testTokenizePairsAndTruncation() throws {
        let jl = #"{"q": "What is shown?", "a": "A dog\non a bench."}"# + "\n"
        let r = try runVLM(["tokenize", "--model", tiny, "--file", "-", "--jsonl-field", "q", "--jsonl-pair-field", "a"], stdin: Data(jl.utf8))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.out, #"{"ids":[101,2054,2003,3491,1029,102,1037,3899,2006,1037,6847,1012,102],"tokens":["[CLS]","what","is","shown","?","[SEP]","a","dog","on","a","bench",".","[SEP]"],"type_ids":[0,0,0,0,0,0,1,1,1,1,1,1,1]}"# + "\n")
        let t = try runVLM(["tokenize", "--model", tiny, "--max-length", "4", "one two three four five"])
        XCTAssertEqual(t.status, 0, t.stderr)
        XCTAssertTrue(t.out.hasPrefix(#"{"ids":[101,2028,2048,102]"#), t.out)
        XCTAssertTrue(t.stderr.contains("1 of 1 texts were truncated to 4 tokens"), t.stderr)
    }

    func testBadTextInput() throws {
        // A line that is not UTF-8 is a skipped, recorded item (exit 2); --lossy decodes it;
        // --errors fail stops at it.
        let bad = path("bad.txt")
        try Data([0x6F, 0x6B, 0x0A, 0x62, 0xFF, 0x64, 0x0A]).write(to: URL(fileURLWithPath: bad))
        let r = try runVLM(["embed-text", "--model", tiny, "--file", bad, "--quiet"])
        XCTAssertEqual(r.status, 2)
        XCTAssertEqual(r.stderr, "vlm: warning: \(bad):2: not valid UTF-8 (use --lossy to replace bad bytes) (skipped)\n")
        XCTAssertEqual(try vectors(r).count, 1)
        let out = path("bad.npy")
        XCTAssertEqual(try runVLM(["embed-text", "--model", tiny, "--file", bad, "-o", out, "--quiet"]).status, 2)
        XCTAssertEqual(try String(contentsOfFile: out + ".ids.txt", encoding: .utf8), "1\n")
        XCTAssertEqual(try String(contentsOfFile: out + ".errors.jsonl", encoding: .utf8),
                       #"{"error":"\#(bad):2: not valid UTF-8 (use --lossy to replace bad bytes)","id":"2","kind":"not_utf8"}"# + "\n")
        let fail = try runVLM(["embed-text", "--model", tiny, "--file", bad, "--errors", "fail", "--quiet"])
        XCTAssertEqual(fail.status, 1)
        XCTAssertEqual(fail.stderr, "vlm: error: \(bad):2: not valid UTF-8 (use --lossy to replace bad bytes)\n")
        let lossy = try runVLM(["embed-text", "--model", tiny, "--file", bad, "--lossy"])
        XCTAssertEqual(lossy.status, 0, lossy.stderr)
        XCTAssertEqual(try vectors(lossy).count, 2)
        // Model folder problems.
        let noConfig = path("m1")
        try FileManager.default.createDirectory(atPath: noConfig, withIntermediateDirectories: true)
        let e1 = try runVLM(["embed-text", "--model", noConfig, "x"])
        XCTAssertEqual(e1.status, 1)
        XCTAssertEqual(e1.stderr, "vlm: error: \(noConfig): no config.json in this model folder\n")
        try FileManager.default.copyItem(atPath: tiny + "/config.json", toPath: noConfig + "/config.json")
        let e2 = try runVLM(["embed-text", "--model", noConfig, "x"])
        XCTAssertEqual(e2.stderr, "vlm: error: \(noConfig): no vocab.txt or tokenizer.json in this folder\n")
        // A JSON line without the field is a skipped record.
        let e3 = try runVLM(["embed-text", "--model", tiny, "--file", "-", "--jsonl-field", "t", "--quiet"],
                            stdin: Data("{\"t\": 1}\nnot json\n{\"t\": \"ok\"}\n".utf8))
        XCTAssertEqual(e3.status, 2)
        XCTAssertEqual(e3.stderr, "vlm: warning: <stdin>:1: no string field 't' (skipped)\nvlm: warning: <stdin>:2: not a JSON object (skipped)\n")
        XCTAssertEqual(try vectors(e3).count, 1)
        // Nothing to embed.
        let e4 = try runVLM(["embed-text", "--model", tiny, "--file", "-"], stdin: Data())
        XCTAssertEqual(e4.status, 1)
        XCTAssertTrue(e4.stderr.contains("no texts"), e4.stderr)
        let e5 = try runVLM(["embed-text", "--model", tiny, "--max-length", "1000", "x"])
        XCTAssertEqual(e5.status, 64, "an option the model cannot take is a usage error")
        XCTAssertTrue(e5.stderr.contains("max_position_embeddings 128"), e5.stderr)
    }

    /// Caption-like lines: `n` of them, some long, one empty, one not UTF-8 (a skipped item).
    func captions(_ n: Int, seed: UInt64 = 1) -> Data {
        var rng = SeededRandom(seed: seed)
        let words = ["a", "dog", "runs", "across", "the", "green", "field", "near", "old", "bridge", "naïve", "café", "東京"]
        var out = Data()
        for i in 0..<n {
            if i == 17 { out.append(contentsOf: [0x62, 0xFF, 0x0A]); continue }
            let count = i == 5 ? 0 : 3 + Int(rng.next() % (i % 50 == 0 ? 120 : 15))
            out.append(contentsOf: Array(((0..<count).map { _ in words[Int(rng.next() % UInt64(words.count))] }.joined(separator: " ") + "\n").utf8))
        }
        return out
    }

    /// embed-text killed with SIGKILL at several points (file and stdin input) and resumed ends
    /// byte-identical to an uninterrupted run; stdin is spooled, so the resumed run needs none.
    func testResumeAfterSIGKILLIsByteIdentical() throws {
        let input = path("captions.txt")
        try captions(300).write(to: URL(fileURLWithPath: input))
        let common = ["embed-text", "--model", tiny, "--batch-size", "8", "--quiet", "--threads", "2"]
        for (name, source) in [("file", ["--file", input]), ("stdin", ["--file", "-"])] {
            // The reference: the same job uninterrupted (its errors name the file or <stdin>).
            let reference = try runVLM(common + source + ["-o", path("ref-\(name).npy")], stdin: try Data(contentsOf: URL(fileURLWithPath: input)))
            XCTAssertEqual(reference.status, 2, reference.stderr)
            let out = path("\(name).npy")
            for (k, stop) in [2, 5, 7].enumerated() {
                let args = common + source + ["-o", out] + (k == 0 ? [] : ["--resume"])
                if name == "stdin" {
                    // Only the first run reads stdin: the others read the spooled copy.
                    try killPausedWithStdin(args, afterUnits: stop, stdin: k == 0 ? try Data(contentsOf: URL(fileURLWithPath: input)) : Data())
                } else {
                    try killPaused(args, afterUnits: stop)
                }
                XCTAssertFalse(FileManager.default.fileExists(atPath: out), "no output before the job ends")
            }
            let resumed = try runVLM(common + source + ["-o", out, "--resume"], stdin: Data())
            XCTAssertEqual(resumed.status, 2, resumed.stderr)
            for suffix in ["", ".ids.txt", ".errors.jsonl"] {
                XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + suffix)),
                               try Data(contentsOf: URL(fileURLWithPath: path("ref-\(name).npy") + suffix)), "\(name) \(suffix)")
            }
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("ref-file.npy"))), try Data(contentsOf: URL(fileURLWithPath: path("ref-stdin.npy"))))
        let ids = try String(contentsOfFile: path("ref-file.npy.ids.txt"), encoding: .utf8).split(separator: "\n").map { Int($0)! }
        XCTAssertEqual(ids, (1...300).filter { $0 != 18 }, "ids are the line numbers, line 18 skipped")
    }

    /// --shard i/n over n shards concatenates to the whole job, rows and ids.
    func testShardsConcatenateToTheWholeJob() throws {
        let input = path("captions.txt")
        try captions(101).write(to: URL(fileURLWithPath: input))
        let common = ["embed-text", "--model", tiny, "--file", input, "--batch-size", "4", "--quiet", "--format", "tsv"]
        let whole = try runVLM(common)
        XCTAssertEqual(whole.status, 2)
        var parts = ""
        for i in 1...3 { parts += try runVLM(common + ["--shard", "\(i)/3"]).out }
        let a = whole.out.split(separator: "\n"), b = parts.split(separator: "\n")
        XCTAssertEqual(a.count, 100)
        XCTAssertEqual(b.map { $0.split(separator: "\t")[0] }, a.map { $0.split(separator: "\t")[0] })
        for (x, y) in zip(a, b) {
            XCTAssertLessThanOrEqual(relativeError(x.split(separator: "\t").dropFirst().map { Float($0)! },
                                                   y.split(separator: "\t").dropFirst().map { Float($0)! }), 1e-6)
        }
    }

    /// Memory follows the unit, not the job: ten times the texts, the same peak RSS (the
    /// children's own rusage; not a timing).
    func testPeakMemoryDoesNotGrowWithTheJob() throws {
        var peaks: [Int] = []
        for n in [3_000, 30_000] {
            let input = path("c\(n).txt"), out = path("c\(n).npy")
            var data = Data()
            let line = Data((String(repeating: "a dog runs across the green field near the old bridge ", count: 6) + "\n").utf8)
            for _ in 0..<n { data.append(line) }
            try data.write(to: URL(fileURLWithPath: input))
            // Units of 64 texts, so both jobs run enough of them for the allocator to settle; one
            // engine thread, so the peak does not also depend on how many threads were started.
            let (status, maxRSS) = try runMeasured(["embed-text", "--model", tiny, "--file", input, "-o", out, "--quiet",
                                                    "--max-length", "16", "--batch-size", "16", "--threads", "1"])
            XCTAssertEqual(status, 0)
            XCTAssertEqual(try NPY.read(path: out).shape, [n, 32])
            peaks.append(maxRSS)
        }
        print("peak RSS: 3,000 texts \(peaks[0] / 1024) MB, 30,000 texts \(peaks[1] / 1024) MB")
        // The larger job's input is 9.8 MB, its rows 3.8 MB and its token lists ~20 MB:
        // holding any of them would show.
        XCTAssertLessThanOrEqual(peaks[1], peaks[0] + 3 * 1024, "peak RSS grew with the job: \(peaks)")
    }

    func testBenchBERTJSON() throws {
        let r = try runVLM(["bench", "minilm", "--model", tiny, "--batch", "2", "--seq", "16", "--min-time", "0", "--min-iterations", "1", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try JSONSerialization.jsonObject(with: r.stdout) as! [String: Any]
        XCTAssertEqual(obj["unit"] as? String, "sequences")
        XCTAssertLessThanOrEqual(obj["naiveVsBlasRelativeError"] as! Double, 1e-5)
        let s = try runVLM(["bench", "minilm", "--model", tiny, "--sentences", "20", "--batch", "8", "--backend", "blas", "--min-time", "0", "--min-iterations", "1", "--json"])
        XCTAssertEqual(s.status, 0, s.stderr)
        XCTAssertTrue(s.out.contains("\"unit\":\"sentences\""), s.out)
    }
}

struct FixtureMissing: Error, CustomStringConvertible {
    let path: String
    var description: String { "fixture missing: \(path)" }
}

final class ShellErgonomicsTests: XCTestCase {
    func testSimilarityTable() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-sim-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = dir.appendingPathComponent("x.npy").path
        try writeAtomically(NPY.encode(Tensor(shape: [3, 2], data: [1, 0, 0, 2, 3, 3])), to: f)
        let labels = dir.appendingPathComponent("l.txt").path
        try Data("east\nnorth\nnorth-east\n".utf8).write(to: URL(fileURLWithPath: labels))
        let r = try runVLM(["similarity", f, "--labels", labels, "--width", "12"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.out.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines[1], "east          1.000  0.000  0.707")
        XCTAssertEqual(lines[2], "north         0.000  1.000  0.707")
        XCTAssertEqual(lines[5], "[1] north")
    }

    func testCompletionScriptsAndHelp() throws {
        for shell in ["bash", "zsh", "fish"] {
            let r = try runVLM(["--generate-completion-script", shell])
            XCTAssertEqual(r.status, 0)
            XCTAssertTrue(r.out.contains("embed-image") && r.out.contains("embed-text"), shell)
        }
        let help = try runVLM(["--help"])
        for code in ["  0 ", "  1 ", "  2 ", "  64 "] { XCTAssertTrue(help.out.contains(code), help.out) }
        for sub in ["embed-image", "embed-text", "fuse", "classify", "preprocess", "tokenize", "similarity", "inspect", "bench", "models"] {
            XCTAssertTrue(help.out.contains(sub), sub)
        }
    }
}
