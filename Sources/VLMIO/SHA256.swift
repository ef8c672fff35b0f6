// SHA-256 (FIPS 180-4), streaming: the one hash of vlm — job fingerprints, per-batch checksums
// of a job's partial state, PCA files, and downloaded weights against the registry. The rounds
// are swift-crypto's (BoringSSL: SHA-NI or AVX2 where the CPU has them).

import Crypto
import Foundation

public struct SHA256 {
    private var state = Crypto.SHA256()

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { state.update(bufferPointer: bytes) }
    }

    public mutating func update(_ data: Data) { data.withUnsafeBytes { update($0) } }
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }
    public mutating func update(_ string: String) { update(Array(string.utf8)) }

    /// The 32-byte digest; the hasher is consumed.
    public mutating func finalize() -> [UInt8] { Array(state.finalize()) }

    /// The digest as lowercase hex; the hasher is consumed.
    public mutating func finalizeHex() -> String { SHA256.hex(finalize()) }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The hex SHA-256 of `bytes`.
    public static func hexDigest(_ bytes: [UInt8]) -> String {
        var h = SHA256()
        h.update(bytes)
        return h.finalizeHex()
    }

    /// The SHA-256 of a whole file, read in 4 MiB pieces.
    public static func hexDigest(ofFile path: String) throws -> String {
        let file = try InputFile(path, what: "the file to checksum")
        var hasher = SHA256()
        while true {
            let chunk = try file.read(upTo: 4 << 20)
            if chunk.isEmpty { break }
            hasher.update(chunk)
        }
        return hasher.finalizeHex()
    }
}
