"""A CLIP checkpoint through every front end: the batch jobs, the Python package (through `vlm
worker`) and `vlm serve` (/v1/embeddings with "modality": "image" as infinity takes it, and
texts) give the vectors open_clip's preprocessing and transformers' model give — image and text
in one space, L2-normalised. The fixture is a small Hugging Face CLIPModel with seeded weights
and its references (scripts/export_clip_model_fixtures.py, `make fixtures`)."""
import base64
import os
import subprocess

import numpy as np
import pytest

import vlm
from conftest import ROOT, VLM
from test_front_ends import rel_rows
from test_serve import Server

MODELS = os.path.join(ROOT, "Tests", "Fixtures", "generated", "clip-models")
HF = os.path.join(MODELS, "hf-vit")
PICTURES = [os.path.join(MODELS, "images", n) for n in ("a-wide.png", "b-small.png", "c-gray.png", "d-photo.jpg")]


@pytest.fixture(scope="module")
def references():
    if not os.path.exists(os.path.join(MODELS, "done")):
        pytest.fail(f"{MODELS} missing: run `make fixtures`")
    texts = open(os.path.join(HF, "texts.txt"), encoding="utf-8").read().splitlines()
    return texts, np.load(os.path.join(HF, "e2e_image_features.npy")), np.load(os.path.join(HF, "e2e_text_features.npy"))


def test_every_front_end_gives_the_references(references, tmp_path):
    texts, images, text_vectors = references
    # The batch jobs.
    out = tmp_path / "img.npy"
    subprocess.run([VLM, "embed-image", *PICTURES, "--model", HF, "-o", str(out)], check=True, capture_output=True)
    assert rel_rows(np.load(out), images) < 1e-4
    out = tmp_path / "txt.npy"
    subprocess.run([VLM, "embed-text", "--model", HF, "-o", str(out), *texts], check=True, capture_output=True)
    assert rel_rows(np.load(out), text_vectors) < 1e-4

    # The Python package: one worker, one checkpoint for both towers.
    with vlm.Worker(image_model=HF, text_model=HF) as w:
        v, errors = w.embed_images(PICTURES)
        assert not errors
        assert rel_rows(v, images) < 1e-4
        v, errors = w.embed_texts(texts)
        assert not errors
        assert rel_rows(v, text_vectors) < 1e-4
        assert w.info()["image_dim"] == w.info()["text_dim"] == 24

    # The server: texts as today, images by path under --root and as data: URLs.
    s = Server(["--image-model", HF, "--text-model", HF, "--root", os.path.join(MODELS, "images")])
    try:
        # The server cuts over-long texts only when asked (as text-embeddings-inference: --auto-truncate).
        status, body = s.post("/v1/embeddings", {"input": texts, "truncate": True})
        assert status == 200, body
        assert rel_rows([d["embedding"] for d in body["data"]], text_vectors) < 1e-4
        urls = ["data:image/png;base64," + base64.b64encode(open(p, "rb").read()).decode() for p in PICTURES[:2]]
        status, body = s.post("/v1/embeddings", {"input": [os.path.basename(p) for p in PICTURES[2:]] + urls, "modality": "image"})
        assert status == 200, body
        got = np.array([d["embedding"] for d in body["data"]])
        assert rel_rows(got, images[[2, 3, 0, 1]]) < 1e-4
        status, body = s.post("/v1/embeddings", {"input": ["http://example.com/cat.jpg"], "modality": "image"})
        assert status == 400 and "vlm fetches nothing" in body["error"]["message"]
        status, body = s.get("/info")
        assert body["image_normalize_default"] is True and body["text_normalize_default"] is True
        assert body["served_model_name"] == body["served_image_model_name"] == "hf-vit"
    finally:
        s.proc.terminate()
        s.proc.wait(timeout=60)


