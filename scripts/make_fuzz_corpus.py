#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into Fuzz/corpus/<target>/ (small files, committed).
Run with the test venv: .venv/bin/python scripts/make_fuzz_corpus.py"""
import io
import json
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def npy(arr, **kw):
    b = io.BytesIO()
    np.lib.format.write_array(b, arr, **kw)
    return b.getvalue()


def main():
    rng = np.random.default_rng(1)

    put("npy", "f32_2d.npy", npy(rng.standard_normal((3, 4)).astype(np.float32)))
    put("npy", "f32_4d.npy", npy(rng.standard_normal((1, 3, 2, 2)).astype(np.float32)))
    put("npy", "f32_v2.npy", npy(rng.standard_normal((2, 2)).astype(np.float32), version=(2, 0)))
    put("npy", "f64.npy", npy(np.zeros((2, 2))))
    put("npy", "fortran.npy", npy(np.asfortranarray(np.zeros((2, 3), np.float32))))
    put("npy", "scalar.npy", npy(np.float32(1.5)))

    put("safetensors", "f32.safetensors", save({"conv1.weight": rng.standard_normal((2, 3, 1, 1)).astype(np.float32),
                                                 "bn1.running_var": np.ones(2, np.float32)}, metadata={"format": "pt"}))
    put("safetensors", "f16_i64.safetensors", save({"w": np.ones((2, 2), np.float16), "n": np.array(3, np.int64)}))
    put("safetensors", "f64_empty.safetensors", save({"a": np.zeros((0, 4)), "b": np.arange(3, dtype=np.float64)}))

    vocab = "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "un", "##aff", "##able", "é", "東"]) + "\n"
    texts = "\x00Hello worlds!\nunaffable É 東京 😀\n\tcafé  naïve\n"
    put("tokenizer", "vocab.bin", b"\x00" + vocab.encode() + texts.encode())
    tj = {"normalizer": {"type": "BertNormalizer", "lowercase": True, "strip_accents": None, "clean_text": True,
                         "handle_chinese_chars": True},
          "added_tokens": [{"content": t, "special": True} for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]],
          "model": {"type": "WordPiece", "vocab": {t: i for i, t in enumerate(vocab.split())}}}
    put("tokenizer", "tokenizer_json.bin", b"\x01" + json.dumps(tj).encode() + texts.encode())
    put("tokenizer", "config.bin", b"\x03" + json.dumps({"do_lower_case": False, "strip_accents": True}).encode() + texts.encode())

    photo = (rng.random((9, 13, 3)) * 255).astype(np.uint8)
    for name, im, kw in [("rgb.jpg", Image.fromarray(photo), {"quality": 80}),
                         ("progressive.jpg", Image.fromarray(photo), {"progressive": True}),
                         ("gray.jpg", Image.fromarray(photo[..., 0]), {}),
                         ("cmyk.jpg", Image.fromarray(photo).convert("CMYK"), {}),
                         ("rgb.png", Image.fromarray(photo), {}),
                         ("palette.png", Image.fromarray(photo).convert("P"), {"transparency": 1}),
                         ("gray16.png", Image.fromarray((photo[..., 0].astype(np.uint16) * 300)), {}),
                         ("la.png", Image.fromarray(photo[..., :2].copy(), "LA"), {})]:
        b = io.BytesIO()
        im.save(b, format="JPEG" if name.endswith(".jpg") else "PNG", **kw)
        put("image", name, b.getvalue())

    put("jsonl", "texts.txt", "A cat on a couch.\r\n\nnaïve café\n".encode() + b"bad \xff byte\nlast")
    put("jsonl", "records.jsonl", b'{"text": "hi", "pair": "there", "id": 7}\n{"text": "x", "pair": null, "id": "a"}\n \n'
                                  b'{"text": 1}\nnot json\n[1, 2]\n{"text": "\\u00e9\\n", "id": 1.5}\n')
    put("jsonl", "pairs.tsv", b"img.jpg\tA caption\n{\"image\": \"a.png\", \"text\": \"b\"}\nno tab\n")


def torch_seeds():
    """Checkpoints written by torch.save (zip and legacy, views, shared storages, Parameters,
    protocol 4, a wrapped dict) for the torch target, their data.pkl streams for the pickle
    target, and a few hostile streams the unpickler must refuse."""
    import collections
    import pickle
    import tempfile
    import zipfile

    import torch
    g = torch.Generator().manual_seed(3)
    w = torch.randn(3, 2, 1, 1, generator=g)
    base = torch.randn(20, generator=g)
    sd = collections.OrderedDict([("conv.weight", w), ("fc.weight", torch.randn(2, 3, generator=g).t()),
                                  ("bn.running_mean", base[2:5]), ("bn.running_var", base[8:11]),
                                  ("h", torch.ones(2, 2, dtype=torch.float16)), ("b", torch.zeros(3, dtype=torch.bfloat16)),
                                  ("bn.num_batches_tracked", torch.tensor(7))])
    forms = {
        "zip.pth": lambda p: torch.save(sd, p),
        "legacy.pth": lambda p: torch.save(sd, p, _use_new_zipfile_serialization=False),
        "protocol4.pth": lambda p: torch.save(sd, p, pickle_protocol=4),
        "params.pth": lambda p: torch.save(collections.OrderedDict((k, torch.nn.Parameter(v, requires_grad=False)) for k, v in sd.items()), p),
        "wrapped.pth": lambda p: torch.save({"state_dict": collections.OrderedDict(("module." + k, v) for k, v in sd.items()), "epoch": 1}, p),
        # Protocol 1: no PROTO opcode; the magic number as a text LONG.
        "legacy_protocol1.pth": lambda p: torch.save(sd, p, pickle_protocol=1, _use_new_zipfile_serialization=False),
    }
    with tempfile.TemporaryDirectory() as d:
        for name, write in forms.items():
            path = os.path.join(d, name)
            write(path)
            data = open(path, "rb").read()
            put("torch", name, data)
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as z:
                    put("pickle", name.replace(".pth", ".pkl"), z.read(next(n for n in z.namelist() if n.endswith("/data.pkl"))))
            else:
                put("pickle", name.replace(".pth", "_magic.pkl"), data[:15] if data[0] == 0x80 else data[:28])
    put("pickle", "global_system.pkl", b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00truep\x85R.")
    put("pickle", "protocol0.pkl", b"(dp0\nS'a'\np1\n(lp2\nI1\naF2.5\naL7L\naV\\u00e9\np3\nas.")
    put("pickle", "memo.pkl", b"\x80\x04\x95\x0a\x00\x00\x00\x00\x00\x00\x00]\x94h\x00\x8c\x01a\x94e\x8f(K\x01\x90.")
    put("pickle", "nested.pkl", b"\x80\x02" + b"]" * 40 + b"a" * 39 + b".")

    # FeatureFile: the first byte picks .npy (even; bit 1: a --dim-in of byte >> 2) or raw .f32
    # (odd; rows of byte >> 1 values).
    put("features", "npy_2d", b"\x00" + npy(np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)))
    put("features", "npy_dim_in", bytes([2 | (4 << 2)]) + npy(np.zeros((3, 4), np.float32)))
    put("features", "npy_3d", b"\x00" + npy(np.zeros((2, 2, 2), np.float32)))
    put("features", "npy_f64", b"\x00" + npy(np.zeros((2, 2))))
    put("features", "raw_f32", bytes([1 | (3 << 1)]) + np.arange(12, dtype=np.float32).tobytes())
    # Sharded index over a.safetensors (x, y) and b.safetensors (z).
    good = {"metadata": {"total_size": 24}, "weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}}
    put("shards", "good.json", json.dumps(good).encode())
    put("shards", "missing.json", json.dumps({"weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "c.safetensors"}}).encode())
    put("shards", "escape.json", json.dumps({"weight_map": {"x": "../a.safetensors"}}).encode())
    put("shards", "unlisted.json", json.dumps({"weight_map": {"x": "a.safetensors"}}).encode())

def torchscript_seeds():
    """A small TorchScript archive (a scripted module with a QuickGELU-like submodule, a Conv2d
    whose padding is a build_intlist) for the torch target, and its data.pkl for the pickle
    target (read both ways there)."""
    import tempfile
    import zipfile

    import torch

    class QuickGELU(torch.nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 2, 1)
            self.gelu = QuickGELU()
            self.num_heads = 2

        def forward(self, x):
            return self.gelu(self.conv(x))

    torch.manual_seed(4)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "script.pt")
        torch.jit.script(Block()).save(path)
        put("torch", "torchscript.pt", open(path, "rb").read())
        with zipfile.ZipFile(path) as z:
            put("pickle", "torchscript.pkl", z.read(next(n for n in z.namelist() if n.endswith("/data.pkl"))))


def clip_seeds():
    """CLIP configs (open_clip's, Hugging Face's, a preprocessor config), a small byte-level BPE
    tokenizer.json (open_clip's 200 first merges) and a gzipped vocabulary, each with texts."""
    import gzip

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    texts = b"\x00a photo of a cat\nA &amp;amp; \xe2\x80\x9cquoted\xe2\x80\x9d caf\xc3\xa9 \xef\xac\x81ne \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x99\x82\n<|endoftext|> x"
    oc = {"model_cfg": {"embed_dim": 32, "quick_gelu": True, "vision_cfg": {"layers": [1, 1, 1, 1], "width": 8, "head_width": 64, "image_size": 64},
                        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}},
          "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bicubic", "resize_mode": "shortest"}}
    put("clip", "open_clip_config.bin", b"\x00" + json.dumps(oc).encode())
    hf = {"model_type": "clip", "text_config": {"num_attention_heads": 4, "hidden_act": "gelu", "eos_token_id": 49407},
          "vision_config": {"num_attention_heads": 2, "hidden_act": "quick_gelu", "image_size": 48, "layer_norm_eps": 1e-5}}
    put("clip", "hf_config.bin", b"\x01" + json.dumps(hf).encode())
    pre = {"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}, "resample": 3, "image_mean": [0.5, 0.5, 0.5],
           "image_std": [0.2, 0.2, 0.2], "do_resize": True}
    put("clip", "preprocessor.bin", b"\x02" + json.dumps(pre).encode())
    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")[1:201]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    tj = {"version": "1.0", "added_tokens": [{"id": len(vocab) - 2, "content": "<|startoftext|>", "special": True, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False},
                                             {"id": len(vocab) - 1, "content": "<|endoftext|>", "special": True, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}],
          "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                                                             {"type": "Lowercase"}]},
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
               "behavior": "Removed", "invert": True},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
          "model": {"type": "BPE", "dropout": None, "unk_token": "<|endoftext|>", "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                    "fuse_unk": False, "byte_fallback": False, "vocab": {t: i for i, t in enumerate(vocab)}, "merges": [" ".join(m) for m in merges]}}
    put("clip", "tokenizer_json.bin", b"\x03" + json.dumps(tj, ensure_ascii=False).encode() + texts)
    small = "#version: 0.2\n" + "".join(" ".join(m) + "\n" for m in merges[:50])
    put("clip", "vocab_gz.bin", b"\x04" + gzip.compress(small.encode(), mtime=0))


if __name__ == "__main__":
    main()
    torch_seeds()
    torchscript_seeds()
    clip_seeds()
