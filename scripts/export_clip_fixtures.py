#!/usr/bin/env python3
"""Exports CLIP tokenizer fixtures to Tests/Fixtures/generated/clip/ (git-ignored), by
`make fixtures`:

  hf-tokenizer/   a Hugging Face CLIP folder's tokenizer files (tokenizer.json, vocab.json,
                  merges.txt, …), built by transformers' CLIPTokenizerFast from open_clip's own
                  BPE vocabulary (bpe_simple_vocab_16e6.txt.gz, shipped in the open-clip-torch
                  wheel) and loaded as CLIPTokenizer.from_pretrained does — the layout of openai/clip-vit-base-patch32 on the hub, which is not
                  reachable here
  texts.json      2,000 seeded texts (English, accents and combining marks, CJK, Hangul, emoji
                  with modifiers and joiners, curly quotes, full-width punctuation, punctuation
                  runs, contractions in any case, numbers, tabs, no-break and ideographic spaces,
                  Greek final sigma, Turkish dotted I, ligatures, HTML entities, the special
                  tokens themselves, over-long texts) and CLIPTokenizerFast's ids for each
                  (truncation to 77 with the end token kept)

  bpe_simple_vocab_16e6.txt.gz   open_clip's vocabulary file, copied from the wheel
  openclip_texts.json   the same 2,000 texts and 400 more that exercise open_clip's cleaning
                  (HTML entities once and twice escaped, numeric references, C1 controls,
                  ligatures, full-width forms, curly quotes, line breaks, terminal escapes,
                  control characters, a "<" that turns ftfy's unescaping off, case-folded special
                  tokens and contractions), with open_clip's SimpleTokenizer's ids (start, tokens,
                  end; cut to 77 with the end token kept). Texts whose ids would change under
                  ftfy's mojibake repair (fix_encoding), which vlm does not reproduce, are left out
                  and counted.

Run: .venv/bin/python scripts/export_clip_fixtures.py
"""
import json
import os
import random
import shutil

import ftfy
import open_clip.tokenizer as oct
from transformers import CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "generated", "clip")

WORDS = ("a photo of the cat dog car red blue sitting on couch street night running people beach "
         "mountain city under over with and tree flower bird sky water boat train plane house").split()
PIECES = [
    "café", "naïve", "Zürich", "résumé", "São Paulo", "e\u0301te\u0301", "Åland", "ØRESUND", "straße", "STRASSE",
    "東京", "你好世界", "日本語のテキスト", "한국어 문장", "ไทย", "Ελληνικά", "ΟΔΟΣ", "οδός", "İstanbul", "ıi",
    "🙂", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "✨✨", "“quoted”", "‘single’", "«guillemets»", "！？", "，。", "（全角）",
    "ＡＢＣ１２３", "!!!", "...", "?!?!", "—", "--", "''", "'s", "'S", "'ll", "'RE", "don't", "IT'S", "I'LL", "we've",
    "2024", "3.14", "1,000,000", "٣٤", "Ⅻ", "½", "x²", "&amp;", "&lt;b&gt;", "&quot;hi&quot;", "&#39;", "&eacute;",
    "ﬁne", "ﬂow", "\t", "\u00a0", "\u3000", "\u2003", "\n", "  ", "<|endoftext|>", "<|startoftext|>", "#hashtag",
    "@user", "http://example.com/a?b=c", "C++", "e-mail", "__init__", "snake_case", "CamelCase", "ⓐⓑ", "\u200b",
    "a\u0308", "Ǆ", "ǅ", "ǆ", "ß", "ẞ", "ﬀ", "Ω", "K", "Å",
]


def texts(n=2000, seed=7):
    rng = random.Random(seed)
    out = ["", " ", "a", "A photo of a cat.", "<|startoftext|>a<|endoftext|>", " ".join(["word"] * 200),
           # special tokens whose first or last code point joins a neighbour's grapheme cluster
           "<|endoftext|>\u0301", "\u0600<|endoftext|>x", "<|endoftext|>\U0001F3FB", "<|endoftext|>\u200d",
           "<|endoftext|>\ufe0f", "a<|startoftext|>b", "<|endoftext|><|endoftext|>", "<|end<|endoftext|>"]
    while len(out) < n:
        k = rng.randint(1, 14)
        parts = [rng.choice(PIECES) if rng.random() < 0.45 else rng.choice(WORDS) for _ in range(k)]
        if rng.random() < 0.3:
            parts = [p.upper() if rng.random() < 0.5 else p for p in parts]
        sep = rng.choice([" ", " ", " ", "", "  ", "\t", ", "])
        t = sep.join(parts)
        if rng.random() < 0.05:
            t = " ".join([t] * rng.randint(10, 30))   # over-long
        out.append(t)
    return out


