// A reader of a zip archive's central directory (ZIP64 included) for the one thing vlm needs:
// where each *stored* entry's bytes sit in the file, so they can be read from a memory mapping
// in place. torch.save writes its archives that way (stored, 64-byte aligned). Nothing is ever
// extracted to disk; compressed, encrypted and split archives are refused, and so is any entry
// whose name would climb out of the archive. Format: PKWARE's APPNOTE.TXT, sections 4.3.12–4.3.16
// (central directory, end of central directory, ZIP64 record and locator) and 4.5.3 (ZIP64 extra).

import CZlib
import Foundation
import VLMCore

public struct ZipEntry: Equatable, Sendable {
    public let name: String
    /// 0 = stored; anything else is compressed.
    public let method: UInt16
    public let size: Int
    /// Offset of the entry's first data byte in the file.
    public let dataOffset: Int
    /// The CRC-32 the central directory records for the entry's (uncompressed) bytes.
    public let crc32: UInt32
    /// The bytes the entry takes in the file (its size when stored).
    public var compressedSize: Int = 0
}

public struct ZipError: VLMError, Equatable {
    public let description: String
    init(_ path: String, _ reason: String) { description = "\(path): \(reason)" }
}

public struct ZipArchive {
    public let path: String
    /// Entries in central-directory order.
    public let entries: [ZipEntry]
    private let index: [String: Int]

    public func entry(_ name: String) -> ZipEntry? { index[name].map { entries[$0] } }

    /// "PK\u{3}\u{4}" (a local file header) or "PK\u{5}\u{6}" (an empty archive).
    public static func looksLikeZip(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 4 && bytes[0] == 0x50 && bytes[1] == 0x4B && (bytes[2] == 3 && bytes[3] == 4 || bytes[2] == 5 && bytes[3] == 6)
    }

