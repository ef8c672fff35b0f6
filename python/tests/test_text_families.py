"""Text models as modern embedding repositories ship them (issue 21): DistilBERT (its own keys,
no token types) and the BERT-based embedding families — BGE (CLS pooling, normalised), E5 (mean,
normalised), GTE (mean) — read from their sentence-transformers files, with folders as
transformers 5 saves them (tokenizer.json and tokenizer_config.json, no vocab.txt). Each is built
here with seeded random weights by transformers / sentence-transformers and compared with their
own outputs (≤ 1e-4 relative error per row). The weights are drawn with std 0.2, not
transformers' 0.02: at 0.02 attention barely moves a row (uniform attention weights changed
DistilBERT's rows by 5e-5–3.5e-4, and different texts' [CLS] vectors had cosine ≥ 0.9998), so a
broken attention would pass. Unsupported architectures are refused naming model_type."""
import json
import os
import subprocess

import numpy as np
import pytest
import torch

from conftest import BERT, VLM

TEXTS = [
    "A cat sitting on a couch.",
    "",
    "naïve café — Ünïcödé ÀÉÎ 東京タワー 🙂 emoji",
    "Hello, world!\tTabs and  spaces.\nand a newline",
    "word " * 200,                                   # cut at the maximum length
    "don't stop: x=1; y=[2,3] {ok} #hash @at",
    "日本語のテキストと中文文本混合",
]


