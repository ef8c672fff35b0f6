#!/usr/bin/env python3
"""CLIP's towers, model only, side by side in one run: vlm (`vlm bench clip-image|clip-text`, blas
backend) against open_clip on PyTorch (the same weights loaded from the same folder, eval mode,
inference_mode, torch's threads = vlm's), full-size RN50 and ViT-B/32 with random weights (speed
does not depend on their values): images at batch 1 and 32; texts at batch 1 and 256 — vlm runs
each text's own tokens (a caption of --seq tokens), open_clip pads every text to its 77-token
context, as it does for real captions. Median of timed runs after a warm-up, at least --min-time
seconds each.

Run (after `make fixtures`): env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python Benchmarks/clip.py
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "Tests", "Fixtures", "generated", "clip-models")
VLM = os.environ.get("VLM_BINARY") or os.path.join(ROOT, ".build", "release", "vlm")


def vlm(workload, folder, batch, seq, threads, min_time):
    out = subprocess.run([VLM, "bench", workload, "--model", folder, "--batch", str(batch), "--seq", str(seq), "--backend", "blas",
                          "--threads", str(threads), "--min-time", str(min_time), "--json"], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)["results"][0]
    return r["itemsPerSecond"]


def torch_rate(fn, items, min_time):
    with torch.inference_mode():
        fn()
        times, start = [], time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < min_time:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return items / statistics.median(times)


def load(arch, folder):
    import open_clip
    from safetensors.torch import load_file
    model = open_clip.create_model(arch, pretrained=None)
    model.load_state_dict(load_file(os.path.join(folder, "open_clip_model.safetensors")))
    return model.eval()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--min-time", type=float, default=3)
    p.add_argument("--seq", type=int, default=16, help="tokens of vlm's captions (start and end included)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}; {a.threads} threads; torch {torch.__version__}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}")
    print(f"{'model':<10} {'tower':<6} {'batch':>5} {'vlm /s':>9} {'torch /s':>9} {'vlm/torch':>9}")
    for name, arch in [("full-rn50", "RN50-quickgelu"), ("full-vitb32", "ViT-B-32")]:
        folder = os.path.join(MODELS, name)
        model = load(arch, folder)
        for batch in (1, 32):
            x = torch.randn(batch, 3, 224, 224)
            t = torch_rate(lambda: model.encode_image(x), batch, a.min_time)
            v = vlm("clip-image", folder, batch, a.seq, a.threads, a.min_time)
            print(f"{name:<10} {'image':<6} {batch:>5} {v:>9.1f} {t:>9.1f} {v / t:>8.2f}x", flush=True)
        for batch in (1, 256):
            ids = torch.zeros(batch, 77, dtype=torch.long)
            ids[:, 0], ids[:, 1:a.seq - 1], ids[:, a.seq - 1] = 49406, 320, 49407
            t = torch_rate(lambda: model.encode_text(ids), batch, a.min_time)
            v = vlm("clip-text", folder, batch, a.seq, a.threads, a.min_time)
            print(f"{name:<10} {'text':<6} {batch:>5} {v:>9.1f} {t:>9.1f} {v / t:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
