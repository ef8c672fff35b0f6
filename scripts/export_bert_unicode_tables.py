#!/usr/bin/env python3
"""Writes Sources/VLMTokenizer/BertUnicodeTables.swift: how Hugging Face's `tokenizers`
(the version pinned in scripts/requirements.txt) treats every Unicode code point in BERT's
normalizer and pre-tokenizer.

Nothing here comes from a Unicode database: the installed library is probed with "a" + c + "b"
for every code point c (surrogates cannot be sent), one normalizer step at a time:

  BertNormalizer(clean_text)            c dropped (control, format, private use, U+FFFD), or a space
  BertNormalizer(handle_chinese_chars)  c padded with spaces (its CJK ranges, not Unicode's)
  BertNormalizer(strip_accents)         c's NFD without nonspacing marks (its older tables)
  BertNormalizer(lowercase)             Rust's char::to_lowercase of c
  BertPreTokenizer                      c splits words (whitespace) or stands alone (punctuation)

Then the per-code-point model the Swift side runs (clean → pad → strip → lower, each output code
point classified by the pre-tokenizer) is checked against the full normalizer + pre-tokenizer
for every code point in three configurations, and the tables are written. Run after the pin
moves: .venv/bin/python scripts/export_bert_unicode_tables.py
"""
import os

import tokenizers
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Sources", "VLMTokenizer", "BertUnicodeTables.swift")

# Flag bits, as WordPiece.swift reads them.
REMOVED, SPACE, PUNCT, CJK, MARK, DECOMPOSES = 1, 2, 4, 8, 16, 32
CODE_POINTS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def probe(**on):
    """What each code point becomes between "a" and "b" with only the given steps on."""
    kw = dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    kw.update(on)
    n = BertNormalizer(**kw)
    out = {}
    for c in CODE_POINTS:
        s = n.normalize_str("a" + chr(c) + "b")
        assert s[0] == "a" and s[-1] == "b", (hex(c), s)
        out[c] = s[1:-1]
    return out


def hangul(c):
    """The Unicode algorithm's decomposition of a Hangul syllable (no nonspacing marks in it)."""
    s = c - 0xAC00
    l, v, t = 0x1100 + s // 588, 0x1161 + (s % 588) // 28, 0x11A7 + s % 28
    return chr(l) + chr(v) + (chr(t) if t != 0x11A7 else "")


def lower_runs(lower):
    """(first, last, delta, stride): lower(c) = c + delta for first, first + stride, … ≤ last."""
    keys = sorted(c for c, s in lower.items() if len(s) == 1)
    runs, i = [], 0
    while i < len(keys):
        best = (1, 1)
        for stride in (1, 2):
            n = 1
            d = ord(lower[keys[i]]) - keys[i]
            while i + n < len(keys) and keys[i + n] == keys[i] + n * stride and ord(lower[keys[i + n]]) - keys[i + n] == d:
                n += 1
            if n > best[0]:
                best = (n, stride)
        n, stride = best
        runs.append((keys[i], keys[i + n - 1], ord(lower[keys[i]]) - keys[i], stride))
        i += n
    return runs


def main():
    clean = probe(clean_text=True)
    pad = probe(handle_chinese_chars=True)
    strip = probe(strip_accents=True)
    lower = probe(lowercase=True)
    pre = BertPreTokenizer()
    words = {c: len(pre.pre_tokenize_str("a" + chr(c) + "b")) for c in CODE_POINTS}

    flags = {}
    for c in CODE_POINTS:
        f = 0
        if clean[c] == "":
            f |= REMOVED
        elif clean[c] == " " and c != 0x20:
            assert words[c] == 2, hex(c)  # clean_text's whitespace is the pre-tokenizer's
        else:
            assert clean[c] == chr(c), hex(c)
        f |= {1: 0, 2: SPACE, 3: PUNCT}[words[c]]
        if pad[c] != chr(c):
            assert pad[c] == " " + chr(c) + " ", hex(c)
            f |= CJK
        if strip[c] == "":
            f |= MARK
        elif strip[c] != chr(c):
            f |= DECOMPOSES
        flags[c] = f
    # Whitespace that clean_text keeps as a space is exactly SPACE without REMOVED.
    assert all((clean[c] == " ") == (flags[c] & (SPACE | REMOVED) == SPACE) for c in CODE_POINTS)
    for c in range(0xAC00, 0xD7A4):
        assert strip[c] == hangul(c), hex(c)
    decomposed = {c: strip[c] for c in CODE_POINTS if flags[c] & DECOMPOSES and not 0xAC00 <= c <= 0xD7A3}
    lowered = {c: s for c, s in lower.items() if s != chr(c)}
    runs = lower_runs(lowered)
    long_lower = {c: s for c, s in lowered.items() if len(s) > 1}

    def model_lower(c):
        for first, last, delta, stride in runs:
            if first <= c <= last and (c - first) % stride == 0:
                return chr(c + delta)
        return long_lower.get(c, chr(c))

    assert all(model_lower(c) == lower[c] for c in CODE_POINTS)
    check_model(flags, strip, lower)

    # Ranges of equal flags over all code points (surrogates take their neighbours' flags).
    starts, prev = [], None
    for c in range(0x110000):
        f = flags.get(c, prev)
        if f != prev:
            starts.append((c, f))
            prev = f
    write(starts, decomposed, runs, long_lower)


