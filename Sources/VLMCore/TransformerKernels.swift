// Element-wise and row kernels of the transformer encoder, shared by both backends (the
// backends differ only in their GEMMs). Free functions, output first, rows split over threads.

import CKernels
import Foundation

/// x is (rows, cols), in place: LayerNorm over each row, then · gamma + beta. Mean and variance
/// (biased, as torch) are accumulated in Double; the loops are C built per instruction set.
public func layerNormForward(_ x: UnsafeMutablePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                             rows: Int, cols: Int, eps: Float) {
    Threads.parallelFor(rows, minChunk: max(1, 4096 / max(1, cols))) { range in
        vlm_layer_norm_rows(x + range.lowerBound * cols, gamma, beta, range.count, cols, eps)
    }
}

// MARK: - exp and erf without libm (the formulas live once, in CShims/CKernels)

/// e^x, ≤ 2 ulp: the exp that softmax uses (tested against Foundation's exp).
@inline(__always)
public func expApprox(_ x: Float) -> Float { vlm_exp_approx(x) }

/// erf(x), |error| ≤ 3.6e-7: the erf that GELU uses (tested against Foundation's erf).
@inline(__always)
public func erfApprox(_ x: Float) -> Float { vlm_erf_approx(x) }

/// x is (rows, cols), in place: softmax(scale · x) over each row, max-subtracted. Causal: row r
/// over its first r + 1 columns, the others set to 0 (a causal mask: query r sees keys 0…r).
public func softmaxRowsForward(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, scale: Float, causal: Bool = false) {
    for r in 0..<rows {
        let seen = causal ? min(r + 1, cols) : cols
        vlm_softmax_row(x + r * cols, seen, scale)
        for j in seen..<cols { x[r * cols + j] = 0 }
    }
}

public enum ActivationFunction: String, Sendable, CaseIterable {
    /// 0.5·x·(1 + erf(x/√2)) — Hugging Face's "gelu" — with `erfApprox` (|error| ≤ 3.6e-7),
    /// built per instruction set in C, which vectorises where libm's erff does not.
    case gelu
    /// Tanh approximation — "gelu_new", "gelu_pytorch_tanh", "gelu_fast" (same formula).
    case geluTanh
    case relu
    case tanh
    /// x·σ(1.702·x) — OpenAI CLIP's QuickGELU (Hugging Face's "quick_gelu").
    case quickGELU

    /// Hugging Face's `hidden_act` names.
    public init?(huggingFace name: String) {
        switch name {
        case "gelu", "gelu_python": self = .gelu
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": self = .geluTanh
        case "relu": self = .relu
        case "tanh": self = .tanh
        case "quick_gelu": self = .quickGELU
        default: return nil
        }
    }
}

/// x is (count), in place.
public func activationForward(_ x: UnsafeMutablePointer<Float>, count: Int, _ act: ActivationFunction) {
    Threads.parallelFor(count, minChunk: 1 << 14) { r in
        switch act {
        case .gelu:
            // Compiled for AVX-512 / AVX2 / baseline and picked at run time.
            vlm_gelu_erf(x + r.lowerBound, r.count)
        case .geluTanh:
            for i in r {
                let v = x[i]
                x[i] = 0.5 * v * (1 + tanhf(0.79788456080286536 * (v + 0.044715 * v * v * v)))
            }
        case .relu:
            for i in r { x[i] = max(x[i], 0) }
        case .tanh:
            for i in r { x[i] = tanhf(x[i]) }
        case .quickGELU:
            for i in r { x[i] = x[i] / (1 + expApprox(-1.702 * x[i])) }
        }
    }
}

// MARK: - Attention for short sequences

/// ctx (l, d) with row stride ldc = softmax(scale · Q Kᵀ) V for one sequence and head; q, k, v
/// are (l, d) with row stride ld. scratch holds at least `attentionHeadScratch(l:d:)` floats.
/// Causal: query i attends to keys 0…i only.
/// Plain loops (in C, built per instruction set, specialised for d = 32 and 64, keys padded to
/// blocks of 16 so every loop over them is whole vectors): for short sequences this beats two
/// sgemm calls, whose fixed cost dominates products of, say, 15×15×32.
public func attentionHeadForward(ctx: UnsafeMutablePointer<Float>, ldc: Int,
                                 q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, ld: Int,
                                 l: Int, d: Int, scale: Float, scratch: UnsafeMutablePointer<Float>, causal: Bool = false) {
    vlm_attention_head(ctx, ldc, q, k, v, ld, l, d, scale, scratch, causal ? 1 : 0)
}

/// Floats of scratch `attentionHeadForward` needs for l keys of head size d.
public func attentionHeadScratch(l: Int, d: Int) -> Int { vlm_attention_head_scratch(l, d) }

/// The instruction set the C kernels run on this CPU: "avx512", "avx2+fma" or "baseline".
public var kernelInstructionSet: String { String(cString: vlm_isa_name()) }

/// The C kernels' builds, lowest first, by the names `VLM_KERNELS` takes.
public enum KernelLevel: Int, CaseIterable, Sendable {
    case baseline = 0, avx2 = 1, avx512 = 2

    public var name: String { ["baseline", "avx2", "avx512"][rawValue] }

    /// The best this CPU runs.
    public static var cpu: KernelLevel { KernelLevel(rawValue: Int(vlm_cpu_isa())) ?? .baseline }

    /// Every level this CPU runs.
    public static var available: [KernelLevel] { allCases.filter { $0.rawValue <= cpu.rawValue } }

    /// Checks `VLM_KERNELS` (nil or empty: the CPU's best): a name and a level the CPU runs.
    public static func check(environment value: String?) throws {
        guard let value, !value.isEmpty else { return }
        let level = Int(vlm_isa_level(value))
        guard let k = KernelLevel(rawValue: level) else {
            throw OptionError("VLM_KERNELS=\(value): use baseline, avx2 or avx512 (a level this CPU runs: up to \(cpu.name))")
        }
        if k.rawValue > cpu.rawValue {
            throw OptionError("VLM_KERNELS=\(value): this CPU runs at most \(cpu.name); use \(available.map(\.name).joined(separator: ", "))")
        }
    }

    /// Tests: runs the kernels of `level` from now on (the CPU's best when nil).
    @discardableResult
    public static func force(_ level: KernelLevel?) -> KernelLevel {
        KernelLevel(rawValue: Int(vlm_isa_force(Int32(level?.rawValue ?? -1)))) ?? .baseline
    }
}
