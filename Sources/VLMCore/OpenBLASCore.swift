// Which OpenBLAS kernels run. Debian 12's OpenBLAS (0.3.21, DYNAMIC_ARCH) does not know newer
// x86 CPUs (e.g. Sapphire/Emerald Rapids) and falls back to its generic "Prescott" SSE3
// kernels: sgemm at ~32 GFLOP/s instead of ~160 with the AVX-512 ones on the same core.
// OpenBLAS picks its kernels from OPENBLAS_CORETYPE once, when the library loads, so the CLI
// re-executes itself with the variable set when the choice is clearly below what the CPU can
// run (see `vlm` main). A value the user or the machine already set is never changed.

import COpenBLAS
import Foundation

public enum OpenBLASCore {
    /// The kernel family OpenBLAS chose, e.g. "Prescott", "Haswell", "SkylakeX".
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// The kernels in use and who chose them, for `vlm bench`, /info and the worker's info:
    /// "SkylakeX", "SkylakeX (chosen by vlm for this CPU)", or — when OPENBLAS_CORETYPE in the
    /// environment holds kernels weaker than the CPU runs — "Haswell (set by OPENBLAS_CORETYPE
    /// in the environment; this CPU runs SkylakeX: unset it for faster products)".
    public static func kernelReport(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        kernelReport(current: coreName, environment: environment, cpuFlags: cpuFlags())
    }

    /// Pure, for tests.
    public static func kernelReport(current: String, environment: [String: String], cpuFlags: Set<String>) -> String {
        guard let set = environment["OPENBLAS_CORETYPE"] else { return current }
        if environment["VLM_REEXECUTED"] == "1" { return "\(current) (chosen by vlm for this CPU)" }
        if let better = recommendedCoreType(current: current, cpuFlags: cpuFlags) {
            return "\(current) (set by OPENBLAS_CORETYPE=\(set) in the environment; this CPU runs \(better): unset it for faster products)"
        }
        return "\(current) (set by OPENBLAS_CORETYPE=\(set) in the environment)"
    }

    static let avx512Cores: Set<String> = ["skylakex", "cooperlake", "sapphirerapids"]
    static let avx2Cores: Set<String> = avx512Cores.union(["haswell", "zen", "excavator"])

    /// A better OPENBLAS_CORETYPE for this CPU when OpenBLAS fell back to weaker kernels and
    /// nobody set the variable; nil otherwise.
    public static func recommendedCoreType(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if environment["OPENBLAS_CORETYPE"] != nil { return nil }
        if let v = environment["VLM_OPENBLAS_CORETYPE"], v.lowercased() == "keep" { return nil }
        return recommendedCoreType(current: coreName, cpuFlags: cpuFlags())
    }

    /// Pure decision, for tests: `current` is OpenBLAS's choice, `cpuFlags` /proc/cpuinfo's flags.
    public static func recommendedCoreType(current: String, cpuFlags: Set<String>) -> String? {
        let core = current.lowercased()
        let avx512 = ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"].allSatisfy(cpuFlags.contains)
        let avx2 = cpuFlags.contains("avx2") && cpuFlags.contains("fma")
        if avx512 && !avx512Cores.contains(core) { return "SkylakeX" }
        if !avx512 && avx2 && !avx2Cores.contains(core) { return "Haswell" }
        return nil
    }

    /// The flags line of /proc/cpuinfo (empty where there is none).
    public static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }
}

// MARK: - The one place cblas_sgemm is called

/// C (M,N) = op(A) · op(B) + beta·C, row-major, through OpenBLAS; the layout is checked first
/// (`checkGEMM`), so no call reaches OpenBLAS with sizes it would misread. Every product of the
/// engine — the BLAS backend, Winograd's transform-domain products, the peak measurement —
/// goes through here.
@inline(__always)
func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
           b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    checkGEMM(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc)
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}
