// Each kernel of both backends against a direct computation written here, in Double, from
// torch's layouts (NCHW activations, OIHW weights) — independent of the engine's NHWC code.

import XCTest
import CKernels
import VLMCore

final class KernelTests: XCTestCase {
    /// BLAS: default; the shared-weights path with tiny im2col tiles; cache tiles of 3 rows;
    /// Winograd on every stride-1 3×3.
    let backends: [any Backend] = [BLASBackend(), NaiveBackend(), BLASBackend(im2colTileFloats: 700, cacheTileBytes: 0, winograd: false),
                                   BLASBackend(cacheTileBytes: 64, cacheTileMinRows: 3),
                                   BLASBackend(winograd: true, winogradMinChannels: 1, winogradMinTiles: 1)]

    // MARK: - GEMM

    func testGEMMAllTransposesAndLeadingDimensions() {
        var rng = SeededRandom(seed: 1)
        for (m, n, k) in [(1, 1, 1), (7, 5, 3), (33, 17, 65), (64, 130, 9)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let lda = (transA ? m : k) + 2, ldb = (transB ? k : n) + 1, ldc = n + 3
                    let a = rng.normals((transA ? k : m) * lda, std: 1)
                    let b = rng.normals((transB ? n : k) * ldb, std: 1)
                    let c0 = rng.normals(m * ldc, std: 1)
                    let bias = rng.normals(n, std: 1)
                    let res = rng.normals(m * ldc, std: 1)
                    for beta: Float in [0, 0.5] {
                        // Expected, in Double.
                        var expected = [Double](repeating: 0, count: m * ldc)
                        for i in 0..<m {
                            for j in 0..<n {
                                var s = 0.0
                                for p in 0..<k {
                                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                                    s += Double(av) * Double(bv)
                                }
                                s += Double(beta) * Double(c0[i * ldc + j]) + Double(bias[j]) + Double(res[i * ldc + j])
                                expected[i * ldc + j] = max(s, 0)
                            }
                        }
                        for be in backends {
                            var c = c0
                            bias.withUnsafeBufferPointer { bp in
                                res.withUnsafeBufferPointer { rp in
                                    be.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                                            beta: beta, c: &c, ldc: ldc,
                                            epilogue: Epilogue(bias: bp.baseAddress, residual: rp.baseAddress, relu: true))
                                }
                            }
                            var got: [Float] = [], want: [Float] = []
                            for i in 0..<m { for j in 0..<n { got.append(c[i * ldc + j]); want.append(Float(expected[i * ldc + j])) } }
                            XCTAssertLessThan(relativeError(got, want), 1e-5, "\(be.kind) m\(m) n\(n) k\(k) tA\(transA) tB\(transB) beta\(beta)")
                            // Padding columns past n are untouched.
                            for i in 0..<m { for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], c0[i * ldc + j]) } }
                        }
                    }
                }
            }
        }
    }

    // MARK: - Convolution

    /// Direct NCHW convolution with OIHW weights, in Double.
    func directConv(_ x: [Float], n: Int, c: Int, h: Int, w: Int, weight: [Float], cout: Int, kh: Int, kw: Int,
                    stride: Int, pad: Int) -> (out: [Double], oh: Int, ow: Int) {
        let oh = (h + 2 * pad - kh) / stride + 1, ow = (w + 2 * pad - kw) / stride + 1
        var out = [Double](repeating: 0, count: n * cout * oh * ow)
        for b in 0..<n { for co in 0..<cout { for y in 0..<oh { for xx in 0..<ow {
            var s = 0.0
            for ci in 0..<c { for ky in 0..<kh { for kx in 0..<kw {
                let iy = y * stride - pad + ky, ix = xx * stride - pad + kx
                if iy >= 0 && iy < h && ix >= 0 && ix < w {
                    s += Double(x[((b * c + ci) * h + iy) * w + ix]) * Double(weight[((co * c + ci) * kh + ky) * kw + kx])
                }
            } } }
            out[((b * cout + co) * oh + y) * ow + xx] = s
        } } } }
        return (out, oh, ow)
    }

    func testConvolutionStridePaddingAndPointwise() {
        var rng = SeededRandom(seed: 2)
        // (n, cin, h, w, cout, kh, kw, stride, pad)
        let cases = [(2, 3, 9, 11, 4, 3, 3, 1, 1), (2, 5, 10, 7, 6, 3, 3, 2, 1), (1, 3, 17, 15, 8, 7, 7, 2, 3),
                     (1, 7, 8, 8, 5, 3, 3, 1, 0), (3, 9, 5, 4, 6, 3, 3, 1, 2), (1, 4, 1, 1, 3, 3, 3, 1, 1),
                     (3, 8, 5, 6, 16, 1, 1, 1, 0), (2, 8, 9, 9, 5, 1, 1, 2, 0), (1, 4, 8, 6, 3, 5, 3, 3, 2),
                     (1, 2, 2, 3, 4, 3, 3, 1, 2), (1, 6, 1, 1, 7, 1, 1, 1, 0)]
        for (n, cin, h, w, cout, kh, kw, stride, pad) in cases {
            let x = rng.normals(n * cin * h * w, std: 1)
            let wt = rng.normals(cout * cin * kh * kw, std: 1)
            let bias = rng.normals(cout, std: 1)
            let (ref, oh, ow) = directConv(x, n: n, c: cin, h: h, w: w, weight: wt, cout: cout, kh: kh, kw: kw, stride: stride, pad: pad)
            let g = ConvGeometry(batch: n, height: h, width: w, inChannels: cin, outChannels: cout,
                                 kernelH: kh, kernelW: kw, stride: stride, padding: pad)
            XCTAssertEqual(g.outHeight, oh); XCTAssertEqual(g.outWidth, ow)
            XCTAssertEqual(g.isPointwise, kh == 1 && kw == 1 && stride == 1 && pad == 0)
            let nhwc = nchwToNHWC(Tensor(shape: [n, cin, h, w], data: x)).data
            let hwio = convWeightOIHWToHWIO(wt, cout: cout, cin: cin, kh: kh, kw: kw)
            // Expected NHWC with bias and ReLU.
            var want = [Float](repeating: 0, count: n * oh * ow * cout)
            for b in 0..<n { for co in 0..<cout { for p in 0..<(oh * ow) {
                want[(b * oh * ow + p) * cout + co] = Float(max(ref[(b * cout + co) * oh * ow + p] + Double(bias[co]), 0))
            } } }
            for be in backends {
                var out = [Float](repeating: .nan, count: g.outputCount)
                bias.withUnsafeBufferPointer { bp in
                    be.conv2d(out: &out, inp: nhwc, weight: hwio, geometry: g, epilogue: Epilogue(bias: bp.baseAddress, relu: true))
                }
                XCTAssertLessThan(relativeError(out, want), 1e-5, "\(be.kind) \(g)")
            }
        }
    }

    func testResidualEpilogueInTiledConvolution() {
        var rng = SeededRandom(seed: 3)
        let g = ConvGeometry(batch: 2, height: 12, width: 10, inChannels: 6, outChannels: 5, kernelH: 3, kernelW: 3, stride: 1, padding: 1)
        let x = rng.normals(g.inputCount, std: 1), w = rng.normals(g.k * g.outChannels, std: 1)
        let res = rng.normals(g.outputCount, std: 1)
        var outs: [[Float]] = []
        for be in backends {
            var out = [Float](repeating: 0, count: g.outputCount)
            res.withUnsafeBufferPointer { rp in
                be.conv2d(out: &out, inp: x, weight: w, geometry: g, epilogue: Epilogue(residual: rp.baseAddress, relu: false))
            }
            outs.append(out)
        }
        // Without the residual, then added by hand.
        var plain = [Float](repeating: 0, count: g.outputCount)
        NaiveBackend().conv2d(out: &plain, inp: x, weight: w, geometry: g, epilogue: .none)
        let want = zip(plain, res).map { $0 + $1 }
        for (i, o) in outs.enumerated() { XCTAssertLessThan(relativeError(o, want), 1e-6, "backend \(i)") }
    }

    // MARK: - Pooling, BatchNorm folding, layout

    func testMaxPoolMatchesDirect() {
        var rng = SeededRandom(seed: 4)
        for (n, c, h, w) in [(2, 3, 9, 8), (1, 5, 2, 2), (1, 2, 1, 1), (2, 4, 13, 6)] {
            let x = rng.normals(n * c * h * w, std: 1)
            let oh = pooledSize(h, size: 3, stride: 2, padding: 1), ow = pooledSize(w, size: 3, stride: 2, padding: 1)
            var want = [Float](repeating: 0, count: n * oh * ow * c)
            for b in 0..<n { for ch in 0..<c { for y in 0..<oh { for xx in 0..<ow {
                var m = -Float.infinity
                for ky in 0..<3 { for kx in 0..<3 {
                    let iy = y * 2 - 1 + ky, ix = xx * 2 - 1 + kx
                    if iy >= 0 && iy < h && ix >= 0 && ix < w { m = max(m, x[((b * c + ch) * h + iy) * w + ix]) }
                } }
                want[((b * oh + y) * ow + xx) * c + ch] = m
            } } } }
            let nhwc = nchwToNHWC(Tensor(shape: [n, c, h, w], data: x)).data
            var out = [Float](repeating: 0, count: want.count)
            maxPool2dForward(out: &out, inp: nhwc, n: n, h: h, w: w, c: c, size: 3, stride: 2, padding: 1)
            XCTAssertEqual(out, want)
        }
    }

    func testGlobalAveragePool() {
        var rng = SeededRandom(seed: 5)
        let (n, h, w, c) = (3, 4, 5, 6)
        let x = rng.normals(n * h * w * c, std: 1)
        var out = [Float](repeating: 0, count: n * c)
        globalAvgPoolForward(out: &out, inp: x, n: n, h: h, w: w, c: c)
        for b in 0..<n { for ch in 0..<c {
            var s = 0.0
            for p in 0..<(h * w) { s += Double(x[(b * h * w + p) * c + ch]) }
            XCTAssertEqual(Double(out[b * c + ch]), s / Double(h * w), accuracy: 1e-5)
        } }
    }

    /// AvgPool2d(s) as torch: non-overlapping s×s windows, odd sizes floored (the last row and
    /// column dropped), NHWC.
    func testAveragePoolWindowsMatchDirect() {
        var rng = SeededRandom(seed: 6)
        for (h, w, s) in [(4, 6, 2), (5, 7, 2), (9, 9, 3), (1, 3, 1)] {
            let (n, c) = (2, 5)
            let x = rng.normals(n * h * w * c, std: 1)
            let (oh, ow) = (h / s, w / s)
            var out = [Float](repeating: .nan, count: n * oh * ow * c)
            avgPool2dForward(out: &out, inp: x, n: n, h: h, w: w, c: c, size: s)
            for b in 0..<n { for y in 0..<oh { for xx in 0..<ow { for ch in 0..<c {
                var sum = 0.0
                for ky in 0..<s { for kx in 0..<s { sum += Double(x[((b * h + y * s + ky) * w + xx * s + kx) * c + ch]) } }
                XCTAssertEqual(Double(out[((b * oh + y) * ow + xx) * c + ch]), sum / Double(s * s), accuracy: 1e-5)
            } } } }
        }
    }

    func testBatchNormFoldingEqualsConvThenBatchNorm() {
        var rng = SeededRandom(seed: 6)
        let (cout, cin, k) = (5, 3, 3)
        let g = ConvGeometry(batch: 2, height: 7, width: 6, inChannels: cin, outChannels: cout, kernelH: k, kernelW: k, stride: 1, padding: 1)
        let w = rng.normals(cout * cin * k * k, std: 1), x = rng.normals(g.inputCount, std: 1)
        let gamma = rng.uniforms(cout, low: 0.5, high: 2), beta = rng.normals(cout, std: 1)
        let mean = rng.normals(cout, std: 1), variance = rng.uniforms(cout, low: 0.1, high: 3)
        let eps: Float = 1e-5
        // conv, then BatchNorm applied directly.
        var raw = [Float](repeating: 0, count: g.outputCount)
        NaiveBackend().conv2d(out: &raw, inp: x, weight: convWeightOIHWToHWIO(w, cout: cout, cin: cin, kh: k, kw: k), geometry: g, epilogue: .none)
        var want = raw
        for i in 0..<want.count {
            let co = i % cout
            want[i] = Float((Double(raw[i]) - Double(mean[co])) / (Double(variance[co]) + Double(eps)).squareRoot()
                            * Double(gamma[co]) + Double(beta[co]))
        }
        // Folded.
        var folded = w
        let bias = foldBatchNorm(weight: &folded, bias: nil, outChannels: cout, gamma: gamma, beta: beta, mean: mean, variance: variance, eps: eps)
        for be in backends {
            var out = [Float](repeating: 0, count: g.outputCount)
            bias.withUnsafeBufferPointer { bp in
                be.conv2d(out: &out, inp: x, weight: convWeightOIHWToHWIO(folded, cout: cout, cin: cin, kh: k, kw: k), geometry: g,
                          epilogue: Epilogue(bias: bp.baseAddress))
            }
            XCTAssertLessThan(relativeError(out, want), 1e-5, "\(be.kind)")
        }
    }

    func testLinearMatchesTorchLayout() {
        var rng = SeededRandom(seed: 8)
        let (m, inF, outF) = (4, 37, 9)
        let x = rng.normals(m * inF, std: 1), w = rng.normals(outF * inF, std: 1), b = rng.normals(outF, std: 1)
        var want = [Float](repeating: 0, count: m * outF)
        for i in 0..<m { for o in 0..<outF {
            var s = Double(b[o])
            for p in 0..<inF { s += Double(x[i * inF + p]) * Double(w[o * inF + p]) }
            want[i * outF + o] = Float(s)
        } }
        let res = rng.normals(m * outF, std: 1)
        for be in backends {
            let prepared = be.prepareLinear(weight: w, bias: b, inFeatures: inF, outFeatures: outF)
            var out = [Float](repeating: 0, count: m * outF)
            be.linear(out: &out, inp: x, rows: m, weights: prepared)
            XCTAssertLessThan(relativeError(out, want), 1e-6, "\(be.kind)")
            be.linear(out: &out, inp: x, rows: m, weights: prepared, residual: res)
            XCTAssertLessThan(relativeError(out, zip(want, res).map { $0 + $1 }), 1e-6, "\(be.kind) with residual")
        }
    }

    func testLayoutConversions() {
        let t = Tensor(shape: [1, 2, 2, 3], data: (0..<12).map(Float.init))
        // NCHW (1,2,2,3) → NHWC (1,2,3,2): element (c,h,w) moves to (h,w,c).
        XCTAssertEqual(nchwToNHWC(t).data, [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11])
        let w = (0..<(2 * 3 * 1 * 2)).map(Float.init)  // (O=2, I=3, 1, 2)
        let hwio = convWeightOIHWToHWIO(w, cout: 2, cin: 3, kh: 1, kw: 2)
        // (ky=0, kx=1, ci=2, co=1) ← (co=1, ci=2, ky=0, kx=1)
        let dst: Int = ((0 * 2 + 1) * 3 + 2) * 2 + 1
        let src: Int = ((1 * 3 + 2) * 1 + 0) * 2 + 1
        XCTAssertEqual(hwio[dst], w[src])
    }

    func testParallelForCoversEveryIndexOnce() {
        for threads in [1, 2, 5] {
            Threads.set(threads)
            for total in [0, 1, 7, 1000] {
                var hits = [Int](repeating: 0, count: total)
                hits.withUnsafeMutableBufferPointer { h in
                    let p = h.baseAddress
                    Threads.parallelFor(total, minChunk: 3) { r in for i in r { p![i] += 1 } }
                }
                XCTAssertEqual(hits, [Int](repeating: 1, count: total))
            }
        }
        Threads.set(Threads.defaultCount())
    }

    func testEachKindMakesItsBackend() {
        for kind in BackendKind.allCases { XCTAssertEqual(kind.make().kind, kind) }
        XCTAssertEqual(BackendKind(rawValue: "naive")?.make().kind, .naive)
        XCTAssertNil(BackendKind(rawValue: "gpu"))
    }
}

