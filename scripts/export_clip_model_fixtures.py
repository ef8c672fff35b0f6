#!/usr/bin/env python3
"""Exports CLIP model fixtures to Tests/Fixtures/generated/clip-models/ (git-ignored), by
`make fixtures`: small configurations of CLIP's three towers with seeded random weights, in the
layouts users have them, and the reference outputs of the library that defines each.

  oc-vit/   open_clip's CLIP: a vision transformer (patch 8, 32 px, 2 layers) and the text
            transformer, QuickGELU — open_clip_model.safetensors + open_clip_config.json (the
            layout of open_clip models on the Hugging Face hub)
  oc-rn/    open_clip's CLIP with the modified ResNet (three-convolution stem, average-pool
            downsampling, attention pooling; stages 1, 2, 1, 1 at width 8, 64 px) and exact GELU
            — the same layout, and the same state dict as torch.save writes it
            (open_clip_pytorch_model.bin)
  full-rn50/, full-vitb32/   open_clip's RN50-quickgelu and ViT-B-32 at full size (create_model
            without weights), with the same kinds of references (~1 GB together)
  oc-vit-script/   the oc-vit model through torch.jit.script and torch.jit.save: a TorchScript
            archive (model.pt, keeping num_heads and the QuickGELU class), the same references
  oc-openai/   a TorchScript archive as OpenAI released CLIP (what clip.load caches): a small
            modified ResNet with QuickGELU and OpenAI's 64-channel heads, its sizes as tensor
            buffers (input_resolution, context_length, vocab_size), through torch.jit.trace
            (no num_heads kept), with its own references
  ts-extra/ that archive with its version entry rewritten to 3 (torch 1.6-1.7's, OpenAI's files),
            and hostile or foreign archives: a global other than __torch__.* (os.system), an
            object whose state is not a dict, a non-CLIP module, a truncated archive
  hf-vit/   transformers' CLIPModel (CLIPConfig: text 4 heads, GELU; vision 48 px, patch 16,
            QuickGELU), save_pretrained's config.json + model.safetensors

images/ holds a few picture files (PNG and JPEG, RGB and grayscale, odd sizes, smaller and larger
than the towers' inputs), and each folder e2e_image_features.npy: their embeddings through
open_clip's own preprocessing (image_transform: Pillow's bicubic resize of the shorter side,
centre crop, CLIP's mean and std) and the model, L2-normalised, in the files' sorted order. hf-vit
also holds a tokenizer (tokenizer.json, vocab.json, merges.txt: open_clip's vocabulary, as
export_clip_fixtures.py builds it) and e2e_text_features.npy: texts.txt through transformers'
CLIPTokenizer and get_text_features, L2-normalised — what `vlm embed-image` / `embed-text` must
give.

The open_clip folders also hold zeroshot.json: 5 labels x 3 templates through open_clip's
build_zero_shot_classifier and the pictures' probabilities, softmax(exp(logit_scale) x cosine),
and CLIP's 80 ImageNet templates as strings.

Each folder has images.npy (N, 3, S, S; normalised pixels), texts.json (token ids as CLIP's
tokenizer gives them, unpadded; one holds the end token mid-sequence, one is cut to 77),
image_features.npy and text_features.npy (the projected, unnormalised embeddings:
open_clip's encode_image / encode_text, transformers' get_image_features / get_text_features) and
logit_scale.json. Weights are drawn from a fixed seed; every 1-D parameter (LayerNorm and
BatchNorm scales and shifts, biases, the class embedding) and BatchNorm's running statistics are
redrawn away from their initial 0 / 1, so a swapped scale and shift or an unfolded BatchNorm
changes the outputs.

Run: .venv/bin/python scripts/export_clip_model_fixtures.py
"""
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.transform import image_transform
from open_clip.tokenizer import SimpleTokenizer, default_bpe
from open_clip.tokenizer import tokenize as open_clip_tokenize
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

from export_clip_fixtures import hf_tokenizer_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "generated", "clip-models")

TEXTS = ["a photo of a cat", "A red car parked on the street at night.", "ünïcödé — “quotes” 東京 🙂",
         " ".join(["a very long caption"] * 40)]


# What open_clip's cleaning changes: entities once and twice escaped, curly quotes, a ligature,
# full-width letters, upper case; and an over-long text.
E2E_TEXTS = ["A photo of a cat &amp;amp; a dog", "“Quoted” ﬁne ＦＵＬＬ-width TEXT", "caf&eacute; &#x41; &lt;b&gt;",
             " ".join(["a very long caption"] * 40)]


