// The BLAS backend: every product is one cblas_sgemm. Convolutions lower to GEMM through im2col
// over NHWC activations, in row tiles so the column buffer stays bounded; a pointwise
// convolution (1×1, stride 1, no padding) is a GEMM on the activations themselves.

import COpenBLAS
import Foundation

public struct BLASBackend: Backend {
    /// Upper bound on one im2col tile of the shared-weights path, in floats (default 16 MiB);
    /// the tile always holds at least one row.
    public let im2colTileFloats: Int

    /// Stride-1 3×3 convolutions with at least `winogradMinChannels` input channels and
    /// `winogradMinTiles` 2×2 output tiles go through Winograd F(2×2, 3×3), its 16 products
    /// dealt to the engine's threads; their weights are transformed once, at load
    /// (`prepareConvolution`). Measured on ResNet-50, it takes ~30% off the 256-channel 3×3
    /// convolutions at batch 8 and ~15% at batch 1 (49 tiles); with 128 channels it only ties
    /// im2col, and with 16 tiles (batch 1, 7×7) it loses (BENCHMARKS.md §4).
    public let winograd: Bool
    public let winogradMinChannels: Int
    public let winogradMinTiles: Int

    /// Sequences up to this length use the direct attention kernel (plain loops in C): below it
    /// two sgemm calls per head cost more in fixed overhead than they save.
    public let directAttentionMaxLength: Int

    /// Convolutions whose weights hold at most `cacheTileMaxWeights` floats run in row tiles of
    /// about `cacheTileBytes` (im2col rows + output rows), each tile on one of the engine's
    /// threads from im2col through sgemm to the epilogue while it is in cache (0: never).
    /// Larger weights (ResNet-50's last stages, where M is small) take the shared-weights path:
    /// a large im2col tile, then one product split by `gemm`, so the weights are packed once.
    public let cacheTileBytes: Int
    public let cacheTileMaxWeights: Int
    public let cacheTileMinRows: Int

    public init(im2colTileFloats: Int = 4 << 20, cacheTileBytes: Int = 1 << 20, cacheTileMaxWeights: Int = 1 << 18,
                cacheTileMinRows: Int = 64, winograd: Bool = true, winogradMinChannels: Int = 256, winogradMinTiles: Int = 32,
                directAttentionMaxLength: Int = 64) {
        precondition(im2colTileFloats > 0 && cacheTileBytes >= 0 && cacheTileMaxWeights >= 0 && cacheTileMinRows >= 1)
        self.im2colTileFloats = im2colTileFloats
        self.cacheTileBytes = cacheTileBytes
        self.cacheTileMaxWeights = cacheTileMaxWeights
        self.cacheTileMinRows = cacheTileMinRows
        self.winograd = winograd
        self.winogradMinChannels = winogradMinChannels
        self.winogradMinTiles = winogradMinTiles
        self.directAttentionMaxLength = directAttentionMaxLength
    }
    public var kind: BackendKind { .blas }

    public var settings: [String: String] {
        ["backend": kind.rawValue, "winograd": winograd ? "\(winogradMinChannels) channels, \(winogradMinTiles) tiles" : "off",
         "cache_tiles": "\(cacheTileBytes) bytes, \(cacheTileMaxWeights) weights, \(cacheTileMinRows) rows",
         "im2col_tile": "\(im2colTileFloats)", "direct_attention": "\(directAttentionMaxLength)"]
    }

    /// Whether a convolution of this shape has a Winograd form at all (the tile count, which
    /// depends on the input, is checked when it runs).
    func winogradApplies(_ spec: ConvolutionSpec) -> Bool {
        winograd && spec.kernelH == 3 && spec.kernelW == 3 && spec.stride == 1 && spec.inChannels >= winogradMinChannels
    }

    func winogradRuns(_ g: ConvGeometry) -> Bool {
        g.batch * ((g.outHeight + 1) / 2) * ((g.outWidth + 1) / 2) >= winogradMinTiles
    }

