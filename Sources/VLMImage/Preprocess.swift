// torchvision's ImageNet preprocessing on PIL images, reproduced exactly:
//   Resize(256)      shorter side to 256, longer int(256·long/short); PIL's bilinear resample
//                    (bicubic for CLIP's preprocessing: the same passes with Keys' cubic kernel)
//                    with antialiasing (the filter widens by the scale factor when shrinking),
//                    8-bit fixed-point coefficients, horizontal pass then vertical, each rounded
//                    to uint8 (Pillow's libImaging/Resample.c)
//   CenterCrop(224)  top = int(round((h − 224)/2)) with Python's round-half-even; zero padding
//                    when the image is smaller than the crop
//   ToTensor         /255 in float32
//   Normalize        (x − mean)/std, ImageNet mean and std
// Upstream: torchvision/transforms/functional.py and _functional_pil.py.

import CKernels
import Foundation
import VLMCore

public struct Preprocessing: Equatable, Sendable {
    /// Shorter side after resizing (torchvision's V1 weights use 256, V2 232).
    public var resize: Int
    public var crop: Int
    public var mean: [Float]
    public var std: [Float]
    /// Pillow's resampling filter: bilinear (torchvision's ImageNet models), bicubic (CLIP's).
    public var filter: ResampleFilter
    /// open_clip's order: resize and crop the image in the mode the file opens in, then convert
    /// to RGB (Pillow resizes palette and 1-bit images with NEAREST, RGBA and LA premultiplied by
    /// alpha, 16-bit gray in 16 bits). torchvision's ImageNet pipeline converts first (false).
    public var convertAfterResize = false
    /// open_clip's resize_mode "squash": both sides resized to the crop size, the aspect ratio
    /// not kept, no crop.
    public var squash = false

    /// The size the image is resized to before the crop.
    public func resizedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        squash ? (crop, crop) : VLMImage.resizedSize(width: width, height: height, shorter: resize)
    }

    public static let imagenetMean: [Float] = [0.485, 0.456, 0.406]
    public static let imagenetStd: [Float] = [0.229, 0.224, 0.225]
    /// OpenAI CLIP's (open_clip's OPENAI_DATASET_MEAN / STD).
    public static let clipMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
    public static let clipStd: [Float] = [0.26862954, 0.26130258, 0.27577711]

    public init(resize: Int = 256, crop: Int = 224, mean: [Float] = imagenetMean, std: [Float] = imagenetStd, filter: ResampleFilter = .bilinear) {
        precondition(resize > 0 && crop > 0 && mean.count == 3 && std.count == 3)
        (self.resize, self.crop, self.mean, self.std, self.filter) = (resize, crop, mean, std, filter)
    }

    /// The largest pixel buffer preprocessing a width × height image holds: the horizontal
    /// pass's output (new width × old height), the resized image, the crop. Saturating, so a
    /// hostile size cannot overflow it.
    public func bufferPixels(width: Int, height: Int) -> UInt64 {
        let (w, h) = resizedSize(width: width, height: height)
        func mul(_ a: Int, _ b: Int) -> UInt64 {
            let (p, o) = UInt64(max(0, a)).multipliedReportingOverflow(by: UInt64(max(0, b)))
            return o ? .max : p
        }
        return max(mul(w, height), mul(w, h), mul(crop, crop))
    }

    /// The (3, crop, crop) float32 tensor the model sees, in CHW order.
    public func tensor(_ image: RGBImage) -> [Float] {
        image.pixels.withUnsafeBufferPointer { tensor(ImageView(pixels: $0.baseAddress!, width: image.width, height: image.height)) }
    }

    /// The same for an image in someone else's buffer: the resize runs in this thread's kept
    /// buffers (no fresh memory per image), and the crop and normalisation read the resized
    /// pixels straight into the output.
    public func tensor(_ view: ImageView) -> [Float] {
        let (w, h) = resizedSize(width: view.width, height: view.height)
        if convertAfterResize && view.mode != .rgb {
            let resized = resizeInFileMode(view, width: w, height: h, filter: filter)
            return resized.pixels.withUnsafeBufferPointer { cropped(ImageView(pixels: $0.baseAddress!, width: w, height: h), width: w, height: h) }
        }
        return ResizeBuffers.current.resize(view, width: w, height: h, filter: filter) { cropped($0, width: w, height: h) }
    }

    /// The centre crop of the resized image, normalised, in CHW order.
    func cropped(_ resized: ImageView, width w: Int, height h: Int) -> [Float] {
        var out = [Float](repeating: 0, count: 3 * crop * crop)
        // CenterCrop on a PIL image: zero-padded (centred, the extra column/row right and
        // bottom) when smaller than the crop, then cut at int(round((size − crop) / 2)).
        let padL = crop > w ? (crop - w) / 2 : 0, padT = crop > h ? (crop - h) / 2 : 0
        let pw = max(w, crop), ph = max(h, crop)
        let left = pythonRound(Double(pw - crop) / 2) - padL, top = pythonRound(Double(ph - crop) / 2) - padT
        let plane = crop * crop
        out.withUnsafeMutableBufferPointer { o in
            for c in 0..<3 {
                let zero = (0 - mean[c]) / std[c]
                for y in 0..<crop {
                    let sy = top + y
                    let dst = o.baseAddress! + c * plane + y * crop
                    if sy < 0 || sy >= h {
                        for x in 0..<crop { dst[x] = zero }
                        continue
                    }
                    let row = resized.pixels + sy * w * 3
                    for x in 0..<crop {
                        let sx = left + x
                        dst[x] = sx < 0 || sx >= w ? zero : (Float(row[sx * 3 + c]) / 255 - mean[c]) / std[c]
                    }
                }
            }
        }
        return out
    }
}

