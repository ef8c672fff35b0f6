// Batch jobs as a hostile or careless user meets them: a second job on the same output, a
// damaged partial state, outputs that are not regular files, write errors (a full disk, a
// closed stdout, a broken pipe), an image whose resize would need gigabytes, FIFOs and
// undecodable names in folders, NaN weights, absurd option values. Each must end in the right
// rows or in one clear line and the documented exit code — never a trap, a hang or a wrong row.
// Device nodes and mounts are made inside the test's own folder, and only where the machine
// allows it (a skip says why).

import Foundation
import XCTest
import VLMCore
import VLMIO

final class ReliabilityCLITests: XCTestCase {
    var dir: URL!
    let tiny = fixtures.appendingPathComponent("resnet/bottleneck_f32").path

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-rel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("imgs"), withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        _ = try? runShell("umount \(path("small")) 2>/dev/null")
        try? FileManager.default.removeItem(at: dir)
    }

    func path(_ n: String) -> String { dir.appendingPathComponent(n).path }

    /// n copies of the sample photos in imgs/.
    func folder(_ n: Int) throws -> String {
        let names = ["astronaut.jpg", "coffee.jpg", "chelsea.png", "rocket.jpg"]
        for k in 0..<n {
            try FileManager.default.copyItem(atPath: imageFixtures.appendingPathComponent(names[k % 4]).path,
                                             toPath: path("imgs/\(String(format: "%02d", k))-\(names[k % 4])"))
        }
        return path("imgs")
    }

    /// One line on stderr starting "vlm: error: ", holding each of `mentions`.
    func assertOneErrorLine(_ r: RunResult, status: Int32 = 1, _ mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, status, r.stderr, file: file, line: line)
        let lines = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("vlm: note:") }
        XCTAssertEqual(lines.count, 1, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains("vlm: error: "), r.stderr, file: file, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "stderr should mention \(m): \(r.stderr)", file: file, line: line) }
        XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr, file: file, line: line)
    }

    // MARK: - Races and damage

    func testSecondJobOnTheSameOutputFailsAtOnceAndTheFirstFinishes() throws {
        let imgs = try folder(12)
        let args = ["embed-image", imgs, "--model", tiny, "--batch-size", "2", "--quiet"]
        XCTAssertEqual(try runVLM(args + ["-o", path("ref.npy")]).status, 0)
        let out = path("out.npy")
        let first = try startPaused(args + ["-o", out], afterUnits: 2)
        // A second job, by the output's path and through a link to it: refused at once.
        try FileManager.default.createSymbolicLink(atPath: path("link.npy"), withDestinationPath: out)
        for target in [out, path("link.npy")] {
            let t0 = Date()
            let second = try runVLM(args + ["-o", target])
            assertOneErrorLine(second, ["another vlm job is writing this output"])
            XCTAssertLessThan(Date().timeIntervalSince(t0), 20, "refused at once, not after waiting")
        }
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        // The first job's state was untouched: it resumes to the uninterrupted bytes.
        XCTAssertEqual(try runVLM(args + ["-o", out, "--resume"]).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), try Data(contentsOf: URL(fileURLWithPath: path("ref.npy"))))
    }

    func testDamagedPartialIsCutBackAndRecomputed() throws {
        let imgs = try folder(10)
        let args = ["embed-image", imgs, "--model", tiny, "--batch-size", "2"]
        XCTAssertEqual(try runVLM(args + ["-o", path("ref.npy"), "--quiet"]).status, 0)
        let out = path("out.npy"), partial = out + ".partial"
        for damage in ["shorten rows", "delete ids", "alter journal"] {
            try killPaused(args + ["-o", out, "--quiet"], afterUnits: 4)
            switch damage {
            case "shorten rows":
                let h = try FileHandle(forUpdating: URL(fileURLWithPath: partial + "/rows.f32"))
                try h.truncate(atOffset: try h.seekToEnd() - 100)
                try h.close()
            case "delete ids": try FileManager.default.removeItem(atPath: partial + "/ids.txt")
            default:
                var j = try String(contentsOfFile: partial + "/journal.jsonl", encoding: .utf8)
                j = j.replacingOccurrences(of: "\"rows\":4", with: "\"rows\":5")
                try j.write(toFile: partial + "/journal.jsonl", atomically: false, encoding: .utf8)
            }
            let r = try runVLM(args + ["-o", out, "--resume"])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stderr.contains("vlm: note: \(partial): "), "a note says what was recomputed: \(r.stderr)")
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), try Data(contentsOf: URL(fileURLWithPath: path("ref.npy"))), damage)
        }
    }

    // MARK: - Outputs

    func testOutputsThatAreNotRegularFilesAreStreamedNeverReplaced() throws {
        let img = imageFixtures.appendingPathComponent("astronaut.jpg").path
        let common = ["embed-image", img, "--model", tiny, "--quiet"]
        // A FIFO: written as a stream, still a FIFO, nothing created beside it.
        let fifo = path("out.fifo")
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        final class Box: @unchecked Sendable { var data = Data() }
        let box = Box()
        let reader = Thread { box.data = FileHandle(forReadingAtPath: fifo)!.readDataToEndOfFile() }
        reader.start()
        let r = try runVLM(common + ["-o", fifo, "--format", "tsv"])
        XCTAssertEqual(r.status, 0, r.stderr)
        // The writer has exited, so the reader sees the end; the bound only fails, never decides.
        let deadline = Date(timeIntervalSinceNow: 60)
        while !reader.isFinished && Date() < deadline { usleep(10_000) }
        XCTAssertTrue(reader.isFinished, "the FIFO's reader never saw the end of the rows")
        XCTAssertTrue(String(decoding: box.data, as: UTF8.self).hasPrefix(img + "\t"))
        XCTAssertEqual(FileStatus.of(fifo)?.kind, .fifo)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["imgs", "out.fifo"])
        assertOneErrorLine(try runVLM(common + ["-o", fifo, "--resume"]), status: 64, ["--resume needs an output file", "a FIFO"])
        // A symbolic link: its target is replaced atomically, the link stays.
        try Data("old".utf8).write(to: URL(fileURLWithPath: path("target.npy")))
        try FileManager.default.createSymbolicLink(atPath: path("link.npy"), withDestinationPath: "target.npy")
        XCTAssertEqual(try runVLM(common + ["-o", path("link.npy")]).status, 0)
        XCTAssertEqual(try NPY.read(path: path("target.npy")).shape, [1, 256])
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: path("link.npy")), "target.npy")
        XCTAssertTrue(FileManager.default.fileExists(atPath: path("target.npy.ids.txt")))
        // A folder, an empty path, a missing folder: refused before any work.
        assertOneErrorLine(try runVLM(common + ["-o", path("imgs")]), [path("imgs"), "is a folder"])
        assertOneErrorLine(try runVLM(common + ["-o", ""]), ["an empty path"])
        assertOneErrorLine(try runVLM(common + ["-o", path("no/such/out.npy")]), ["does not exist"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("imgs.partial")))
    }

    /// A character device made here (as root, inside the test's folder): written, never replaced.
    func testACharacterDeviceOutputIsWrittenNeverReplaced() throws {
        guard getuid() == 0, mknod(path("null"), S_IFCHR | 0o666, deviceNumber(major: 1, minor: 3)) == 0 else {
            throw XCTSkip("character device output: cannot mknod here (not root)")
        }
        let img = imageFixtures.appendingPathComponent("astronaut.jpg").path
        XCTAssertEqual(try runVLM(["embed-image", img, "--model", tiny, "--quiet", "-o", path("null"), "--format", "npy"]).status, 0)
        XCTAssertEqual(FileStatus.of(path("null"))?.kind, .characterDevice)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("null.partial")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path(".null.lock")))
    }

    /// A full device (a /dev/full made here): "no space left on device", exit 1.
    func testAFullDeviceEndsWithOneLine() throws {
        guard getuid() == 0, mknod(path("full"), S_IFCHR | 0o666, deviceNumber(major: 1, minor: 7)) == 0 else {
            throw XCTSkip("/dev/full-like device: cannot mknod here (not root)")
        }
        let img = imageFixtures.appendingPathComponent("astronaut.jpg").path
        let args = ["embed-image", img, "--model", tiny, "--quiet", "--format", "tsv"]
        assertOneErrorLine(try runVLM(args + ["-o", path("full")]), ["no space left on device"])
        let viaStdout = try runShell("\(vlmBinary().path) \(args.joined(separator: " ")) > \(path("full"))")
        assertOneErrorLine(viaStdout, ["<stdout>", "no space left on device"])
    }

    func testWriteErrorsEndWithOneLineAndKeepThePartial() throws {
        let img = imageFixtures.appendingPathComponent("astronaut.jpg").path
        let args = ["embed-image", img, "--model", tiny, "--quiet", "--format", "tsv"]
        // A closed stdout, and a pipe closed early with SIGPIPE ignored.
        assertOneErrorLine(try runShell("\(vlmBinary().path) \(args.joined(separator: " ")) >&-"), ["<stdout>", "bad file descriptor"])
        let many = try folder(40)
        let broken = try runShell("trap '' PIPE; \(vlmBinary().path) embed-image \(many) --model \(tiny) --quiet --batch-size 4 | head -c 1 >/dev/null; exit ${PIPESTATUS[0]}")
        assertOneErrorLine(broken, ["<stdout>", "broken pipe"])
        // A full disk under a job's partial state: the job stops with one line, keeps what it
        // did, and --resume finishes it once there is room.
        try FileManager.default.createDirectory(atPath: path("small"), withIntermediateDirectories: true)
        guard getuid() == 0, try runShell("mount -t tmpfs -o size=600k tmpfs \(path("small"))").status == 0 else {
            throw XCTSkip("full disk under a job: cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
        }
        let jobArgs = ["embed-image", path("imgs"), "--model", tiny, "--quiet", "--batch-size", "4", "--format", "tsv"]
        XCTAssertEqual(try runVLM(jobArgs + ["-o", path("ref.tsv")]).status, 0)
        let out = path("small/out.tsv")
        try Data(count: 560 * 1024).write(to: URL(fileURLWithPath: path("small/filler")))
        let full = try runVLM(jobArgs + ["-o", out])
        assertOneErrorLine(full, ["no space left on device", "--resume"])
        try FileManager.default.removeItem(atPath: path("small/filler"))
        let resumed = try runVLM(jobArgs + ["-o", out, "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), try Data(contentsOf: URL(fileURLWithPath: path("ref.tsv"))))
    }

    // MARK: - Hostile inputs

    /// A 195 KB PNG of 1×65000 pixels would resize to 256 × 16.6 million: skipped as too_large
    /// at once, even under a 3 GB address-space limit.
    func testExtremeAspectImageIsSkippedUnderAMemoryLimit() throws {
        for (name, w, h) in [("tall.png", 1, 65000), ("wide.png", 65000, 1)] {
            try writePNG(path("imgs/" + name), width: w, height: h)
        }
        try FileManager.default.copyItem(atPath: imageFixtures.appendingPathComponent("coffee.jpg").path, toPath: path("imgs/ok.jpg"))
        let r = try runShell("ulimit -v 3000000; \(vlmBinary().path) embed-image \(path("imgs")) --model \(tiny) -o \(path("o.npy")) --quiet")
        XCTAssertEqual(r.status, 2, r.stderr)
        XCTAssertEqual(try NPY.read(path: path("o.npy")).shape, [1, 256])
        let errors = try String(contentsOfFile: path("o.npy.errors.jsonl"), encoding: .utf8)
        XCTAssertEqual(errors.components(separatedBy: "\"kind\":\"too_large\"").count - 1, 2, errors)
        XCTAssertTrue(r.stderr.contains("needs a buffer of 4259840000 pixels"), r.stderr)
    }

    func testFIFOsInFoldersAreSkippedAndNamedPathsRead() throws {
        try FileManager.default.copyItem(atPath: imageFixtures.appendingPathComponent("coffee.jpg").path, toPath: path("imgs/a.jpg"))
        XCTAssertEqual(mkfifo(path("imgs/b.jpg"), 0o644), 0)
        let r = try runVLM(["embed-image", path("imgs"), "--model", tiny, "-o", path("o.npy"), "--quiet"])
        XCTAssertEqual(r.status, 2, r.stderr)
        XCTAssertTrue(try String(contentsOfFile: path("o.npy.errors.jsonl"), encoding: .utf8).contains("\"kind\":\"not_a_file\""))
        // Named explicitly, a stream is read: process substitution works.
        let sub = try runShell("\(vlmBinary().path) embed-image <(cat \(path("imgs/a.jpg"))) --model \(tiny) --format tsv --quiet")
        XCTAssertEqual(sub.status, 0, sub.stderr)
        let direct = try runVLM(["embed-image", path("imgs/a.jpg"), "--model", tiny, "--format", "tsv", "--quiet"])
        XCTAssertEqual(sub.out.split(separator: "\t").dropFirst(), direct.out.split(separator: "\t").dropFirst())
    }

    /// Names with a newline, a tab, a backslash, and bytes that are not UTF-8: every id
    /// round-trips to the file's bytes, in ids.txt, TSV and JSON lines, and --list0 reads them.
    func testAnyFileNameRoundTripsThroughEveryFormat() throws {
        let names: [[UInt8]] = [Array("new\nline.jpg".utf8), Array("tab\there.jpg".utf8), Array("back\\slash.jpg".utf8),
                                [0x63, 0x61, 0x66, 0xE9, 0x2E, 0x6A, 0x70, 0x67], Array("plain.jpg".utf8)]
        let jpeg = try Data(contentsOf: imageFixtures.appendingPathComponent("coffee.jpg"))
        for n in names {
            let p = RawPath(path("imgs") + "/").appending(n)
            let fd = p.withCString { open($0, O_WRONLY | O_CREAT, 0o644) }
            XCTAssertGreaterThanOrEqual(fd, 0)
            _ = jpeg.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        let expected = names.map { RawPath(path("imgs") + "/").appending($0).bytes }.sorted { $0.lexicographicallyPrecedes($1) }
        let r = try runVLM(["embed-image", path("imgs"), "--model", tiny, "-o", path("o.npy"), "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ids = try String(contentsOfFile: path("o.npy.ids.txt"), encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        XCTAssertEqual(ids.map { RawPath.unescape(String($0)) }, expected)
        let jl = try runVLM(["embed-image", path("imgs"), "--model", tiny, "--quiet"])
        var fromJSON: [[UInt8]] = []
        for line in jl.out.split(separator: "\n") {
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let id = obj["id"] as! String
            fromJSON.append((obj["id_escaped"] as? Bool) == true ? RawPath.unescape(id)! : Array(id.utf8))
        }
        XCTAssertEqual(fromJSON, expected)
        let tsv = try runVLM(["embed-image", path("imgs"), "--model", tiny, "--quiet", "--format", "tsv"])
        XCTAssertEqual(tsv.out.split(separator: "\n").map { RawPath.unescape(String($0.split(separator: "\t")[0])) }, expected)
        // --list0: NUL-separated names, as find -print0 writes them.
        let list = Data(expected.reversed().flatMap { $0 + [0] })
        let l0 = try runVLM(["embed-image", "--list0", "-", "--model", tiny, "-o", path("l.npy"), "--quiet"], stdin: list)
        XCTAssertEqual(l0.status, 0, l0.stderr)
        XCTAssertEqual(try String(contentsOfFile: path("l.npy.ids.txt"), encoding: .utf8),
                       expected.reversed().map { RawPath.escape($0) + "\n" }.joined())
    }

    func testWeightsWithNaNOrNegativeVarianceAreRefused() throws {
        let src = try SafetensorsFile(path: tiny + "/model.safetensors")
        func write(_ name: String, _ change: (String, inout Tensor) -> Void) throws -> String {
            var entries: [(String, Tensor)] = []
            for k in src.names where src.tensors[k]!.dtype.isFloat {
                var t = try src.floatTensor(k)
                change(k, &t)
                entries.append((k, t))
            }
            try writeSafetensors(entries, to: path(name))
            return path(name)
        }
        let nan = try write("nan.safetensors") { k, t in if k == "layer2.0.conv2.weight" { t.data[5] = .nan } }
        let img = imageFixtures.appendingPathComponent("coffee.jpg").path
        assertOneErrorLine(try runVLM(["embed-image", img, "--model", nan]), ["layer2.0.conv2.weight", "NaN or infinite", "--allow-nonfinite"])
        let allowed = try runVLM(["embed-image", img, "--model", nan, "--allow-nonfinite", "--quiet", "-o", path("nan.npy")])
        XCTAssertEqual(allowed.status, 0, allowed.stderr)
        // Written, not recorded: the row is there and holds what the weights make of it.
        let written = try NPY.read(path: path("nan.npy"))
        XCTAssertEqual(written.shape, [1, 256])
        XCTAssertTrue(written.data.contains { !$0.isFinite }, "the NaN weight reaches the row")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("nan.npy.errors.jsonl")))
        XCTAssertEqual(try String(contentsOfFile: path("nan.npy.ids.txt"), encoding: .utf8), img + "\n")
        let negative = try write("neg.safetensors") { k, t in if k == "bn1.running_var" { t.data[2] = -0.5 } }
        assertOneErrorLine(try runVLM(["embed-image", img, "--model", negative]), ["bn1.running_var", "negative variance"])
        // conv1.weight with its dimensions swapped is named, not the BatchNorm after it.
        let swapped = try write("swap.safetensors") { k, t in if k == "conv1.weight" { t.shape = [t.shape[1], t.shape[0], t.shape[2], t.shape[3]] } }
        assertOneErrorLine(try runVLM(["embed-image", img, "--model", swapped]), ["'conv1.weight'", "has shape [3, 64, 7, 7], expected [64, 64, 7, 7]"])
    }

    func testAbsurdValuesAndMisleadingMessages() throws {
        let img = imageFixtures.appendingPathComponent("coffee.jpg").path
        for args in [["--crop", "2000000000"], ["--resize", "100000"], ["--crop", "20000"], ["--threads", "-1"], ["--threads", "0"],
                     ["--batch-size", "-5"], ["--batch-size", "99999999999"], ["--max-pixels", "0"]] {
            let r = try runVLM(["embed-image", img, "--model", tiny] + args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("Missing value"), r.stderr)
        }
        for (k, v) in [("VLM_THREADS", "abc"), ("VLM_THREADS", "0"), ("VLM_BACKEND", "gpu"), ("VLM_WINOGRAD", "yes"), ("OMP_NUM_THREADS", "-2")] {
            let r = try runVLM(["embed-image", img, "--model", tiny], env: [k: v])
            XCTAssertEqual(r.status, 64, "\(k)=\(v)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1)
            XCTAssertTrue(r.stderr.hasPrefix("vlm: error: \(k)=\(v): "), r.stderr)
        }
        // A .npy whose header claims more values than any file holds.
        var npy = NPY.encode(Tensor(zeros: [1, 3, 2, 2]))
        let r = npy.range(of: Data("(1, 3, 2, 2)".utf8))!
        npy.replaceSubrange(r, with: Data("(99999999999, 99999999999, 99999, 9)".utf8))
        try npy.write(to: URL(fileURLWithPath: path("huge.npy")))
        assertOneErrorLine(try runVLM(["embed-image", "--input-npy", path("huge.npy"), "--model", tiny]), [path("huge.npy"), "more values than any file can"])
        // A symbolic-link loop as the model.
        try FileManager.default.createSymbolicLink(atPath: path("loopA"), withDestinationPath: path("loopB"))
        try FileManager.default.createSymbolicLink(atPath: path("loopB"), withDestinationPath: path("loopA"))
        assertOneErrorLine(try runVLM(["embed-image", img, "--model", path("loopA")]), [path("loopA"), "too many levels of symbolic links"])
        assertOneErrorLine(try runVLM(["embed-text", "x", "--model", path("loopA")]), [path("loopA"), "too many levels of symbolic links"])
        // Wrong label counts, and a JSON line without the pair field.
        try writeAtomically(NPY.encode(Tensor(shape: [2, 2], data: [1, 0, 0, 1])), to: path("x.npy"))
        try Data("one\n".utf8).write(to: URL(fileURLWithPath: path("labels.txt")))
        assertOneErrorLine(try runVLM(["similarity", path("x.npy"), "--labels", path("labels.txt")]), [path("labels.txt"), "1 labels for 2 rows"])
        let pairs = try runVLM(["embed-text", "--model", fixtures.appendingPathComponent("bert/tiny").path, "--file", "-",
                                "--jsonl-field", "q", "--jsonl-pair-field", "a", "--quiet"],
                               stdin: Data("{\"q\": \"x\", \"a\": \"y\"}\n{\"q\": \"x\"}\n{\"q\": \"x\", \"a\": null}\n".utf8))
        XCTAssertEqual(pairs.status, 2, pairs.stderr)
        XCTAssertTrue(pairs.stderr.contains("<stdin>:2: no field 'a'"), pairs.stderr)
        // The registry and labels are found from any working folder.
        let elsewhere = try runShell("cd / && \(vlmBinary().path) models list")
        XCTAssertEqual(elsewhere.status, 0, elsewhere.stderr)
        XCTAssertTrue(elsewhere.out.contains("all-MiniLM-L6-v2"))
    }
}

extension ReliabilityCLITests {
    /// What a hostile probe of the command line found, each kept as a case.
    func testHostileProbeFindingsStayFixed() throws {
        let img = imageFixtures.appendingPathComponent("coffee.jpg").path
        let bert = fixtures.appendingPathComponent("bert/tiny").path
        let vlm = vlmBinary().path
        // Numeric JSON ids keep every digit.
        let ids = try runVLM(["embed-text", "--model", bert, "--file", "-", "--jsonl-field", "t", "--jsonl-id-field", "id", "--format", "tsv", "--quiet"],
                             stdin: Data("{\"t\":\"a\",\"id\":9007199254740993}\n{\"t\":\"b\",\"id\":1234567890123456789}\n".utf8))
        XCTAssertEqual(ids.out.split(separator: "\n").map { String($0.split(separator: "\t")[0]) }, ["9007199254740993", "1234567890123456789"])
        // Closed standard streams: no file takes their place.
        assertOneErrorLine(try runShell("\(vlm) embed-image \(img) --model \(tiny) --format npy -o - >&-"), ["<stdout>", "bad file descriptor"])
        assertOneErrorLine(try runShell("\(vlm) embed-image --list - --model \(tiny) -o \(path("x.jsonl")) <&-"), ["<stdin>", "bad file descriptor"])
        let quietStderr = try runShell("\(vlm) embed-image \(img) /nope.jpg --model \(tiny) --format npy -o - 2>&- > \(path("e.npy")); echo $? >&2")
        XCTAssertEqual(quietStderr.stderr, "2\n")
        XCTAssertEqual(try NPY.read(path: path("e.npy")).shape, [1, 256], "warnings never land in the rows")
        // A sentence-transformers config that leaves no room for a token.
        let modelFolder = path("m")
        try FileManager.default.createDirectory(atPath: modelFolder, withIntermediateDirectories: true)
        for f in ["config.json", "model.safetensors", "vocab.txt"] { try FileManager.default.copyItem(atPath: bert + "/" + f, toPath: modelFolder + "/" + f) }
        try Data("[{\"type\": \"sentence_transformers.models.Transformer\"}]".utf8).write(to: URL(fileURLWithPath: modelFolder + "/modules.json"))
        try Data("{\"max_seq_length\": 0}".utf8).write(to: URL(fileURLWithPath: modelFolder + "/sentence_bert_config.json"))
        assertOneErrorLine(try runVLM(["embed-text", "--model", modelFolder, "x"]), ["sentence_bert_config.json", "max_seq_length 0"])
        // A symbolic link put into the partial state is refused, and its target left alone.
        let imgs = try folder(8)
        let out = path("k.npy")
        try killPaused(["embed-image", imgs, "--model", tiny, "--batch-size", "2", "-o", out, "--quiet"], afterUnits: 2)
        try Data("precious".utf8).write(to: URL(fileURLWithPath: path("victim.txt")))
        try FileManager.default.removeItem(atPath: out + ".partial/errors.jsonl")
        try FileManager.default.createSymbolicLink(atPath: out + ".partial/errors.jsonl", withDestinationPath: "../victim.txt")
        assertOneErrorLine(try runVLM(["embed-image", imgs, "--model", tiny, "--batch-size", "2", "-o", out, "--resume"]), ["symbolic link"])
        XCTAssertEqual(try String(contentsOfFile: path("victim.txt"), encoding: .utf8), "precious")
        // A FIFO in the partial state does not hang a resume.
        try FileManager.default.removeItem(atPath: out + ".partial/errors.jsonl")
        XCTAssertEqual(mkfifo(out + ".partial/journal.jsonl.x", 0o644), 0)
        try FileManager.default.removeItem(atPath: out + ".partial/journal.jsonl")
        try FileManager.default.moveItem(atPath: out + ".partial/journal.jsonl.x", toPath: out + ".partial/journal.jsonl")
        assertOneErrorLine(try runVLM(["embed-image", imgs, "--model", tiny, "--batch-size", "2", "-o", out, "--resume"]), ["not a regular file"])
        // A checkpoint whose fc has no classes.
        let src = try SafetensorsFile(path: tiny + "/model.safetensors")
        var entries: [(String, Tensor)] = []
        for k in src.names where src.tensors[k]!.dtype.isFloat && !k.hasPrefix("fc.") { entries.append((k, try src.floatTensor(k))) }
        entries += [("fc.weight", Tensor(shape: [0, 256], data: [])), ("fc.bias", Tensor(shape: [0], data: []))]
        try writeSafetensors(entries, to: path("fc0.safetensors"))
        assertOneErrorLine(try runVLM(["embed-image", img, "--model", path("fc0.safetensors")]), ["fc.weight", "an empty dimension"])
        // Values that used to trap.
        try writeAtomically(NPY.encode(Tensor(shape: [2, 2], data: [1, 0, 0, 1])), to: path("x.npy"))
        XCTAssertEqual(try runVLM(["similarity", path("x.npy"), "--width", "0"]).status, 64)
        XCTAssertEqual(try runVLM(["bench", "resnet18", "--size", "32", "--backend", "blas", "--min-time", "0", "--min-iterations", "0"]).status, 64)
        XCTAssertEqual(try runVLM(["models", "fetch", "x", "--timeout", "inf"]).status, 64)
        // A registry that would write outside the models folder.
        try Data(#"{"models":[{"name":"ok","kind":"text","repo":"r","revision":"v","files":[{"path":"../../escaped.txt"}]}]}"#.utf8)
            .write(to: URL(fileURLWithPath: path("reg.json")))
        assertOneErrorLine(try runVLM(["models", "fetch", "ok", "--registry", path("reg.json"), "--models-dir", path("mm"), "--allow-unpinned"]),
                           ["leaves the model's folder"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("mm")))
        // Rows holding NaN are recorded, not written.
        var nan = Tensor(zeros: [2, 3, 8, 8])
        nan.data[5] = .nan
        try writeAtomically(NPY.encode(nan), to: path("nan.npy"))
        let n = try runVLM(["embed-image", "--input-npy", path("nan.npy"), "--model", tiny, "-o", path("n.npy"), "--quiet"])
        XCTAssertEqual(n.status, 2, n.stderr)
        XCTAssertEqual(try NPY.read(path: path("n.npy")).shape, [1, 256])
        XCTAssertTrue(try String(contentsOfFile: path("n.npy.errors.jsonl"), encoding: .utf8).contains("non_finite"))
        // A job that fails before its first unit leaves no partial folder.
        XCTAssertEqual(try runVLM(["embed-image", img, "--model", path("nope"), "-o", path("f.npy")]).status, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("f.npy.partial")))
        // "-" is stdin for an image too.
        let stdinImage = try runVLM(["embed-image", "-", "--model", tiny, "--format", "tsv", "--quiet"], stdin: try Data(contentsOf: URL(fileURLWithPath: img)))
        XCTAssertEqual(stdinImage.status, 0, stdinImage.stderr)
        XCTAssertTrue(stdinImage.out.hasPrefix("-\t"))
        // A control character in a name never reaches stderr raw.
        try Data("x".utf8).write(to: URL(fileURLWithPath: path("esc\u{1B}[31mred.jpg")))
        let esc = try runVLM(["embed-image", path("esc\u{1B}[31mred.jpg"), "--model", tiny, "--quiet"])
        XCTAssertEqual(esc.status, 2)
        XCTAssertFalse(esc.stderr.contains("\u{1B}"), esc.stderr)
        XCTAssertTrue(esc.stderr.contains("esc\\x1B[31mred.jpg"), esc.stderr)
        // A TSV pair whose path starts with "{".
        try FileManager.default.copyItem(atPath: img, toPath: path("{brace}.jpg"))
        let pair = try runVLM(["fuse", "--pairs", "-", "--image-model", tiny, "--text-model", bert, "--format", "tsv", "--quiet"],
                              stdin: Data("\(path("{brace}.jpg"))\ta caption\n".utf8))
        XCTAssertEqual(pair.status, 0, pair.stderr)
        let flags = try runVLM(["fuse", "--image", path("{brace}.jpg"), "--text", "a caption", "--image-model", tiny, "--text-model", bert,
                                "--format", "tsv", "--quiet"])
        XCTAssertEqual(flags.status, 0, flags.stderr)
        XCTAssertEqual(pair.out.split(separator: "\t").first.map(String.init), path("{brace}.jpg"), "its path is its id")
        XCTAssertEqual(pair.out, flags.out, "the pair's row, as from --image/--text")
        // A sidecar that is not a regular file is refused before any work.
        XCTAssertEqual(mkfifo(path("s.npy.ids.txt"), 0o644), 0)
        assertOneErrorLine(try runVLM(["embed-image", img, "--model", tiny, "-o", path("s.npy")]), ["s.npy.ids.txt", "a FIFO"])
        XCTAssertEqual(FileStatus.of(path("s.npy.ids.txt"))?.kind, .fifo)
        // OpenMP's list form of OMP_NUM_THREADS.
        XCTAssertEqual(try runVLM(["embed-image", img, "--model", tiny, "--quiet"], env: ["OMP_NUM_THREADS": "2,1"]).status, 0)
    }
}

// MARK: - Helpers

/// bash -c `script`, with its exit status and output.
func runShell(_ script: String) throws -> RunResult {
    try runProcess("/bin/bash", ["-c", script])
}

/// Starts vlm with the pause hook and returns it once it has paused after `afterUnits` units.
func startPaused(_ args: [String], afterUnits: Int) throws -> Process {
    let p = Process()
    p.executableURL = vlmTestHooksBinary()
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    environment["VLM_TEST_PAUSE_AFTER_UNITS"] = String(afterUnits)
    p.environment = environment
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    var text = ""
    while !text.contains("vlm: test: paused after unit \(afterUnits)") {
        let chunk = err.fileHandleForReading.availableData
        if chunk.isEmpty { break }
        text += String(decoding: chunk, as: UTF8.self)
    }
    XCTAssertTrue(text.contains("paused after unit \(afterUnits)"), text)
    return p
}

/// An 8-bit RGB PNG (stored, uncompressed deflate) of a gradient.
func writePNG(_ path: String, width: Int, height: Int) throws {
    func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c >> 1) ^ (0xEDB8_8320 & (0 &- (c & 1))) }
        }
        return ~c
    }
    func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
    func chunk(_ kind: String, _ data: [UInt8]) -> [UInt8] { be32(UInt32(data.count)) + Array(kind.utf8) + data + be32(crc32(Array(kind.utf8) + data)) }
    var raw: [UInt8] = []
    for y in 0..<height {
        raw.append(0)
        for x in 0..<width { raw += [UInt8((x + y) & 0xFF), UInt8(x & 0xFF), UInt8(y & 0xFF)] }
    }
    var z: [UInt8] = [0x78, 0x01]
    var i = 0
    repeat {
        let n = min(65535, raw.count - i)
        z.append(i + n == raw.count ? 1 : 0)
        z += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
        z += raw[i..<(i + n)]
        i += n
    } while i < raw.count
    var a: UInt32 = 1, b: UInt32 = 0
    for v in raw { a = (a + UInt32(v)) % 65521; b = (b + a) % 65521 }
    z += be32(b << 16 | a)
    let png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", be32(UInt32(width)) + be32(UInt32(height)) + [8, 2, 0, 0, 0])
        + chunk("IDAT", z) + chunk("IEND", [])
    try Data(png).write(to: URL(fileURLWithPath: path))
}

/// glibc's makedev for small numbers (major < 4096, minor < 256): the macro is not in Swift.
func deviceNumber(major: UInt64, minor: UInt64) -> dev_t { dev_t((major << 8) | minor) }
