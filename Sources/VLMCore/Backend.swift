// The backend abstraction: every model runs on `blas` (OpenBLAS sgemm; im2col convolutions) or
// `naive` (plain Swift loops; direct convolution), which is the reference and the benchmark
// baseline. Both see the same weights and the same NHWC layout, so they agree to ~1e-6.

import Foundation

public enum BackendKind: String, CaseIterable, Sendable {
    case blas, naive

    /// The backend of this kind with its default settings.
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

/// What a convolution layer is, independent of any backend: its channels, kernel, stride and
/// padding.
public struct ConvolutionSpec: Equatable, Sendable {
    public var inChannels, outChannels, kernelH, kernelW, stride, padding: Int

    public init(inChannels: Int, outChannels: Int, kernelH: Int, kernelW: Int, stride: Int, padding: Int) {
        precondition(inChannels > 0 && outChannels > 0 && kernelH > 0 && kernelW > 0 && stride > 0 && padding >= 0)
        (self.inChannels, self.outChannels, self.kernelH, self.kernelW, self.stride, self.padding) =
            (inChannels, outChannels, kernelH, kernelW, stride, padding)
    }

    public func geometry(batch: Int, height: Int, width: Int) -> ConvGeometry {
        ConvGeometry(batch: batch, height: height, width: width, inChannels: inChannels, outChannels: outChannels,
                     kernelH: kernelH, kernelW: kernelW, stride: stride, padding: padding)
    }
}

/// A convolution's weights as the backend that will run it prepared them at load: the
/// canonical (KH, KW, Cin, Cout) weights and (Cout) bias, and any other form that backend keeps
/// (the BLAS backend: Winograd-transformed weights for the wide stride-1 3×3 convolutions).
public final class ConvolutionWeights: @unchecked Sendable {
    public let spec: ConvolutionSpec
    public let weight: [Float]
    public let bias: [Float]
    /// (16, Cin, Cout) Winograd F(2×2,3×3) weights, when the preparing backend runs this
    /// convolution that way.
    let winograd: [Float]?

    init(spec: ConvolutionSpec, weight: [Float], bias: [Float], winograd: [Float]? = nil) {
        precondition(weight.count == spec.kernelH * spec.kernelW * spec.inChannels * spec.outChannels && bias.count == spec.outChannels)
        (self.spec, self.weight, self.bias, self.winograd) = (spec, weight, bias, winograd)
    }

    /// True when the backend keeps a Winograd form of these weights.
    public var hasWinogradForm: Bool { winograd != nil }
}

/// A linear layer's weights as a backend prepared them at load: stored (in, out), so every
/// dense product is one row-major GEMM x (m, in) · W (in, out). Measured: OpenBLAS packs B
/// faster this way than as Wᵀ (bert-base, batch 1: 5.3 → 6.0 seq/s), and the naive backend's
/// loops vectorise along contiguous rows of W.
public final class LinearWeights: @unchecked Sendable {
    public let inFeatures, outFeatures: Int
    /// (in, out).
    let weight: [Float]
    public let bias: [Float]?

    init(inFeatures: Int, outFeatures: Int, weight: [Float], bias: [Float]?) {
        precondition(weight.count == inFeatures * outFeatures && (bias == nil || bias!.count == outFeatures))
        (self.inFeatures, self.outFeatures, self.weight, self.bias) = (inFeatures, outFeatures, weight, bias)
    }
}

/// A backend runs the products of a model. Models describe their layers; at load, the backend
/// prepares each layer's weights in the forms it needs (`prepareConvolution`, `prepareLinear`),
/// and at run time it chooses its kernels (`conv2d`, `linear`, `attentionHead`).
public protocol Backend: Sendable {
    var kind: BackendKind { get }

    /// The backend's name and every setting that changes the last bits of what it computes
    /// (for a job's fingerprint: a resumed job must run the same kernels).
    var settings: [String: String] { get }

    /// C is (M,N) = op(A) (M,K) · op(B) (K,N) + beta·C, all row-major with leading dimensions
    /// lda/ldb/ldc; op(X) = Xᵀ when trans. Then the epilogue on C's rows.
    func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
              a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
              beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: Epilogue)

    /// out is (N,OH,OW,Cout), inp is (N,H,W,Cin), weight is (KH,KW,Cin,Cout): weights given per
    /// call, in their canonical form only.
    func conv2d(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                weight: UnsafePointer<Float>, geometry g: ConvGeometry, epilogue: Epilogue)

