// `vlm pca fit` / `vlm pca apply` against scikit-learn (fixtures from scripts/export_pca_fixtures.py:
// PCA(svd_solver="covariance_eigh") in float64 on the same rows), bad input, and `--pca` /
// `--normalize-output` on embed-image, embed-text, fuse and the worker equal to embed followed
// by `pca apply`.

import Foundation
import XCTest
import VLMCore
import VLMIO

let pcaFixtures = fixtures.appendingPathComponent("generated/pca")

final class PCACLITests: XCTestCase {
    var dir: URL!
    let tinyResNet = fixtures.appendingPathComponent("resnet/bottleneck_f32").path
    let tinyBert = fixtures.appendingPathComponent("bert/tiny").path

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-pca-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    struct Case {
        let folder: URL
        let k: Int, rows: Int, dim: Int, split: Int, whitened: Bool
        let nComponents: String
        func file(_ name: String) -> String { folder.appendingPathComponent(name).path }
        func npy(_ name: String) throws -> Tensor { try NPY.read(path: file(name)) }
    }

    func loadCase(_ name: String) throws -> Case {
        let folder = pcaFixtures.appendingPathComponent(name)
        let json = folder.appendingPathComponent("case.json")
        guard FileManager.default.fileExists(atPath: json.path) else { throw FixtureMissing(path: json.path + " (run `make fixtures`)") }
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as! [String: Any]
        let n = obj["n_components"] as! NSNumber
        return Case(folder: folder, k: obj["k"] as! Int, rows: obj["rows"] as! Int, dim: obj["dim"] as! Int, split: obj["split"] as! Int,
                    whitened: obj["whitened"] as! Bool, nComponents: n.doubleValue < 1 ? "\(n.doubleValue)" : "\(n.intValue)")
    }

    func fit(_ inputs: [String], _ extra: [String], out: String, file: StaticString = #filePath, line: UInt = #line) throws -> SafetensorsFile {
        let r = try runVLM(["pca", "fit"] + inputs + extra + ["-o", out])
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        return try SafetensorsFile(path: out)
    }