def vlm_rows(model, tmp_path, *flags, texts=TEXTS):
    out = tmp_path / "rows.npy"
    r = subprocess.run([VLM, "embed-text", "--model", str(model), "--file", "-", "-o", str(out), "--quiet", *flags],
                       input=("\n".join(t.replace("\n", " ") for t in texts) + "\n").encode(), capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return np.load(out)


def close(got, want):
    """Each row within 1e-4 of the reference's row, relative to its norm (a cosine would let
    through errors a thousand times larger)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    for k, (g, w) in enumerate(zip(got, want)):
        assert np.linalg.norm(g - w) <= 1e-4 * np.linalg.norm(w), (k, np.linalg.norm(g - w) / np.linalg.norm(w))


# Weights large enough that attention and every layer move the rows (see the module's note).
STD = 0.2


def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(BERT)


def pooled(hidden, mask, mode):
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


@pytest.fixture(scope="module")
def distilbert(tmp_path_factory):
    from transformers import DistilBertConfig, DistilBertForMaskedLM, DistilBertModel
    folder = tmp_path_factory.mktemp("distilbert")
    tok = tokenizer()
    torch.manual_seed(7)
    cfg = DistilBertConfig(vocab_size=tok.vocab_size, dim=48, n_layers=2, n_heads=4, hidden_dim=96, max_position_embeddings=64,
                           initializer_range=STD)
    model = DistilBertModel(cfg).eval()
    with torch.no_grad():   # LayerNorms off their init, so a wrong eps or order shows
        for name, p in model.named_parameters():
            if "layer_norm" in name.lower() or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    assert not (folder / "vocab.txt").exists() and (folder / "tokenizer.json").exists()
    return folder, model, tok


def test_distilbert_equals_transformers(tmp_path, distilbert):
    folder, model, tok = distilbert
    inputs = tok([t.replace("\n", " ") for t in TEXTS], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    for mode in ("mean", "cls"):
        close(vlm_rows(folder, tmp_path, "--pooling", mode, "--no-normalize"), pooled(hidden, inputs["attention_mask"], mode))
    # Its masked-LM checkpoint (keys under distilbert., vocab_* heads) gives the same vectors.
    from transformers import DistilBertForMaskedLM
    lm = tmp_path / "lm"
    full = DistilBertForMaskedLM(model.config)
    full.distilbert.load_state_dict(model.state_dict())
    full.save_pretrained(lm)
    tok.save_pretrained(lm)
    assert np.array_equal(vlm_rows(lm, tmp_path, "--pooling", "mean"), vlm_rows(folder, tmp_path, "--pooling", "mean"))
    r = subprocess.run([VLM, "inspect", str(folder), "--summary"], capture_output=True, text=True)
    assert r.returncode == 0 and "DistilBERT encoder" in r.stdout, r.stdout + r.stderr


def test_distilbert_sentence_pairs_have_no_token_types(tmp_path, distilbert):
    folder, model, tok = distilbert
    a, b = ["A cat.", "the first one"], ["A dog on a mat.", "and the second, longer one"]
    inputs = tok(a, b, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"text": x, "pair": y}) + "\n" for x, y in zip(a, b)))
    out = tmp_path / "p.npy"
    r = subprocess.run([VLM, "embed-text", "--model", str(folder), "--file", str(pairs), "--jsonl-field", "text", "--jsonl-pair-field", "pair",
                        "--pooling", "mean", "-o", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    close(np.load(out), pooled(hidden, inputs["attention_mask"], "mean"))


def bert_base(folder, seed):
    from transformers import BertConfig, BertModel
    tok = tokenizer()
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=96, max_position_embeddings=64, initializer_range=STD),
                      add_pooling_layer=seed % 2 == 0).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# (pooling mode, normalised): BGE pools [CLS], E5 and GTE the mean; BGE and E5 normalise.
FAMILIES = {"bge": ("cls", True), "e5": ("mean", True), "gte": ("mean", False), "distilbert-mean": ("mean", False)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sentence_transformers_families_equal_sentence_transformers(tmp_path, family, distilbert):
    from sentence_transformers import SentenceTransformer, models
    mode, norm = FAMILIES[family]
    base = distilbert[0] if family.startswith("distilbert") else bert_base(tmp_path / "base", seed=len(family))
    word = models.Transformer(str(base), max_seq_length=40)
    modules = [word, models.Pooling(word.get_word_embedding_dimension(), pooling_mode=mode)]
    if norm:
        modules.append(models.Normalize())
    st = SentenceTransformer(modules=modules, device="cpu")
    folder = tmp_path / family
    st.save(str(folder))
    want = st.encode([t for t in TEXTS], convert_to_numpy=True, batch_size=4)
    got = vlm_rows(folder, tmp_path)          # pooling, normalisation and length from the folder
    close(got, want)
    if norm:
        assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "mpnet", "deberta-v2", "nomic_bert"])
def test_other_architectures_are_refused_naming_model_type(tmp_path, model_type, distilbert):
    folder = tmp_path / model_type
    folder.mkdir()
    cfg = json.load(open(os.path.join(BERT, "config.json")))
    cfg["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(cfg))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((distilbert[0] / name).read_bytes())
    r = subprocess.run([VLM, "embed-text", "--model", str(folder), "hello"], capture_output=True, text=True)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert f"model_type '{model_type}' is not supported" in r.stderr and "bert" in r.stderr and "distilbert" in r.stderr


# MARK: - tokenizer.json-only folders

HOSTILE = ["Héllo WÖRLD ÀÉÎõü", "naïve café résumé", "東京タワー 中文 한국어 テスト", "tab\there  two  spaces",
           "ctrl\x07char and \u200bzero-width", "Ａ full-width ＡＢＣ", "emoji 🙂👍🏽 and ZWJ 👨‍👩‍👧",
           "don't-stop!?... \"quoted\" (paren) [bracket]", "supercalifragilisticexpialidocious" * 4,
           "[CLS] in the text [SEP] and [MASK]", "ǅemo İstanbul ß ΣΑΣ", ""]


def tokenizer_folder(tmp_path, name, edit=None, config=None):
    """The tiny BERT's tokenizer as transformers 5 saves it (tokenizer.json, no vocab.txt),
    tokenizer.json edited by `edit`, tokenizer_config.json replaced by `config` (None: none)."""
    folder = tmp_path / name
    tokenizer().save_pretrained(folder)
    (folder / "config.json").write_bytes(open(os.path.join(BERT, "config.json"), "rb").read())
    tj = json.load(open(folder / "tokenizer.json"))
    if edit:
        edit(tj)
    json.dump(tj, open(folder / "tokenizer.json", "w"))
    (folder / "tokenizer_config.json").unlink()
    if config is not None:
        json.dump(config, open(folder / "tokenizer_config.json", "w"))
    return folder


def vlm_ids(folder, text):
    r = subprocess.run([VLM, "tokenize", "--model", str(folder), text], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["ids"]


def set_normalizer(**kw):
    def edit(tj):
        tj["normalizer"].update(kw)
    return edit


NORMALIZERS = {
    "default": None,
    "cased": set_normalizer(lowercase=False),
    "cased-strip-accents": set_normalizer(lowercase=False, strip_accents=True),
    "lowercase-keep-accents": set_normalizer(strip_accents=False),
    "no-cjk-split": set_normalizer(handle_chinese_chars=False),
    "no-clean-text": set_normalizer(clean_text=False),
    "no-normalizer": lambda tj: tj.update(normalizer=None),
    "bert-processing": lambda tj: tj.update(post_processor={"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}),
}


@pytest.mark.parametrize("variant", sorted(NORMALIZERS))
def test_tokenizer_json_options_are_honoured_id_for_id(tmp_path, variant):
    from tokenizers import Tokenizer
    folder = tokenizer_folder(tmp_path, variant, NORMALIZERS[variant])
    ref = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in HOSTILE:
        assert vlm_ids(folder, text) == ref.encode(text).ids, (variant, text)


def test_tokenizer_config_overrides_tokenizer_json_as_transformers_does(tmp_path):
    from transformers import AutoTokenizer
    for config in ({"do_lower_case": False}, {"do_lower_case": True, "strip_accents": False}, {"tokenize_chinese_chars": False},
                   {"do_lower_case": False, "model_max_length": 12}):
        folder = tokenizer_folder(tmp_path, "cfg" + str(abs(hash(json.dumps(config, sort_keys=True)))),
                                  config={"tokenizer_class": "BertTokenizer", **config})
        ref = AutoTokenizer.from_pretrained(str(folder))
        for text in HOSTILE:
            want = ref(text, truncation=True)["input_ids"] if "model_max_length" in config else ref(text)["input_ids"]
            assert vlm_ids(folder, text) == want, (config, text)


REFUSED = {
    "normalizer Sequence": (lambda tj: tj.update(normalizer={"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}]}),
                            "normalizer 'Sequence' is not supported"),
    "pre_tokenizer Whitespace": (lambda tj: tj.update(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer Whitespace is not supported"),
    "no pre_tokenizer": (lambda tj: tj.update(pre_tokenizer=None), "pre_tokenizer none is not supported"),
    "RobertaProcessing": (lambda tj: tj.update(post_processor={"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]}),
                          "post_processor 'RobertaProcessing' is not supported"),
    "no post_processor": (lambda tj: tj.update(post_processor=None), "no post_processor"),
    "template without CLS": (lambda tj: tj["post_processor"].update(single=[{"Sequence": {"id": "A", "type_id": 0}}]), "is not BERT's"),
    "unk token": (lambda tj: tj["model"].update(unk_token="<unk>"), "unk_token '<unk>' is not supported"),
    "prefix": (lambda tj: tj["model"].update(continuing_subword_prefix="@@"), "continuing_subword_prefix '@@'"),
    "BPE": (lambda tj: tj["model"].update(type="BPE"), "not WordPiece"),
    "added token": (lambda tj: tj["added_tokens"].append({"id": 5, "content": "hello", "single_word": False, "lstrip": False, "rstrip": False,
                                                          "normalized": True, "special": False}), "added token 'hello' is not special"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_tokenizer_json_that_would_tokenize_otherwise_is_refused(tmp_path, case):
    edit, words = REFUSED[case]
    folder = tokenizer_folder(tmp_path, "refused", edit)
    r = subprocess.run([VLM, "tokenize", "--model", str(folder), "hello"], capture_output=True, text=True)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert str(folder / "tokenizer.json") in r.stderr and words in r.stderr, r.stderr
