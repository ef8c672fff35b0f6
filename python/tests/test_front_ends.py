"""One way from an item to a vector: the batch job, `vlm worker`, the Python package and
`vlm serve` give the same vector for the same input and options — a ResNet, a BERT and a pair
model, with and without --pca, --normalize, --normalize-output and --normalize-parts (pairwise
coverage on tiny seeded models) — and the same bad inputs get the same error kind and message
from every front end."""
import base64
import json
import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest

import vlm
from conftest import BERT, RESNET, VLM
from test_serve import Server, fit_pca

TEXTS = ["A cat sitting on a couch.", "", "naïve café 東京 🙂", "a dog", "Hello, world!\tTabs and  spaces."]

# kind → option sets (flags every front end takes alike); "{pca}" is that kind's PCA file.
CASES = {
    "text": [[], ["--normalize"], ["--no-normalize", "--pca", "{pca}"], ["--normalize", "--pca", "{pca}", "--normalize-output"],
             ["--normalize-output"]],
    "image": [[], ["--pca", "{pca}"], ["--normalize-output"], ["--pca", "{pca}", "--normalize-output"]],
    "pair": [["--normalize-parts"], ["--pca", "{pca}", "--normalize-output"], ["--normalize-parts", "--no-normalize", "--pca", "{pca}"],
             ["--normalize-output"]],
}
WIDTH = {"text": 32, "image": 256, "pair": 288}


def rel_rows(a, b):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    assert a.shape == b.shape, (a.shape, b.shape)
    return max(float(np.abs(a[i] - b[i]).max() / np.linalg.norm(b[i])) for i in range(len(b)))


def python_options(flags):
    """The Python package's keyword options for CLI flags."""
    out, k = {}, 0
    while k < len(flags):
        f = flags[k][2:]
        if k + 1 < len(flags) and not flags[k + 1].startswith("--"):
            out[f.replace("-", "_")] = flags[k + 1]
            k += 2
        elif f.startswith("no-"):
            out[f[3:].replace("-", "_")] = False
            k += 1
        else:
            out[f.replace("-", "_")] = True
            k += 1
    return out


def job(kind, flags, photos, tmp_path, resnet=RESNET):
    out = tmp_path / f"{uuid.uuid4().hex}.npy"
    if kind == "text":
        args = ["embed-text", "--model", BERT, *TEXTS]
    elif kind == "image":
        args = ["embed-image", *photos, "--model", resnet]
    else:
        pairs = tmp_path / f"{uuid.uuid4().hex}.tsv"
        pairs.write_text("".join(f"{p}\t{t}\n" for p, t in zip(photos, TEXTS)))
        args = ["fuse", "--pairs", str(pairs), "--image-model", resnet, "--text-model", BERT]
    r = subprocess.run([VLM, *args, *flags, "-o", str(out), "--quiet"], capture_output=True)
    errors = []
    if os.path.exists(str(out) + ".errors.jsonl"):
        errors = [json.loads(line) for line in open(str(out) + ".errors.jsonl")]
    return r, (np.load(out) if os.path.exists(out) else None), errors


def worker_lines(kind, photos):
    if kind == "text":
        return [{"id": k, "text": t} for k, t in enumerate(TEXTS)]
    if kind == "image":
        return [{"id": k, "image": p} for k, p in enumerate(photos)]
    return [{"id": k, "image": p, "text": t} for k, (p, t) in enumerate(zip(photos, TEXTS))]


def worker(kind, flags, photos, resnet=RESNET):
    lines = "".join(json.dumps(x) + "\n" for x in worker_lines(kind, photos))
    r = subprocess.run([VLM, "worker", "--image-model", resnet, "--text-model", BERT, "--vectors", "json", *flags],
                       input=lines.encode(), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.decode().splitlines()]


def package(kind, flags, photos, resnet=RESNET):
    with vlm.Worker(image_model=resnet, text_model=BERT, **python_options(flags)) as w:
        if kind == "text":
            return w.embed_texts(TEXTS)
        if kind == "image":
            return w.embed_images(photos)
        return w.embed_pairs(photos, TEXTS)


def served(s, kind, photos):
    names = [os.path.basename(p) for p in photos]
    if kind == "text":
        return s.post("/embed", {"inputs": TEXTS})
    if kind == "image":
        return s.post("/embed_image", {"paths": names})
    return s.post("/fuse", {"inputs": [{"image": n, "text": t} for n, t in zip(names, TEXTS)]})


@pytest.mark.parametrize("kind", sorted(CASES))
def test_every_front_end_gives_the_jobs_vectors(tmp_path, photos, kind):
    good, _ = photos
    images = good[:5]
    pca = fit_pca(tmp_path, WIDTH[kind], 4, kind)
    root = os.path.dirname(images[0])
    for case in CASES[kind]:
        flags = [f.replace("{pca}", pca) for f in case]
        r, ref, errors = job(kind, flags, images, tmp_path)
        assert r.returncode == 0 and not errors, (flags, r.stderr)
        assert ref.shape == (5, 4 if "--pca" in flags else WIDTH[kind]), flags
        if "--normalize-output" in flags:
            assert np.allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5), flags
        rows = worker(kind, flags, images)
        assert [x["id"] for x in rows] == list(range(5)) and all("vector" in x for x in rows), (flags, rows)
        assert rel_rows([x["vector"] for x in rows], ref) <= 1e-6, ("worker", flags)
        v, e = package(kind, flags, images)
        assert not e and rel_rows(v, ref) <= 1e-6, ("package", flags, e)
        with Server(["--image-model", RESNET, "--text-model", BERT, "--root", root, *flags]) as s:
            status, body = served(s, kind, images)
            assert status == 200 and rel_rows(body, ref) <= 1e-6, ("serve", flags, status, body if status != 200 else "")


