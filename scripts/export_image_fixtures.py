#!/usr/bin/env python3
"""Exports image files and what Pillow + torchvision make of them, for the decoding and
preprocessing parity tests. Written to Tests/Fixtures/generated/images/ (git-ignored) by
`make fixtures`.

Cases: scikit-image's sample photos (varied sizes and aspect ratios) saved as baseline and
progressive JPEG and as PNG, and edge cases: 1×1, 3000×10, 10×3000, grayscale JPEG and PNG,
palette PNG (with transparency), RGBA, gray+alpha, 16-bit gray, 16-bit RGB, 1-bit PNG,
CMYK JPEG.

For each case: the file; <name>.decoded.u8 (Image.open(f).convert("RGB") as raw uint8 H×W×3);
<name>.resized.u8 (torchvision Resize(256) of that image, raw uint8); <name>.tensor.npy (the
full Resize(256) → CenterCrop(224) → ToTensor → Normalize(ImageNet) output, 3×224×224
float32); <name>.tensor232.npy (the same with Resize(232), torchvision's V2 weights'
transform); <name>.bicubic224.u8 (Resize(224) with Pillow's bicubic filter, CLIP's resize);
cases.json lists names, files and shapes. Run: .venv/bin/python
scripts/export_image_fixtures.py
"""
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image
from torchvision import transforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "generated", "images")