final class OpenBLASCoreTests: XCTestCase {
    let avx512: Set<String> = ["fma", "avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]

    func testRecommendsBetterKernelsOnlyWhenOpenBLASFellBack() {
        XCTAssertEqual(OpenBLASCore.recommendedCoreType(current: "Prescott", cpuFlags: avx512), "SkylakeX")
        XCTAssertEqual(OpenBLASCore.recommendedCoreType(current: "Haswell", cpuFlags: avx512), "SkylakeX")
        XCTAssertNil(OpenBLASCore.recommendedCoreType(current: "SkylakeX", cpuFlags: avx512))
        XCTAssertNil(OpenBLASCore.recommendedCoreType(current: "Cooperlake", cpuFlags: avx512))
        XCTAssertEqual(OpenBLASCore.recommendedCoreType(current: "Prescott", cpuFlags: ["fma", "avx2"]), "Haswell")
        XCTAssertNil(OpenBLASCore.recommendedCoreType(current: "Zen", cpuFlags: ["fma", "avx2"]))
        XCTAssertNil(OpenBLASCore.recommendedCoreType(current: "Prescott", cpuFlags: ["sse3"]))
    }

    func testNeverOverridesAChoiceAlreadyMade() {
        XCTAssertNil(OpenBLASCore.recommendedCoreType(environment: ["OPENBLAS_CORETYPE": "Haswell"]))
        XCTAssertNil(OpenBLASCore.recommendedCoreType(environment: ["VLM_OPENBLAS_CORETYPE": "keep"]))
        XCTAssertFalse(OpenBLASCore.coreName.isEmpty)
    }

    /// What bench, /info and the worker report: the kernels, and who chose them.
    func testKernelReportSaysWhenTheEnvironmentChoseWeakerKernels() {
        XCTAssertEqual(OpenBLASCore.kernelReport(current: "SkylakeX", environment: [:], cpuFlags: avx512), "SkylakeX")
        XCTAssertEqual(OpenBLASCore.kernelReport(current: "Haswell", environment: ["OPENBLAS_CORETYPE": "Haswell"], cpuFlags: avx512),
                       "Haswell (set by OPENBLAS_CORETYPE=Haswell in the environment; this CPU runs SkylakeX: unset it for faster products)")
        XCTAssertEqual(OpenBLASCore.kernelReport(current: "Haswell", environment: ["OPENBLAS_CORETYPE": "Haswell"], cpuFlags: ["fma", "avx2"]),
                       "Haswell (set by OPENBLAS_CORETYPE=Haswell in the environment)")
        XCTAssertEqual(OpenBLASCore.kernelReport(current: "SkylakeX", environment: ["OPENBLAS_CORETYPE": "SkylakeX", "VLM_REEXECUTED": "1"], cpuFlags: avx512),
                       "SkylakeX (chosen by vlm for this CPU)")
    }
}

/// Runs `body` at every kernel level this CPU has (AVX-512, AVX2, baseline: each build of the C
/// kernels), then goes back to the CPU's best. Each level must really be the one running.
func atEveryKernelLevel(_ body: (KernelLevel) -> Void) {
    defer { KernelLevel.force(nil) }
    for level in KernelLevel.available {
        XCTAssertEqual(KernelLevel.force(level), level)
        XCTAssertEqual(kernelInstructionSet, ["baseline", "avx2+fma", "avx512"][level.rawValue])
        body(level)
    }
}

final class TransformerKernelTests: XCTestCase {
    func testLayerNormSoftmaxAndActivationsMatchDirectFormulas() {
        atEveryKernelLevel { level in
        var rng = SeededRandom(seed: 10)
        for (rows, cols) in [(5, 37), (3, 384), (2, 8)] {
        let x = rng.normals(rows * cols, std: 3, mean: 1)
        let g = rng.normals(cols, std: 1), b = rng.normals(cols, std: 1)
        var ln = x
        layerNormForward(&ln, gamma: g, beta: b, rows: rows, cols: cols, eps: 1e-12)
        var sm = x
        softmaxRowsForward(&sm, rows: rows, cols: cols, scale: 0.125)
        for r in 0..<rows {
            let row = x[(r * cols)..<((r + 1) * cols)].map(Double.init)
            let mean = row.reduce(0, +) / Double(cols)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(cols)
            let mx = row.max()!
            let exps = row.map { exp(($0 - mx) * 0.125) }
            let total = exps.reduce(0, +)
            for j in 0..<cols {
                XCTAssertEqual(Double(ln[r * cols + j]), (row[j] - mean) / (variance + 1e-12).squareRoot() * Double(g[j]) + Double(b[j]), accuracy: 1e-5)
                XCTAssertEqual(Double(sm[r * cols + j]), exps[j] / total, accuracy: 1e-6)
            }
        }
        }
        let v: [Float] = [-5, -1.5, -0.3, 0, 0.2, 1, 2.5, 8]
        for (act, f) in [(ActivationFunction.gelu, { (x: Double) in 0.5 * x * (1 + erf(x / 2.0.squareRoot())) }),
                         (.geluTanh, { (x: Double) in 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x))) }),
                         (.relu, { (x: Double) in max(x, 0) }), (.tanh, { (x: Double) in tanh(x) }),
                         (.quickGELU, { (x: Double) in x / (1 + exp(-1.702 * x)) })] {
            var y = v
            activationForward(&y, count: y.count, act)
            for i in 0..<v.count { XCTAssertEqual(Double(y[i]), f(Double(v[i])), accuracy: 1e-6, "\(act) at \(v[i])") }
        }
        XCTAssertEqual(ActivationFunction(huggingFace: "gelu_new"), .geluTanh)
        XCTAssertEqual(ActivationFunction(huggingFace: "gelu_pytorch_tanh"), .geluTanh)
        XCTAssertEqual(ActivationFunction(huggingFace: "quick_gelu"), .quickGELU)
        XCTAssertNil(ActivationFunction(huggingFace: "swish"))
        }
    }
}

