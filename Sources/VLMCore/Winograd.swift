// Winograd F(2×2, 3×3) for stride-1 3×3 convolutions over NHWC activations: each 2×2 output
// tile costs 16 multiplications per (input, output) channel pair instead of 36 (2.25× fewer),
// and the 16 transform-domain products are plain sgemm calls, so BLAS stays the hot path.
// Transforms (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
//   U = G g Gᵀ (weights), V = Bᵀ d B (4×4 input tiles), Y = Aᵀ (U ⊙ V summed over channels) A.


/// u is (16, Cin, Cout): the transformed weights for each of the 16 tile positions;
/// weight is (3, 3, Cin, Cout).
public func winogradWeightTransform(u: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>, cin: Int, cout: Int) {
    let ck = cin * cout
    Threads.parallelFor(ck, minChunk: 4096) { range in
        for idx in range {
            // G g, one column of g at a time, then (G g) Gᵀ one row at a time; scalars only.
            var gg = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                      Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
            withUnsafeMutableBytes(of: &gg) { raw in
                let q = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                for col in 0..<3 {
                    let g0 = weight[col * ck + idx], g1 = weight[(3 + col) * ck + idx], g2 = weight[(6 + col) * ck + idx]
                    q[col] = g0
                    q[3 + col] = 0.5 * (g0 + g1 + g2)
                    q[6 + col] = 0.5 * (g0 - g1 + g2)
                    q[9 + col] = g2
                }
                for row in 0..<4 {
                    let a = q[row * 3], b = q[row * 3 + 1], c = q[row * 3 + 2]
                    u[(row * 4 + 0) * ck + idx] = a
                    u[(row * 4 + 1) * ck + idx] = 0.5 * (a + b + c)
                    u[(row * 4 + 2) * ck + idx] = 0.5 * (a - b + c)
                    u[(row * 4 + 3) * ck + idx] = c
                }
            }
        }
    }
}

