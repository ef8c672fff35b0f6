// Image files to 8-bit RGB, as Pillow's Image.open(path).convert("RGB") gives them: JPEG
// through TurboJPEG, PNG through libpng (the C side is CShims/CImageDecode). A pixel limit
// turns decompression bombs into an error before any pixel is decoded.

import CImageDecode
import Foundation
import VLMCore
import VLMIO

/// Interleaved 8-bit RGB, row-major: pixels[(y·width + x)·3 + c].
public struct RGBImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width > 0 && height > 0 && pixels.count == width * height * 3)
        (self.width, self.height, self.pixels) = (width, height, pixels)
    }
}

public enum ImageError: VLMError, Equatable {
    case unreadable(path: String, reason: String)
    case empty(path: String)
    case notAnImage(path: String)
    case corrupt(path: String, format: String, reason: String)
    case tooLarge(path: String, width: Int, height: Int, limit: UInt64)
    case notAFile(path: String, kind: String)
    case tooLargeToResize(path: String, width: Int, height: Int, pixels: UInt64, limit: UInt64)

    public var description: String {
        switch self {
        case let .unreadable(p, r): return "\(p): cannot read: \(r)"
        case let .empty(p): return "\(p): empty file (0 bytes)"
        case let .notAnImage(p): return "\(p): not a JPEG or PNG image"
        case let .corrupt(p, f, r): return "\(p): corrupt or truncated \(f.uppercased()): \(r)"
        case let .tooLarge(p, w, h, l):
            return "\(p): \(w)×\(h) = \(w * h) pixels is over the limit of \(l) (--max-pixels)"
        case let .notAFile(p, k): return "\(p): \(k), not a regular file (not opened)"
        case let .tooLargeToResize(p, w, h, n, l):
            return "\(p): resizing this \(w)×\(h) image needs a buffer of \(n) pixels, over the limit of \(l) (--max-pixels)"
        }
    }

    /// A short machine-readable kind for error logs.
    public var kind: String {
        switch self {
        case .unreadable: return "unreadable"
        case .empty: return "empty"
        case .notAnImage: return "not_an_image"
        case .corrupt: return "corrupt"
        case .tooLarge, .tooLargeToResize: return "too_large"
        case .notAFile: return "not_a_file"
        }
    }
}

public enum ImageDecoder {
    /// Default pixel limit: 100 megapixels.
    public static let defaultMaxPixels: UInt64 = 100_000_000

    public static func decode(path: String, maxPixels: UInt64 = defaultMaxPixels) throws -> RGBImage {
        try decode(path: RawPath(path), maxPixels: maxPixels)
    }

    /// Decodes the file at `path`. A regular file is read whole; anything else (a FIFO,
    /// /dev/stdin, process substitution's /dev/fd/N) is read as a stream when
    /// `regularOnly` is false, and refused without being opened when it is true (files met while
    /// walking a folder: opening a FIFO would block). The bytes land in a buffer kept per
    /// thread, so a job of large files does not fault in fresh memory for every one.
    public static func decode(path: RawPath, maxPixels: UInt64 = defaultMaxPixels, regularOnly: Bool = false) throws -> RGBImage {
        let name = path.description
        guard let st = FileStatus.of(path) else { throw ImageError.unreadable(path: name, reason: errnoMessage()) }
        switch st.kind {
        case .regular: break
        case .directory: throw ImageError.unreadable(path: name, reason: "is a folder")
        default:
            if regularOnly { throw ImageError.notAFile(path: name, kind: st.kind.phrase) }
        }
        // A compressed image larger than this cannot be under the pixel limit (JPEG/PNG never
        // take more than ~4 bytes a pixel plus metadata).
        let byteLimit = Int(min(UInt64(1) << 34, maxPixels.multipliedReportingOverflow(by: 8).partialValue &+ (64 << 20)))
        do {
            return try FileBytes.read(path, limit: byteLimit, name: name) { bytes in
                if bytes.isEmpty { throw ImageError.empty(path: name) }
                return try decode(bytes, name: name, maxPixels: maxPixels)
            }
        } catch IOError.cannotOpen(_, let reason) {
            throw ImageError.unreadable(path: name, reason: reason)
        }
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer, name: String, maxPixels: UInt64 = defaultMaxPixels) throws -> RGBImage {
        if bytes.isEmpty { throw ImageError.empty(path: name) }
        var img = vlm_image()
        let status = vlm_decode_image(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count, maxPixels, &img)
        defer { vlm_image_free(&img) }
        let format = withUnsafeBytes(of: img.format) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let message = withUnsafeBytes(of: img.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch status {
        case VLM_DECODE_OK:
            let n = Int(img.width) * Int(img.height) * 3
            let pixels = [UInt8](UnsafeBufferPointer(start: img.pixels, count: n))
            return RGBImage(width: Int(img.width), height: Int(img.height), pixels: pixels)
        case VLM_DECODE_UNKNOWN_FORMAT:
            throw ImageError.notAnImage(path: name)
        case VLM_DECODE_TOO_LARGE:
            throw ImageError.tooLarge(path: name, width: Int(img.width), height: Int(img.height), limit: maxPixels)
        case VLM_DECODE_NO_MEMORY:
            throw ImageError.unreadable(path: name, reason: "out of memory decoding \(format)")
        default:
            throw ImageError.corrupt(path: name, format: format, reason: message.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }
}