final class KernelLevelTests: XCTestCase {
    /// Forcing a level runs that level's build, not only reports it. The baseline build has no
    /// FMA, so the same inputs give other bits through LayerNorm, softmax and GELU than the FMA
    /// builds; AVX2 and AVX-512 do the same arithmetic (16 lanes written out in the source, FMA
    /// in both) and may agree bit for bit, so between them the build is told by its vector
    /// width, which `vlm_fma_chains` reports from the same dispatch.
    func testEachLevelRunsItsOwnBuild() throws {
        guard KernelLevel.available.count > 1 else { throw XCTSkip("this CPU has only the baseline kernels") }
        var rng = SeededRandom(seed: 77)
        let (rows, cols) = (16, 384)
        let x = rng.normals(rows * cols, std: 2, mean: 0.5)
        let g = rng.normals(cols, std: 1), b = rng.normals(cols, std: 1)
        var results: [KernelLevel: [[Float]]] = [:]
        var lanes: [KernelLevel: Int32] = [:]
        atEveryKernelLevel { level in
            var ln = x, sm = x, ge = x
            layerNormForward(&ln, gamma: g, beta: b, rows: rows, cols: cols, eps: 1e-12)
            softmaxRowsForward(&sm, rows: rows, cols: cols, scale: 0.125)
            activationForward(&ge, count: ge.count, .gelu)
            results[level] = [ln, sm, ge]
            var l: Int32 = 0
            _ = vlm_fma_chains(1, &l)
            lanes[level] = l
        }
        let levels = KernelLevel.available
        let width: [String: Int32] = ["baseline": 4, "avx2": 8, "avx512": 16]
        for level in levels { XCTAssertEqual(lanes[level], width[level.name], "\(level.name) ran another level's build") }
        for fma in levels where fma != .baseline {
            for (k, name) in ["LayerNorm", "softmax", "GELU"].enumerated() {
                XCTAssertTrue(results[.baseline]![k] != results[fma]![k], "\(name): baseline and \(fma.name) gave the same bits")
            }
        }
    }
}