def test_image_answers_name_the_image_model(references):
    """A CLIP image model beside another text model: /v1/embeddings answers images under the
    image model's name and texts under the text model's, and /v1/models lists both; one CLIP for
    both answers images under the served name."""
    texts, images, _ = references
    minilm = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
    s = Server(["--image-model", HF, "--text-model", minilm, "--root", os.path.join(MODELS, "images")])
    try:
        status, body = s.post("/v1/embeddings", {"input": ["b-small.png"], "modality": "image"})
        assert status == 200 and body["model"] == "hf-vit", body
        assert rel_rows([body["data"][0]["embedding"]], images[[1]]) < 1e-4
        status, body = s.post("/v1/embeddings", {"input": ["a photo of a cat"]})
        assert status == 200 and body["model"] == "all-MiniLM-L6-v2" and len(body["data"][0]["embedding"]) == 384, body
        status, body = s.get("/v1/models")
        assert [m["id"] for m in body["data"]] == ["all-MiniLM-L6-v2", "hf-vit"], body
    finally:
        s.proc.terminate()
        s.proc.wait(timeout=60)
    # One CLIP under two spellings (a trailing slash) is one model, answering under either served name.
    s = Server(["--image-model", HF + "/", "--text-model", HF, "--root", os.path.join(MODELS, "images"),
                "--served-model-name", "clip", "--served-model-name", "clip2"])
    try:
        status, body = s.post("/v1/embeddings", {"input": ["b-small.png"], "modality": "image"})
        assert status == 200 and body["model"] == "clip", body
        status, body = s.post("/v1/embeddings", {"input": ["b-small.png"], "modality": "image", "model": "clip2"})
        assert status == 200 and body["model"] == "clip2", body
        status, body = s.get("/v1/models")
        assert [m["id"] for m in body["data"]] == ["clip", "clip2"], body
    finally:
        s.proc.terminate()
        s.proc.wait(timeout=60)