/// The two intermediate images of a resize, kept per thread and grown as needed.
final class ResizeBuffers {
    private var horizontal: UnsafeMutablePointer<UInt8>?, horizontalCapacity = 0
    private var vertical: UnsafeMutablePointer<UInt8>?, verticalCapacity = 0

    deinit { horizontal?.deallocate(); vertical?.deallocate() }

    static var current: ResizeBuffers { perThread("vlm.resize", ResizeBuffers.init) }

    private static func reserve(_ p: inout UnsafeMutablePointer<UInt8>?, _ cap: inout Int, _ n: Int) -> UnsafeMutablePointer<UInt8> {
        if let p, cap >= n { return p }
        p?.deallocate()
        cap = max(n, 1)
        p = UnsafeMutablePointer<UInt8>.allocate(capacity: cap)
        return p!
    }

    /// body(image resized to width × height by Pillow's resample with `filter`), horizontal pass
    /// first, each pass skipped when its size does not change.
    func resize<R>(_ image: ImageView, width outW: Int, height outH: Int, filter: ResampleFilter = .bilinear, _ body: (ImageView) -> R) -> R {
        precondition(outW > 0 && outH > 0)
        var current = image
        if outW != current.width {
            let dst = Self.reserve(&horizontal, &horizontalCapacity, outW * current.height * 3)
            resampleHorizontal(current, into: dst, width: outW, filter: filter)
            current = ImageView(pixels: dst, width: outW, height: current.height)
        }
        if outH != current.height {
            let dst = Self.reserve(&vertical, &verticalCapacity, current.width * outH * 3)
            resampleVertical(current, into: dst, height: outH, filter: filter)
            current = ImageView(pixels: dst, width: current.width, height: outH)
        }
        return body(current)
    }
}

/// torchvision's size rule for Resize(int): the shorter side becomes `size`.
public func resizedSize(width: Int, height: Int, shorter size: Int) -> (width: Int, height: Int) {
    // Clamped so an absurd aspect ratio gives a huge size, never an overflowing one.
    func scaled(_ long: Int, _ short: Int) -> Int { Int(min(Double(size) * Double(long) / Double(short), 9e15)) }
    if width <= height {
        return (size, scaled(height, width))
    }
    return (scaled(width, height), size)
}

public func resizeShorterSide(_ image: RGBImage, to size: Int, filter: ResampleFilter = .bilinear) -> RGBImage {
    let (w, h) = resizedSize(width: image.width, height: image.height, shorter: size)
    return resize(image, width: w, height: h, filter: filter)
}