final class EpilogueTests: XCTestCase {
    /// Every combination of bias, residual and ReLU against the formula, on both backends, with a
    /// padded ldc and a NaN that ReLU must keep (as torch's relu).
    func testEveryEpilogueCombinationMatchesTheFormula() {
        var rng = SeededRandom(seed: 41)
        let (m, n, k, ldc) = (3, 37, 2, 40)
        var a = rng.normals(m * k, std: 1)
        a[k] = .nan  // row 1 of the product is NaN
        let b = rng.normals(k * n, std: 1), bias = rng.normals(n, std: 1), res = rng.normals(m * ldc, std: 1)
        for useBias in [false, true] {
            for useResidual in [false, true] {
                for relu in [false, true] {
                    for be in [BLASBackend(), NaiveBackend()] as [any Backend] {
                        var c = [Float](repeating: 7, count: m * ldc)
                        bias.withUnsafeBufferPointer { bp in
                            res.withUnsafeBufferPointer { rp in
                                be.gemm(transA: false, transB: false, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, beta: 0,
                                        c: &c, ldc: ldc, epilogue: Epilogue(bias: useBias ? bp.baseAddress : nil,
                                                                            residual: useResidual ? rp.baseAddress : nil, relu: relu))
                            }
                        }
                        for i in 0..<m {
                            for j in 0..<n {
                                var v = (0..<k).reduce(0.0) { $0 + Double(a[i * k + $1]) * Double(b[$1 * n + j]) }
                                if useBias { v += Double(bias[j]) }
                                if useResidual { v += Double(res[i * ldc + j]) }
                                if relu && v < 0 { v = 0 }
                                let got = c[i * ldc + j], tag = "\(be.kind) bias \(useBias) residual \(useResidual) relu \(relu) (\(i), \(j))"
                                if i == 1 { XCTAssertTrue(got.isNaN, tag) } else { XCTAssertEqual(Double(got), v, accuracy: 1e-5, tag) }
                            }
                            for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], 7, "padding untouched") }
                        }
                    }
                }
            }
        }
    }
}

