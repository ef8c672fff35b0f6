// gzip decompression through zlib, bounded: what vlm reads gzipped is small (open_clip's BPE
// vocabulary, 1.3 MB in, 1.6 MB out), and a hostile file must not expand without limit.

import CZlib
import Foundation

public struct GzipError: Error, CustomStringConvertible {
    public let description: String
}

/// The decompressed bytes of a gzip stream; an error when it is damaged, truncated, or would
/// exceed `limit` bytes.
public func gunzip(_ data: Data, limit: Int) throws -> Data {
    try inflateBounded(data, windowBits: 16 + MAX_WBITS, limit: limit)
}

/// zlib's inflate with `windowBits` (16 + 15: gzip; −15: a raw deflate stream, as zip entries are).
func inflateBounded(_ data: Data, windowBits: Int32, limit: Int) throws -> Data {
    var stream = z_stream()
    guard inflateInit2_(&stream, windowBits, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
        throw GzipError(description: "zlib could not start")
    }
    defer { inflateEnd(&stream) }
    var out = Data()
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    var status: Int32 = Z_OK
    try data.withUnsafeBytes { (input: UnsafeRawBufferPointer) in
        stream.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress)
        stream.avail_in = uInt(input.count)
        while status != Z_STREAM_END {
            let produced: Int = chunk.withUnsafeMutableBufferPointer { buf in
                stream.next_out = buf.baseAddress
                stream.avail_out = uInt(buf.count)
                status = inflate(&stream, Z_NO_FLUSH)
                return buf.count - Int(stream.avail_out)
            }
            if status != Z_OK && status != Z_STREAM_END {
                throw GzipError(description: status == Z_BUF_ERROR ? "the gzip stream ends early (a truncated file)" : "not a gzip stream, or a damaged one")
            }
            if out.count + produced > limit { throw GzipError(description: "decompresses to more than \(limit >> 20) MiB") }
            out.append(contentsOf: chunk[0..<produced])
            if status == Z_OK && produced == 0 && stream.avail_in == 0 {
                throw GzipError(description: "the gzip stream ends early (a truncated file)")
            }
        }
    }
    return out
}