// MARK: - Pillow's resample (antialiased: the filter widens by the scale factor when shrinking)

/// Pillow's resampling filters (libImaging/Resample.c): each a kernel and its support.
public enum ResampleFilter: String, Codable, Sendable, CaseIterable {
    /// Triangle, support 1.
    case bilinear
    /// Keys' cubic with a = −0.5, support 2 (negative lobes: outputs are clipped to 0…255).
    case bicubic

    var support: Double { self == .bilinear ? 1 : 2 }

    @inline(__always)
    func weight(_ x: Double) -> Double {
        let x = abs(x)
        switch self {
        case .bilinear:
            return x < 1 ? 1 - x : 0
        case .bicubic:
            let a = -0.5
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        }
    }
}

/// One output position's taps: the first input index and fixed-point weights.
struct ResampleTaps {
    var start: [Int]
    var count: [Int]
    var weights: [Int32]      // count.max() per output position
    var stride: Int
}

let precisionBits = 32 - 8 - 2

/// Pillow's precompute_coeffs for `filter`: each output position's first input index, its
/// count of taps and their normalised weights (row `xx` of `weights`, `stride` apart).
func resampleCoefficients(inSize: Int, outSize: Int, filter: ResampleFilter) -> (start: [Int], count: [Int], weights: [Double], stride: Int) {
    let scale = Double(inSize) / Double(outSize)
    let filterScale = max(scale, 1.0)
    let support = filter.support * filterScale
    let kmax = Int(support.rounded(.up)) * 2 + 1
    var start = [Int](repeating: 0, count: outSize), count = [Int](repeating: 0, count: outSize)
    var weights = [Double](repeating: 0, count: outSize * kmax)
    let ss = 1.0 / filterScale
    var k = [Double](repeating: 0, count: kmax)
    for xx in 0..<outSize {
        let center = (Double(xx) + 0.5) * scale
        // Pillow: xmin = (int)(center - support + 0.5), truncation toward zero, then clamped.
        var xmin = Int(center - support + 0.5)
        if xmin < 0 { xmin = 0 }
        var xmax = Int(center + support + 0.5)
        if xmax > inSize { xmax = inSize }
        xmax -= xmin
        var ww = 0.0
        for x in 0..<xmax {
            let w = filter.weight((Double(x + xmin) - center + 0.5) * ss)
            k[x] = w
            ww += w
        }
        for x in 0..<xmax { weights[xx * kmax + x] = ww != 0 ? k[x] / ww : k[x] }
        start[xx] = xmin
        count[xx] = xmax
    }
    return (start, count, weights, kmax)
}

/// The same as 8-bit fixed point (Pillow's normalize_coeffs_8bpc).
func resampleTaps(inSize: Int, outSize: Int, filter: ResampleFilter = .bilinear) -> ResampleTaps {
    let c = resampleCoefficients(inSize: inSize, outSize: outSize, filter: filter)
    // Pillow rounds half away from zero when converting to fixed point.
    let weights = c.weights.map { v -> Int32 in
        let f = v * Double(1 << precisionBits)
        return Int32(f < 0 ? Int(f - 0.5) : Int(f + 0.5))
    }
    return ResampleTaps(start: c.start, count: c.count, weights: weights, stride: c.stride)
}

@inline(__always)
func clip8(_ v: Int) -> UInt8 {
    let s = v >> precisionBits
    return s < 0 ? 0 : (s > 255 ? 255 : UInt8(s))
}

/// Pillow's Image.resize((width, height), BILINEAR or BICUBIC) on an RGB image.
public func resize(_ image: RGBImage, width outW: Int, height outH: Int, filter: ResampleFilter) -> RGBImage {
    image.pixels.withUnsafeBufferPointer { p in
        ResizeBuffers.current.resize(ImageView(pixels: p.baseAddress!, width: image.width, height: image.height), width: outW, height: outH,
                                     filter: filter) {
            $0.copy()
        }
    }
}

