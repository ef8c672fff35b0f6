// Every file this process opened by path to read — weights, shards and their index, configs,
// vocabularies, lists, texts, feature and PCA files, labels — so an output can be refused when it
// would replace one of them (`-o m/vocab.txt` must never destroy the model it was made with).
// Images are not recorded (a job reads millions; the commands check their image inputs apart).

import Foundation
import VLMCore

extension ReadFiles {
    /// Records a file opened by path (InputFile, MappedFile, `readSmallFile`).
    public static func record(_ path: String, _ status: FileStatus) { record(path) }

    /// The recorded files that are now the file `status` describes (device and inode).
    public static func matching(_ status: FileStatus) -> [String] {
        paths.filter { FileStatus.of($0).map { $0.isSameFile(as: status) } == true }.sorted()
    }
}

/// A small file read whole (a config, a vocabulary, an index): one recorded in `ReadFiles`, its
/// size checked against `limit` before a byte is read. `what` names the file's role for messages.
public func readSmallFile(_ path: String, limit: Int, what: String) throws -> Data {
    try InputFile(path, what: what).readAll(limit: limit)
}

/// "64 MiB", "1 GiB", "512 bytes": a limit as messages name it.
public func byteCount(_ n: UInt64) -> String {
    if n >= 1 << 30 && n % (1 << 30) == 0 { return "\(n >> 30) GiB" }
    if n >= 1 << 20 && n % (1 << 20) == 0 { return "\(n >> 20) MiB" }
    if n >= 1 << 10 && n % (1 << 10) == 0 { return "\(n >> 10) KiB" }
    return "\(n) bytes"
}

/// A small JSON file (a model's config) read as Python's json reads it: of two equal keys in an
/// object, the last counts (`StrictJSON.lastKeyWins`).
public func readJSONFile(_ path: String, limit: Int = 16 << 20, what: String) throws -> Data {
    StrictJSON.lastKeyWins(try readSmallFile(path, limit: limit, what: what))
}
