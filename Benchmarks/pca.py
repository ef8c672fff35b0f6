#!/usr/bin/env python3
"""vlm pca fit / apply against scikit-learn's PCA on the same rows, side by side in one run.

  python Benchmarks/pca.py [--rows 50000] [--rounds 3]

Rows: 50,000 × 2,432 float32 shaped like vlm fuse output (ReLU image features ⧺ unit text
vectors; seeded, cached in Benchmarks/.cache), K = 256, 2 threads for everyone
(OMP_NUM_THREADS / OPENBLAS_NUM_THREADS for scikit-learn, --threads for vlm). Each measurement
is its own process (forked from a bare launcher, so ru_maxrss is its own); its wall time and
peak RSS are recorded; vlm runs --solver auto, dsyevr and dsyevd (dsyevd in round 1 only). scikit-learn's times are
PCA.fit alone (the .npy already loaded: the load is not counted against it); vlm's are the
whole process, reading the file included. Rounds alternate; medians are reported, with the
accuracy of vlm's fit against covariance_eigh's (in float64: the reference).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "Benchmarks", ".cache")
VLM = os.path.join(ROOT, ".build", "release", "vlm")
THREADS = 2
K = 256


def rows_file(n):
    path = os.path.join(CACHE, f"pca_{n}x2432.npy")
    if not os.path.exists(path):
        sys.path.insert(0, os.path.join(ROOT, "scripts"))
        from export_pca_fixtures import fused_rows
        rng = np.random.default_rng(77)
        os.makedirs(CACHE, exist_ok=True)
        out = np.lib.format.open_memmap(path + ".tmp.npy", mode="w+", dtype=np.float32, shape=(n, 2432))
        for start in range(0, n, 5000):
            out[start:start + 5000] = fused_rows(rng, min(5000, n - start))
        out.flush()
        del out
        os.rename(path + ".tmp.npy", path)
    return path


# A small launcher between this script and each measured process: a child forked from a large
# process inherits its peak RSS (ru_maxrss counts the pages before exec), so the measured
# command is forked from a bare `python3 -S`, which reports the child's own peak.
LAUNCH = r"""
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
os.write(2, b"\nMAXRSS %d\n" % usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(cmd, env=None):
    """(wall seconds, peak RSS MB, stdout) of one process."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-S", "-c", LAUNCH] + cmd, capture_output=True, env=env)
    wall = time.perf_counter() - t
    err = p.stderr.decode()
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {err[-2000:]}")
    rss = int(err.rsplit("MAXRSS ", 1)[1].split()[0])
    return wall, rss / 1024, p.stdout.decode()


SKLEARN = r"""
import sys, time, json, numpy as np
from sklearn.decomposition import PCA
x = np.load(sys.argv[1]); solver = sys.argv[2]; mode = sys.argv[3]
p = PCA(n_components=int(sys.argv[4]), svd_solver=solver, **({"random_state": 0} if solver == "randomized" else {}))
t = time.perf_counter(); p.fit(x); fit = time.perf_counter() - t
t = time.perf_counter(); y = p.transform(x); tr = time.perf_counter() - t
if mode == "save":
    np.save(sys.argv[5] + "_components.npy", p.components_); np.save(sys.argv[5] + "_ev.npy", p.explained_variance_)
    np.save(sys.argv[5] + "_y.npy", y[:2000])
print(json.dumps({"fit": fit, "transform": tr}))
"""


def sklearn_env():
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(THREADS)
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-full", action="store_true", help="leave out svd_solver='full' (33 s a run)")
    a = ap.parse_args()
    data = rows_file(a.rows)
    py = sys.executable
    ref = os.path.join(CACHE, "pca_ref")
    # The reference: covariance_eigh in float64 (saved once).
    subprocess.run([py, "-c", SKLEARN.replace("x = np.load(sys.argv[1])", "x = np.load(sys.argv[1]).astype(np.float64)"),
                    data, "covariance_eigh", "save", str(K), ref], check=True, env=sklearn_env(), stdout=subprocess.DEVNULL)
    results = {}

    def add(name, wall, rss, extra=None):
        results.setdefault(name, {"wall": [], "rss": [], "extra": []})
        results[name]["wall"].append(wall)
        results[name]["rss"].append(rss)
        results[name]["extra"].append(extra)

    solvers = ["covariance_eigh", "randomized"] + ([] if a.skip_full else ["full"])
    for r in range(a.rounds):
        for solver in ("auto", "dsyevr", "dsyevd"):
            if solver == "dsyevd" and r > 0:
                continue
            out = os.path.join(CACHE, f"pca_vlm_{solver}.safetensors")
            w, rss, _ = measure([VLM, "pca", "fit", data, "--dim", str(K), "--solver", solver, "--threads", str(THREADS), "-o", out, "--quiet"])
            add(f"vlm fit ({solver})", w, rss)
        w, rss, _ = measure([VLM, "pca", "apply", os.path.join(CACHE, "pca_vlm_auto.safetensors"), data, "--threads", str(THREADS),
                             "-o", os.path.join(CACHE, "pca_vlm_reduced.npy"), "--quiet"])
        add("vlm apply", w, rss)
        for solver in solvers:
            if solver != "covariance_eigh" and r > 0:
                continue
            w, rss, out = measure([py, "-c", SKLEARN, data, solver, "time", str(K)], env=sklearn_env())
            add(f"scikit-learn {solver}", w, rss, json.loads(out))
        print(f"round {r + 1}: " + ", ".join(f"{k} {statistics.median(v['wall']):.2f} s" for k, v in results.items()), flush=True)

    # Accuracy of vlm's fit against the float64 reference.
    from safetensors.numpy import load_file
    comp = np.load(ref + "_components.npy"); ev = np.load(ref + "_ev.npy")
    eig = ev
    gaps = np.minimum(np.abs(np.diff(np.r_[np.inf, eig])), np.abs(np.diff(np.r_[eig, 0]))) / eig
    separated = gaps > 1e-3
    accuracy = {}
    for solver in ("auto", "dsyevr", "dsyevd"):
        t = load_file(os.path.join(CACHE, f"pca_vlm_{solver}.safetensors"))
        cos = np.abs(np.sum(t["components"].astype(np.float64) * comp, axis=1))
        accuracy[solver] = (float(cos[separated].min()), int(separated.sum()),
                            float(np.max(np.abs(t["explained_variance"] - ev) / ev)))
    y_ref = np.load(ref + "_y.npy")
    y = np.load(os.path.join(CACHE, "pca_vlm_reduced.npy"), mmap_mode="r")[:2000]
    apply_err = float(np.max(np.linalg.norm(y - y_ref, axis=1) / np.linalg.norm(y_ref, axis=1)))

    med = {k: (statistics.median(v["wall"]), max(v["rss"])) for k, v in results.items()}
    fit_only = {k: statistics.median(e["fit"] for e in v["extra"]) for k, v in results.items() if k.startswith("scikit")}
    tr_only = statistics.median(e["transform"] for e in results["scikit-learn covariance_eigh"]["extra"])
    base = fit_only["scikit-learn covariance_eigh"]
    print(f"\n{a.rows:,} × 2,432 float32 rows, K = {K}, {THREADS} threads\n")
    print("| run | seconds | vs scikit-learn covariance_eigh fit | peak RSS (MB) |")
    print("|---|---|---|---|")
    for solver in ("auto", "dsyevr", "dsyevd"):
        w, rss = med[f"vlm fit ({solver})"]
        print(f"| `vlm pca fit --solver {solver}` (whole process, file read included) | {w:.2f} | **{base / w:.2f}×** | {rss:.0f} |")
    for solver in solvers:
        w, rss = med[f"scikit-learn {solver}"]
        print(f"| scikit-learn `PCA(svd_solver=\"{solver}\").fit` (fit alone; process {w:.2f} s) | {fit_only['scikit-learn ' + solver]:.2f} | "
              f"{base / fit_only['scikit-learn ' + solver]:.2f}× | {rss:.0f} |")
    w, rss = med["vlm apply"]
    gb = a.rows * 2432 * 4 / 1e9
    print(f"| `vlm pca apply` (whole process: read, project, write .npy + ids) | {w:.2f} | transform alone in scikit-learn: {tr_only:.2f} s | {rss:.0f} |")
    print(f"\napply reads {gb:.2f} GB: {gb / w:.2f} GB/s end to end.")
    for solver, (c, n, e) in accuracy.items():
        print(f"accuracy {solver}: min |cos| {c:.7f} over the {n} of {K} components with a separated eigenvalue; "
              f"explained_variance max rel err {e:.1e}")
    print(f"apply vs float64 scikit-learn transform: max row rel err {apply_err:.1e}")


if __name__ == "__main__":
    main()