def token_ids():
    tok = SimpleTokenizer()
    seqs = []
    for t in TEXTS:
        ids = [tok.sot_token_id] + tok.encode(t) + [tok.eot_token_id]
        if len(ids) > 77:
            ids = ids[:76] + [tok.eot_token_id]
        seqs.append(ids)
    # The end token in the middle: CLIP pools at the first position of the largest id.
    seqs.append([tok.sot_token_id, 320, tok.eot_token_id, 1125, 539, tok.eot_token_id])
    seqs.append([tok.sot_token_id, tok.eot_token_id])
    return seqs


def picture_files(folder, seed=5):
    """Smooth random pictures (gradients plus noise), so resampling has something to do."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name, (w, h), mode in [("a-wide.png", (97, 61), "RGB"), ("b-small.png", (23, 40), "RGB"), ("c-gray.png", (80, 80), "L"),
                               ("d-photo.jpg", (130, 90), "RGB")]:
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 / w), (y * 255 / h), ((x + y) * 127 / (w + h))], axis=-1)
        px = np.clip(base + rng.normal(0, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(px, "RGB").convert(mode)
        img.save(os.path.join(folder, name), quality=90) if name.endswith(".jpg") else img.save(os.path.join(folder, name))
    return sorted(os.path.join(folder, n) for n in os.listdir(folder))


def image_e2e(folder, embed, image_size, mean=None, std=None):
    t = image_transform(image_size, is_train=False, mean=mean, std=std)
    files = picture_files(os.path.join(OUT, "images"))
    batch = torch.stack([t(Image.open(f)) for f in files])
    with torch.no_grad():
        v = embed(batch)
    v = v / v.norm(dim=-1, keepdim=True)
    np.save(os.path.join(folder, "e2e_image_features.npy"), v.numpy().astype(np.float32))
    return v


ZERO_SHOT_LABELS = ["cat", "dog", "red car", "rocket", "cup of coffee"]
ZERO_SHOT_TEMPLATES = ["a photo of a {}.", "a blurry photo of the {}.", "itap of a {}."]


def zero_shot(folder, model, image_vectors):
    """open_clip's zero-shot classifier (each label's template texts embedded and normalised,
    averaged, normalised again) and its probabilities for the pictures: softmax over the labels of
    exp(logit_scale) x cosine. Also CLIP's 80 ImageNet templates, as strings."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    classifier = build_zero_shot_classifier(model, SimpleTokenizer(), ZERO_SHOT_LABELS, ZERO_SHOT_TEMPLATES)
    with torch.no_grad():
        probs = (model.logit_scale.exp() * image_vectors @ classifier).softmax(dim=-1)
    with open(os.path.join(folder, "zeroshot.json"), "w", encoding="utf-8") as f:
        json.dump({"labels": ZERO_SHOT_LABELS, "templates": ZERO_SHOT_TEMPLATES, "probabilities": probs.tolist(),
                   "imagenet_templates": [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]}, f)


def padded(seqs, n=77):
    return torch.tensor([s + [0] * (n - len(s)) for s in seqs], dtype=torch.long)


def redraw(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                base = 1.0 if (name.endswith("weight") and ("ln" in name or "norm" in name or "bn" in name or "layrnorm" in name)) else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def write_common(folder, images, seqs, image_features, text_features, logit_scale):
    np.save(os.path.join(folder, "images.npy"), images.numpy().astype(np.float32))
    np.save(os.path.join(folder, "image_features.npy"), image_features.detach().numpy().astype(np.float32))
    np.save(os.path.join(folder, "text_features.npy"), text_features.detach().numpy().astype(np.float32))
    with open(os.path.join(folder, "texts.json"), "w") as f:
        json.dump({"texts": TEXTS, "ids": seqs}, f)
    with open(os.path.join(folder, "logit_scale.json"), "w") as f:
        json.dump({"logit_scale": float(logit_scale)}, f)


def preprocess_references():
    """preprocess/NAME.npy: open_clip's transform at 64 px (resize, crop, then RGB: Pillow
    resizes P and 1 with NEAREST, RGBA and LA premultiplied, I;16 in 16 bits) of each shared test
    image of images/cases.json (export_image_fixtures.py): JPEG, PNG, gray, CMYK, 16-bit, palette,
    alpha, odd sizes."""
    images = os.path.join(os.path.dirname(OUT), "images")
    with open(os.path.join(images, "cases.json")) as f:
        cases = json.load(f)
    folder = os.path.join(OUT, "preprocess")
    os.makedirs(folder, exist_ok=True)
    t = image_transform(64, is_train=False)
    for c in cases:
        np.save(os.path.join(folder, c["name"] + ".npy"), t(Image.open(os.path.join(images, c["file"]))).numpy().astype(np.float32))
    with open(os.path.join(folder, "cases.json"), "w") as f:
        json.dump([{"name": c["name"], "file": c["file"], "mode": c["mode"]} for c in cases], f)
    # --draft: Pillow's draft for the size, as vlm asks it, then the same transform (JPEGs).
    for c in cases:
        if c["file"].endswith(".jpg"):
            im = Image.open(os.path.join(images, c["file"]))
            im.draft("RGB", (64, 64))
            np.save(os.path.join(folder, "draft-" + c["name"] + ".npy"), t(im).numpy().astype(np.float32))
    # resize_mode "squash": both sides to 64, no crop.
    squash = image_transform(64, is_train=False, resize_mode="squash")
    for c in cases:
        np.save(os.path.join(folder, "squash-" + c["name"] + ".npy"), squash(Image.open(os.path.join(images, c["file"]))).numpy().astype(np.float32))


def rewrite_archive(src, dst, change):
    """A copy of a TorchScript zip with change(name, bytes) -> bytes applied to each entry."""
    import zipfile
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change(info.filename, zin.read(info.filename)))


