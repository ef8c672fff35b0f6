// How much memory this process may use, for the commands that size a large allocation before
// making it (vlm pca fit's covariance): the least of the machine's memory, its cgroup's limit
// (a container's: cgroup v2's memory.max, or v1's memory.limit_in_bytes) and the address-space
// and data rlimits (`ulimit -v`, `ulimit -d`). Going past any of them fails an allocation, which
// Swift cannot survive, so the command refuses up front with a message saying which limit.

import Foundation

public enum MemoryBudget {
    /// The bytes available and what limits them ("this machine has", "the cgroup allows", …).
    public static func available() -> (bytes: UInt64, limit: String) {
        var best = (bytes: ProcessInfo.processInfo.physicalMemory, limit: "this machine has")
        func consider(_ bytes: UInt64?, _ what: String) {
            if let bytes, bytes > 0, bytes < best.bytes { best = (bytes, what) }
        }
        consider(cgroupLimit(), "its cgroup allows")
        for (resource, what) in [(RLIMIT_AS, "ulimit -v allows"), (RLIMIT_DATA, "ulimit -d allows")] {
            var r = rlimit()
            if getrlimit(__rlimit_resource_t(resource.rawValue), &r) == 0, r.rlim_cur != rlim_t.max { consider(UInt64(r.rlim_cur), what) }
        }
        return best
    }

    /// The memory limit of this process's cgroup, if one is set (a number, not "max").
    static func cgroupLimit() -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        var candidates: [String] = []
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let path = String(parts[2])
            if parts[0] == "0" && parts[1].isEmpty {
                candidates += ["/sys/fs/cgroup\(path)/memory.max", "/sys/fs/cgroup/memory.max"]
            } else if parts[1].split(separator: ",").contains("memory") {
                candidates += ["/sys/fs/cgroup/memory\(path)/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
            }
        }
        for file in candidates {
            guard let v = try? String(contentsOfFile: file, encoding: .utf8) else { continue }
            // v1 says "no limit" with a number near 2⁶³; v2 with "max".
            if let bytes = UInt64(v.trimmingCharacters(in: .whitespacesAndNewlines)), bytes < 1 << 60 { return bytes }
            return nil
        }
        return nil
    }

    /// Bytes as GiB with one decimal.
    public static func gib(_ bytes: UInt64) -> String { String(format: "%.1f GiB", Double(bytes) / Double(1 << 30)) }
}
