// The engine a command runs on — backend and threads, from flags or the environment (read
// here and nowhere else) — and where models are found and how they load.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMModels

extension BackendKind: ExpressibleByArgument {}
extension RowFormat: ExpressibleByArgument {}

struct EngineOptions: ParsableArguments {
    @Option(help: "Compute backend: blas (OpenBLAS) or naive (plain loops). Default: $VLM_BACKEND, else blas.")
    var backend: BackendKind?

    @Option(parsing: .unconditional,
            help: "Threads for the engine (it splits each large product into single-threaded sgemm calls). At most this many work at once. Default: $VLM_THREADS, else $OMP_NUM_THREADS, else the CPUs this process may use (affinity mask, cgroup quota).")
    var threads: Int?

    @Flag(help: "Load weights holding NaN or infinity instead of refusing them, and write vectors holding NaN or infinity instead of recording them as non_finite errors.")
    var allowNonfinite = false

    func validate() throws {
        if let threads { try Limits.check("--threads", threads, 1...Limits.maxThreads) }
    }

    /// Applies the thread count and returns the backend, checking the VLM_* variables.
    func configure() throws -> any Backend {
        let env = ProcessInfo.processInfo.environment
        Threads.set(try threads ?? Self.threadsFromEnvironment(env) ?? Threads.defaultCount())
        return try Self.makeBackend(backend)
    }

    /// The backend `kind` names, else VLM_BACKEND's, else blas; VLM_WINOGRAD=0 turns Winograd off.
    static func makeBackend(_ explicit: BackendKind?) throws -> any Backend {
        let env = ProcessInfo.processInfo.environment
        var kind = BackendKind.blas
        if let explicit { kind = explicit } else if let v = env["VLM_BACKEND"], !v.isEmpty {
            guard let k = BackendKind(rawValue: v.lowercased()) else {
                throw OptionError("VLM_BACKEND=\(v): unknown backend; use blas or naive")
            }
            kind = k
        }
        try KernelLevel.check(environment: env["VLM_KERNELS"])
        switch env["VLM_WINOGRAD"] {
        case nil, "", "1": break
        case "0": if kind == .blas { return BLASBackend(winograd: false) }
        case let v?: throw OptionError("VLM_WINOGRAD=\(v): use 0 (off) or 1 (on, the default)")
        }
        return kind.make()
    }

    /// VLM_THREADS, else OMP_NUM_THREADS (which Ray, Spark and schedulers set per worker).
    static func threadsFromEnvironment(_ env: [String: String]) throws -> Int? {
        for name in ["VLM_THREADS", "OMP_NUM_THREADS"] {
            guard let v = env[name], !v.isEmpty else { continue }
            // OpenMP also allows a list per nesting level ("4,2"): the first is this process's.
            let first = v.split(separator: ",", omittingEmptySubsequences: false).first.map(String.init) ?? v
            guard let n = Int(first.trimmingCharacters(in: .whitespaces)), (1...Limits.maxThreads).contains(n) else {
                throw OptionError("\(name)=\(v): expected a whole number of threads from 1 to \(Limits.maxThreads)")
            }
            return n
        }
        return nil
    }

    /// What changes the last bits of a row, for a job's fingerprint.
    static func fingerprint(_ backend: any Backend) -> [String: String] {
        var e = backend.settings
        e["threads"] = "\(Threads.count)"
        e["openblas"] = OpenBLASCore.coreName
        e["kernels"] = kernelInstructionSet
        return e
    }
}
