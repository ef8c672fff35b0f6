// Kernels shared by both backends: element-wise and pooling work that is memory-bound, so the
// backends differ only in their products (GEMM, convolution). Free functions, output first.

import Foundation

// MARK: - Pooling (NHWC)

/// out is (N,OH,OW,C), inp is (N,H,W,C); max over a size×size window with stride and padding,
/// where padded positions never win (as torch's max_pool2d).
public func maxPool2dForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                             n: Int, h: Int, w: Int, c: Int, size: Int, stride: Int, padding: Int) {
    let oh = (h + 2 * padding - size) / stride + 1
    let ow = (w + 2 * padding - size) / stride + 1
    Threads.parallelFor(n * oh, minChunk: 1) { range in
        for row in range {
            let b = row / oh, y = row % oh
            for x in 0..<ow {
                let dst = out + ((b * oh + y) * ow + x) * c
                for ch in 0..<c { dst[ch] = -.infinity }
                for ky in 0..<size {
                    let iy = y * stride - padding + ky
                    if iy < 0 || iy >= h { continue }
                    for kx in 0..<size {
                        let ix = x * stride - padding + kx
                        if ix < 0 || ix >= w { continue }
                        let src = inp + ((b * h + iy) * w + ix) * c
                        for ch in 0..<c { dst[ch] = max(dst[ch], src[ch]) }
                    }
                }
            }
        }
    }
}

/// out is (N,H/s,W/s,C) (sizes floored), inp is (N,H,W,C): the mean of each s×s window, windows
/// not overlapping (torch's AvgPool2d(s): CLIP's modified ResNet downsamples this way).
public func avgPool2dForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, h: Int, w: Int, c: Int, size s: Int) {
    let oh = h / s, ow = w / s
    let scale = 1 / Float(s * s)
    Threads.parallelFor(n * oh, minChunk: 1) { range in
        for row in range {
            let b = row / oh, y = row % oh
            for x in 0..<ow {
                let dst = out + ((b * oh + y) * ow + x) * c
                for ch in 0..<c { dst[ch] = 0 }
                for ky in 0..<s {
                    for kx in 0..<s {
                        let src = inp + ((b * h + y * s + ky) * w + x * s + kx) * c
                        for ch in 0..<c { dst[ch] += src[ch] }
                    }
                }
                for ch in 0..<c { dst[ch] *= scale }
            }
        }
    }
}

/// Output size of a pooling or convolution window along one axis.
public func pooledSize(_ n: Int, size: Int, stride: Int, padding: Int) -> Int {
    (n + 2 * padding - size) / stride + 1
}

/// out is (N,C), inp is (N,H,W,C): the mean over H·W.
public func globalAvgPoolForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                                 n: Int, h: Int, w: Int, c: Int) {
    let hw = h * w
    let scale = 1 / Float(hw)
    Threads.parallelFor(n, minChunk: 1) { range in
        for b in range {
            let dst = out + b * c
            for ch in 0..<c { dst[ch] = 0 }
            for p in 0..<hw {
                let src = inp + (b * hw + p) * c
                for ch in 0..<c { dst[ch] += src[ch] }
            }
            for ch in 0..<c { dst[ch] *= scale }
        }
    }
}

/// x is (count): x = max(x, 0) in place.
public func reluForward(_ x: UnsafeMutablePointer<Float>, count: Int) {
    Threads.parallelFor(count, minChunk: 1 << 16) { r in
        for i in r { x[i] = max(x[i], 0) }
    }
}

// MARK: - Weight preparation at load

/// BatchNorm folded into the convolution before it: w'[co,…] = w[co,…]·γ/√(var+ε) and
/// b' = β + (b − mean)·γ/√(var+ε). weight is (Cout, …) in torch's layout; bias is (Cout) or nil.
public func foldBatchNorm(weight: inout [Float], bias: [Float]?, outChannels: Int,
                          gamma: [Float], beta: [Float], mean: [Float], variance: [Float],
                          eps: Float) -> [Float] {
    precondition(weight.count % outChannels == 0)
    precondition(gamma.count == outChannels && beta.count == outChannels
                 && mean.count == outChannels && variance.count == outChannels)
    let per = weight.count / outChannels
    var folded = [Float](repeating: 0, count: outChannels)
    for co in 0..<outChannels {
        // Computed in Double so folding adds no error beyond one final rounding.
        let s = Double(gamma[co]) / (Double(variance[co]) + Double(eps)).squareRoot()
        for i in 0..<per { weight[co * per + i] = Float(Double(weight[co * per + i]) * s) }
        let b0 = Double(bias?[co] ?? 0)
        folded[co] = Float(Double(beta[co]) + (b0 - Double(mean[co])) * s)
    }
    return folded
}

/// out is (KH,KW,Cin,Cout), w is (Cout,Cin,KH,KW) as torch stores a convolution.
public func convWeightOIHWToHWIO(_ w: [Float], cout: Int, cin: Int, kh: Int, kw: Int) -> [Float] {
    precondition(w.count == cout * cin * kh * kw)
    var out = [Float](repeating: 0, count: w.count)
    for co in 0..<cout {
        for ci in 0..<cin {
            for y in 0..<kh {
                for x in 0..<kw {
                    out[((y * kw + x) * cin + ci) * cout + co] = w[((co * cin + ci) * kh + y) * kw + x]
                }
            }
        }
    }
    return out
}

/// out is (cols, rows), inp is (rows, cols): a blocked transpose.
public func transposeForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, rows: Int, cols: Int) {
    let block = 32
    Threads.parallelFor((rows + block - 1) / block, minChunk: 4) { rb in
        for r0 in stride(from: rb.lowerBound * block, to: min(rows, rb.upperBound * block), by: block) {
            for c0 in stride(from: 0, to: cols, by: block) {
                for r in r0..<min(rows, r0 + block) {
                    let src = inp + r * cols
                    for c in c0..<min(cols, c0 + block) { out[c * rows + r] = src[c] }
                }
            }
        }
    }
}

/// w (rows, cols) → (cols, rows).
public func transposed(_ w: [Float], rows: Int, cols: Int) -> [Float] {
    precondition(w.count == rows * cols)
    var out = [Float](repeating: 0, count: w.count)
    out.withUnsafeMutableBufferPointer { o in
        w.withUnsafeBufferPointer { i in transposeForward(out: o.baseAddress!, inp: i.baseAddress!, rows: rows, cols: cols) }
    }
    return out
}
