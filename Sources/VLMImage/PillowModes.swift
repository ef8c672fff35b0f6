// open_clip's preprocessing resizes and crops the image Pillow opened, in its own mode, and
// converts it to RGB last (open_clip/transform.py: Resize, CenterCrop, _convert_to_rgb);
// torchvision's ImageNet pipeline converts first. For RGB, L and CMYK the order makes no
// difference worth a level; for the modes below Pillow's Image.resize does something else
// (PIL/Image.py `resize`; libImaging/Resample.c, Geometry.c, Convert.c), reproduced here:
//   "P", "1"     NEAREST whatever filter is asked for (ImagingScaleAffine's stepping);
//   "RGBA", "LA" premultiplied by alpha ("RGBa", "La"), resized, unpremultiplied; the alpha is
//                then dropped by the conversion, never composited;
//   "I;16"       resized in 16 bits with double weights (Resample.c's 16bpc passes: rounded
//                half away from zero, the low byte and the high byte each clipped), then
//                clipped to 255 by the conversion, as the decoder clips it.

import CImageDecode

/// The Pillow modes whose resize differs from the RGB image's (vlm_pillow_mode).
public enum PillowMode: Int32, Sendable {
    case rgb = 0, nearest = 1, rgba = 2, la = 3, i16 = 4
}

/// `view` resized to width × height as Pillow resizes the file's own mode, then converted to RGB.
func resizeInFileMode(_ view: ImageView, width w: Int, height h: Int, filter: ResampleFilter) -> RGBImage {
    switch view.mode {
    case .rgb:
        return resize(view.copy(), width: w, height: h, filter: filter)
    case .nearest:
        return resizeNearest(view, width: w, height: h)
    case .rgba, .la:
        return resizePremultiplied(view, width: w, height: h, filter: filter)
    case .i16:
        return resize16(view, width: w, height: h, filter: filter)
    }
}

/// Pillow's NEAREST resize (ImagingScaleAffine): source index floor(x·scale + scale/2), the
/// position stepped by repeated addition as Pillow steps it; a position outside stays black.
func resizeNearest(_ view: ImageView, width w: Int, height h: Int) -> RGBImage {
    func table(_ inSize: Int, _ outSize: Int) -> [Int] {
        let a = Double(inSize) / Double(outSize)
        var xo = a * 0.5, out = [Int](repeating: -1, count: outSize)
        for x in 0..<outSize {
            let xin = xo < 0 ? -1 : Int(xo)
            if xin >= 0 && xin < inSize { out[x] = xin }
            xo += a
        }
        return out
    }
    let xs = table(view.width, w), ys = table(view.height, h)
    var px = [UInt8](repeating: 0, count: w * h * 3)
    for y in 0..<h where ys[y] >= 0 {
        let src = view.pixels + ys[y] * view.width * 3
        for x in 0..<w where xs[x] >= 0 {
            for c in 0..<3 { px[(y * w + x) * 3 + c] = src[xs[x] * 3 + c] }
        }
    }
    return RGBImage(width: w, height: h, pixels: px)
}

/// RGBA and LA: the colour premultiplied by alpha (MULDIV255), colour and alpha resized with the
/// same 8-bit passes (each channel on its own, as Pillow's), then unpremultiplied (Convert.c's
/// rgba2rgbA: kept where alpha is 0 or 255, else 255·c / alpha clipped).
func resizePremultiplied(_ view: ImageView, width w: Int, height h: Int, filter: ResampleFilter) -> RGBImage {
    let n = view.width * view.height
    let alpha = view.extra!.assumingMemoryBound(to: UInt8.self)
    var color = [UInt8](repeating: 0, count: n * 3), planes = [UInt8](repeating: 0, count: n * 3)
    for i in 0..<n {
        let a = Int(alpha[i])
        for c in 0..<3 {
            let t = Int(view.pixels[i * 3 + c]) * a + 128
            color[i * 3 + c] = UInt8(((t >> 8) + t) >> 8)
            planes[i * 3 + c] = UInt8(a)
        }
    }
    let rc = resize(RGBImage(width: view.width, height: view.height, pixels: color), width: w, height: h, filter: filter)
    let ra = resize(RGBImage(width: view.width, height: view.height, pixels: planes), width: w, height: h, filter: filter)
    var px = rc.pixels
    for i in 0..<(w * h) {
        let a = Int(ra.pixels[i * 3])
        guard a != 0 && a != 255 else { continue }
        for c in 0..<3 { px[i * 3 + c] = UInt8(min(255, 255 * Int(px[i * 3 + c]) / a)) }
    }
    return RGBImage(width: w, height: h, pixels: px)
}

/// I;16: Resample.c's 16-bit passes (horizontal first, each skipped when its size is kept), the
/// sum of value × weight in double rounded half away from zero, then stored as Pillow stores
/// it: low byte clip8(v % 256), high byte clip8(v >> 8). Then I;16 → RGB: values over 255 are 255.
func resize16(_ view: ImageView, width w: Int, height h: Int, filter: ResampleFilter) -> RGBImage {
    let src = view.extra!.assumingMemoryBound(to: UInt16.self)
    var cur = UnsafeBufferPointer(start: src, count: view.width * view.height).map(Int.init)
    var cw = view.width, ch = view.height
    // Each row of `v` (width × height) to `outW` values.
    func rows(_ v: [Int], width: Int, height: Int, to outW: Int) -> [Int] {
        let c = resampleCoefficients(inSize: width, outSize: outW, filter: filter)
        var next = [Int](repeating: 0, count: outW * height)
        for y in 0..<height {
            for xx in 0..<outW {
                var ss = 0.0
                for k in 0..<c.count[xx] { ss += Double(v[y * width + c.start[xx] + k]) * c.weights[xx * c.stride + k] }
                let r = ss >= 0 ? Int(ss + 0.5) : Int(ss - 0.5)
                next[y * outW + xx] = max(0, min(255, r % 256)) + max(0, min(255, r >> 8)) * 256
            }
        }
        return next
    }
    func transposed(_ v: [Int], width: Int, height: Int) -> [Int] {
        var t = [Int](repeating: 0, count: v.count)
        for y in 0..<height { for x in 0..<width { t[x * height + y] = v[y * width + x] } }
        return t
    }
    if w != cw { (cur, cw) = (rows(cur, width: cw, height: ch, to: w), w) }
    // The vertical pass: the same along columns (the sums in the same order).
    if h != ch { (cur, ch) = (transposed(rows(transposed(cur, width: cw, height: ch), width: ch, height: cw, to: h), width: h, height: cw), h) }
    var px = [UInt8](repeating: 0, count: w * h * 3)
    for i in 0..<(w * h) {
        let v = UInt8(min(255, cur[i]))
        (px[i * 3], px[i * 3 + 1], px[i * 3 + 2]) = (v, v, v)
    }
    return RGBImage(width: w, height: h, pixels: px)
}