    public func prepareConvolution(_ spec: ConvolutionSpec, weight: [Float], bias: [Float]) -> ConvolutionWeights {
        guard winogradApplies(spec) else { return ConvolutionWeights(spec: spec, weight: weight, bias: bias) }
        var u = [Float](repeating: 0, count: 16 * spec.inChannels * spec.outChannels)
        u.withUnsafeMutableBufferPointer { ub in
            weight.withUnsafeBufferPointer {
                winogradWeightTransform(u: ub.baseAddress!, weight: $0.baseAddress!, cin: spec.inChannels, cout: spec.outChannels)
            }
        }
        return ConvolutionWeights(spec: spec, weight: weight, bias: bias, winograd: u)
    }

    public func conv2d(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weights: ConvolutionWeights,
                       batch: Int, height: Int, width: Int, residual: UnsafePointer<Float>?, relu: Bool) {
        let g = weights.spec.geometry(batch: batch, height: height, width: width)
        weights.weight.withUnsafeBufferPointer { w in
            weights.bias.withUnsafeBufferPointer { b in
                withOptionalPointer(weights.winograd) { u in
                    convolve(out: out, inp: inp, weight: w.baseAddress!, winogradWeights: u, geometry: g,
                             epilogue: Epilogue(bias: b.baseAddress!, residual: residual, relu: relu))
                }
            }
        }
    }

    public func attentionScratch(length l: Int, headSize d: Int) -> Int {
        l <= directAttentionMaxLength ? attentionHeadScratch(l: l, d: d) : l * l
    }

    public func attentionHead(ctx: UnsafeMutablePointer<Float>, ldc: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                              v: UnsafePointer<Float>, ld: Int, length l: Int, headSize d: Int, scale: Float,
                              scratch: UnsafeMutablePointer<Float>, causal: Bool) {
        if l <= directAttentionMaxLength {
            attentionHeadForward(ctx: ctx, ldc: ldc, q: q, k: k, v: v, ld: ld, l: l, d: d, scale: scale, scratch: scratch, causal: causal)
            return
        }
        gemm(transA: false, transB: true, m: l, n: l, k: d, a: q, lda: ld, b: k, ldb: ld, beta: 0, c: scratch, ldc: l, epilogue: .none)
        softmaxRowsForward(scratch, rows: l, cols: l, scale: scale, causal: causal)
        gemm(transA: false, transB: false, m: l, n: d, k: l, a: scratch, lda: l, b: v, ldb: ld, beta: 0, c: ctx, ldc: ldc, epilogue: .none)
    }

