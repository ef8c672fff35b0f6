#!/usr/bin/env python3
"""The front ends before and after the embedding service (issue 30), two vlm binaries
alternating on the same work in one run (medians of the rounds):

  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python Benchmarks/frontends.py --before /path/to/old/vlm [--rounds 2]

  embed-text   all-MiniLM-L6-v2 on 2,000 captions (`--file`, model load included), texts/s
  embed-image  ResNet-50 (seeded torchvision weights) on 64 JPEGs of 224², images/s
  worker       the same captions as JSON lines through `vlm worker` (one process), texts/s
  serve        `vlm serve` on all-MiniLM-L6-v2, POST /v1/embeddings of one caption each, wrk at
               concurrency 1 and 32 for --seconds, requests/s
--threads 2 for every command.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from worker import MINILM, RESNET, captions, images  # noqa: E402
from serve import free_port, wrk  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AFTER = os.path.join(ROOT, ".build", "release", "vlm")


def timed(cmd, stdin=None):
    t = time.monotonic()
    subprocess.run(cmd, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.monotonic() - t


def serve_rate(vlm, texts, concurrency, seconds):
    port = free_port()
    p = subprocess.Popen([vlm, "serve", "--text-model", MINILM, "--port", str(port), "--threads", "2"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while b"serving on" not in p.stderr.readline():
            if p.poll() is not None:
                raise SystemExit("vlm serve ended before serving")
        r = wrk(port, "/v1/embeddings", {"model": "x"}, concurrency, seconds, texts)
        assert r["errors"] == 0, r
        return r["requests"] / r["seconds"]
    finally:
        p.terminate()
        p.wait(timeout=60)


def workloads(tmp, seconds):
    path = captions()
    texts = [line.strip() for line in open(path)]
    photos = images()
    folder = os.path.dirname(photos[0])
    lines = "".join(json.dumps({"id": k, "text": t}) + "\n" for k, t in enumerate(texts)).encode()
    return {
        "embed-text, 2,000 captions (texts/s)": lambda vlm: len(texts) / timed(
            [vlm, "embed-text", "--model", MINILM, "--file", path, "-o", os.path.join(tmp, "t.npy"), "--quiet", "--threads", "2"]),
        "embed-image, 64 JPEGs 224² (images/s)": lambda vlm: len(photos) / timed(
            [vlm, "embed-image", folder, "--model", RESNET, "-o", os.path.join(tmp, "i.npy"), "--quiet", "--threads", "2"]),
        "worker, 2,000 captions (texts/s)": lambda vlm: len(texts) / timed(
            [vlm, "worker", "--text-model", MINILM, "--threads", "2"], stdin=lines),
        "serve, concurrency 1 (requests/s)": lambda vlm: serve_rate(vlm, texts, 1, seconds),
        "serve, concurrency 32 (requests/s)": lambda vlm: serve_rate(vlm, texts, 32, seconds),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default=AFTER)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=10)
    a = ap.parse_args()
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name, run in workloads(tmp, a.seconds).items():
            got = {"before": [], "after": []}
            for _ in range(a.rounds):
                for which, vlm in (("before", a.before), ("after", a.after)):
                    got[which].append(run(vlm))
            b, f = statistics.median(got["before"]), statistics.median(got["after"])
            rows.append(f"| {name} | {b:.1f} | {f:.1f} | **{f / b:.2f}×** |")
            print(rows[-1], file=sys.stderr)
    print("| workload | before | after | after ÷ before |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