    /// weight is (KH,KW,Cin,Cout), bias (Cout): the layer's weights in the forms this backend runs.
    func prepareConvolution(_ spec: ConvolutionSpec, weight: [Float], bias: [Float]) -> ConvolutionWeights

    /// out is (N,OH,OW,Cout), inp is (N,H,W,Cin); + bias, + residual (the output's layout), then ReLU.
    func conv2d(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weights: ConvolutionWeights,
                batch: Int, height: Int, width: Int, residual: UnsafePointer<Float>?, relu: Bool)

    /// Floats of scratch `attentionHead` needs for `length` keys of head size `headSize`.
    func attentionScratch(length: Int, headSize: Int) -> Int

    /// ctx (l, d) with row stride ldc = softmax(scale · Q Kᵀ) V for one sequence and head; q, k,
    /// v are (l, d) with row stride ld. Runs on the calling thread (the caller parallelises
    /// over sequences and heads). Causal: query i attends to keys 0…i only.
    func attentionHead(ctx: UnsafeMutablePointer<Float>, ldc: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                       v: UnsafePointer<Float>, ld: Int, length l: Int, headSize d: Int, scale: Float,
                       scratch: UnsafeMutablePointer<Float>, causal: Bool)
}

extension Backend {
    public var settings: [String: String] { ["backend": kind.rawValue] }

    public func prepareConvolution(_ spec: ConvolutionSpec, weight: [Float], bias: [Float]) -> ConvolutionWeights {
        ConvolutionWeights(spec: spec, weight: weight, bias: bias)
    }

    public func conv2d(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weights: ConvolutionWeights,
                       batch: Int, height: Int, width: Int, residual: UnsafePointer<Float>?, relu: Bool) {
        let g = weights.spec.geometry(batch: batch, height: height, width: width)
        weights.weight.withUnsafeBufferPointer { w in
            weights.bias.withUnsafeBufferPointer { b in
                conv2d(out: out, inp: inp, weight: w.baseAddress!, geometry: g,
                       epilogue: Epilogue(bias: b.baseAddress!, residual: residual, relu: relu))
            }
        }
    }

    public func attentionScratch(length l: Int, headSize d: Int) -> Int { l * l }

    /// Two products and a softmax: scores (l, l) = Q Kᵀ, softmax(scale · scores) (masked when
    /// causal), ctx = scores · V.
    public func attentionHead(ctx: UnsafeMutablePointer<Float>, ldc: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                              v: UnsafePointer<Float>, ld: Int, length l: Int, headSize d: Int, scale: Float,
                              scratch: UnsafeMutablePointer<Float>, causal: Bool) {
        gemm(transA: false, transB: true, m: l, n: l, k: d, a: q, lda: ld, b: k, ldb: ld, beta: 0, c: scratch, ldc: l, epilogue: .none)
        softmaxRowsForward(scratch, rows: l, cols: l, scale: scale, causal: causal)
        gemm(transA: false, transB: false, m: l, n: d, k: l, a: scratch, lda: l, b: v, ldb: ld, beta: 0, c: ctx, ldc: ldc, epilogue: .none)
    }

    /// weight is (out, in) as torch stores a linear layer, bias (out): transposed once to (in, out).
    public func prepareLinear(weight: [Float], bias: [Float]?, inFeatures: Int, outFeatures: Int) -> LinearWeights {
        LinearWeights(inFeatures: inFeatures, outFeatures: outFeatures,
                      weight: transposed(weight, rows: outFeatures, cols: inFeatures), bias: bias)
    }

    /// out (m, out) = inp (m, in) · W + bias (+ residual, the output's layout).
    public func linear(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, rows m: Int, weights: LinearWeights,
                       residual: UnsafePointer<Float>? = nil) {
        weights.weight.withUnsafeBufferPointer { w in
            withOptionalPointer(weights.bias) { b in
                gemm(transA: false, transB: false, m: m, n: weights.outFeatures, k: weights.inFeatures, a: inp,
                     lda: weights.inFeatures, b: w.baseAddress!, ldb: weights.outFeatures, beta: 0, c: out,
                     ldc: weights.outFeatures, epilogue: Epilogue(bias: b, residual: residual))
            }
        }
    }
}

/// body(pointer to a's storage), or body(nil) when a is nil.
@inline(__always)
public func withOptionalPointer<R>(_ a: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let a else { return body(nil) }
    return a.withUnsafeBufferPointer { body($0.baseAddress!) }
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