    /// The engine splits a large product into one block per thread itself — along N when
    /// N ≥ M (each thread packs only its part of B), else along M — and runs single-threaded
    /// sgemm on each block, with the epilogue applied to the block while it is in cache.
    /// OpenBLAS's own pool stays idle (see `Threads`): measured, its idle threads spinning in
    /// sched_yield between calls cost up to a fifth of the time on BERT-sized products.
    public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: Epilogue) {
        checkGEMM(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc)
        let workers = Threads.count
        let work = Double(m) * Double(n) * Double(k)
        if workers == 1 || work < 4e6 || Threads.inParallelRegion {
            sgemmBlock(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                       beta: beta, c: c, ldc: ldc)
            applyEpilogue(epilogue, c: c, rows: 0..<m, n: n, ldc: ldc)
            return
        }
        if n >= m {
            let step = ((n + workers - 1) / workers + 15) / 16 * 16
            let blocks = (n + step - 1) / step
            Threads.parallelBlocks(blocks) { blk in
                let j0 = blk * step, nb = min(step, n - j0)
                let bj = transB ? b + j0 * ldb : b + j0
                sgemmBlock(transA: transA, transB: transB, m: m, n: nb, k: k, a: a, lda: lda, b: bj, ldb: ldb,
                           beta: beta, c: c + j0, ldc: ldc)
                var e = epilogue
                e.bias = epilogue.bias.map { $0 + j0 }
                e.residual = epilogue.residual.map { $0 + j0 }
                applyEpilogue(e, c: c + j0, rows: 0..<m, n: nb, ldc: ldc)
            }
        } else {
            let step = (m + workers - 1) / workers
            let blocks = (m + step - 1) / step
            Threads.parallelBlocks(blocks) { blk in
                let i0 = blk * step, mb = min(step, m - i0)
                let ai = transA ? a + i0 : a + i0 * lda
                sgemmBlock(transA: transA, transB: transB, m: mb, n: n, k: k, a: ai, lda: lda, b: b, ldb: ldb,
                           beta: beta, c: c + i0 * ldc, ldc: ldc)
                var e = epilogue
                e.residual = epilogue.residual.map { $0 + i0 * ldc }
                applyEpilogue(e, c: c + i0 * ldc, rows: 0..<mb, n: n, ldc: ldc)
            }
        }
    }

    /// Rows of a cache tile (nil: the convolution takes the shared-weights path). A tile of
    /// im2col rows plus its output rows fills about `cacheTileBytes`, at least
    /// `cacheTileMinRows` rows, and no more than an equal share of M per thread.
    func cacheTileRows(_ g: ConvGeometry, workers: Int) -> Int? {
        let k = g.k, n = g.outChannels, m = g.m
        if cacheTileBytes == 0 || k * n > cacheTileMaxWeights { return nil }
        let rows = max(cacheTileMinRows, cacheTileBytes / (4 * (k + n)))
        return max(1, min(rows, (m + workers - 1) / workers))
    }

    /// The convolution in row tiles that stay in cache, each on one of the engine's threads:
    /// im2col of the tile (none for a pointwise convolution), single-threaded sgemm, epilogue,
    /// before the next tile.
    private func cacheTiledConv(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                g: ConvGeometry, tileRows: Int, epilogue: Epilogue) {
        let m = g.m, n = g.outChannels, k = g.k
        checkGEMM(transA: false, transB: false, m: tileRows, n: n, k: k, lda: k, ldb: n, ldc: n)
        let tiles = (m + tileRows - 1) / tileRows
        Threads.parallelBlocks(tiles) { t in
            let r0 = t * tileRows, rows = min(tileRows, m - r0)
            var e = epilogue
            if let res = epilogue.residual { e.residual = res + r0 * n }
            if g.isPointwise {
                sgemmBlock(transA: false, transB: false, m: rows, n: n, k: k, a: inp + r0 * k, lda: k, b: weight, ldb: n,
                           beta: 0, c: out + r0 * n, ldc: n)
            } else {
                Scratch.withFloats(rows * k) { col in
                    im2colNHWC(col: col, inp: inp, g: g, rows: r0..<(r0 + rows))
                    sgemmBlock(transA: false, transB: false, m: rows, n: n, k: k, a: col, lda: k, b: weight, ldb: n,
                               beta: 0, c: out + r0 * n, ldc: n)
                }
            }
            applyEpilogue(e, c: out + r0 * n, rows: 0..<rows, n: n, ldc: n)
        }
    }

    /// A convolution's product on the shared-weights path: the engine's split (`gemm`), so each
    /// thread packs only its share of the weights when N ≥ M. OpenBLAS's own pool, used here
    /// until measured otherwise, was ~7% slower on ResNet-50 at batch 1 and 8, its idle threads
    /// spinning while the engine's ran im2col and the cache-tiled convolutions.
    private func convGEMM(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                          c: UnsafeMutablePointer<Float>, epilogue: Epilogue) {
        gemm(transA: false, transB: false, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, beta: 0, c: c, ldc: n, epilogue: epilogue)
    }

    @inline(__always)
    private func sgemmBlock(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    /// Weights given per call: a Winograd-sized convolution transforms them on the fly.
    public func conv2d(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                       weight: UnsafePointer<Float>, geometry g: ConvGeometry, epilogue: Epilogue) {
        convolve(out: out, inp: inp, weight: weight, winogradWeights: nil, geometry: g, epilogue: epilogue)
    }

    private func convolve(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          winogradWeights: UnsafePointer<Float>?, geometry g: ConvGeometry, epilogue: Epilogue) {
        let m = g.m, n = g.outChannels, k = g.k
        let workers = Threads.inParallelRegion ? 1 : Threads.count
        let spec = ConvolutionSpec(inChannels: g.inChannels, outChannels: g.outChannels, kernelH: g.kernelH,
                                   kernelW: g.kernelW, stride: g.stride, padding: g.padding)
        let useWinograd = winogradApplies(spec) && winogradRuns(g)
        if !useWinograd, let tile = cacheTileRows(g, workers: workers) {
            cacheTiledConv(out: out, inp: inp, weight: weight, g: g, tileRows: tile, epilogue: epilogue)
            return
        }
        if g.isPointwise {
            convGEMM(m: m, n: n, k: k, a: inp, b: weight, c: out, epilogue: epilogue)
            return
        }
        if useWinograd {
            if let winogradWeights {
                winogradConv3x3(out: out, inp: inp, u: winogradWeights, g: g)
            } else {
                var u = [Float](repeating: 0, count: 16 * g.inChannels * n)
                u.withUnsafeMutableBufferPointer { ub in
                    winogradWeightTransform(u: ub.baseAddress!, weight: weight, cin: g.inChannels, cout: n)
                    winogradConv3x3(out: out, inp: inp, u: ub.baseAddress!, g: g)
                }
            }
            applyEpilogueParallel(epilogue, c: out, m: m, n: n, ldc: n)
            return
        }
        let tileRows = max(1, min(m, im2colTileFloats / k))
        Scratch.withFloats(tileRows * k) { col in
            var r0 = 0
            while r0 < m {
                let rows = min(tileRows, m - r0)
                Threads.parallelFor(rows, minChunk: max(1, 8192 / k)) { sub in
                    im2colNHWC(col: col + sub.lowerBound * k, inp: inp, g: g,
                               rows: (r0 + sub.lowerBound)..<(r0 + sub.upperBound))
                }
                var e = epilogue
                if let res = epilogue.residual { e.residual = res + r0 * n }
                convGEMM(m: rows, n: n, k: k, a: col, b: weight, c: out + r0 * n, epilogue: e)
                r0 += rows
            }
        }
    }
}