def png_rgb16(path, arr):
    """A 16-bit RGB PNG (Pillow cannot write one), written chunk by chunk."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw)))
        f.write(chunk(b"IEND", b""))


def cases():
    import skimage.data as data

    rng = np.random.default_rng(4)
    photos = {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
              "rocket": data.rocket(), "hubble": data.hubble_deep_field()}
    out = []
    for name, arr in photos.items():
        im = Image.fromarray(arr)
        out.append((f"{name}.jpg", lambda p, im=im: im.save(p, quality=90)))
        out.append((f"{name}_progressive.jpg", lambda p, im=im: im.save(p, quality=85, progressive=True)))
    out.append(("chelsea.png", lambda p: Image.fromarray(photos["chelsea"]).save(p)))
    out.append(("camera_gray.png", lambda p: Image.fromarray(data.camera()).save(p)))
    out.append(("coins_gray.jpg", lambda p: Image.fromarray(data.coins()).save(p, quality=92)))
    out.append(("tiny_1x1.png", lambda p: Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)).save(p)))
    out.append(("wide_3000x10.png", lambda p: Image.fromarray(rng.integers(0, 256, (10, 3000, 3), dtype=np.uint8)).save(p)))
    out.append(("tall_10x3000.jpg", lambda p: Image.fromarray(rng.integers(0, 256, (3000, 10, 3), dtype=np.uint8)).save(p)))
    coffee = Image.fromarray(photos["coffee"])
    out.append(("palette.png", lambda p: coffee.convert("P", palette=Image.ADAPTIVE, colors=64).save(p, transparency=3)))
    rgba = np.dstack([photos["chelsea"], rng.integers(0, 256, photos["chelsea"].shape[:2], dtype=np.uint8)])
    out.append(("alpha_rgba.png", lambda p: Image.fromarray(rgba, "RGBA").save(p)))
    la = np.dstack([data.coins(), np.full(data.coins().shape, 128, np.uint8)])
    out.append(("gray_alpha.png", lambda p: Image.fromarray(la, "LA").save(p)))
    gray16 = (rng.integers(0, 400, (120, 90))).astype(np.uint16)
    out.append(("gray16.png", lambda p: Image.fromarray(gray16).save(p)))
    rgb16 = (photos["astronaut"][::2, ::2].astype(np.uint16) * 257 + rng.integers(0, 256, (256, 256, 3))).astype(np.uint16)
    out.append(("rgb16.png", lambda p: png_rgb16(p, rgb16)))
    out.append(("bilevel.png", lambda p: Image.fromarray(data.camera() > 128).save(p)))
    out.append(("cmyk.jpg", lambda p: Image.fromarray(photos["rocket"]).convert("CMYK").save(p, quality=90)))
    out.append(("small_100x80.jpg", lambda p: Image.fromarray(photos["astronaut"][:80, :100]).save(p, quality=95)))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    resize = transforms.Resize(256)
    # CLIP's resize: the shorter side to 224 with Pillow's bicubic filter.
    bicubic = transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC)
    full = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                               transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    # torchvision's V2 weights (the registry's resnet50/101/152) resize to 232.
    full232 = transforms.Compose([transforms.Resize(232), transforms.CenterCrop(224), transforms.ToTensor(),
                                  transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    listing = []
    for filename, write in cases():
        path = os.path.join(OUT, filename)
        write(path)
        name = filename.replace(".", "_")
        im = Image.open(path)
        mode = im.mode
        rgb = im.convert("RGB")
        decoded = np.asarray(rgb)
        resized = np.asarray(resize(rgb))
        tensor = full(rgb).numpy().astype(np.float32)
        decoded.tofile(os.path.join(OUT, f"{name}.decoded.u8"))
        resized.tofile(os.path.join(OUT, f"{name}.resized.u8"))
        cubic = np.asarray(bicubic(rgb))
        cubic.tofile(os.path.join(OUT, f"{name}.bicubic224.u8"))
        np.save(os.path.join(OUT, f"{name}.tensor.npy"), tensor)
        np.save(os.path.join(OUT, f"{name}.tensor232.npy"), full232(rgb).numpy().astype(np.float32))
        listing.append({"name": name, "file": filename, "mode": mode, "decoded": list(decoded.shape), "resized": list(resized.shape),
                        "bicubic224": list(cubic.shape)})
        print(f"{filename}: {mode} {decoded.shape} -> {resized.shape}")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(listing, f, indent=1)
    export_draft(full)


def large_cases():
    """Phone-photo-sized JPEGs (baseline, progressive, gray, CMYK, odd sizes) for --draft."""
    import skimage.data as data

    rng = np.random.default_rng(8)

    def photo(w, h):
        im = Image.fromarray(data.astronaut()).resize((w, h), Image.BICUBIC)
        noisy = np.asarray(im, np.float32) + rng.normal(0, 6, (h, w, 3))
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))

    big = photo(4032, 3024)
    return [("large_4032x3024.jpg", lambda p: big.save(p, quality=92)),
            ("large_progressive_3024x4032.jpg", lambda p: big.transpose(Image.ROTATE_90).save(p, quality=85, progressive=True)),
            ("large_gray_2050x1537.jpg", lambda p: photo(2050, 1537).convert("L").save(p, quality=90)),
            ("large_cmyk_1999x1201.jpg", lambda p: photo(1999, 1201).convert("CMYK").save(p, quality=90)),
            ("medium_1100x700.jpg", lambda p: photo(1100, 700).save(p, quality=90))]


def export_draft(full):
    """What Pillow's draft does: Image.draft("RGB", (256, 256)) before convert("RGB") (a JPEG is
    then decoded at 1/2, 1/4 or 1/8 scale; other formats are untouched), for every case above
    and the large ones: <name>.draft.decoded.u8 and <name>.draft.tensor.npy; draft_cases.json."""
    listing = []
    files = [c["file"] for c in json.load(open(os.path.join(OUT, "cases.json")))]
    for filename, write in large_cases():
        write(os.path.join(OUT, filename))
        files.append(filename)
    for filename in files:
        im = Image.open(os.path.join(OUT, filename))
        im.draft("RGB", (256, 256))
        rgb = im.convert("RGB")
        name = filename.replace(".", "_")
        np.asarray(rgb).tofile(os.path.join(OUT, f"{name}.draft.decoded.u8"))
        np.save(os.path.join(OUT, f"{name}.draft.tensor.npy"), full(rgb).numpy().astype(np.float32))
        listing.append({"name": name, "file": filename, "decoded": [rgb.size[1], rgb.size[0], 3]})
        print(f"draft {filename}: {rgb.size}")
    with open(os.path.join(OUT, "draft_cases.json"), "w") as f:
        json.dump(listing, f, indent=1)


if __name__ == "__main__":
    main()