final class SplitGEMMTests: XCTestCase {
    /// Products large enough that the BLAS backend splits them over threads, along M and
    /// along N, with every transpose, padded leading dimensions and a full epilogue.
    func testSplitProductsEqualTheNaiveOnes() {
        var rng = SeededRandom(seed: 21)
        Threads.set(2)
        for (m, n, k) in [(300, 200, 100), (50, 500, 200), (257, 263, 61)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 5, ldc = n + 7
                    let a = rng.normals((transA ? k : m) * lda, std: 1), b = rng.normals((transB ? n : k) * ldb, std: 1)
                    let bias = rng.normals(n, std: 1), res = rng.normals(m * ldc, std: 1)
                    // Every epilogue shape: the BLAS backend applies it to each thread's block of C
                    // right after that block's product.
                    for (useBias, useResidual, relu) in [(true, true, true), (true, false, false), (false, true, false),
                                                         (false, false, true), (true, false, true)] {
                        var outs: [[Float]] = []
                        for be in [BLASBackend(), NaiveBackend()] as [any Backend] {
                            var c = [Float](repeating: 9, count: m * ldc)
                            bias.withUnsafeBufferPointer { bp in
                                res.withUnsafeBufferPointer { rp in
                                    be.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                                            beta: 0, c: &c, ldc: ldc,
                                            epilogue: Epilogue(bias: useBias ? bp.baseAddress : nil,
                                                               residual: useResidual ? rp.baseAddress : nil, relu: relu))
                                }
                            }
                            for i in 0..<m { for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], 9, "padding untouched") } }
                            outs.append(c)
                        }
                        XCTAssertLessThanOrEqual(relativeError(outs[0], outs[1]), 1e-5,
                                                 "m\(m) n\(n) k\(k) tA\(transA) tB\(transB) bias \(useBias) residual \(useResidual) relu \(relu)")
                    }
                }
            }
        }
        Threads.set(Threads.defaultCount())
    }
}