/// Pillow's Image.resize((width, height), BILINEAR) on an RGB image.
public func resizeBilinear(_ image: RGBImage, width outW: Int, height outH: Int) -> RGBImage {
    resize(image, width: outW, height: outH, filter: .bilinear)
}

/// The horizontal pass: each row of `image` to `outW` pixels, into dst (outW × height × 3).
/// The loops are C built per instruction set (CShims/CKernels), rows split over the threads.
func resampleHorizontal(_ image: ImageView, into dst: UnsafeMutablePointer<UInt8>, width outW: Int, filter: ResampleFilter = .bilinear) {
    let taps = resampleTaps(inSize: image.width, outSize: outW, filter: filter)
    let starts = taps.start.map { Int32($0) }, counts = taps.count.map { Int32($0) }
    starts.withUnsafeBufferPointer { st in
        counts.withUnsafeBufferPointer { ct in
            taps.weights.withUnsafeBufferPointer { wts in
                Threads.parallelFor(image.height, minChunk: 64) { rows in
                    vlm_resample_horizontal_rgb(dst, image.pixels, image.width, outW, rows.lowerBound, rows.upperBound,
                                                st.baseAddress!, ct.baseAddress!, wts.baseAddress!, taps.stride, Int32(precisionBits))
                }
            }
        }
    }
}

/// The vertical pass: each column of `image` to `outH` pixels, into dst (width × outH × 3).
func resampleVertical(_ image: ImageView, into dst: UnsafeMutablePointer<UInt8>, height outH: Int, filter: ResampleFilter = .bilinear) {
    let taps = resampleTaps(inSize: image.height, outSize: outH, filter: filter)
    let starts = taps.start.map { Int32($0) }, counts = taps.count.map { Int32($0) }
    let rowBytes = image.width * 3
    starts.withUnsafeBufferPointer { st in
        counts.withUnsafeBufferPointer { ct in
            taps.weights.withUnsafeBufferPointer { wts in
                Threads.parallelFor(outH, minChunk: 16) { rows in
                    var acc = [Int32](repeating: 0, count: rowBytes)
                    acc.withUnsafeMutableBufferPointer { a in
                        vlm_resample_vertical(dst, image.pixels, rowBytes, rows.lowerBound, rows.upperBound, st.baseAddress!,
                                              ct.baseAddress!, wts.baseAddress!, taps.stride, Int32(precisionBits), a.baseAddress!)
                    }
                }
            }
        }
    }
}

// MARK: - Center crop

/// Python's round(): half to even.
func pythonRound(_ x: Double) -> Int { Int(x.rounded(.toNearestOrEven)) }

/// torchvision's CenterCrop on a PIL image: zero-pads (centred, extra on the right/bottom)
/// when the image is smaller, then crops at int(round((size − crop)/2)).
public func centerCrop(_ image: RGBImage, width cw: Int, height ch: Int) -> RGBImage {
    var img = image
    if cw > img.width || ch > img.height {
        let padL = cw > img.width ? (cw - img.width) / 2 : 0
        let padT = ch > img.height ? (ch - img.height) / 2 : 0
        let padR = cw > img.width ? (cw - img.width + 1) / 2 : 0
        let padB = ch > img.height ? (ch - img.height + 1) / 2 : 0
        let nw = img.width + padL + padR, nh = img.height + padT + padB
        var p = [UInt8](repeating: 0, count: nw * nh * 3)
        for y in 0..<img.height {
            for x in 0..<img.width {
                for c in 0..<3 { p[((y + padT) * nw + x + padL) * 3 + c] = img.pixels[(y * img.width + x) * 3 + c] }
            }
        }
        img = RGBImage(width: nw, height: nh, pixels: p)
        if nw == cw && nh == ch { return img }
    }
    let top = pythonRound(Double(img.height - ch) / 2), left = pythonRound(Double(img.width - cw) / 2)
    var out = [UInt8](repeating: 0, count: cw * ch * 3)
    for y in 0..<ch {
        let src = ((top + y) * img.width + left) * 3
        for i in 0..<(cw * 3) { out[y * cw * 3 + i] = img.pixels[src + i] }
    }
    return RGBImage(width: cw, height: ch, pixels: out)
}