    func apply(_ pca: String, _ inputs: [String], _ extra: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws -> Tensor {
        let out = path("applied-\(UUID().uuidString).npy")
        let r = try runVLM(["pca", "apply", pca] + inputs + extra + ["-o", out, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        return try NPY.read(path: out)
    }

    /// Columns `cols` of an (n, k) tensor.
    func columns(_ t: Tensor, _ cols: Range<Int>) -> [Float] {
        let k = t.shape[1]
        return (0..<t.shape[0]).flatMap { i in cols.map { t.data[i * k + $0] } }
    }

    /// Components, variances, ratios and transformed rows equal to scikit-learn's, as issue 13 says:
    /// |cos| ≥ 0.9999 for components whose eigenvalue is separated from its neighbours (by more
    /// than 1e-3 relative), the same sign, variances and transformed rows to 1e-4 relative.
    func checkParity(_ c: Case, _ got: SafetensorsFile, rank: Int? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let comp = try got.floatTensor("components"), ev = try got.floatTensor("explained_variance")
        let ratio = try got.floatTensor("explained_variance_ratio"), mean = try got.floatTensor("mean")
        let refComp = try c.npy("components.npy"), refEv = try c.npy("explained_variance.npy")
        let refRatio = try c.npy("explained_variance_ratio.npy"), eig = try c.npy("eigenvalues.npy")
        XCTAssertEqual(comp.shape, [c.k, c.dim], file: file, line: line)
        XCTAssertEqual(ev.shape, [c.k], file: file, line: line)
        XCTAssertLessThanOrEqual(relativeError(mean.data, try c.npy("mean.npy").data), 1e-6, "mean", file: file, line: line)
        XCTAssertEqual(got.metadata["rows"], "\(c.rows)", file: file, line: line)
        XCTAssertEqual(got.metadata["dim_in"], "\(c.dim)", file: file, line: line)
        XCTAssertNotNil(got.metadata["vlm_version"], file: file, line: line)
        let useful = rank ?? c.k
        var separated = 0, clustered = 0
        for k in 0..<useful {
            XCTAssertEqual(Double(ev.data[k]), Double(refEv.data[k]), accuracy: 1e-4 * Double(refEv.data[k]), "explained_variance[\(k)]", file: file, line: line)
            XCTAssertEqual(Double(ratio.data[k]), Double(refRatio.data[k]), accuracy: 1e-4 * Double(refRatio.data[k]), "ratio[\(k)]", file: file, line: line)
            let e = eig.data.map(Double.init)
            let gap = min(k > 0 ? e[k - 1] - e[k] : .infinity, e[k] - e[k + 1]) / e[k]
            guard gap > 1e-3 else {
                // Near-equal eigenvalues: any basis of their joint eigenspace is as right as
                // scikit-learn's, so the component must lie in the span of the reference
                // components of its cluster (consecutive eigenvalues within 1e-3 of each other).
                var lo = k, hi = k
                while lo > 0 && (e[lo - 1] - e[lo]) / e[lo] <= 1e-3 { lo -= 1 }
                while hi + 1 < e.count && (e[hi] - e[hi + 1]) / e[hi] <= 1e-3 { hi += 1 }
                guard hi < c.k else { continue }  // the cluster runs past the kept components
                clustered += 1
                let a = comp.data[(k * c.dim)..<((k + 1) * c.dim)]
                var inSpan = 0.0
                for j in lo...hi {
                    let b = refComp.data[(j * c.dim)..<((j + 1) * c.dim)]
                    let d = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                    inSpan += d * d
                }
                XCTAssertGreaterThanOrEqual(inSpan.squareRoot(), 0.9999, "component \(k) in the span of components \(lo)...\(hi)", file: file, line: line)
                continue
            }
            separated += 1
            let a = comp.data[(k * c.dim)..<((k + 1) * c.dim)], b = refComp.data[(k * c.dim)..<((k + 1) * c.dim)]
            let dot = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            XCTAssertGreaterThanOrEqual(dot, 0.9999, "component \(k): cosine (with sign) \(dot)", file: file, line: line)
            // scikit-learn's sign: the largest-magnitude entry is positive.
            XCTAssertGreaterThan(a.max { abs($0) < abs($1) }!, 0, file: file, line: line)
        }
        // The components are orthonormal, as scikit-learn's are: a basis of a near-degenerate
        // eigenspace passes the span check above even with a vector repeated, not this.
        var worstNorm = 0.0, worstDot = 0.0
        for i in 0..<useful {
            let a = comp.data[(i * c.dim)..<((i + 1) * c.dim)]
            for j in i..<useful {
                let b = comp.data[(j * c.dim)..<((j + 1) * c.dim)]
                let d = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                if i == j { worstNorm = max(worstNorm, abs(d - 1)) } else { worstDot = max(worstDot, abs(d)) }
            }
        }
        XCTAssertLessThanOrEqual(worstNorm, 1e-5, "‖component‖² − 1", file: file, line: line)
        XCTAssertLessThanOrEqual(worstDot, 1e-4, "components · each other", file: file, line: line)
        XCTAssertGreaterThan(separated, useful / 2, "most components are separated in these fixtures", file: file, line: line)
        print("PCA parity: \(separated) components checked by direction, \(clustered) by subspace, of \(useful)")
    }

    func testFitAndApplyEqualScikitLearn() throws {
        for name in ["spectrum", "fraction", "fused"] {
            let c = try loadCase(name)
            let pca = path("\(name).safetensors")
            let got = try fit([c.file("X.npy")], ["--dim", c.nComponents, "--quiet"], out: pca)
            try checkParity(c, got)
            XCTAssertEqual(got.metadata["whiten"], "false")
            let y = try apply(pca, [c.file("X.npy")])
            XCTAssertEqual(y.shape, [c.rows, c.k])
            XCTAssertLessThanOrEqual(relativeError(y.data, try c.npy("transformed.npy").data), 1e-4, "\(name) transformed")
            // The same rows in two files, .npy then raw .f32: the same fit.
            let split = try fit([c.file("X_a.npy"), c.file("X_b.f32")], ["--dim", c.nComponents, "--dim-in", "\(c.dim)", "--quiet"],
                                out: path("\(name)-split.safetensors"))
            try checkParity(c, split)
            let y2 = try apply(path("\(name)-split.safetensors"), [c.file("X_a.npy"), c.file("X_b.f32")], ["--dim-in", "\(c.dim)"])
            // (Chunks fall differently, so near-equal eigenvalues may mix differently: compare
            // with the reference, not bit for bit.)
            XCTAssertLessThanOrEqual(relativeError(y2.data, try c.npy("transformed.npy").data), 1e-4, "\(name): split files")
            if c.whitened {
                let white = path("\(name)-white.safetensors")
                XCTAssertEqual(try fit([c.file("X.npy")], ["--dim", c.nComponents, "--whiten", "--quiet"], out: white).metadata["whiten"], "true")
                let w = try apply(white, [c.file("X.npy")])
                XCTAssertLessThanOrEqual(relativeError(w.data, try c.npy("transformed_white.npy").data), 1e-4, "\(name) whitened")
            }
        }
        XCTAssertEqual(try loadCase("fraction").k, try SafetensorsFile(path: path("fraction.safetensors")).floatTensor("explained_variance").count)
    }

    /// A mean that moves by 10⁴ in every value from one of pca fit's 65,536-row chunks to the
    /// next (spreads 0.15…3 around it): the chunks' statistics merged pairwise (Chan et al.) keep
    /// the small within-chunk variances that a fixed shift's float32 products would round away.
    func testMeanDriftingBetweenChunksEqualsScikitLearn() throws {
        let c = try loadCase("drift")
        let pca = path("drift.safetensors")
        try checkParity(c, try fit([c.file("X.npy")], ["--dim", c.nComponents, "--quiet"], out: pca))
        XCTAssertLessThanOrEqual(relativeError(try apply(pca, [c.file("X.npy")]).data, try c.npy("transformed.npy").data), 1e-4)
        // The same rows in two files (.npy, then raw .f32), split at a chunk boundary: files
        // merge as chunks do. (A step of the mean inside one chunk is resolved only to float32's
        // precision of that chunk's spread, as README says.)
        try checkParity(c, try fit([c.file("X_a.npy"), c.file("X_b.f32")], ["--dim", c.nComponents, "--dim-in", "\(c.dim)", "--quiet"],
                                   out: path("drift-split.safetensors")))
    }

    /// Rows of 32,768 values: their covariance alone is 8 GiB. Under a 4 GiB address-space limit
    /// the fit is refused before any of it is taken, naming the limit (an allocation past it
    /// would end the process); dsyevd, whose 2D² workspace overflows LAPACK's 32-bit sizes at
    /// this width, is refused before reading.
    func testWideRowsAreSizedBeforeAnyMemoryIsTaken() throws {
        let d = 32768
        let wide = try writeNPY("wide32k.npy", rows: 3, dim: d) { i, j in Float((i * 7 + j) % 13) }
        for dim in ["2", "0.9"] {
            assertOneLine(try runShell("ulimit -v 4000000; '\(vlmBinary().path)' pca fit '\(wide)' --dim \(dim) -o '\(path("o.safetensors"))'"),
                          status: 1, ["wide32k.npy", "32768 values", "GiB", "ulimit -v allows 3.8 GiB"])
        }
        assertOneLine(try runVLM(["pca", "fit", wide, "--dim", "2", "--solver", "dsyevd", "-o", path("o.safetensors")]),
                      status: 64, ["wide32k.npy", "--solver dsyevd", "32768 values", "dsyevr"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("o.safetensors")))
    }

    /// Rows of rank 10 in 48 dimensions, K = 20: the ten directions without variance are reported,
    /// the ten with variance equal scikit-learn's, and whitened the others are exactly 0.
    func testRankDeficientRows() throws {
        let c = try loadCase("rankdef")
        let r = try runVLM(["pca", "fit", c.file("X.npy"), "--dim", "20", "--whiten", "-o", path("r.safetensors")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("10 of the 20 components have no variance"), r.stderr)
        try checkParity(c, try SafetensorsFile(path: path("r.safetensors")), rank: 10)
        let w = try apply(path("r.safetensors"), [c.file("X.npy")])
        XCTAssertTrue(w.data.allSatisfy(\.isFinite))
        XCTAssertTrue(columns(w, 10..<20).allSatisfy { $0 == 0 }, "no variance, whitened: 0")
        // The first ten: scikit-learn's transformed rows divided by √variance.
        let t = try c.npy("transformed.npy"), ev = try c.npy("explained_variance.npy")
        let expected = (0..<c.rows).flatMap { i in (0..<10).map { t.data[i * 20 + $0] / ev.data[$0].squareRoot() } }
        XCTAssertLessThanOrEqual(relativeError(columns(w, 0..<10), expected), 1e-4)
        let plain = try apply(try { () throws -> String in
            _ = try fit([c.file("X.npy")], ["--dim", "20", "--quiet"], out: path("p.safetensors")); return path("p.safetensors") }(), [c.file("X.npy")])
        XCTAssertLessThanOrEqual(relativeError(columns(plain, 0..<10), columns(t, 0..<10)), 1e-4)
    }

    /// The PCA file as other safetensors readers see it (the Python safetensors package).
    func testPCAFileLoadsInPython() throws {
        let c = try loadCase("spectrum")
        _ = try fit([c.file("X.npy")], ["--dim", "4", "--whiten", "--quiet"], out: path("p.safetensors"))
        let python = fixtures.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else { throw FixtureMissing(path: python + " (run `make venv`)") }
        let script = """
        import sys
        from safetensors import safe_open
        with safe_open(sys.argv[1], "np") as f:
            m = f.metadata()
            print(sorted(f.keys()), f.get_tensor("components").shape, f.get_tensor("mean").dtype, m["rows"], m["dim_in"], m["whiten"], "vlm_version" in m)
        """
        let r = try runProcess(python, ["-c", script, path("p.safetensors")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.out, "['components', 'explained_variance', 'explained_variance_ratio', 'mean'] (4, 64) float32 2000 64 true True\n")
        // And on stdout, the same bytes.
        let s = try runVLM(["pca", "fit", c.file("X.npy"), "--dim", "4", "--whiten", "--quiet", "-o", "-"])
        XCTAssertEqual(s.status, 0, s.stderr)
        XCTAssertEqual(s.stdout, try Data(contentsOf: URL(fileURLWithPath: path("p.safetensors"))))
    }

    func writeNPY(_ name: String, rows: Int, dim: Int, _ value: (Int, Int) -> Float) throws -> String {
        var data = [Float](repeating: 0, count: rows * dim)
        for i in 0..<rows { for j in 0..<dim { data[i * dim + j] = value(i, j) } }
        try NPY.encode(Tensor(shape: [rows, dim], data: data)).write(to: URL(fileURLWithPath: path(name)))
        return path(name)
    }

    func assertOneLine(_ r: RunResult, status: Int32, _ mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, status, r.stderr, file: file, line: line)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr, file: file, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "\(m) not in: \(r.stderr)", file: file, line: line) }
    }

    func testBadInputGetsOneLine() throws {
        var gen = SystemRandomNumberGenerator()
        let a = try writeNPY("a.npy", rows: 50, dim: 8) { _, _ in Float.random(in: -1...1, using: &gen) }
        let b = try writeNPY("b.npy", rows: 50, dim: 9) { _, _ in 1 }
        assertOneLine(try runVLM(["pca", "fit", a, b, "--dim", "2", "-o", path("o.safetensors")]), status: 1, ["b.npy", "9 values", "8"])
        assertOneLine(try runVLM(["pca", "fit", a, "--dim", "9", "-o", path("o.safetensors")]), status: 64, ["--dim 9", "8 values"])
        let five = try writeNPY("five.npy", rows: 5, dim: 8) { i, j in Float(i * j) }
        assertOneLine(try runVLM(["pca", "fit", five, "--dim", "5", "-o", path("o.safetensors")]), status: 1, ["five.npy", "at least 6 rows", "there are 5"])
        let nan = try writeNPY("nan.npy", rows: 300, dim: 8) { i, j in i == 123 && j == 4 ? .nan : Float(i + j) }
        assertOneLine(try runVLM(["pca", "fit", nan, "--dim", "2", "-o", path("o.safetensors")]), status: 1, ["nan.npy", "row 123", "NaN"])
        let inf = try writeNPY("inf.npy", rows: 300, dim: 8) { i, _ in i == 299 ? .infinity : Float(i) }
        assertOneLine(try runVLM(["pca", "fit", a, inf, "--dim", "2", "-o", path("o.safetensors")]), status: 1, ["inf.npy", "row 299"])
        FileManager.default.createFile(atPath: path("empty.f32"), contents: Data())
        assertOneLine(try runVLM(["pca", "fit", path("empty.f32"), "--dim-in", "8", "--dim", "2", "-o", path("o.safetensors")]), status: 1, ["empty.f32", "no rows"])
        let zeroRows = try writeNPY("zero.npy", rows: 0, dim: 8) { _, _ in 0 }
        assertOneLine(try runVLM(["pca", "fit", zeroRows, "--dim", "2", "-o", path("o.safetensors")]), status: 1, ["zero.npy", "no rows"])
        // Raw .f32 without --dim-in, or not a whole number of rows.
        try Data(count: 4 * 10).write(to: URL(fileURLWithPath: path("raw.f32")))
        assertOneLine(try runVLM(["pca", "fit", path("raw.f32"), "--dim", "2", "-o", path("o.safetensors")]), status: 64, ["raw.f32", "--dim-in"])
        assertOneLine(try runVLM(["pca", "fit", path("raw.f32"), "--dim-in", "3", "--dim", "2", "-o", path("o.safetensors")]), status: 1, ["raw.f32"])
        assertOneLine(try runVLM(["pca", "fit", path("missing.npy"), "--dim", "2", "-o", path("o.safetensors")]), status: 1, ["missing.npy"])
        // Usage errors (64) end with ArgumentParser's usage lines.
        let usage = try runVLM(["pca", "fit", a, "--dim", "1.5", "-o", path("o.safetensors")])
        XCTAssertEqual(usage.status, 64)
        XCTAssertTrue(usage.stderr.hasPrefix("Error: --dim as a fraction must be in (0, 1), got 1.5\n"), usage.stderr)
        // Finite values too large to square in float32; a header claiming absurdly wide rows
        // (a sparse file of the size it implies).
        let huge = try writeNPY("huge.npy", rows: 3, dim: 2) { i, j in i == 1 && j == 0 ? 1e20 : Float(i * j) }
        assertOneLine(try runVLM(["pca", "fit", huge, "--dim", "1", "-o", path("o.safetensors")]), status: 1, ["huge.npy", "overflows"])
        var wide = NPY.header(shape: [2, 812_000_000])
        let dataStart = wide.count
        wide.append(Data(count: 16))
        try wide.write(to: URL(fileURLWithPath: path("wide.npy")))
        XCTAssertEqual(truncate(path("wide.npy"), off_t(dataStart + 2 * 812_000_000 * 4)), 0)
        assertOneLine(try runVLM(["pca", "fit", path("wide.npy"), "--dim", "1", "-o", path("o.safetensors")]), status: 1, ["wide.npy", "812000000 values"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("o.safetensors")), "no output from a failed fit")
        // A PCA file with a negative variance.
        try writeSafetensors([("mean", Tensor(shape: [8], data: [Float](repeating: 0, count: 8))),
                              ("components", Tensor(shape: [1, 8], data: [Float](repeating: 0.35, count: 8))),
                              ("explained_variance", Tensor(shape: [1], data: [-1]))], to: path("neg.safetensors"))
        assertOneLine(try runVLM(["pca", "apply", path("neg.safetensors"), a, "-o", path("y.npy")]), status: 1, ["neg.safetensors", "negative variance"])
        // A PCA file whose metadata contradicts its tensors.
        try SafetensorsWriter.encode([.init(name: "mean", shape: [8], floats: [Float](repeating: 0, count: 8)),
                                      .init(name: "components", shape: [1, 8], floats: [Float](repeating: 0.35, count: 8)),
                                      .init(name: "explained_variance", shape: [1], floats: [1])],
                                     metadata: ["dim_in": "17"]).write(to: URL(fileURLWithPath: path("d17.safetensors")))
        assertOneLine(try runVLM(["pca", "apply", path("d17.safetensors"), a, "-o", path("y.npy")]), status: 1, ["d17.safetensors", "dim_in 17", "8 values"])
        // A PCA file whose dimension does not fit: pca apply, and every embed command.
        let r = try runVLM(["pca", "fit", a, "--dim", "3", "-o", path("p8.safetensors"), "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        assertOneLine(try runVLM(["pca", "apply", path("p8.safetensors"), b, "-o", path("y.npy")]), status: 1, ["b.npy", "9 values", "takes 8"])
        let image = imageFixtures.appendingPathComponent("astronaut.jpg").path
        assertOneLine(try runVLM(["embed-image", image, "--model", tinyResNet, "--pca", path("p8.safetensors"), "-o", path("y.npy")]),
                      status: 1, ["p8.safetensors", "8-d", "256-d"])
        assertOneLine(try runVLM(["embed-text", "--model", tinyBert, "--pca", path("p8.safetensors"), "-o", path("y.npy"), "--quiet", "a text"]),
                      status: 1, ["p8.safetensors", "8-d", "32-d"])
        assertOneLine(try runVLM(["fuse", "--image", image, "--text", "a", "--image-model", tinyResNet, "--text-model", tinyBert,
                                  "--pca", path("p8.safetensors"), "-o", path("y.npy"), "--quiet"]), status: 1, ["p8.safetensors", "8-d", "288-d"])
        // Not a PCA file at all.
        assertOneLine(try runVLM(["pca", "apply", tinyResNet + "/model.safetensors", a, "-o", path("y.npy")]), status: 1, ["model.safetensors", "not a PCA file"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("y.npy")))
        // pca apply skips and records rows holding NaN (exit 2), and writes the rest.
        let y = path("nan-out.npy")
        let skipped = try runVLM(["pca", "apply", path("p8.safetensors"), nan, "-o", y, "--quiet"])
        XCTAssertEqual(skipped.status, 2, skipped.stderr)
        XCTAssertEqual(try NPY.read(path: y).shape, [299, 3])
        XCTAssertTrue(try String(contentsOfFile: y + ".errors.jsonl", encoding: .utf8).contains("nan.npy: row 123 holds NaN"))
        assertOneLine(try runVLM(["pca", "apply", path("p8.safetensors"), nan, "-o", path("nan-fail.npy"), "--errors", "fail"]),
                      status: 1, ["nan.npy", "row 123", "NaN"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("nan-fail.npy")))
        // -o naming one of the job's own inputs (itself, or through a link) is refused before
        // any work: the finished output would replace it.
        let pcaBytes = try Data(contentsOf: URL(fileURLWithPath: path("p8.safetensors")))
        assertOneLine(try runVLM(["pca", "apply", path("p8.safetensors"), a, "-o", path("p8.safetensors")]), status: 64, ["p8.safetensors", "an input"])
        try FileManager.default.createSymbolicLink(atPath: path("a-link.npy"), withDestinationPath: a)
        assertOneLine(try runVLM(["pca", "apply", path("p8.safetensors"), a, "-o", path("a-link.npy")]), status: 64, ["a-link.npy", "same file as", "a.npy"])
        assertOneLine(try runVLM(["pca", "fit", a, "--dim", "2", "-o", a]), status: 64, ["a.npy", "an input"])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("p8.safetensors"))), pcaBytes)
        XCTAssertEqual(try NPY.read(path: a).shape, [50, 8])
        let texts = path("texts.tsv")
        try "a cat\na dog\n".write(toFile: texts, atomically: true, encoding: .utf8)
        assertOneLine(try runVLM(["embed-text", "--file", texts, "-o", texts, "--model", tinyBert]), status: 64, ["texts.tsv", "an input"])
        XCTAssertEqual(try String(contentsOfFile: texts, encoding: .utf8), "a cat\na dog\n")
        // The sidecar the output would replace, too; a stream output (never replaced) is not refused.
        try "a cat\na dog\n".write(toFile: path("t.npy.ids.txt"), atomically: true, encoding: .utf8)
        assertOneLine(try runVLM(["embed-text", "--file", path("t.npy.ids.txt"), "-o", path("t.npy"), "--model", tinyBert]),
                      status: 64, ["t.npy", "ids.txt", "an input"])
        let stream = try runVLM(["embed-text", "--file", "/dev/null", "-o", "/dev/null", "--model", tinyBert])
        XCTAssertEqual(stream.status, 1, stream.stderr)
        XCTAssertTrue(stream.stderr.contains("no texts"), stream.stderr)
        // --allow-nonfinite writes the NaN row, as on every batch job.
        let kept = path("nan-kept.npy")
        XCTAssertEqual(try runVLM(["pca", "apply", path("p8.safetensors"), nan, "-o", kept, "--quiet", "--allow-nonfinite"]).status, 0)
        let keptRows = try NPY.read(path: kept)
        XCTAssertEqual(keptRows.shape, [300, 3])
        XCTAssertTrue(keptRows.data[(123 * 3)..<(124 * 3)].contains { $0.isNaN })
        // In 19 units of 16 rows, worked on at once by several threads: the same rows, in order,
        // and the same error.
        let units = path("nan-units.npy")
        XCTAssertEqual(try runVLM(["pca", "apply", path("p8.safetensors"), nan, "-o", units, "--quiet", "--batch-size", "16"]).status, 2)
        XCTAssertEqual(try NPY.read(path: units).data, try NPY.read(path: y).data)
        XCTAssertEqual(try String(contentsOfFile: units + ".ids.txt", encoding: .utf8), try String(contentsOfFile: y + ".ids.txt", encoding: .utf8))
        XCTAssertTrue(try String(contentsOfFile: units + ".errors.jsonl", encoding: .utf8).contains("123"))
        // Killed after 3 of those units are recorded (later ones already worked on by the other
        // threads), then resumed: the same file as the run that was not interrupted.
        let resumed = path("nan-resumed.npy")
        let args = ["pca", "apply", path("p8.safetensors"), nan, "-o", resumed, "--quiet", "--batch-size", "16"]
        try killPaused(args, afterUnits: 3)
        XCTAssertFalse(FileManager.default.fileExists(atPath: resumed))
        XCTAssertEqual(try runVLM(args + ["--resume"]).status, 2)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: resumed)), try Data(contentsOf: URL(fileURLWithPath: units)))
        XCTAssertEqual(try String(contentsOfFile: resumed + ".errors.jsonl", encoding: .utf8),
                       try String(contentsOfFile: units + ".errors.jsonl", encoding: .utf8))
    }

    /// pca apply on rows much nearer the mean than the fitted spread (spread ~10³, noise 10⁻²),
    /// in units of 7 rows on every thread: within 1e-5 of the float64 projection, and the mean
    /// itself exactly 0 — also after --normalize-output (not rounding noise made a unit vector).
    func testRowsNearTheMeanApplyPrecisely() throws {
        var gen = SeededNormalCLI(state: 5)
        let train = try writeNPY("near-train.npy", rows: 1000, dim: 24) { _, j in Float(1000 + 1000 * Double(1 + j % 4) * gen.next()) }
        let pca = path("near.safetensors")
        XCTAssertEqual(try runVLM(["pca", "fit", train, "--dim", "6", "-o", pca, "--quiet"]).status, 0)
        let f = try SafetensorsFile(path: pca)
        let mean = try f.floatTensor("mean").data, comp = try f.floatTensor("components").data
        let rows = try writeNPY("near.npy", rows: 100, dim: 24) { i, j in i == 0 ? mean[j] : mean[j] + Float(0.01 * gen.next()) }
        let x = try NPY.read(path: rows).data
        for normalize in [false, true] {
            let y = try apply(pca, [rows], ["--batch-size", "7"] + (normalize ? ["--normalize-output"] : []))
            XCTAssertEqual(Array(y.data[0..<6]), [Float](repeating: 0, count: 6), "the mean itself")
            for i in 1..<100 {
                var ref = [Double](repeating: 0, count: 6)
                for c in 0..<6 {
                    for j in 0..<24 { ref[c] += (Double(x[i * 24 + j]) - Double(mean[j])) * Double(comp[c * 24 + j]) }
                }
                var norm = 0.0
                for c in 0..<6 { norm += ref[c] * ref[c] }
                norm = norm.squareRoot()
                var err = 0.0
                for c in 0..<6 {
                    let want = normalize ? ref[c] / norm : ref[c]
                    err += (Double(y.data[i * 6 + c]) - want) * (Double(y.data[i * 6 + c]) - want)
                }
                XCTAssertLessThanOrEqual(err.squareRoot() / (normalize ? 1 : norm), 1e-5, "row \(i)\(normalize ? ", normalised" : "")")
            }
        }
    }

    /// A PCA fitted on `dim`-wide rows from seeded Gaussians.
    func pcaFor(dim: Int, k: Int, whiten: Bool) throws -> String {
        var gen = SeededNormalCLI(state: UInt64(dim))
        let x = try writeNPY("train\(dim).npy", rows: 400, dim: dim) { _, j in Float(gen.next() * (1 + Double(j % 7))) + 0.1 }
        let out = path("pca\(dim)\(whiten ? "w" : "").safetensors")
        let r = try runVLM(["pca", "fit", x, "--dim", "\(k)", "-o", out, "--quiet"] + (whiten ? ["--whiten"] : []))
        XCTAssertEqual(r.status, 0, r.stderr)
        return out
    }

    /// `--pca P [--normalize-output]` on a job equals the job without it followed by
    /// `pca apply P [--normalize-output]`; the resume fingerprint holds the PCA file's hash.
    func testPCAOnEveryEmbedCommandEqualsEmbedThenApply() throws {
        let images = ["astronaut.jpg", "coffee.jpg", "palette.png"].map { imageFixtures.appendingPathComponent($0).path }
        let texts = ["An astronaut in a white suit.", "A cup of coffee on a saucer.", "naïve café 東京"]
        try texts.joined(separator: "\n").write(toFile: path("texts.txt"), atomically: true, encoding: .utf8)
        let pairs = zip(images, texts).map { "\($0)\t\($1)" }.joined(separator: "\n") + "\n"
        try pairs.write(toFile: path("pairs.tsv"), atomically: true, encoding: .utf8)
        let jobs: [(String, [String], Int)] = [
            ("image", ["embed-image"] + images + ["--model", tinyResNet], 256),
            ("text", ["embed-text", "--model", tinyBert, "--file", path("texts.txt")], 32),
            ("fuse", ["fuse", "--pairs", path("pairs.tsv"), "--image-model", tinyResNet, "--text-model", tinyBert, "--normalize-parts"], 288),
        ]
        for (name, args, dim) in jobs {
            let plainOut = path("\(name)-plain.npy")
            let plain = try runVLM(args + ["-o", plainOut, "--quiet"])
            XCTAssertEqual(plain.status, 0, plain.stderr)
            for whiten in [false, true] {
                let pca = try pcaFor(dim: dim, k: 5, whiten: whiten)
                for normalize in [false, true] {
                    let flags = normalize ? ["--normalize-output"] : []
                    let out = path("\(name)-\(whiten)-\(normalize).npy")
                    let r = try runVLM(args + ["--pca", pca, "-o", out, "--quiet"] + flags)
                    XCTAssertEqual(r.status, 0, r.stderr)
                    let direct = try NPY.read(path: out)
                    let applied = try apply(pca, [plainOut], flags)
                    XCTAssertEqual(direct.shape, [3, 5])
                    XCTAssertLessThanOrEqual(relativeError(direct.data, applied.data), 1e-6, "\(name) whiten \(whiten) normalize \(normalize)")
                    XCTAssertEqual(try String(contentsOfFile: out + ".ids.txt", encoding: .utf8),
                                   try String(contentsOfFile: plainOut + ".ids.txt", encoding: .utf8))
                    if normalize {
                        for i in 0..<3 {
                            let n = (0..<5).reduce(0.0) { $0 + Double(direct.data[i * 5 + $1] * direct.data[i * 5 + $1]) }
                            XCTAssertEqual(n, 1, accuracy: 1e-5)
                        }
                    }
                }
            }
            // --normalize-output alone: unit rows of the model's width.
            let unit = path("\(name)-unit.npy")
            XCTAssertEqual(try runVLM(args + ["--normalize-output", "-o", unit, "--quiet"]).status, 0)
            let unitRows = try NPY.read(path: unit), plainRows = try NPY.read(path: plainOut)
            XCTAssertEqual(unitRows.shape, [3, dim])
            XCTAssertEqual(plainRows.shape, [3, dim])
            for i in 0..<3 {
                // Each row is the plain row over its norm (in double), element by element.
                let plain = plainRows.data[(i * dim)..<((i + 1) * dim)].map(Double.init)
                let norm = plain.reduce(0) { $0 + $1 * $1 }.squareRoot()
                XCTAssertGreaterThan(norm, 0)
                let want = plain.map { Float($0 / norm) }
                XCTAssertLessThanOrEqual(relativeError(Array(unitRows.data[(i * dim)..<((i + 1) * dim)]), want), 1e-6, "\(name) row \(i)")
            }
        }
        // Resume: a partial made with one PCA file is not resumed with another.
        let pcaA = try pcaFor(dim: 256, k: 5, whiten: false), pcaB = try pcaFor(dim: 256, k: 5, whiten: true)
        let args = ["embed-image"] + images + ["--model", tinyResNet, "--batch-size", "1", "-o", path("resume.npy")]
        try killPaused(args + ["--pca", pcaA], afterUnits: 1)
        let other = try runVLM(args + ["--pca", pcaB, "--resume"])
        XCTAssertEqual(other.status, 1)
        XCTAssertTrue(other.stderr.contains("holds a different job") && other.stderr.contains("pca"), other.stderr)
        let same = try runVLM(args + ["--pca", pcaA, "--resume", "--quiet"])
        XCTAssertEqual(same.status, 0, same.stderr)
        XCTAssertLessThanOrEqual(relativeError(try NPY.read(path: path("resume.npy")).data, try NPY.read(path: path("image-false-false.npy")).data), 1e-6)
    }

    /// The worker with --pca answers with projected vectors equal to the CLI's, for the kind of
    /// request the PCA fits, and with an error response for the others.
    func testWorkerWithPCA() throws {
        let pca = try pcaFor(dim: 32, k: 4, whiten: true)
        let texts = ["A cat sitting on a couch.", "a dog"]
        let cliOut = path("cli.npy")
        XCTAssertEqual(try runVLM(["embed-text", "--model", tinyBert, "--pca", pca, "--normalize-output", "-o", cliOut, "--quiet"] + texts).status, 0)
        let cli = try NPY.read(path: cliOut)
        let image = imageFixtures.appendingPathComponent("astronaut.jpg").path
        let lines = texts.enumerated().map { "{\"id\":\"t\($0.offset)\",\"text\":\"\($0.element)\"}" } + ["{\"id\":\"i\",\"image\":\"\(image)\"}"]
        let r = try runVLM(["worker", "--image-model", tinyResNet, "--text-model", tinyBert, "--pca", pca, "--normalize-output"],
                           stdin: Data((lines.joined(separator: "\n") + "\n").utf8))
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = try r.out.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(out.count, 3)
        for i in 0..<2 {
            let v = Data(base64Encoded: out[i]["vector"] as! String)!.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            XCTAssertEqual(v.count, 4)
            XCTAssertLessThanOrEqual(relativeError(v, Array(cli.data[(i * 4)..<(i * 4 + 4)])), 1e-6)
        }
        XCTAssertNil(out[2]["vector"])
        XCTAssertTrue("\(out[2]["error"] ?? "")".contains("32-d"), "\(out[2])")
        // A PCA file that cannot be read ends the worker at start.
        let bad = try runVLM(["worker", "--text-model", tinyBert, "--pca", path("nope.safetensors")], stdin: Data())
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("nope.safetensors"), bad.stderr)
    }
}

/// Seeded Gaussians (splitmix64 + Box–Muller) for the CLI tests.
struct SeededNormalCLI {
    var state: UInt64
    mutating func next() -> Double {
        func u() -> Double {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
        }
        let a = max(u(), 1e-300), b = u()
        return (-2 * log(a)).squareRoot() * cos(2 * .pi * b)
    }
}
