#!/usr/bin/env python3
"""The worker path against the command line on the same jobs, and Ray Data with vlm against
Ray Data with sentence-transformers, side by side in one run (alternating rounds; medians).

  python Benchmarks/worker.py [--rounds N]

  1. all-MiniLM-L6-v2 on 2,000 captions: `vlm embed-text --file` vs the same texts sent to
     `vlm worker` by vlm.Worker.embed_texts (model load included in both).
  2. ResNet-50 (seeded torchvision weights) on 64 JPEGs of 224²: `vlm embed-image DIR` vs
     vlm.Worker.embed_images.
  3. Ray Data, ray.init(num_cpus=2), one actor with 2 CPUs, the 2,000 captions:
     map_batches(vlm.ray.TextEmbedder) vs map_batches with a sentence-transformers class.
Prints a markdown table for BENCHMARKS.md; the worker's overhead target is ≤ 5%.
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ["PYTHONPATH"] = os.path.join(ROOT, "python")
CACHE = os.path.join(ROOT, "Benchmarks", ".cache")
VLM = os.path.join(ROOT, ".build", "release", "vlm")
os.environ.setdefault("VLM_BINARY", VLM)
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
RESNET = os.path.join(ROOT, "Tests", "Fixtures", "generated", "resnet50")
THREADS = 2


def captions(n=2000):
    path = os.path.join(CACHE, "worker_captions.txt")
    if not os.path.exists(path):
        rng = random.Random(11)
        words = "a dog cat man woman child red car bicycle bird runs sits jumps near over the green field street beach river snow".split()
        with open(path, "w") as f:
            for _ in range(n):
                f.write(" ".join(rng.choice(words) for _ in range(rng.randint(6, 22))) + ".\n")
    return path


def images(n=64):
    folder = os.path.join(CACHE, "worker_224")
    if not os.path.isdir(folder):
        from PIL import Image
        import skimage.data as data
        os.makedirs(folder)
        photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
        rng = np.random.default_rng(3)
        for k in range(n):
            im = Image.fromarray(photos[k % 4]).resize((224, 224), Image.BILINEAR)
            arr = np.clip(np.asarray(im, np.float32) + rng.normal(0, 4, (224, 224, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(os.path.join(folder, f"{k:03d}.jpg"), quality=90)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def cli(args):
    subprocess.run([VLM] + args + ["--threads", str(THREADS), "--quiet", "-o", os.path.join(CACHE, "worker_cli.npy")], check=True,
                   stdout=subprocess.DEVNULL)


def worker(kind, items, model):
    import vlm
    with vlm.Worker(threads=THREADS, **{kind + "_model": model}) as w:
        v, e = (w.embed_texts if kind == "text" else w.embed_images)(items)
    assert not e, e[:3]


def ray_jobs(texts):
    import ray
    import vlm.ray

    class STEmbedder:
        def __init__(self):
            import torch
            from sentence_transformers import SentenceTransformer
            torch.set_num_threads(THREADS)
            self.m = SentenceTransformer(MINILM, device="cpu")

        def __call__(self, batch):
            batch["embedding"] = self.m.encode(list(batch["text"]), batch_size=64, convert_to_numpy=True)
            return batch

    ray.init(num_cpus=THREADS + 1, include_dashboard=False, log_to_driver=False)
    out = {}
    try:
        def run(cls, kwargs):
            ds = ray.data.from_items([{"text": t} for t in texts])
            ds = ds.map_batches(cls, fn_constructor_kwargs=kwargs, batch_format="numpy", batch_size=500,
                                concurrency=1, num_cpus=THREADS)
            return sum(len(b["embedding"]) for b in ds.iter_batches(batch_format="numpy"))
        for name, cls, kw in [("vlm", vlm.ray.TextEmbedder, {"model": MINILM}), ("sentence-transformers", STEmbedder, {})]:
            t0 = time.perf_counter()
            n = run(cls, kw)
            out[name] = n / (time.perf_counter() - t0)
    finally:
        ray.shutdown()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(CACHE, exist_ok=True)
    cap = captions()
    texts = open(cap).read().splitlines()
    imgs = images()
    rows = []
    for title, c, w, n in [("all-MiniLM-L6-v2, 2,000 captions", ["embed-text", "--model", MINILM, "--file", cap],
                            lambda: worker("text", texts, MINILM), len(texts)),
                           ("ResNet-50, 64 JPEGs of 224²", ["embed-image", os.path.dirname(imgs[0]), "--model", RESNET],
                            lambda: worker("image", imgs, RESNET), len(imgs))]:
        tc, tw = [], []
        for _ in range(a.rounds):
            tc.append(timed(lambda: cli(c)))
            tw.append(timed(w))
        mc, mw = statistics.median(tc), statistics.median(tw)
        rows.append(f"| {title} | {n / mc:.1f}/s | {n / mw:.1f}/s | {100 * (mw / mc - 1):+.1f}% |")
        print(rows[-1], flush=True)
    rates = ray_jobs(texts)
    print("\n| job | vlm CLI | vlm worker (vlm.Worker) | worker overhead |\n|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nRay Data, 2,000 captions, one actor of {THREADS} CPUs: vlm.ray.TextEmbedder {rates['vlm']:.1f} texts/s, "
          f"sentence-transformers {rates['sentence-transformers']:.1f} texts/s "
          f"(vlm {rates['vlm'] / rates['sentence-transformers']:.2f}×)")


if __name__ == "__main__":
    main()