final class FastMathTests: XCTestCase {
    /// The vectorisable exp and erf against Foundation's, on dense grids, with the bounds their
    /// documentation states (exp: 2 ulp relative; erf: 2.4e-7 absolute, plus float rounding).
    func testExpAndErfApproximationsStayWithinTheirBounds() {
        atEveryKernelLevel { level in
        var worstExp = 0.0, worstErf = 0.0, worstGelu = 0.0
        for i in 0...200_000 {
            let x = Float(-87.0 + Double(i) * (175.0 / 200_000))
            let e = Double(expApprox(x)), ref = exp(Double(x))
            worstExp = max(worstExp, abs(e - ref) / ref)
        }
        for i in 0...200_000 {
            let x = Float(-12.0 + Double(i) * (24.0 / 200_000))
            worstErf = max(worstErf, abs(Double(erfApprox(x)) - erf(Double(x))))
            var g = x
            activationForward(&g, count: 1, .gelu)
            let gref = 0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot()))
            worstGelu = max(worstGelu, abs(Double(g) - gref) / max(1, abs(Double(x))))
        }
        XCTAssertLessThanOrEqual(worstExp, 2.5e-7, "2 ulp")
        XCTAssertLessThanOrEqual(worstErf, 2.4e-7 + 1.2e-7)
        XCTAssertLessThanOrEqual(worstGelu, 0.5 * 3.6e-7 + 1.2e-7)
        print("exp rel \(worstExp), erf abs \(worstErf), gelu \(worstGelu)")
        XCTAssertEqual(expApprox(0), 1)
        XCTAssertEqual(erfApprox(0), 0, accuracy: 1e-7)
        }
    }
}