/// out is (N,OH,OW,Cout), inp is (N,H,W,Cin), u from `winogradWeightTransform`. No epilogue.
/// Tiles are processed in chunks so the transform buffers stay under `bufferFloats`.
public func winogradConv3x3(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, u: UnsafePointer<Float>,
                            g: ConvGeometry, bufferFloats: Int = 4 << 20) {
    precondition(g.kernelH == 3 && g.kernelW == 3 && g.stride == 1, "Winograd F(2x2,3x3) needs a stride-1 3×3 convolution")
    let c = g.inChannels, k = g.outChannels, pad = g.padding
    let oh = g.outHeight, ow = g.outWidth
    let th = (oh + 1) / 2, tw = (ow + 1) / 2, tiles = g.batch * th * tw
    let chunk = max(1, min(tiles, bufferFloats / (16 * (c + k))))
    // V and M in one per-thread scratch buffer: every element is written before it is read.
    Scratch.withFloats(16 * chunk * (c + k)) { buffers in
        let v = buffers, m = buffers + 16 * chunk * c
        var t0 = 0
        while t0 < tiles {
            let pc = min(chunk, tiles - t0)
            // Input transform: V[ξ][t][:] for each tile; every step is a loop over the
            // channels (contiguous in NHWC), which the compiler vectorises.
            Threads.parallelFor(pc, minChunk: 4) { range in
                Scratch.withFloats(32 * c) { dp in
                    let tp = dp + 16 * c
                    for t in range {
                        let tile = t0 + t
                        let n = tile / (th * tw), ty = (tile / tw) % th, tx = tile % tw
                        for i in 0..<4 {
                            let iy = 2 * ty - pad + i
                            for j in 0..<4 {
                                let ix = 2 * tx - pad + j
                                let dst = dp + (i * 4 + j) * c
                                if iy < 0 || iy >= g.height || ix < 0 || ix >= g.width {
                                    dst.update(repeating: 0, count: c)
                                } else {
                                    dst.update(from: inp + ((n * g.height + iy) * g.width + ix) * c, count: c)
                                }
                            }
                        }
                        // Bᵀ d (rows), with Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]].
                        for j in 0..<4 {
                            let d0 = dp + j * c, d1 = dp + (4 + j) * c, d2 = dp + (8 + j) * c, d3 = dp + (12 + j) * c
                            let r0 = tp + j * c, r1 = tp + (4 + j) * c, r2 = tp + (8 + j) * c, r3 = tp + (12 + j) * c
                            for ch in 0..<c {
                                r0[ch] = d0[ch] - d2[ch]; r1[ch] = d1[ch] + d2[ch]
                                r2[ch] = d2[ch] - d1[ch]; r3[ch] = d1[ch] - d3[ch]
                            }
                        }
                        // (Bᵀ d) B (columns), written to V.
                        for i in 0..<4 {
                            let a = tp + (i * 4) * c, b = tp + (i * 4 + 1) * c, cc = tp + (i * 4 + 2) * c, e = tp + (i * 4 + 3) * c
                            let v0 = v + ((i * 4 + 0) * pc + t) * c, v1 = v + ((i * 4 + 1) * pc + t) * c
                            let v2 = v + ((i * 4 + 2) * pc + t) * c, v3 = v + ((i * 4 + 3) * pc + t) * c
                            for ch in 0..<c {
                                v0[ch] = a[ch] - cc[ch]; v1[ch] = b[ch] + cc[ch]
                                v2[ch] = cc[ch] - b[ch]; v3[ch] = b[ch] - e[ch]
                            }
                        }
                    }
                }
            }
            // 16 products M_ξ (pc, k) = V_ξ (pc, c) · U_ξ (c, k).
            // They are independent: dealt to the engine's threads, each sgemm single-threaded
            // (OpenBLAS always is, see `Threads`).
            Threads.parallelBlocks(16) { xi in
                sgemm(transA: false, transB: false, m: pc, n: k, k: c, a: v + xi * pc * c, lda: c,
                      b: u + xi * c * k, ldb: k, beta: 0, c: m + xi * pc * k, ldc: k)
            }
            // Output transform: Aᵀ M A with Aᵀ = [[1,1,1,0],[0,1,-1,-1]], along the channels.
            Threads.parallelFor(pc, minChunk: 4) { range in
                Scratch.withFloats(12 * k) { sp in
                    let rp = sp + 4 * k, yp = sp + 8 * k
                    for t in range {
                        let tile = t0 + t
                        let n = tile / (th * tw), ty = (tile / tw) % th, tx = tile % tw
                        for j in 0..<4 {
                            let m0 = m + ((0 * 4 + j) * pc + t) * k, m1 = m + ((1 * 4 + j) * pc + t) * k
                            let m2 = m + ((2 * 4 + j) * pc + t) * k, m3 = m + ((3 * 4 + j) * pc + t) * k
                            let s = sp + j * k, r = rp + j * k
                            for ch in 0..<k {
                                s[ch] = m0[ch] + m1[ch] + m2[ch]
                                r[ch] = m1[ch] - m2[ch] - m3[ch]
                            }
                        }
                        let y00 = yp, y01 = yp + k, y10 = yp + 2 * k, y11 = yp + 3 * k
                        for ch in 0..<k {
                            y00[ch] = sp[ch] + sp[k + ch] + sp[2 * k + ch]
                            y01[ch] = sp[k + ch] - sp[2 * k + ch] - sp[3 * k + ch]
                            y10[ch] = rp[ch] + rp[k + ch] + rp[2 * k + ch]
                            y11[ch] = rp[k + ch] - rp[2 * k + ch] - rp[3 * k + ch]
                        }
                        for a in 0..<2 {
                            let oy = 2 * ty + a
                            if oy >= oh { continue }
                            for b in 0..<2 {
                                let ox = 2 * tx + b
                                if ox >= ow { continue }
                                (out + ((n * oh + oy) * ow + ox) * k).update(from: yp + (a * 2 + b) * k, count: k)
                            }
                        }
                    }
                }
            }
            t0 += pc
        }
    }
}