def torchscript_extras(archive):
    """ts-extra/: the version-3 copy and hostile or foreign archives."""
    import re
    folder = os.path.join(OUT, "ts-extra")
    os.makedirs(folder, exist_ok=True)
    rewrite_archive(archive, os.path.join(folder, "v3.pt"), lambda n, b: b"3\n" if n.endswith("/version") else b)
    rewrite_archive(archive, os.path.join(folder, "v2.pt"), lambda n, b: b"2\n" if n.endswith("/version") else b)
    first_global = re.compile(rb"c__torch__[^\n]*\n[^\n]*\n")
    rewrite_archive(archive, os.path.join(folder, "global.pt"),
                    lambda n, b: first_global.sub(b"cos\nsystem\n", b, count=1) if n.endswith("/data.pkl") else b)
    # The root object's BUILD given a tuple (a class with its own __setstate__) instead of a dict.
    last_build = re.compile(rb"b(r[\s\S]{4}|q[\s\S])?\.$")
    rewrite_archive(archive, os.path.join(folder, "setstate.pt"),
                    lambda n, b: last_build.sub(b"0)b.", b) if n.endswith("/data.pkl") else b)
    notclip = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()))
    notclip.save(os.path.join(folder, "notclip.pt"))
    with open(archive, "rb") as f:
        data = f.read()
    with open(os.path.join(folder, "truncated.pt"), "wb") as f:
        f.write(data[: len(data) // 2])


def openai_torchscript(name, seed):
    """A traced CLIP as OpenAI released them: QuickGELU, 64-channel heads, sizes as buffers."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    vision = dict(layers=[1, 1, 1, 1], width=8, head_width=64, image_size=64)
    text = dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=2)
    model = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(**vision), text_cfg=CLIPTextCfg(**text), quick_gelu=True)
    redraw(model, gen)
    model.eval()
    for k, v in [("input_resolution", 64), ("context_length", 77), ("vocab_size", 49408)]:
        if hasattr(model, k):
            delattr(model, k)  # open_clip keeps two of them as ints
        model.register_buffer(k, torch.tensor(v))
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    images = torch.randn(3, 3, 64, 64, generator=gen)
    seqs = token_ids()
    with torch.no_grad():
        traced = torch.jit.trace_module(model, {"encode_image": images, "encode_text": padded(seqs)}, check_trace=False)
    archive = os.path.join(folder, "RN-openai.pt")
    traced.save(archive)
    with torch.no_grad():
        write_common(folder, images, seqs, model.encode_image(images), model.encode_text(padded(seqs)), model.logit_scale)
    image_e2e(folder, model.encode_image, 64)
    shutil.copy(default_bpe(), os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz"))
    with open(os.path.join(folder, "texts.txt"), "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in E2E_TEXTS)
    with torch.no_grad():
        v = model.encode_text(open_clip_tokenize(E2E_TEXTS))
    np.save(os.path.join(folder, "e2e_text_features.npy"), (v / v.norm(dim=-1, keepdim=True)).numpy().astype(np.float32))
    torchscript_extras(archive)


def open_clip_model(name, embed_dim, vision, text, quick_gelu, image_size, seed, bin_too=False, script=False):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CLIP(embed_dim=embed_dim, vision_cfg=CLIPVisionCfg(**vision), text_cfg=CLIPTextCfg(**text), quick_gelu=quick_gelu)
    redraw(model, gen)
    model.eval()
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(folder, "open_clip_model.safetensors"))
    if bin_too:
        torch.save(model.state_dict(), os.path.join(folder, "open_clip_pytorch_model.bin"))
    cfg = {"model_cfg": {"embed_dim": embed_dim, "quick_gelu": quick_gelu, "vision_cfg": vision, "text_cfg": text},
           "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    images = torch.randn(3, 3, image_size, image_size, generator=gen)
    seqs = token_ids()
    with torch.no_grad():
        write_common(folder, images, seqs, model.encode_image(images), model.encode_text(padded(seqs)), model.logit_scale)
    zero_shot(folder, model, image_e2e(folder, model.encode_image, image_size))
    # Texts through open_clip's own tokenizer (its cleaning: ftfy, HTML unescaping, lower-casing)
    # with the vocabulary file beside the weights, as vlm finds it.
    shutil.copy(default_bpe(), os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz"))
    texts = E2E_TEXTS
    with open(os.path.join(folder, "texts.txt"), "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in texts)
    with torch.no_grad():
        v = model.encode_text(open_clip_tokenize(texts))
    v = v / v.norm(dim=-1, keepdim=True)
    np.save(os.path.join(folder, "e2e_text_features.npy"), v.numpy().astype(np.float32))
    if script:
        # The same model scripted: its archive, with the references (and picture files) copied.
        scripted = os.path.join(OUT, name + "-script")
        os.makedirs(scripted, exist_ok=True)
        torch.jit.script(model).save(os.path.join(scripted, "model.pt"))
        for f in os.listdir(folder):
            if not f.startswith("open_clip_") and f != "zeroshot.json":
                shutil.copy(os.path.join(folder, f), scripted)


def full_size(name, arch, seed):
    """A released architecture at full size (open_clip's create_model without weights, then the
    same redrawing): open_clip_config.json as the hub has it, the weights, the vocabulary file,
    two random 224-px inputs and the pictures, with their embeddings."""
    import open_clip
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    redraw(model, gen)
    model.eval()
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, os.path.join(folder, "open_clip_model.safetensors"))
    cfg = {"model_cfg": open_clip.get_model_config(arch),
           "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.copy(default_bpe(), os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz"))
    images = torch.randn(2, 3, 224, 224, generator=gen)
    seqs = token_ids()
    with torch.no_grad():
        write_common(folder, images, seqs, model.encode_image(images), model.encode_text(padded(seqs)), model.logit_scale)
    image_e2e(folder, model.encode_image, 224)
    with open(os.path.join(folder, "texts.txt"), "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in E2E_TEXTS)
    with torch.no_grad():
        v = model.encode_text(open_clip_tokenize(E2E_TEXTS))
    np.save(os.path.join(folder, "e2e_text_features.npy"), (v / v.norm(dim=-1, keepdim=True)).numpy().astype(np.float32))


def hf_model(name, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=1),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                           image_size=48, patch_size=16, hidden_act="quick_gelu"),
        projection_dim=24)
    model = CLIPModel(config)
    redraw(model, gen)
    model.eval()
    folder = os.path.join(OUT, name)
    model.save_pretrained(folder)
    images = torch.randn(3, 3, 48, 48, generator=gen)
    seqs = token_ids()
    with torch.no_grad():
        img = model.get_image_features(pixel_values=images)
        txt = model.get_text_features(input_ids=padded(seqs))
        img = img.pooler_output if hasattr(img, "pooler_output") else img
        txt = txt.pooler_output if hasattr(txt, "pooler_output") else txt
        write_common(folder, images, seqs, img, txt, model.logit_scale)

    def features(out):
        return out.pooler_output if hasattr(out, "pooler_output") else out
    image_e2e(folder, lambda x: features(model.get_image_features(pixel_values=x)), 48)
    tok = hf_tokenizer_folder(folder)
    with open(os.path.join(folder, "texts.txt"), "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in TEXTS)
    enc = tok(TEXTS, truncation=True, max_length=77, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        v = features(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
    v = v / v.norm(dim=-1, keepdim=True)
    np.save(os.path.join(folder, "e2e_text_features.npy"), v.numpy().astype(np.float32))


def main():
    text = dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)
    open_clip_model("oc-vit", 32, dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32), text,
                    quick_gelu=True, image_size=32, seed=31, script=True)
    open_clip_model("oc-rn", 32, dict(layers=[1, 2, 1, 1], width=8, head_width=64, image_size=64), text,
                    quick_gelu=False, image_size=64, seed=32, bin_too=True)
    hf_model("hf-vit", seed=33)
    openai_torchscript("oc-openai", seed=36)
    preprocess_references()
    # One full-size model per tower family: OpenAI's RN50 (QuickGELU) and ViT-B/32 (GELU, as
    # open_clip's ViT-B-32), about 1 GB together.
    full_size("full-rn50", "RN50-quickgelu", seed=34)
    full_size("full-vitb32", "ViT-B-32", seed=35)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
