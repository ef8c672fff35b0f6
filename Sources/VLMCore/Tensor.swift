// Tensor: a shape and contiguous row-major Float32 storage. The engine's one value type for
// activations and weights; layouts (NCHW, NHWC, [K, N]) are a convention of the code that uses it.

public struct Tensor: Equatable {
    public var shape: [Int]
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(shape.reduce(1, *) == data.count,
                     "shape \(shape) holds \(shape.reduce(1, *)) values, storage has \(data.count)")
        self.shape = shape
        self.data = data
    }

    public init(zeros shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    /// The same values viewed with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, data: data)
    }

    /// Rows `range` of the leading dimension.
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0])
        let inner = shape.dropFirst().reduce(1, *)
        return Tensor(shape: [range.count] + shape.dropFirst(),
                      data: Array(data[(range.lowerBound * inner)..<(range.upperBound * inner)]))
    }
}

// MARK: - Layout conversions

/// out is (N,H,W,C), inp is (N,C,H,W).
public func nchwToNHWC(_ inp: Tensor) -> Tensor {
    precondition(inp.rank == 4, "expected a rank-4 NCHW tensor, got \(inp.shape)")
    let (n, c, h, w) = (inp.shape[0], inp.shape[1], inp.shape[2], inp.shape[3])
    var out = [Float](repeating: 0, count: inp.count)
    inp.data.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            for b in 0..<n {
                for ch in 0..<c {
                    let plane = (b * c + ch) * h * w
                    for p in 0..<(h * w) {
                        dst[(b * h * w + p) * c + ch] = src[plane + p]
                    }
                }
            }
        }
    }
    return Tensor(shape: [n, h, w, c], data: out)
}

// MARK: - Comparison helpers (tests and the CLI's self-checks)

/// ‖a − b‖ / ‖b‖, in Double; 0 when both are zero.
public func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "relativeError of \(a.count) vs \(b.count) values")
    var num = 0.0, den = 0.0
    for i in 0..<a.count {
        let d = Double(a[i]) - Double(b[i])
        num += d * d
        den += Double(b[i]) * Double(b[i])
    }
    if den == 0 { return num == 0 ? 0 : .infinity }
    return (num / den).squareRoot()
}
