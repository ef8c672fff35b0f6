"""`make install PREFIX=…` as the README says: the binary in PREFIX/bin, its data in
PREFIX/share/vlm, and an installed vlm run from another folder — no checkout, no $VLM_MODELS —
finds its registry, its labels and the default text model there."""
import os
import subprocess

import numpy as np

from conftest import ROOT


def test_make_install_and_the_installed_vlm_finds_its_data(tmp_path):
    prefix = tmp_path / "prefix"
    r = subprocess.run(["make", "-C", ROOT, "install", f"PREFIX={prefix}"], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    vlm = prefix / "bin" / "vlm"
    share = prefix / "share" / "vlm"
    assert vlm.exists() and (share / "registry.json").exists() and (share / "imagenet_classes.txt").exists()
    assert (share / "all-MiniLM-L6-v2" / "model.safetensors").exists(), "a model already fetched is installed"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VLM_MODELS", "VLM_REGISTRY", "VLM_BINARY")}
    listed = subprocess.run([str(vlm), "models", "list"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "resnet50" in listed.stdout and "all-MiniLM-L6-v2" in listed.stdout, listed.stdout + listed.stderr
    # The default text model, from PREFIX/share/vlm: the same row as the checkout's model gives.
    out = elsewhere / "t.npy"
    row = subprocess.run([str(vlm), "embed-text", "A cat.", "-o", str(out), "--quiet"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert row.returncode == 0, row.stderr
    ref = tmp_path / "ref.npy"
    subprocess.run([os.path.join(ROOT, ".build", "release", "vlm"), "embed-text", "A cat.", "--model",
                    os.path.join(ROOT, "models", "all-MiniLM-L6-v2"), "-o", str(ref), "--quiet"], check=True)
    assert np.array_equal(np.load(out), np.load(ref))
    # ImageNet labels from there too: classify with seeded weights names classes from the file.
    photo = os.path.join(ROOT, "Tests", "Fixtures", "generated", "images", "coffee.jpg")
    top = subprocess.run([str(vlm), "classify", photo, "--model", "synthetic:resnet50", "--top", "1"], cwd=elsewhere, env=env,
                         capture_output=True, text=True)
    assert top.returncode == 0, top.stderr
    labels = set(open(share / "imagenet_classes.txt").read().splitlines())
    assert any(label and label in top.stdout for label in labels), top.stdout