def test_openai_releases_are_registered_and_run_as_fetched(tmp_path):
    """`vlm models fetch clip-rn50-openai | clip-vit-b-32-openai` are pinned to the files open_clip's
    pretrained list names, by the sha256 their URLs carry; a folder laid out as fetch lays it
    out (the TorchScript archive and the BPE vocabulary) is a CLIP model by its registry name,
    through the batch jobs and the Python package. The archive is the fixture's traced CLIP
    (OpenAI's form at a small size), not OpenAI's weights: no test fetches."""
    import json
    import shutil

    from open_clip.pretrained import get_pretrained_url
    registry = {m["name"]: m for m in json.load(open(os.path.join(ROOT, "models", "registry.json")))["models"]}
    for name, arch in [("clip-rn50-openai", "RN50"), ("clip-vit-b-32-openai", "ViT-B-32")]:
        files = registry[name]["files"]
        pt = files[0]
        assert pt["url"] == get_pretrained_url(arch, "openai"), pt
        assert pt["url"].split("/")[-2] == pt["sha256"] and len(pt["sha256"]) == 64
        assert files[1] == registry["clip-bpe"]["files"][0]

    openai = os.path.join(MODELS, "oc-openai")
    models = tmp_path / "models"
    folder = models / "clip-rn50-openai"
    folder.mkdir(parents=True)
    shutil.copy(os.path.join(openai, "RN-openai.pt"), folder / "RN50.pt")
    shutil.copy(os.path.join(openai, "bpe_simple_vocab_16e6.txt.gz"), folder)
    env = dict(os.environ, VLM_MODELS=str(models), VLM_REGISTRY=os.path.join(ROOT, "models", "registry.json"))
    out = tmp_path / "i.npy"
    r = subprocess.run([VLM, "embed-image", *PICTURES, "--model", "clip-rn50-openai", "-o", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert rel_rows(np.load(out), np.load(os.path.join(openai, "e2e_image_features.npy"))) < 1e-4
    texts = open(os.path.join(openai, "texts.txt"), encoding="utf-8").read().splitlines()
    with vlm.Worker(image_model=str(folder / "RN50.pt"), text_model=str(folder)) as w:
        v, errors = w.embed_texts(texts)
        assert not errors
        assert rel_rows(v, np.load(os.path.join(openai, "e2e_text_features.npy"))) < 1e-4
    # Before the fetch: the name says what to run.
    r = subprocess.run([VLM, "embed-image", *PICTURES, "--model", "clip-vit-b-32-openai", "-o", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "vlm models fetch clip-vit-b-32-openai" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_malformed_torchscript_clips_are_refused_in_one_line(tmp_path):
    """From a review: a CLIP archive whose position embedding makes no square image (a grid of
    0, a row count that is not a square) trapped; torch writes .data/version from format 6 on;
    --clip-config without a model silently ran the default model."""
    import torch

    class Visual(torch.nn.Module):
        def __init__(self, rows):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 64, 16, bias=False)
            self.positional_embedding = torch.nn.Parameter(torch.zeros(rows, 64))

        def forward(self, x):
            return self.conv1(x)

    class Clip(torch.nn.Module):
        def __init__(self, rows):
            super().__init__()
            self.visual = Visual(rows)
            self.ln_final = torch.nn.LayerNorm(64)
            self.token_embedding = torch.nn.Embedding(8, 64)

        def forward(self, x):
            return self.ln_final(x)

    for rows in (1, 11, 0):
        p = tmp_path / f"rows{rows}.pt"
        torch.jit.script(Clip(rows)).save(str(p))
        r = subprocess.run([VLM, "embed-text", "a cat", "--model", str(p), "-o", str(tmp_path / "o.npy")], capture_output=True, text=True)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, (rows, r.returncode, r.stderr)
        assert "make no square image" in r.stderr, r.stderr
    # An archive that needs file format 6 or later (a tanh GELU) has its version under .data/ only.
    import zipfile

    class Tanh(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)

        def forward(self, x):
            return torch.nn.functional.gelu(self.fc(x), approximate="tanh")
    torch.jit.script(Tanh()).save(str(tmp_path / "v6.pt"))
    names = zipfile.ZipFile(tmp_path / "v6.pt").namelist()
    assert "v6/.data/version" in names and "v6/version" not in names, names
    r = subprocess.run([VLM, "inspect", str(tmp_path / "v6.pt")], capture_output=True, text=True)
    assert r.returncode == 0 and "TorchScript archive" in r.stdout and "fc.weight" in r.stdout, (names, r.stderr)
    r = subprocess.run([VLM, "embed-text", "a cat", "--clip-config", "RN50", "-o", str(tmp_path / "o.npy")], capture_output=True, text=True)
    assert r.returncode == 64 and "give the checkpoint with --model" in r.stderr, r.stderr

    # --clip-config fits the bare state dict of a pair and leaves its ResNet alone; a model it
    # cannot fit is one line.
    bare = tmp_path / "run"
    bare.mkdir()
    os.symlink(os.path.join(MODELS, "full-rn50", "open_clip_model.safetensors"), bare / "epoch_1.safetensors")
    os.symlink(os.path.join(MODELS, "full-rn50", "bpe_simple_vocab_16e6.txt.gz"), bare / "bpe_simple_vocab_16e6.txt.gz")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(f"{PICTURES[0]}\ta photo of a cat\n")
    r = subprocess.run([VLM, "fuse", "--pairs", str(pairs), "--image-model", "synthetic:resnet18", "--text-model", str(bare / "epoch_1.safetensors"),
                        "--clip-config", "RN50-quickgelu", "-o", str(tmp_path / "f.npy"), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "f.npy").shape == (1, 512 + 1024)
    r = subprocess.run([VLM, "embed-image", *PICTURES, "--model", "synthetic:resnet18", "--clip-config", "RN50", "-o", str(tmp_path / "o.npy")],
                       capture_output=True, text=True)
    assert r.returncode == 64 and "is not a bare open_clip state dict" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr

    # A scripted open_clip model says how it pools: what vlm does not run is refused by name.
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    for k, (text_kw, vision_kw, named) in enumerate([
            (dict(pool_type="last"), {}, "text_pool_type is 'last'"), ({}, dict(pool_type="avg"), "visual.pool_type is 'avg'"),
            (dict(no_causal_mask=True), {}, "no causal mask"), (dict(act_kwargs={"approximate": "tanh"}), {}, 'approximate="tanh"')]):
        m = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=1, width=64, head_width=32, patch_size=8, image_size=32, **vision_kw),
                 text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=1, **text_kw)).eval()
        p = tmp_path / f"variant-{k}.pt"
        torch.jit.script(m).save(str(p))
        r = subprocess.run([VLM, "embed-text", "a cat", "--model", str(p), "-o", str(tmp_path / "o.npy")], capture_output=True, text=True)
        assert r.returncode == 1 and named in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