/// col is (rows.count, KH·KW·Cin): row r holds the receptive field of output pixel r (in
/// (b, y, x) order) as (ky, kx, ci), zeros where the window leaves the padded image.
/// inp is (N,H,W,Cin).
public func im2colNHWC(col: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                       g: ConvGeometry, rows: Range<Int>) {
    let oh = g.outHeight, ow = g.outWidth, cin = g.inChannels, k = g.k
    for r in rows {
        let b = r / (oh * ow), y = (r / ow) % oh, x = r % ow
        var dst = col + (r - rows.lowerBound) * k
        let x0 = x * g.stride - g.padding
        // The window's columns all inside the image: each of its rows is one contiguous span
        // of kernelW·Cin floats in NHWC.
        let rowInside = x0 >= 0 && x0 + g.kernelW <= g.width
        for ky in 0..<g.kernelH {
            let iy = y * g.stride - g.padding + ky
            if rowInside {
                if iy < 0 || iy >= g.height {
                    dst.update(repeating: 0, count: g.kernelW * cin)
                } else {
                    dst.update(from: inp + ((b * g.height + iy) * g.width + x0) * cin, count: g.kernelW * cin)
                }
                dst += g.kernelW * cin
                continue
            }
            for kx in 0..<g.kernelW {
                let ix = x * g.stride - g.padding + kx
                if iy < 0 || iy >= g.height || ix < 0 || ix >= g.width {
                    dst.update(repeating: 0, count: cin)
                } else {
                    dst.update(from: inp + ((b * g.height + iy) * g.width + ix) * cin, count: cin)
                }
                dst += cin
            }
        }
    }
}
