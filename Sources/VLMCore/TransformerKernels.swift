// Element-wise and row kernels of the transformer encoder, shared by both backends (the
// backends differ only in their GEMMs). Free functions, output first, rows split over threads.

import Foundation

/// x is (rows, cols), in place: LayerNorm over each row, then · gamma + beta. Mean and variance
/// (biased, as torch) are accumulated in Double.
public func layerNormForward(_ x: UnsafeMutablePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                             rows: Int, cols: Int, eps: Float) {
    Threads.parallelFor(rows, minChunk: max(1, 4096 / max(1, cols))) { range in
        for r in range {
            let row = x + r * cols
            var sum = 0.0
            for j in 0..<cols { sum += Double(row[j]) }
            let mean = sum / Double(cols)
            var sq = 0.0
            for j in 0..<cols { let d = Double(row[j]) - mean; sq += d * d }
            let inv = 1 / (sq / Double(cols) + Double(eps)).squareRoot()
            let m = Float(mean), s = Float(inv)
            for j in 0..<cols { row[j] = (row[j] - m) * s * gamma[j] + beta[j] }
        }
    }
}

/// x is (rows, cols), in place: softmax(scale · x) over each row, max-subtracted.
public func softmaxRowsForward(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, scale: Float) {
    for r in 0..<rows {
        let row = x + r * cols
        var mx = -Float.infinity
        for j in 0..<cols { mx = max(mx, row[j]) }
        var sum: Float = 0
        for j in 0..<cols {
            let e = expf((row[j] - mx) * scale)
            row[j] = e
            sum += e
        }
        let inv = 1 / sum
        for j in 0..<cols { row[j] *= inv }
    }
}

public enum ActivationFunction: String, Sendable, CaseIterable {
    /// Exact: 0.5·x·(1 + erf(x/√2)) — Hugging Face's "gelu".
    case gelu
    /// Tanh approximation — "gelu_new", "gelu_pytorch_tanh", "gelu_fast" (same formula).
    case geluTanh
    case relu
    case tanh

    /// Hugging Face's `hidden_act` names.
    public init?(huggingFace name: String) {
        switch name {
        case "gelu", "gelu_python": self = .gelu
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": self = .geluTanh
        case "relu": self = .relu
        case "tanh": self = .tanh
        default: return nil
        }
    }
}

/// x is (count), in place.
public func activationForward(_ x: UnsafeMutablePointer<Float>, count: Int, _ act: ActivationFunction) {
    Threads.parallelFor(count, minChunk: 1 << 14) { r in
        switch act {
        case .gelu:
            for i in r { let v = x[i]; x[i] = 0.5 * v * (1 + erff(v * 0.70710678118654752)) }
        case .geluTanh:
            for i in r {
                let v = x[i]
                x[i] = 0.5 * v * (1 + tanhf(0.79788456080286536 * (v + 0.044715 * v * v * v)))
            }
        case .relu:
            for i in r { x[i] = max(x[i], 0) }
        case .tanh:
            for i in r { x[i] = tanhf(x[i]) }
        }
    }
}
