// The pieces every transformer encoder of vlm's shares (BERT, CLIP's towers): a linear layer and
// LayerNorm over rows held in Swift arrays, and attention over packed sequences (no padding:
// offsets[s]..<offsets[s+1] are sequence s's rows).

import VLMCore

/// out (rows, out) = inp (rows, in) · W + bias (+ residual).
func linear(_ out: inout [Float], _ inp: [Float], _ w: LinearWeights, rows: Int, residual: [Float]? = nil, backend: any Backend) {
    precondition(inp.count >= rows * w.inFeatures && out.count >= rows * w.outFeatures)
    out.withUnsafeMutableBufferPointer { o in
        inp.withUnsafeBufferPointer { i in
            withOptionalPointer(residual) { res in
                backend.linear(out: o.baseAddress!, inp: i.baseAddress!, rows: rows, weights: w, residual: res)
            }
        }
    }
}

/// x (rows, cols), in place: LayerNorm of each row, · g + b.
func layerNormRows(_ x: inout [Float], _ g: [Float], _ b: [Float], rows: Int, cols: Int, eps: Float) {
    x.withUnsafeMutableBufferPointer { xp in
        g.withUnsafeBufferPointer { gp in
            b.withUnsafeBufferPointer { bp in
                layerNormForward(xp.baseAddress!, gamma: gp.baseAddress!, beta: bp.baseAddress!, rows: rows, cols: cols, eps: eps)
            }
        }
    }
}

/// ctx (t, W) = softmax(Q Kᵀ / √d) V for every sequence and head; Q, K, V are column blocks of
/// qkv (t, 3W). No padding, so no padding mask: every key is a real token (causal: query i sees
/// keys 0…i of its sequence). The (sequence, head) pairs are independent small products: they
/// run on the engine's threads, each on one thread, and the backend chooses the kernel for
/// each (`attentionHead`).
func packedAttention(ctx: inout [Float], qkv: [Float], offsets: [Int], width w: Int, heads: Int, causal: Bool, backend: any Backend) {
    let d = w / heads, ld = 3 * w
    let scale = 1 / Float(d).squareRoot()
    let count = offsets.count - 1
    let longest = (0..<count).map { offsets[$0 + 1] - offsets[$0] }.max()!
    let scratchPerWorker = backend.attentionScratch(length: longest, headSize: d)
    var perWorker = [Float](repeating: 0, count: Threads.count * scratchPerWorker)
    ctx.withUnsafeMutableBufferPointer { cp in
        qkv.withUnsafeBufferPointer { qp in
            perWorker.withUnsafeMutableBufferPointer { sp in
                let (c0, q0, s0) = (cp.baseAddress!, qp.baseAddress!, sp.baseAddress!)
                Threads.parallelInterleaved(count * heads) { worker, pair in
                    let s = pair / heads, head = pair % heads
                    let start = offsets[s], length = offsets[s + 1] - start
                    let base = q0 + start * ld
                    backend.attentionHead(ctx: c0 + start * w + head * d, ldc: w, q: base + head * d, k: base + w + head * d,
                                          v: base + 2 * w + head * d, ld: ld, length: length, headSize: d, scale: scale,
                                          scratch: s0 + worker * scratchPerWorker, causal: causal)
                }
            }
        }
    }
}