def hf_tokenizer_folder(folder):
    """Writes a Hugging Face CLIP folder's tokenizer files into `folder`: vocab.json and merges.txt
    as transformers' CLIP checkpoints have them (open_clip's vocabulary with the hub's names for
    the two special tokens), then tokenizer.json and the rest by save_pretrained. Returns the
    tokenizer."""
    simple = oct.SimpleTokenizer(oct.default_bpe())
    os.makedirs(folder, exist_ok=True)
    vocab = {}
    for token, i in simple.encoder.items():
        vocab[{"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}.get(token, token)] = i
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    merges = sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for (a, b), _ in merges)
    tok = CLIPTokenizer.from_pretrained(folder)   # transformers 5: the fast (tokenizers) one
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    tok.save_pretrained(folder)
    return tok


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = hf_tokenizer_folder(os.path.join(OUT, "hf-tokenizer"))
    cases = []
    for t in texts():
        ids = tok(t, truncation=True, max_length=77)["input_ids"]
        cases.append({"text": t, "ids": ids})
    with open(os.path.join(OUT, "texts.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)
    print(f"{len(cases)} texts; {sum(len(c['ids']) == 77 for c in cases)} cut to 77")
    open_clip_cases()


CLEANING = [
    "&amp;", "&amp;amp;", "&amp;amp;amp;lt;", "&lt;b&gt;", "&nbsp;", "&NBSP;", "&EACUTE;", "&Eacute;", "&eacute", "&notit;",
    "&#x41;", "&#65;", "&#65", "&#0;", "&#128;", "&#x110000;", "&#xD800;", "&#99999999999;", "&#x;", "&#;", "&;", "&",
    "\x80", "\x85", "\x9d", "\x96", "ﬁ", "ĳ", "Ǳ", "ﬀ", "ＡＢＣ", "\u3000", "ｶﾀｶﾅ", "“", "„", "ʼ", "‛", "\r\n", "\r", "\u2028",
    "\u2029", "\x1b[31m", "\x1b[0;1m", "\x1b[", "\x00", "\x07", "\ufeff", "\ufffc", "\u206a", "\x1c", "\x1f", "\x0b",
    "\x0c", "<", "a < b", "it'ſ", "<ſtart_of_text>", "<START_OF_TEXT>", "<end_of_text>", "!!<end_of_text>", "x<end_of_text>y",
    "İ", "ΟΔΟΣ", "ΣΑΣ ΣΑΣ", "\n", " \t ", "Ⅻ", "ß", "e\u0301", "\u00a0", "\u2003", "👍🏽", "東京", "&hellip;", "it&#x2019;s",
    # Entity names are matched as code points, not by canonical equivalence (the Kelvin sign is
    # not K, the Greek question mark not ';'); escaping 70 layers deep still unescapes.
    "< &amp;&#8490;opf;", "<b> &amp;amp&#894;", "&" + "amp;" * 70 + "lt;",
]


def open_clip_cases(n_more=400, seed=11):
    shutil.copy(oct.default_bpe(), os.path.join(OUT, "bpe_simple_vocab_16e6.txt.gz"))
    simple = oct.SimpleTokenizer()
    rng = random.Random(seed)
    more = []
    while len(more) < n_more:
        k = rng.randint(1, 8)
        parts = [rng.choice(CLEANING) if rng.random() < 0.6 else rng.choice(WORDS + PIECES) for _ in range(k)]
        more.append(rng.choice(["", " ", "\n"]).join(parts))
    cases, skipped = [], 0
    for t in texts() + CLEANING + more:
        if ftfy.fix_text(t) != ftfy.fix_text(t, fix_encoding=False):
            skipped += 1   # mojibake repair: not reproduced
            continue
        ids = [simple.sot_token_id] + simple.encode(t) + [simple.eot_token_id]
        if len(ids) > 77:
            ids = ids[:76] + [simple.eot_token_id]
        cases.append({"text": t, "ids": ids})
    assert cases[3]["ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407], cases[3]
    with open(os.path.join(OUT, "openclip_texts.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)
    print(f"open_clip: {len(cases)} texts ({skipped} left out: ftfy's mojibake repair changes them)")


if __name__ == "__main__":
    main()