final class AttentionKernelTests: XCTestCase {
    /// The direct kernel, and each backend's choice (BLAS: direct up to 64 keys, two sgemm
    /// products beyond; naive: two naive products), against softmax(Q Kᵀ) V in Double — with
    /// and without the causal mask (query i sees keys 0…i: CLIP's text tower).
    func testEveryAttentionPathEqualsTheFormula() {
        atEveryKernelLevel { level in
        var rng = SeededRandom(seed: 33)
        for causal in [false, true] {
        for (l, d) in [(1, 8), (7, 16), (16, 32), (17, 32), (33, 64), (64, 32), (5, 24), (65, 32), (90, 64)] {
            let ld = 3 * d + 5, ldc = d + 3
            let qkv = rng.normals(l * ld, std: 1)
            var ref = [Float](repeating: 0, count: l * ldc)
            var outputs: [(String, [Float])] = []
            qkv.withUnsafeBufferPointer { p in
                let q = p.baseAddress!, k = q + d, v = q + 2 * d
                var direct = [Float](repeating: 0, count: l * ldc)
                var scratch = [Float](repeating: .nan, count: attentionHeadScratch(l: l, d: d))
                attentionHeadForward(ctx: &direct, ldc: ldc, q: q, k: k, v: v, ld: ld, l: l, d: d, scale: 0.125, scratch: &scratch, causal: causal)
                outputs.append(("direct", direct))
                for be in [BLASBackend(), NaiveBackend()] as [any Backend] {
                    var out = [Float](repeating: 0, count: l * ldc)
                    var s = [Float](repeating: .nan, count: be.attentionScratch(length: l, headSize: d))
                    be.attentionHead(ctx: &out, ldc: ldc, q: q, k: k, v: v, ld: ld, length: l, headSize: d, scale: 0.125, scratch: &s, causal: causal)
                    outputs.append(("\(be.kind)", out))
                }
                // Reference: Q Kᵀ, softmax, · V, in Double.
                for i in 0..<l {
                    let seen = causal ? i + 1 : l
                    var s = (0..<seen).map { j in (0..<d).reduce(0.0) { $0 + Double(q[i * ld + $1]) * Double(k[j * ld + $1]) } * 0.125 }
                    let m = s.max()!
                    s = s.map { exp($0 - m) }
                    let total = s.reduce(0, +)
                    for p2 in 0..<d {
                        ref[i * ldc + p2] = Float((0..<seen).reduce(0.0) { $0 + s[$1] / total * Double(v[$1 * ld + p2]) })
                    }
                }
            }
            for (name, out) in outputs {
                // Only the d real columns of each row are the result; the padding is untouched.
                let got = (0..<l).flatMap { i in out[(i * ldc)..<(i * ldc + d)] }
                let want = (0..<l).flatMap { i in ref[(i * ldc)..<(i * ldc + d)] }
                XCTAssertLessThanOrEqual(relativeError(got, want), 1e-6, "\(name) l\(l) d\(d) causal \(causal)")
                XCTAssertTrue((0..<l).allSatisfy { i in out[(i * ldc + d)..<((i + 1) * ldc)].allSatisfy { $0 == 0 } }, name)
            }
        }
        }
        }
    }
}

