// The BLAS backend: every product is one cblas_sgemm. Convolutions lower to GEMM through im2col
// over NHWC activations, in row tiles so the column buffer stays bounded; a pointwise
// convolution (1×1, stride 1, no padding) is a GEMM on the activations themselves.

import COpenBLAS

public struct BLASBackend: Backend {
    /// Upper bound on one im2col tile, in floats (default 16 MiB); the tile always holds at
    /// least one row.
    public let im2colTileFloats: Int

    public init(im2colTileFloats: Int = 4 << 20) {
        precondition(im2colTileFloats > 0)
        self.im2colTileFloats = im2colTileFloats
    }
    public var kind: BackendKind { .blas }

    public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: Epilogue) {
        checkGEMM(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc)
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        applyEpilogueParallel(epilogue, c: c, m: m, n: n, ldc: ldc)
    }

    public func conv2d(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                       weight: UnsafePointer<Float>, geometry g: ConvGeometry, epilogue: Epilogue) {
        let m = g.m, n = g.outChannels, k = g.k
        if g.isPointwise {
            gemm(transA: false, transB: false, m: m, n: n, k: k, a: inp, lda: k, b: weight, ldb: n,
                 beta: 0, c: out, ldc: n, epilogue: epilogue)
            return
        }
        let tileRows = max(1, min(m, im2colTileFloats / k))
        var columns = [Float](repeating: 0, count: tileRows * k)
        columns.withUnsafeMutableBufferPointer { colBuf in
            let col = colBuf.baseAddress!
            var r0 = 0
            while r0 < m {
                let rows = min(tileRows, m - r0)
                Threads.parallelFor(rows, minChunk: max(1, 8192 / k)) { sub in
                    im2colNHWC(col: col + sub.lowerBound * k, inp: inp, g: g,
                               rows: (r0 + sub.lowerBound)..<(r0 + sub.upperBound))
                }
                var e = epilogue
                if let res = epilogue.residual { e.residual = res + r0 * n }
                gemm(transA: false, transB: false, m: rows, n: n, k: k, a: col, lda: k,
                     b: weight, ldb: n, beta: 0, c: out + r0 * n, ldc: n, epilogue: e)
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
        for ky in 0..<g.kernelH {
            let iy = y * g.stride - g.padding + ky
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
