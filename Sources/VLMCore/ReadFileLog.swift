// The files a process has read, for the output guards (see `ReadFiles`).

import Foundation

/// Every file this process opened by path to read (weights, configs, vocabularies, lists,
/// features, labels), so an output can be refused when it would replace one (`refuseOutput`,
/// and `AtomicFileWriter` at commit). Kept here, below every reader, so the tokenizer's loader
/// records its files too.
public enum ReadFiles {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var recorded: Set<String> = []

    public static func record(_ path: String) {
        lock.lock(); defer { lock.unlock() }
        recorded.insert(path)
    }

    public static var paths: [String] {
        lock.lock(); defer { lock.unlock() }
        return Array(recorded)
    }
}
