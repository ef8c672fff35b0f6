// The naive backend: plain Swift loops, no BLAS. It is the reference the fast path is tested
// against and the baseline the benchmarks report. Loops are ordered so the compiler vectorises
// the innermost one, and rows are split over the engine's threads.

public struct NaiveBackend: Backend {
    public init() {}
    public var kind: BackendKind { .naive }

    public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: Epilogue) {
        checkGEMM(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc)
        if transB && m > 4 {
            // Bᵀ laid out as (K, N) once, so the inner loop runs along contiguous rows of B
            // (a dot product along K would not vectorise without reassociating the sum).
            var bt = [Float](repeating: 0, count: k * n)
            bt.withUnsafeMutableBufferPointer { t in
                for j in 0..<n { for p in 0..<k { t[p * n + j] = b[j * ldb + p] } }
            }
            bt.withUnsafeBufferPointer { t in
                gemm(transA: transA, transB: false, m: m, n: n, k: k, a: a, lda: lda, b: t.baseAddress!, ldb: n,
                     beta: beta, c: c, ldc: ldc, epilogue: epilogue)
            }
            return
        }
        Threads.parallelFor(m, minChunk: max(1, 65536 / max(1, n * k))) { rows in
            naiveGEMMRows(rows, transA: transA, transB: transB, n: n, k: k,
                          a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            applyEpilogue(epilogue, c: c, rows: rows, n: n, ldc: ldc)
        }
    }

    public func conv2d(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                       weight: UnsafePointer<Float>, geometry g: ConvGeometry, epilogue: Epilogue) {
        let oh = g.outHeight, ow = g.outWidth
        Threads.parallelFor(g.batch * oh, minChunk: 1) { range in
            for row in range {
                let b = row / oh, y = row % oh
                for x in 0..<ow {
                    naiveConvPixel(out: out + ((row * ow) + x) * g.outChannels, inp: inp,
                                   weight: weight, g: g, b: b, y: y, x: x)
                }
            }
            applyEpilogue(epilogue, c: out, rows: (range.lowerBound * ow)..<(range.upperBound * ow),
                          n: g.outChannels, ldc: g.outChannels)
        }
    }
}

/// Rows `rows` of C = op(A)·op(B) + beta·C, i-k-j order (j innermost, contiguous in B and C)
/// unless B is transposed, then i-j-k with a dot product along contiguous k.
@inline(__always)
func naiveGEMMRows(_ rows: Range<Int>, transA: Bool, transB: Bool, n: Int, k: Int,
                   a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                   beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    for i in rows {
        let crow = c + i * ldc
        if beta == 0 {
            for j in 0..<n { crow[j] = 0 }
        } else if beta != 1 {
            for j in 0..<n { crow[j] *= beta }
        }
        if transB {
            for j in 0..<n {
                let brow = b + j * ldb
                var acc: Float = 0
                if transA {
                    for p in 0..<k { acc += a[p * lda + i] * brow[p] }
                } else {
                    let arow = a + i * lda
                    for p in 0..<k { acc += arow[p] * brow[p] }
                }
                crow[j] += acc
            }
        } else {
            for p in 0..<k {
                let aip = transA ? a[p * lda + i] : a[i * lda + p]
                let brow = b + p * ldb
                for j in 0..<n { crow[j] += aip * brow[j] }
            }
        }
    }
}

/// One output pixel (b, y, x) of a direct convolution: out[co] = Σ in[b, iy, ix, ci]·w[ky, kx, ci, co]
/// over in-bounds taps, accumulated in the same (ky, kx, ci) order as im2col's K.
@inline(__always)
func naiveConvPixel(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                    weight: UnsafePointer<Float>, g: ConvGeometry, b: Int, y: Int, x: Int) {
    let cout = g.outChannels, cin = g.inChannels
    for co in 0..<cout { out[co] = 0 }
    for ky in 0..<g.kernelH {
        let iy = y * g.stride - g.padding + ky
        if iy < 0 || iy >= g.height { continue }
        for kx in 0..<g.kernelW {
            let ix = x * g.stride - g.padding + kx
            if ix < 0 || ix >= g.width { continue }
            let src = inp + ((b * g.height + iy) * g.width + ix) * cin
            let wtap = weight + (ky * g.kernelW + kx) * cin * cout
            for ci in 0..<cin {
                let v = src[ci]
                let wrow = wtap + ci * cout
                for co in 0..<cout { out[co] += v * wrow[co] }
            }
        }
    }
}
