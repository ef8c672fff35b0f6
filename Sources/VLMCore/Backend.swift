// The backend abstraction: every model runs on `blas` (OpenBLAS sgemm; im2col convolutions) or
// `naive` (plain Swift loops; direct convolution), which is the reference and the benchmark
// baseline. Both see the same weights and the same NHWC layout, so they agree to ~1e-6.

import Foundation

public enum BackendKind: String, CaseIterable, Sendable {
    case blas, naive

    /// `VLM_BACKEND` when it is set to a known name, else `blas`.
    public static func fromEnvironment() -> BackendKind {
        if let s = ProcessInfo.processInfo.environment["VLM_BACKEND"],
           let k = BackendKind(rawValue: s.lowercased()) { return k }
        return .blas
    }

    public func make() -> any Backend {
        switch self {
        case .blas: return BLASBackend()
        case .naive: return NaiveBackend()
        }
    }
}

/// What happens to each GEMM / convolution output row in the same pass: + bias[n],
/// + residual (same layout as the output), then ReLU.
public struct Epilogue {
    public var bias: UnsafePointer<Float>?
    public var residual: UnsafePointer<Float>?
    public var relu: Bool

    public init(bias: UnsafePointer<Float>? = nil, residual: UnsafePointer<Float>? = nil, relu: Bool = false) {
        self.bias = bias
        self.residual = residual
        self.relu = relu
    }

    public static let none = Epilogue()
    public var isEmpty: Bool { bias == nil && residual == nil && !relu }
}

/// A 2-D convolution over NHWC activations. Weights are [KH, KW, Cin, Cout] row-major, which is
/// GEMM's B matrix [K = KH·KW·Cin, N = Cout] for an im2col A whose rows are output pixels.
public struct ConvGeometry: Equatable, CustomStringConvertible {
    public var batch, height, width, inChannels, outChannels: Int
    public var kernelH, kernelW, stride, padding: Int

    public init(batch: Int, height: Int, width: Int, inChannels: Int, outChannels: Int,
                kernelH: Int, kernelW: Int, stride: Int, padding: Int) {
        precondition(batch > 0 && height > 0 && width > 0 && inChannels > 0 && outChannels > 0
                     && kernelH > 0 && kernelW > 0 && stride > 0 && padding >= 0)
        (self.batch, self.height, self.width, self.inChannels, self.outChannels) =
            (batch, height, width, inChannels, outChannels)
        (self.kernelH, self.kernelW, self.stride, self.padding) = (kernelH, kernelW, stride, padding)
    }

    public var outHeight: Int { (height + 2 * padding - kernelH) / stride + 1 }
    public var outWidth: Int { (width + 2 * padding - kernelW) / stride + 1 }
    /// GEMM sizes: M output pixels, N output channels, K = KH·KW·Cin.
    public var m: Int { batch * outHeight * outWidth }
    public var k: Int { kernelH * kernelW * inChannels }
    public var inputCount: Int { batch * height * width * inChannels }
    public var outputCount: Int { m * outChannels }
    /// A 1×1, stride-1, unpadded convolution is a plain GEMM on the activations.
    public var isPointwise: Bool { kernelH == 1 && kernelW == 1 && stride == 1 && padding == 0 }
    /// Multiply-adds ×2.
    public var flops: Double { 2 * Double(m) * Double(outChannels) * Double(k) }

    public var description: String {
        "conv \(kernelH)x\(kernelW)/\(stride) pad \(padding): [\(batch),\(height),\(width),\(inChannels)] -> [\(batch),\(outHeight),\(outWidth),\(outChannels)]"
    }
}

public protocol Backend: Sendable {
    var kind: BackendKind { get }

    /// C is (M,N) = op(A) (M,K) · op(B) (K,N) + beta·C, all row-major with leading dimensions
    /// lda/ldb/ldc; op(X) = Xᵀ when trans. Then the epilogue on C's rows.
    func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
              a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
              beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: Epilogue)

    /// out is (N,OH,OW,Cout), inp is (N,H,W,Cin), weight is (KH,KW,Cin,Cout).
    func conv2d(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                weight: UnsafePointer<Float>, geometry g: ConvGeometry, epilogue: Epilogue)

    /// The same, with the weights also given in Winograd F(2×2,3×3) form, (16, Cin, Cout), for a
    /// backend that can use them (transformed once at load instead of on every call).
    func conv2d(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                winogradWeights: UnsafePointer<Float>?, geometry g: ConvGeometry, epilogue: Epilogue)
}

extension Backend {
    public func conv2d(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                       winogradWeights: UnsafePointer<Float>?, geometry g: ConvGeometry, epilogue: Epilogue) {
        conv2d(out: out, inp: inp, weight: weight, geometry: g, epilogue: epilogue)
    }
}

// MARK: - Shared checks and epilogue

/// The layout rules every GEMM call obeys, checked before any backend touches memory.
@inline(__always)
func checkGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int) {
    precondition(m > 0 && n > 0 && k > 0, "gemm: empty sizes m=\(m) n=\(n) k=\(k)")
    precondition(lda >= (transA ? m : k), "gemm: lda \(lda) < \(transA ? m : k) (transA=\(transA))")
    precondition(ldb >= (transB ? k : n), "gemm: ldb \(ldb) < \(transB ? k : n) (transB=\(transB))")
    precondition(ldc >= n, "gemm: ldc \(ldc) < n \(n)")
    precondition(m <= Int(Int32.max) && n <= Int(Int32.max) && k <= Int(Int32.max)
                 && lda <= Int(Int32.max) && ldb <= Int(Int32.max) && ldc <= Int(Int32.max),
                 "gemm: sizes exceed 32-bit BLAS integers")
}

/// c is (rows,n) with leading dimension ldc; residual, when present, has leading dimension ldc too.
@inline(__always)
func applyEpilogue(_ e: Epilogue, c: UnsafeMutablePointer<Float>, rows: Range<Int>, n: Int, ldc: Int) {
    if e.isEmpty { return }
    for i in rows {
        let row = c + i * ldc
        if let bias = e.bias {
            for j in 0..<n { row[j] += bias[j] }
        }
        if let res = e.residual {
            let r = res + i * ldc
            for j in 0..<n { row[j] += r[j] }
        }
        if e.relu {
            for j in 0..<n { row[j] = max(row[j], 0) }
        }
    }
}

/// Parallel epilogue over all rows.
func applyEpilogueParallel(_ e: Epilogue, c: UnsafeMutablePointer<Float>, m: Int, n: Int, ldc: Int) {
    if e.isEmpty { return }
    Threads.parallelFor(m, minChunk: max(1, 16384 / max(1, n))) { rows in
        applyEpilogue(e, c: c, rows: rows, n: n, ldc: ldc)
    }
}