    /// Parses the archive in `bytes` (the whole file). Every offset and size is checked against
    /// the file before it is used.
    public init(bytes b: UnsafeRawBufferPointer, path: String) throws {
        self.path = path
        let size = b.count
        func fail(_ r: String) -> ZipError { ZipError(path, "not a readable zip archive: \(r)") }
        func u16(_ o: Int) -> Int { Int(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt16.self))) }
        func u32(_ o: Int) -> Int { Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt32.self))) }
        func u64(_ o: Int) throws -> Int {
            let v = UInt64(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt64.self))
            guard v <= UInt64(Int.max) else { throw fail("a ZIP64 field is out of range") }
            return Int(v)
        }

        // End of central directory: 22 bytes plus a comment of up to 65,535, at the very end.
        guard size >= 22 else { throw fail("\(size) bytes is too short for an end-of-central-directory record") }
        var eocd = -1
        var p = size - 22
        while p >= max(0, size - 22 - 65_535) {
            if u32(p) == 0x0605_4B50 && p + 22 + u16(p + 20) == size { eocd = p; break }
            p -= 1
        }
        guard eocd >= 0 else { throw fail("no end-of-central-directory record (truncated?)") }
        if u16(eocd + 4) != 0 || u16(eocd + 6) != 0 { throw fail("a split (multi-disk) archive") }
        var count = u16(eocd + 10)
        var cdSize = u32(eocd + 12)
        var cdOffset = u32(eocd + 16)
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            // ZIP64: a 20-byte locator right before the record points at the 56-byte ZIP64 record.
            guard eocd >= 20, u32(eocd - 20) == 0x0706_4B50 else { throw fail("ZIP64 sizes without a ZIP64 locator") }
            let rec = try u64(eocd - 20 + 8)
            guard rec <= size - 56, u32(rec) == 0x0606_4B50 else { throw fail("the ZIP64 locator points outside the file") }
            count = try u64(rec + 32)
            cdSize = try u64(rec + 40)
            cdOffset = try u64(rec + 48)
        }
        guard cdOffset <= size, cdSize <= size - cdOffset else { throw fail("the central directory lies outside the file") }
        guard count <= cdSize / 46 + 1 else { throw fail("\(count) entries cannot fit a \(cdSize)-byte central directory") }

        var entries: [ZipEntry] = []
        entries.reserveCapacity(count)
        var index: [String: Int] = [:]
        var q = cdOffset
        let cdEnd = cdOffset + cdSize
        for _ in 0..<count {
            guard q + 46 <= cdEnd, u32(q) == 0x0201_4B50 else { throw fail("a damaged central directory entry at byte \(q)") }
            let flags = u16(q + 8), method = UInt16(u16(q + 10)), crc = UInt32(u32(q + 16))
            var csize = u32(q + 20), usize = u32(q + 24)
            let nameLen = u16(q + 28), extraLen = u16(q + 30), commentLen = u16(q + 32)
            var local = u32(q + 42)
            let next = q + 46 + nameLen + extraLen + commentLen
            guard next <= cdEnd else { throw fail("a central directory entry runs past the directory") }
            let nameBytes = UnsafeRawBufferPointer(rebasing: b[(q + 46)..<(q + 46 + nameLen)])
            guard let name = String(validating: nameBytes, as: UTF8.self), !name.isEmpty, !name.contains("\0") else {
                throw fail("an entry name that is not UTF-8")
            }
            // ZIP64 extra field (id 1): the 8-byte values that the 32-bit fields mark 0xFFFFFFFF.
            var e = q + 46 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let id = u16(e), len = u16(e + 2)
                guard e + 4 + len <= extraEnd else { throw fail("\(name): a damaged extra field") }
                if id == 1 {
                    var f = e + 4
                    for field in [0, 1, 2] {
                        let marked = field == 0 ? usize == 0xFFFF_FFFF : field == 1 ? csize == 0xFFFF_FFFF : local == 0xFFFF_FFFF
                        guard marked else { continue }
                        guard f + 8 <= e + 4 + len else { throw fail("\(name): a ZIP64 extra field too short for its sizes") }
                        let v = try u64(f)
                        if field == 0 { usize = v } else if field == 1 { csize = v } else { local = v }
                        f += 8
                    }
                }
                e += 4 + len
            }
            if ZipArchive.escapes(name) { throw ZipError(path, "entry '\(name)' escapes the archive (an absolute path or ..); refused") }
            if flags & 1 != 0 { throw ZipError(path, "entry '\(name)' is encrypted; refused") }
            if index[name] != nil { throw ZipError(path, "entry '\(name)' appears twice in the archive") }
            // The local header repeats the name and has its own extra field (torch pads it to align
            // the data); the data starts after both.
            guard local <= size - 30, u32(local) == 0x0403_4B50 else { throw fail("\(name): its local header lies outside the file or is damaged") }
            let dataOffset = local + 30 + u16(local + 26) + u16(local + 28)
            if method == 0 {
                guard csize == usize else { throw ZipError(path, "entry '\(name)' is stored with \(csize) bytes but claims \(usize) uncompressed") }
                guard dataOffset <= size, usize <= size - dataOffset else {
                    throw ZipError(path, "entry '\(name)' claims \(usize) bytes past the end of the file (truncated?)")
                }
            }
            index[name] = entries.count
            entries.append(ZipEntry(name: name, method: method, size: usize, dataOffset: dataOffset, crc32: crc, compressedSize: csize))
            q = next
        }
        self.entries = entries
        self.index = index
    }

    /// True for names that are absolute or climb with "..", on POSIX or Windows terms.
    static func escapes(_ name: String) -> Bool {
        if name.hasPrefix("/") || name.hasPrefix("\\") { return true }
        return name.split(whereSeparator: { $0 == "/" || $0 == "\\" }).contains { $0 == ".." }
    }

    /// The bytes of stored entry `e` (within `bytes`, the whole file); compressed entries are
    /// refused, naming the method.
    public func storedRange(_ e: ZipEntry) throws -> Range<Int> {
        guard e.method == 0 else {
            let kind = e.method == 8 ? "deflate-compressed" : "compressed (method \(e.method))"
            throw ZipError(path, "entry '\(e.name)' is \(kind); vlm reads only stored entries, as torch.save writes them (re-save the checkpoint with torch.save)")
        }
        return e.dataOffset..<(e.dataOffset + e.size)
    }

    /// The bytes of stored entry `e`, once their CRC-32 matches the central directory's: a
    /// flipped or lost byte is an error naming the file and the entry, never weights.
    /// A deflate-compressed (or stored) entry's bytes, at most `limit` of them, checked against
    /// its CRC-32: for small text entries (a TorchScript archive's code), never for tensors.
    public func inflated(_ e: ZipEntry, in b: UnsafeRawBufferPointer, limit: Int) throws -> Data {
        if e.method == 0 { return Data(b[try verifiedRange(e, in: b)]) }
        guard e.method == 8 else { throw ZipError(path, "entry '\(e.name)' is compressed (method \(e.method))") }
        guard e.dataOffset <= b.count, e.compressedSize <= b.count - e.dataOffset else {
            throw ZipError(path, "entry '\(e.name)' runs past the end of the file (truncated?)")
        }
        let raw = Data(b[e.dataOffset..<(e.dataOffset + e.compressedSize)])
        let out: Data
        do { out = try inflateBounded(raw, windowBits: -MAX_WBITS, limit: limit) } catch let g as GzipError {
            throw ZipError(path, "entry '\(e.name)': \(g.description)")
        }
        let crc = out.withUnsafeBytes { UInt32(truncatingIfNeeded: CZlib.crc32(0, $0.bindMemory(to: Bytef.self).baseAddress, uInt(out.count))) }
        guard crc == e.crc32 else { throw ZipError(path, "entry '\(e.name)' fails its CRC-32 check (damaged)") }
        return out
    }

    public func verifiedRange(_ e: ZipEntry, in b: UnsafeRawBufferPointer) throws -> Range<Int> {
        let range = try storedRange(e)
        let crc = Self.crc32(UnsafeRawBufferPointer(rebasing: b[range]))
        guard crc == e.crc32 else {
            throw ZipError(path, "entry '\(e.name)' is damaged: its bytes have CRC-32 \(hex(crc)), the archive records \(hex(e.crc32)) (a changed or lost byte; fetch or save the checkpoint again)")
        }
        return range
    }

    /// zlib's crc32 over `bytes`, in 4 MB pieces on the engine's threads joined by crc32_combine.
    static func crc32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        let piece = 4 << 20
        let count = (bytes.count + piece - 1) / piece
        guard count > 1, let base = bytes.baseAddress else {
            return UInt32(CZlib.crc32(0, bytes.baseAddress?.assumingMemoryBound(to: Bytef.self), uInt(bytes.count)))
        }
        var parts = [UInt](repeating: 0, count: count)
        parts.withUnsafeMutableBufferPointer { out in
            Threads.parallelFor(count) { range in
                for k in range {
                    let lo = k * piece, n = min(piece, bytes.count - lo)
                    out[k] = UInt(CZlib.crc32(0, (base + lo).assumingMemoryBound(to: Bytef.self), uInt(n)))
                }
            }
        }
        var crc = uLong(parts[0])
        for k in 1..<count {
            crc = crc32_combine(crc, uLong(parts[k]), off_t(min(piece, bytes.count - k * piece)))
        }
        return UInt32(truncatingIfNeeded: crc)
    }
}

private func hex(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - s.count) + s
}
