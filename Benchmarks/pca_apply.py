#!/usr/bin/env python3
"""vlm pca apply against scikit-learn's PCA.transform, side by side in one run (issue 22).

  python Benchmarks/pca_apply.py [--rows 50000] [--rounds 15] [--vlm BIN ...]

The rows of Benchmarks/pca.py (50,000 × 2,432 float32 shaped like vlm fuse output; seeded,
cached), K = 256, 2 threads for everyone. The PCA is fitted once by the first binary. Each
round runs, in turn: every `--vlm` binary's whole `pca apply` process (start, read the .npy,
project, write .npy + ids, journal; default: this checkout's release build), scikit-learn's
`transform` alone on rows already in memory (timed inside this process), and a whole
scikit-learn process doing the same job as vlm (import, np.load, transform, np.save). Medians
and ranges are reported, with each vlm output's largest row error against the float64
projection. Pass an older build as a second --vlm to time a change before and after.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = "2"
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pca import CACHE, K, VLM, measure, rows_file  # noqa: E402

SKLEARN_JOB = r"""
import sys, numpy as np
from safetensors.numpy import load_file
from sklearn.decomposition import PCA
t = load_file(sys.argv[1]); x = np.load(sys.argv[2])
p = PCA(n_components=t["components"].shape[0])
p.components_, p.mean_, p.explained_variance_ = t["components"], t["mean"], t["explained_variance"]
p.n_components_, p.n_features_in_ = t["components"].shape[0], x.shape[1]
np.save(sys.argv[3], p.transform(x))
"""


def sklearn_pca(path, dim):
    from safetensors.numpy import load_file
    from sklearn.decomposition import PCA
    t = load_file(path)
    p = PCA(n_components=t["components"].shape[0])
    p.components_, p.mean_, p.explained_variance_ = t["components"], t["mean"], t["explained_variance"]
    p.n_components_, p.n_features_in_ = t["components"].shape[0], dim
    return p, t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--vlm", action="append", help="a vlm binary (repeatable; default: .build/release/vlm)")
    a = ap.parse_args()
    binaries = a.vlm or [VLM]
    data = rows_file(a.rows)
    pca = os.path.join(CACHE, "pca_apply_fit.safetensors")
    subprocess.run([binaries[0], "pca", "fit", data, "--dim", str(K), "-o", pca, "--quiet"], check=True)
    x = np.load(data)
    p, t = sklearn_pca(pca, x.shape[1])
    names = [f"vlm pca apply ({b})" for b in binaries]
    times = {n: [] for n in names + ["scikit-learn transform alone", "scikit-learn whole process"]}
    rss = {n: [] for n in times}
    for _ in range(a.rounds):
        for name, b in zip(names, binaries):
            out = os.path.join(CACHE, f"pca_apply_{names.index(name)}.npy")
            w, m, _ = measure([b, "pca", "apply", pca, data, "-o", out, "--quiet"])
            times[name].append(w)
            rss[name].append(m)
        s = time.perf_counter()
        p.transform(x)
        times["scikit-learn transform alone"].append(time.perf_counter() - s)
        w, m, _ = measure([sys.executable, "-c", SKLEARN_JOB, pca, data, os.path.join(CACHE, "pca_apply_sklearn.npy")])
        times["scikit-learn whole process"].append(w)
        rss["scikit-learn whole process"].append(m)
    alone = statistics.median(times["scikit-learn transform alone"])
    print(f"{a.rows} × {x.shape[1]} rows, K = {K}, {a.rounds} rounds; medians (min–max)\n")
    print("| run | seconds | vs transform alone | peak RSS (MB) |")
    print("|---|---|---|---|")
    for n, v in times.items():
        med = statistics.median(v)
        r = f"{statistics.median(rss[n]):.0f}" if rss[n] else "–"
        print(f"| {n} | {med:.3f} ({min(v):.3f}–{max(v):.3f}) | {alone / med:.2f}× | {r} |")
    c = t["components"].astype(np.float64)
    ref = x.astype(np.float64) @ c.T - t["mean"].astype(np.float64) @ c.T
    for i, n in enumerate(names):
        y = np.load(os.path.join(CACHE, f"pca_apply_{i}.npy"))
        err = float(np.max(np.linalg.norm(y - ref, axis=1) / np.linalg.norm(ref, axis=1)))
        print(f"\n{n}: largest row error against the float64 projection {err:.1e}")


if __name__ == "__main__":
    main()
