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

    public static func decode(path: RawPath, maxPixels: UInt64 = defaultMaxPixels, regularOnly: Bool = false, draft: Int? = nil) throws -> RGBImage {
        try withDecoded(path: path, maxPixels: maxPixels, regularOnly: regularOnly, draft: draft) { $0.copy() }
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer, name: String, maxPixels: UInt64 = defaultMaxPixels, draft: Int? = nil) throws -> RGBImage {
        try withDecoded(bytes, name: name, maxPixels: maxPixels, draft: draft) { $0.copy() }
    }

    /// body(the decoded image) for the file at `path`, the pixels in this thread's decode
    /// buffers (valid only inside body). A regular file is read whole; anything else (a FIFO,
    /// /dev/stdin, process substitution's /dev/fd/N) is read as a stream when `regularOnly` is
    /// false, and refused without being opened when it is true (files met while walking a
    /// folder: opening a FIFO would block). The file's bytes and the pixels both land in
    /// buffers kept per thread, so a job of large files does not fault in fresh memory for
    /// every one. `draft`: decode a JPEG at Pillow's draft scale for that size.
    public static func withDecoded<R>(path: RawPath, maxPixels: UInt64 = defaultMaxPixels, regularOnly: Bool = false, draft: Int? = nil,
                                      _ body: (ImageView) throws -> R) throws -> R {
        let name = path.description
        guard let st = FileStatus.of(path) else { throw ImageError.unreadable(path: name, reason: errnoMessage()) }
        switch st.kind {
        case .regular: break
        case .directory: throw ImageError.unreadable(path: name, reason: "is a folder")
        default:
            if regularOnly { throw ImageError.notAFile(path: name, kind: st.kind.phrase) }
        }
        // A compressed image larger than this cannot be under the pixel limit (JPEG/PNG never
        // take more than ~4 bytes a pixel plus metadata; a draft decodes at most 1/64 of them).
        let bound = maxPixels.multipliedReportingOverflow(by: draft == nil ? 8 : 512).partialValue
        let byteLimit = Int(min(UInt64(1) << 34, bound &+ (64 << 20)))
        do {
            return try FileBytes.read(path, limit: byteLimit, name: name) { bytes in
                try withDecoded(bytes, name: name, maxPixels: maxPixels, draft: draft, body)
            }
        } catch IOError.cannotOpen(_, let reason), IOError.cannotRead(_, let reason) {
            throw ImageError.unreadable(path: name, reason: reason)
        }
    }

    /// body(the decoded image) for encoded bytes, the pixels in this thread's decode buffers.
    public static func withDecoded<R>(_ bytes: UnsafeRawBufferPointer, name: String, maxPixels: UInt64 = defaultMaxPixels,
                                      draft: Int? = nil, _ body: (ImageView) throws -> R) throws -> R {
        if bytes.isEmpty { throw ImageError.empty(path: name) }
        let arena = DecodeArena.current
        var img = vlm_image()
        let status = vlm_decode_image_into(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count, maxPixels,
                                           Int32(clamping: draft ?? 0), &arena.buffers, &img)
        let format = withUnsafeBytes(of: img.format) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let message = withUnsafeBytes(of: img.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch status {
        case VLM_DECODE_OK:
            return try body(ImageView(pixels: UnsafePointer(img.pixels!), width: Int(img.width), height: Int(img.height), scale: Int(img.scale),
                                      mode: PillowMode(rawValue: img.mode) ?? .rgb, extra: img.extra.map(UnsafeRawPointer.init)))
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

    /// Pillow's draft scale (1, 2, 4, 8) for a width × height JPEG and a requested size.
    public static func draftScale(width: Int, height: Int, size: Int) -> Int {
        Int(vlm_draft_scale(Int32(clamping: width), Int32(clamping: height), Int32(clamping: size)))
    }
}

/// A decoded image in a buffer someone else owns: interleaved 8-bit RGB, row-major.
public struct ImageView {
    public let pixels: UnsafePointer<UInt8>
    public let width: Int, height: Int
    /// The DCT scale a draft decoded it at (1: full size).
    public let scale: Int
    /// The mode Pillow opens the file in, where it matters to a resize before the conversion
    /// to RGB (open_clip's order), and what that resize needs besides the RGB pixels: the
    /// alpha plane (RGBA, LA) or the 16-bit values (I;16).
    public let mode: PillowMode
    public let extra: UnsafeRawPointer?

    public init(pixels: UnsafePointer<UInt8>, width: Int, height: Int, scale: Int = 1, mode: PillowMode = .rgb, extra: UnsafeRawPointer? = nil) {
        (self.pixels, self.width, self.height, self.scale) = (pixels, width, height, scale)
        // A mode that needs a plane is read as RGB without it.
        (self.mode, self.extra) = extra == nil && (mode == .rgba || mode == .la || mode == .i16) ? (.rgb, nil) : (mode, extra)
    }

    public func copy() -> RGBImage {
        RGBImage(width: width, height: height, pixels: [UInt8](UnsafeBufferPointer(start: pixels, count: width * height * 3)))
    }
}

/// The C decoder's buffers for this thread: kept for the thread's life.
final class DecodeArena {
    var buffers = vlm_decode_buffers()
    deinit { vlm_decode_buffers_free(&buffers) }

    static var current: DecodeArena { perThread("vlm.decode", DecodeArena.init) }
}

/// The object kept under `key` for the calling thread, made on its first use there.
func perThread<T: AnyObject>(_ key: String, _ make: () -> T) -> T {
    let d = Thread.current.threadDictionary
    if let x = d[key] as? T { return x }
    let x = make()
    d[key] = x
    return x
}