def check_model(flags, strip, lower):
    """The Swift side's per-code-point model against the whole pipeline, for every code point."""
    pre = BertPreTokenizer()
    configs = [dict(lowercase=True), dict(lowercase=False), dict(lowercase=True, strip_accents=False)]
    for kw in configs:
        norm = BertNormalizer(**kw)
        strip_on = kw.get("strip_accents", kw["lowercase"])
        for c in CODE_POINTS:
            want = [w for w, _ in pre.pre_tokenize_str(norm.normalize_str("a" + chr(c) + "b"))]
            out = []  # normalized code points; None is a word break
            f = flags[c]
            if f & REMOVED:
                pass
            elif f & SPACE:
                out.append(None)
            else:
                seq = strip[c] if strip_on else chr(c)
                if kw["lowercase"]:
                    seq = "".join(lower[ord(x)] for x in seq)
                if f & CJK:
                    out.append(None)
                out.extend(seq)
                if f & CJK:
                    out.append(None)
            got = words_of(out, flags)
            assert got == want, (kw, hex(c), got, want)


def words_of(out, flags):
    """BertPreTokenizer over "a", out, "b"."""
    words, word = [], "a"
    for x in out + ["b", None]:
        if x is None or flags[ord(x)] & SPACE:
            if word:
                words.append(word)
            word = ""
        elif flags[ord(x)] & PUNCT:
            if word:
                words.append(word)
            words.append(x)
            word = ""
        else:
            word += x
    return words


def swift_array(name, doc, type_, values, per_line, fmt):
    lines = [f"/// {d}" for d in doc] + [f"let {name}: [{type_}] = ["]
    for i in range(0, len(values), per_line):
        lines.append("    " + " ".join(fmt(v) + "," for v in values[i:i + per_line]))
    lines.append("]")
    return "\n".join(lines)


def write(starts, decomposed, runs, long_lower):
    keys = sorted(decomposed)
    values, extra = [], []
    for k in keys:
        s = decomposed[k]
        if len(s) == 1:
            values.append(ord(s))
        else:
            values.append(0x110000 + len(extra))
            extra += [len(s)] + [ord(x) for x in s]
    assert len(long_lower) == 1 and 0x130 in long_lower, long_lower  # İ → i + U+0307, in code
    assert [ord(x) for x in long_lower[0x130]] == [0x69, 0x307]
    hx = lambda v: f"0x{v:X}"
    parts = [
        f"// Generated by scripts/export_bert_unicode_tables.py from tokenizers=={tokenizers.__version__} by probing\n"
        "// BertNormalizer and BertPreTokenizer with every code point; do not edit. These are Hugging\n"
        "// Face's tables (older Unicode categories, its own CJK ranges, Rust's lower-casing), not Swift's.",
        swift_array("bertClassRanges", [
            "Ranges of code points of one class, sorted: start << 8 | flags, up to the next start. Flags:",
            "1 dropped by clean_text, 2 whitespace, 4 punctuation, 8 padded as CJK, 16 dropped by",
            "strip_accents, 32 changed by strip_accents (bertStripKeys, or a Hangul syllable)."],
            "UInt32", [c << 8 | f for c, f in starts], 8, hx),
        swift_array("bertStripKeys", ["Code points that strip_accents changes (Hangul syllables aside), sorted."],
                    "UInt32", keys, 10, hx),
        swift_array("bertStripValues", [
            "What each bertStripKeys entry becomes: one code point, or 0x110000 + an offset into",
            "bertStripLong of a count and that many code points."], "UInt32", values, 10, hx),
        swift_array("bertStripLong", ["Multi-code-point results of strip_accents."], "UInt32", extra, 10, hx),
        swift_array("bertLowerRuns", [
            "Lower-casing, as runs: first, last, delta, stride (c + delta for c = first, first + stride, …",
            "≤ last). U+0130 İ, the one code point lowered to two, is in code."],
            "Int32", [x for r in runs for x in r], 8, lambda v: hx(v) if v >= 0 else f"-0x{-v:X}"),
    ]
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("\n\n".join(parts) + "\n")
    print(f"wrote {OUT}: {len(starts)} class ranges, {len(keys)} strip entries, {len(runs)} lower-case runs")


if __name__ == "__main__":
    main()