final class ThreadBudgetTests: XCTestCase {
    /// The default thread count is the CPUs this process may use: the affinity mask, capped by
    /// the cgroup's CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, at the
    /// process's own cgroup or any level above it), rounded up.
    func testTheDefaultFollowsTheCgroupQuota() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-cgroup-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        func write(_ path: String, _ text: String) throws {
            let full = "\(root)/\(path)"
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: true, encoding: .utf8)
        }
        func count(affinity: Int, _ membership: String) throws -> Int {
            try write("proc-self-cgroup", membership)
            return Threads.defaultCount(affinity: affinity, cgroupRoot: "\(root)/fs", cgroupFile: "\(root)/proc-self-cgroup")
        }
        // No quota anywhere: the affinity mask.
        XCTAssertEqual(try count(affinity: 6, "0::/\n"), 6)
        XCTAssertNil(Threads.cgroupQuota(root: "\(root)/fs", membership: "\(root)/proc-self-cgroup"))
        // cgroup v2 at the root a container sees: 1.5 CPUs → 2.
        try write("fs/cpu.max", "150000 100000\n")
        XCTAssertEqual(try count(affinity: 6, "0::/\n"), 2)
        XCTAssertEqual(try count(affinity: 1, "0::/\n"), 1, "the mask is smaller")
        try FileManager.default.removeItem(atPath: "\(root)/fs")
        // v2, the process's own cgroup unlimited, its parent limited to 3 CPUs.
        try write("fs/a/b/cpu.max", "max 100000\n")
        try write("fs/a/cpu.max", "300000 100000\n")
        XCTAssertEqual(try count(affinity: 8, "0::/a/b\n"), 3)
        try FileManager.default.removeItem(atPath: "\(root)/fs")
        // cgroup v1: half a CPU → 1; an unlimited quota (-1) is none.
        try write("fs/cpu,cpuacct/docker/x/cpu.cfs_quota_us", "50000\n")
        try write("fs/cpu,cpuacct/docker/x/cpu.cfs_period_us", "100000\n")
        XCTAssertEqual(try count(affinity: 8, "12:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n"), 1)
        try write("fs/cpu,cpuacct/docker/x/cpu.cfs_quota_us", "-1\n")
        XCTAssertEqual(try count(affinity: 8, "4:cpu,cpuacct:/docker/x\n"), 8)
        // This process: no more than its affinity mask.
        XCTAssertLessThanOrEqual(Threads.defaultCount(), Threads.affinityCount() ?? .max)
        XCTAssertGreaterThanOrEqual(Threads.defaultCount(), 1)
    }

    /// Work handed to the engine from many threads at once, nested regions included, runs on the
    /// engine's threads only, at most `count` of them, and gives every block's result.
    func testWorkFromManyThreadsRunsOnTheEngineWithinTheBudget() {
        let saved = Threads.count
        defer { Threads.set(saved) }
        for width in [1, 2, 3] {
            Threads.set(width)
            let lock = NSLock()
            var running = 0, most = 0, names = Set<Int>(), sums = [Int](repeating: 0, count: 8)
            DispatchQueue.concurrentPerform(iterations: 8) { caller in
                let total = Threads.run { () -> Int in
                    var partial = [Int](repeating: 0, count: 40)
                    Threads.parallelBlocks(40) { i in
                        lock.lock(); running += 1; most = max(most, running)
                        names.insert(Int(bitPattern: pthread_self())); lock.unlock()
                        XCTAssertTrue(Threads.onEngineThread)
                        var inner = 0
                        Threads.parallelFor(100, minChunk: 1) { r in inner += r.count }   // nested: serial here
                        usleep(200)
                        partial[i] = inner + i
                        lock.lock(); running -= 1; lock.unlock()
                    }
                    return partial.reduce(0, +)
                }
                lock.lock(); sums[caller] = total; lock.unlock()
            }
            XCTAssertEqual(sums, [Int](repeating: 40 * 100 + 39 * 40 / 2, count: 8))
            XCTAssertLessThanOrEqual(most, width, "blocks at once with \(width) threads")
            XCTAssertLessThanOrEqual(names.count, width, "distinct threads with \(width) threads")
        }
    }
}