def overflowing_resnet(tmp_path):
    """The tiny ResNet with its first convolution's weights at ±3e38: finite weights whose
    products overflow, so every image's row holds infinity or NaN."""
    from safetensors.numpy import load_file, save_file
    d = tmp_path / "overflow"
    shutil.copytree(RESNET, d)
    w = load_file(str(d / "model.safetensors"))
    w["conv1.weight"] = (np.sign(w["conv1.weight"]) * 3e38).astype(np.float32)
    assert np.isfinite(w["conv1.weight"]).all()
    save_file(w, str(d / "model.safetensors"))
    return str(d)


def tail(message):
    """A message without the item's name (each front end names an item its own way)."""
    return message.split(": ", 1)[1] if ": " in message else message


def test_the_same_bad_inputs_get_the_same_error_from_every_front_end(tmp_path, photos):
    good, broken = photos
    not_an_image = next(p for p, k in broken.items() if k == "not_an_image")
    bad = overflowing_resnet(tmp_path)
    for resnet, images, kind, status in [(RESNET, [good[0], not_an_image], "not_an_image", 422), (bad, [good[0], good[1]], "non_finite", 500)]:
        r, _, errors = job("image", [], images, tmp_path, resnet=resnet)
        assert r.returncode == 2, r.stderr
        by_job = {e["id"]: e for e in errors}
        failed = [k for k, p in enumerate(images) if p in by_job]
        assert failed and all(by_job[images[k]]["kind"] == kind for k in failed), errors
        message = tail(by_job[images[failed[0]]]["error"])
        rows = worker("image", [], images, resnet=resnet)
        for k in failed:
            assert rows[k]["error"]["kind"] == kind and tail(rows[k]["error"]["message"]) == message, rows[k]
        _, e = package("image", [], images, resnet=resnet)
        assert [(i, k) for i, k, _ in e] == [(k, kind) for k in failed] and tail(e[0][2]) == message, e
        with Server(["--image-model", resnet, "--text-model", BERT, "--root", os.path.dirname(images[0])]) as s:
            b64 = [base64.b64encode(open(p, "rb").read()).decode() for p in images]
            got, body = s.post("/embed_image", {"inputs": b64})
            assert got == status and body["error_kind"] == kind and tail(body["error"]) == message, (got, body, message)


def test_an_over_long_text_without_truncation_gets_the_same_error_from_every_front_end(tmp_path, photos):
    # The tiny BERT takes 128 tokens; with truncation off, a longer text (alone, or in a pair)
    # is an item error of kind too_long — the batch job and the worker go on with the others,
    # the server refuses the request (413) — with the same words everywhere.
    good, _ = photos
    texts = ["short", " ".join(["word"] * 300), "also short"]
    images = good[:3]
    cases = [("text", ["embed-text", "--model", BERT, *texts]), ("pair", ["fuse", "--image-model", RESNET, "--text-model", BERT])]
    for kind, args in cases:
        out = tmp_path / f"{kind}.npy"
        if kind == "pair":
            pairs = tmp_path / "pairs.tsv"
            pairs.write_text("".join(f"{p}\t{t}\n" for p, t in zip(images, texts)))
            args = args + ["--pairs", str(pairs)]
        r = subprocess.run([VLM, *args, "--no-truncate", "-o", str(out), "--quiet"], capture_output=True)
        assert r.returncode == 2, r.stderr
        errors = [json.loads(line) for line in open(str(out) + ".errors.jsonl")]
        assert [e["kind"] for e in errors] == ["too_long"], errors
        message = tail(errors[0]["error"])
        assert message == "302 tokens, over the maximum length of 128, and truncation is off", message
        assert np.load(out).shape[0] == 2, "the other two were written"
        # Truncated (the default), all three are embedded.
        r = subprocess.run([VLM, *args, "-o", str(tmp_path / f"{kind}-cut.npy"), "--quiet"], capture_output=True)
        assert r.returncode == 0 and np.load(tmp_path / f"{kind}-cut.npy").shape[0] == 3, r.stderr
        lines = [{"id": k, "text": t, **({"image": images[k]} if kind == "pair" else {})} for k, t in enumerate(texts)]
        w = subprocess.run([VLM, "worker", "--image-model", RESNET, "--text-model", BERT, "--vectors", "json", "--no-truncate"],
                           input="".join(json.dumps(x) + "\n" for x in lines).encode(), capture_output=True, timeout=120)
        rows = [json.loads(line) for line in w.stdout.decode().splitlines()]
        assert w.returncode == 0 and "vector" in rows[0] and "vector" in rows[2], w.stderr
        assert rows[1]["error"]["kind"] == "too_long" and tail(rows[1]["error"]["message"]) == message, rows[1]
        with vlm.Worker(image_model=RESNET, text_model=BERT, truncate=False) as pw:
            _, e = pw.embed_texts(texts) if kind == "text" else pw.embed_pairs(images, texts)
        assert [(i, k) for i, k, _ in e] == [(1, "too_long")] and tail(e[0][2]) == message, e
        with Server(["--image-model", RESNET, "--text-model", BERT, "--root", os.path.dirname(images[0])]) as s:
            if kind == "text":
                got, body = s.post("/embed", {"inputs": texts, "truncate": False})
            else:
                got, body = s.post("/fuse", {"inputs": [{"path": os.path.basename(p), "text": t} for p, t in zip(images, texts)],
                                             "truncate": False})
            assert got == 413 and body["error_kind"] == "too_long" and tail(body["error"]) == message, (got, body, message)
