#!/usr/bin/env python3
"""scikit-learn PCA references for vlm pca (Tests/Fixtures/generated/pca/, made by make test).

Every case is seeded float32 data with a known structure; the reference is
sklearn.decomposition.PCA(svd_solver="covariance_eigh") fitted on the same values in float64,
so the reference itself carries no float32 rounding. Each case folder holds:

  X.npy                  the rows (float32)
  X_a.npy, X_b.f32       the same rows split in two files (.npy, then raw float32)
  mean.npy, components.npy, explained_variance.npy, explained_variance_ratio.npy
  transformed.npy        PCA(whiten=False).transform(X)
  transformed_white.npy  PCA(whiten=True).transform(X) (only where every kept variance > 0)
  case.json              n_components as given to scikit-learn, K fitted, rows, dim

Cases: "spectrum" (2,000 × 64, a decaying spectrum on a large offset, K=16), "fraction" (the
same rows, n_components=0.9), "rankdef" (600 × 48 of rank 10, K=20), "fused" (4,000 × 2,432
rows shaped like vlm fuse output: ReLU image features ⧺ unit text vectors, K=256), "drift"
(206,608 × 8 whose mean moves by 10⁴ in every value from one 65,536-row chunk of vlm pca fit to
the next, K=6: chunks centred on one fixed shift lose the spread of the later chunks; the split
falls on a chunk boundary too).
"""

import json
import os
import sys

import numpy as np
from sklearn.decomposition import PCA

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "generated", "pca")


def spectrum_rows(rng, n, d, offset):
    scales = np.exp(-np.arange(d) / 6.0) * 10 + 0.05
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    z = rng.standard_normal((n, d)) * scales
    return (z @ q.T + offset).astype(np.float32)


def rank_deficient_rows(rng, n, d, rank):
    basis = rng.standard_normal((rank, d))
    z = rng.standard_normal((n, rank)) * np.linspace(4, 1, rank)
    return (z @ basis + 3.0).astype(np.float32)


def fused_rows(rng, n):
    # Image part: ReLU of correlated Gaussians (non-negative, many near zero), 2,048 values.
    d_img, d_txt, latent = 2048, 384, 96
    mix = rng.standard_normal((latent, d_img)) / np.sqrt(latent)
    img = np.maximum(rng.standard_normal((n, latent)) * np.linspace(3, 0.3, latent) @ mix + 0.2 * rng.standard_normal((n, d_img)), 0)
    # Text part: unit vectors around a few topics.
    topics = rng.standard_normal((12, d_txt))
    txt = topics[rng.integers(0, 12, n)] + 0.7 * rng.standard_normal((n, d_txt))
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return np.concatenate([img, txt], axis=1).astype(np.float32)


def drifting_rows(rng, chunk, d):
    # vlm pca fit reads 65,536-row chunks when rows are this narrow (64 MiB / (4 d), at most 2^16).
    scales = np.array([3, 2, 1.5, 1, 0.6, 0.4, 0.25, 0.15])[:d]
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    n = 3 * chunk + 10000
    z = rng.standard_normal((n, d)) * scales @ q.T
    offset = (np.arange(n) // chunk)[:, None] * 1e4 + np.linspace(-5, 5, d)
    return (z + offset).astype(np.float32)


def write_case(name, x, n_components, split):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "X.npy"), x)
    np.save(os.path.join(folder, "X_a.npy"), x[:split])
    x[split:].astype("<f4").tofile(os.path.join(folder, "X_b.f32"))
    x64 = x.astype(np.float64)
    p = PCA(n_components=n_components, svd_solver="covariance_eigh").fit(x64)
    def save(name, a):
        np.save(os.path.join(folder, name), np.ascontiguousarray(a, dtype=np.float32))

    save("mean.npy", p.mean_)
    save("components.npy", p.components_)
    save("explained_variance.npy", p.explained_variance_)
    save("explained_variance_ratio.npy", p.explained_variance_ratio_)
    save("transformed.npy", p.transform(x64))
    # Eigenvalues (computed in float64), all of them: the tests pick the components whose eigenvalue is
    # separated from its neighbours.
    cov = np.cov(x64, rowvar=False)
    save("eigenvalues.npy", np.sort(np.linalg.eigvalsh(cov))[::-1])
    whitened = bool(np.all(p.explained_variance_ > 1e-9 * p.explained_variance_[0]))
    if whitened:
        w = PCA(n_components=n_components, whiten=True, svd_solver="covariance_eigh").fit(x64)
        save("transformed_white.npy", w.transform(x64))
    with open(os.path.join(folder, "case.json"), "w") as f:
        json.dump({"n_components": n_components, "k": int(p.n_components_), "rows": int(x.shape[0]),
                   "dim": int(x.shape[1]), "split": split, "whitened": whitened}, f, indent=1)
    print(f"pca {name}: {x.shape[0]} x {x.shape[1]}, K = {p.n_components_}")


def main():
    rng = np.random.default_rng(1234)
    x = spectrum_rows(rng, 2000, 64, offset=np.linspace(-50, 80, 64))
    write_case("spectrum", x, 16, split=1200)
    write_case("fraction", x, 0.9, split=700)
    write_case("rankdef", rank_deficient_rows(rng, 600, 48, 10), 20, split=300)
    write_case("fused", fused_rows(rng, 4000), 256, split=2500)
    write_case("drift", drifting_rows(rng, 1 << 16, 8), 6, split=2 << 16)
    with open(os.path.join(OUT, "done"), "w") as f:
        f.write("ok\n")


if __name__ == "__main__":
    sys.exit(main())
