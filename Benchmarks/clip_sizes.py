#!/usr/bin/env python3
"""CLIP's released sizes at full size against open_clip — correctness too large for `make test`
(run by `make bench`; a few GB of weights in a temporary folder, minutes). For each architecture,
open_clip's create_model without weights (seeded), its state dict and config written as the hub
has them (open_clip_model.safetensors + open_clip_config.json) with the BPE vocabulary:
  - two random inputs at the tower's size through `vlm embed-image --input-npy`, and four texts
    (accents, CJK, an over-long caption) through `vlm embed-text`, blas backend, raw vectors;
    the worst per-row relative error against open_clip's encode_image / encode_text;
  - on ViT-B-16, CLIP's 80 ImageNet templates zero-shot: `vlm classify --templates imagenet` on
    four pictures against open_clip's build_zero_shot_classifier with the same 80 templates.
Random weights give near-degenerate vectors: the per-row relative error is the measure.

Run (after `make fixtures`): .venv/bin/python Benchmarks/clip_sizes.py [--only ViT-L-14 …]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VLM = os.environ.get("VLM_BINARY") or os.path.join(ROOT, ".build", "release", "vlm")
PICTURES = os.path.join(ROOT, "Tests", "Fixtures", "generated", "clip-models", "images")
ARCHS = ["RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"]
TEXTS = ["a photo of a cat", "ünïcödé — “quotes” 東京 🙂", "A red car parked on the street at night.", " ".join(["a very long caption"] * 40)]
LABELS = ["cat", "dog", "red car", "rocket", "cup of coffee"]


def worst(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def run(args, **kw):
    r = subprocess.run([VLM, *map(str, args)], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"vlm {' '.join(map(str, args))}: {r.stderr[-2000:]}")
    return r


def check(arch, tmp, zero_shot):
    import open_clip
    from open_clip.tokenizer import default_bpe
    from safetensors.torch import save_file
    torch.manual_seed(0)
    t0 = time.time()
    model = open_clip.create_model(arch, pretrained=None).eval()
    folder = os.path.join(tmp, arch)
    os.makedirs(folder)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, os.path.join(folder, "open_clip_model.safetensors"))
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": open_clip.get_model_config(arch)}, f)
    shutil.copy(default_bpe(), folder)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, (tuple, list)) else model.visual.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    np.save(os.path.join(tmp, "in.npy"), images.numpy())
    with torch.inference_mode():
        ref_img = model.encode_image(images).numpy()
        ref_txt = model.encode_text(open_clip.tokenize(TEXTS)).numpy()
    run(["embed-image", "--input-npy", os.path.join(tmp, "in.npy"), "--model", folder, "--no-normalize-images", "-o", os.path.join(tmp, "i.npy"), "--quiet"])
    with open(os.path.join(tmp, "t.txt"), "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in TEXTS)
    run(["embed-text", "--file", os.path.join(tmp, "t.txt"), "--model", folder, "--no-normalize", "-o", os.path.join(tmp, "t.npy"), "--quiet"])
    row = dict(arch=arch, image_size=size, params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
               image_err=worst(np.load(os.path.join(tmp, "i.npy")), ref_img), text_err=worst(np.load(os.path.join(tmp, "t.npy")), ref_txt))
    if zero_shot:
        from PIL import Image
        from open_clip.transform import image_transform
        from open_clip.zero_shot_classifier import build_zero_shot_classifier
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
        files = sorted(os.path.join(PICTURES, f) for f in os.listdir(PICTURES))
        tf = image_transform(size, is_train=False)
        with torch.inference_mode():
            classifier = build_zero_shot_classifier(model, open_clip.get_tokenizer(arch), LABELS, OPENAI_IMAGENET_TEMPLATES)
            v = model.encode_image(torch.stack([tf(Image.open(f)) for f in files]))
            v = v / v.norm(dim=-1, keepdim=True)
            probs = (model.logit_scale.exp() * v @ classifier).softmax(dim=-1).numpy()
        with open(os.path.join(tmp, "labels.txt"), "w") as f:
            f.writelines(l + "\n" for l in LABELS)
        out = run(["classify", *files, "--model", folder, "--labels", os.path.join(tmp, "labels.txt"), "--templates", "imagenet",
                   "--top", len(LABELS), "--format", "jsonl", "--quiet"]).stdout
        got = np.zeros_like(probs)
        for i, line in enumerate(out.splitlines()):
            for t in json.loads(line)["top"]:
                got[i, t["index"]] = t["probability"]
        row["zero_shot_80_max_abs"] = float(np.abs(got - probs).max())
    row["seconds"] = round(time.time() - t0, 1)
    shutil.rmtree(folder)
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--only", nargs="*")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlm-clip-sizes-") as tmp:
        for arch in a.only or ARCHS:
            row = check(arch, tmp, zero_shot=arch == "ViT-B-16")
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("| architecture | image px | parameters (M) | worst row rel. error, image | text | 80-template zero-shot, max abs prob. diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['image_size']} | {r['params_m']} | {r['image_err']:.1e} | {r['text_err']:.1e} | "
              f"{r['zero_shot_80_max_abs']:.1e} |" if "zero_shot_80_max_abs" in r else
              f"| {r['arch']} | {r['image_size']} | {r['params_m']} | {r['image_err']:.1e} | {r['text_err']:.1e} | — |")
    bad = [r["arch"] for r in rows if r["image_err"] > 1e-4 or r["text_err"] > 1e-4 or r.get("zero_shot_80_max_abs", 0) > 1e-4]
    if bad:
        raise SystemExit(f"over 1e-4: {', '.join(bad)}")


if __name__ == "__main__":
    main()
