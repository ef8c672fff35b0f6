#!/usr/bin/env python3
"""vlm against PyTorch, sentence-transformers and ONNX Runtime on the same workloads, weights,
inputs and thread count, side by side in one run. Every measurement runs in its own process
(so peak RSS is its own), rounds alternate between vlm and the peers, and every peer's output
is compared with vlm's on the same inputs (relative error ≤ 1e-4 required).

  python Benchmarks/peers.py run [--quick] [--only NAME...]   measure; a full run rewrites BENCHMARKS.md's
                                                               peers.py block, a partial one only prints
  python Benchmarks/peers.py worker PEER WORKLOAD ...          one measurement (used by run)

Weights: Tests/Fixtures/generated/resnet50 (torchvision resnet50, seeded) and
Tests/Fixtures/generated/bert-base (bert-base-uncased architecture, seeded) from `make fixtures`;
models/all-MiniLM-L6-v2 from `make models`. Texts: Benchmarks/.cache/mixed.txt (2,000 texts of
5–300 tokens, seeded) and captions.txt (1,000 short captions, seeded), made here.
"""
import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "Benchmarks", ".cache")
VLM = os.path.join(ROOT, ".build", "release", "vlm")
RESNET = os.path.join(ROOT, "Tests", "Fixtures", "generated", "resnet50")
BERT = os.path.join(ROOT, "Tests", "Fixtures", "generated", "bert-base")
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
THREADS = 2
# Every peer's output must match vlm's on the same inputs to this relative error, or the run fails.
PARITY = 1e-4

# MARK: - Texts


def make_texts():
    """mixed.txt: 2,000 texts with token lengths spread uniformly over 5..300; captions.txt: 1,000 captions."""
    from transformers import BertTokenizerFast

    os.makedirs(CACHE, exist_ok=True)
    tok = BertTokenizerFast.from_pretrained(BERT)
    words = ("the a photograph of dog cat mountain river city street people running walking sitting standing near "
             "beside under over with without during after before morning evening night rain snow sun light dark old "
             "new small large red green blue yellow white black beautiful quiet busy empty crowded market bridge "
             "station museum garden forest beach harbour boat train bicycle car window door table chair book letter "
             "music painting history science computer network language model vector feature extraction benchmark "
             "résumé café naïve 東京 北京 🚀 quickly slowly carefully, however; therefore: (notably) \"quoted\"").split()
    rng = random.Random(2000)
    mixed = []
    for _ in range(2000):
        target = rng.randint(5, 300)
        ws = []
        while True:
            ws.append(rng.choice(words))
            n = len(tok(" ".join(ws))["input_ids"])
            if n >= target:
                break
        mixed.append(" ".join(ws))
    with open(os.path.join(CACHE, "mixed.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(mixed) + "\n")
    subjects = ["A dog", "Two cats", "A man", "A woman", "Children", "A red car", "An old bicycle", "A small bird"]
    verbs = ["is sitting on", "runs across", "is standing next to", "jumps over", "is looking at", "rides along"]
    objects = ["a wooden bench", "the busy street", "a snowy mountain", "a green field", "the kitchen table", "a crowded beach"]
    tails = ["", " at sunset", " in the rain", " on a sunny day", " near the old bridge", " with a frisbee"]
    caps = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(tails)}." for _ in range(1000)]
    with open(os.path.join(CACHE, "captions.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(caps) + "\n")


# MARK: - Workers (one measurement each, in their own process)


def timed(fn, min_time, min_iter, warmup=True):
    out = fn() if warmup else None
    times = []
    t_start = time.perf_counter()
    while len(times) < min_iter or time.perf_counter() - t_start < min_time:
        t0 = time.perf_counter()
        r = fn()
        times.append(time.perf_counter() - t0)
        if out is None:
            out = r
    return statistics.median(times), len(times), out


def resnet_model(channels_last=False):
    import torch
    from safetensors.torch import load_file
    from torchvision.models import resnet50

    m = resnet50()
    m.load_state_dict(load_file(os.path.join(RESNET, "model.safetensors")))
    m.fc = torch.nn.Identity()
    m.eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def onnx_path(name, export):
    p = os.path.join(CACHE, name)
    if not os.path.exists(p):
        export(p)
    return p


def ort_session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def export_resnet(p):
    import torch

    m = resnet_model()
    torch.onnx.export(m, torch.randn(1, 3, 224, 224), p, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)


def export_bert(p):
    import torch
    from transformers import BertModel

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = BertModel.from_pretrained(BERT).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            o = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return o.last_hidden_state, o.pooler_output

    m = Wrapped().eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    torch.onnx.export(m, (ids, torch.ones_like(ids), torch.zeros_like(ids)), p,
                      input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["hidden", "pooled"],
                      dynamic_axes={k: {0: "b", 1: "t"} for k in ["input_ids", "attention_mask", "token_type_ids", "hidden"]},
                      opset_version=17, dynamo=False)


def worker(a):
    import torch

    torch.set_num_threads(THREADS)
    res = {}
    if a.workload == "resnet50":
        x = np.load(a.input)
        if a.peer in ("torch", "torch-cl"):
            m = resnet_model(a.peer == "torch-cl")
            xt = torch.from_numpy(x)
            if a.peer == "torch-cl":
                xt = xt.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                sec, it, out = timed(lambda: m(xt).numpy(), a.min_time, 2)
        else:
            s = ort_session(onnx_path("resnet50.onnx", export_resnet))
            sec, it, out = timed(lambda: s.run(None, {"x": x})[0], a.min_time, 2)
        items = x.shape[0]
    elif a.workload == "bert":
        ids = np.load(a.input).astype(np.int64)
        mask, types = np.ones_like(ids), np.zeros_like(ids)
        if a.peer == "torch":
            from transformers import BertModel

            m = BertModel.from_pretrained(BERT).eval()
            ti, tm, tt = map(torch.from_numpy, (ids, mask, types))
            with torch.no_grad():
                sec, it, out = timed(lambda: m(input_ids=ti, attention_mask=tm, token_type_ids=tt).last_hidden_state.numpy(), a.min_time, 2)
        else:
            s = ort_session(onnx_path("bert-base.onnx", export_bert))
            sec, it, out = timed(lambda: s.run(["hidden"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0], a.min_time, 2)
        out = out.reshape(-1, out.shape[-1])
        items = ids.shape[0]
    else:  # text jobs: mixed (bert-base, mean pooling) or captions (MiniLM)
        texts = open(a.input, encoding="utf-8").read().split("\n")[:-1]
        folder = BERT if a.workload == "mixed" else MINILM
        items = len(texts)
        if a.peer == "st":
            from sentence_transformers import SentenceTransformer

            m = SentenceTransformer(folder, device="cpu")
            if a.workload == "mixed":
                m.max_seq_length = 512
            m.encode(texts[:64], batch_size=32)
            sec, it, out = timed(lambda: m.encode(texts, batch_size=32, convert_to_numpy=True), a.min_time, 1, warmup=False)
        else:  # ort-padded: input order, padded batches of 32, mean pooling
            from transformers import BertTokenizerFast

            tok = BertTokenizerFast.from_pretrained(folder)
            s = ort_session(onnx_path("bert-base.onnx", export_bert))

            def run():
                rows = []
                for i in range(0, len(texts), 32):
                    e = tok(texts[i:i + 32], padding=True, truncation=True, max_length=512, return_tensors="np")
                    h = s.run(["hidden"], {"input_ids": e["input_ids"], "attention_mask": e["attention_mask"],
                                           "token_type_ids": e["token_type_ids"]})[0]
                    m = e["attention_mask"][..., None].astype(np.float32)
                    rows.append((h * m).sum(1) / m.sum(1))
                return np.concatenate(rows)

            sec, it, out = timed(run, a.min_time, 1, warmup=False)
    np.save(a.output, np.asarray(out, dtype=np.float32))
    res.update(seconds=sec, iterations=it, items_per_s=items / sec)
    print(json.dumps(res))


# MARK: - Orchestration


def measure(cmd):
    """Runs cmd; returns (parsed JSON of its last stdout line, peak RSS in MB). Both pipes are
    drained while the child runs (a child writing more than a pipe holds would otherwise block
    forever), then wait4 gives the child's own rusage."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chunks = {}

    def drain(name, pipe):
        chunks[name] = pipe.read()

    readers = [threading.Thread(target=drain, args=(n, f)) for n, f in (("out", p.stdout), ("err", p.stderr))]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(p.pid, 0)   # reaps the child itself, so Popen must not
    for t in readers:
        t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    out, err = chunks["out"], chunks["err"]
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def rel_err(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run(a):
    os.makedirs(CACHE, exist_ok=True)
    if not os.path.exists(os.path.join(CACHE, "captions.txt")):
        make_texts()
    py = sys.executable
    me = os.path.abspath(__file__)
    peak, _ = measure([VLM, "bench", "peak", "--json", "--threads", str(THREADS)])
    print(f"== peaks: FMA {peak['fmaGFLOPs']:.0f} GFLOP/s, sgemm 2048³ {peak['sgemmGFLOPs']:.0f} GFLOP/s", flush=True)
    min_time = 1.5 if a.quick else 3
    rounds = 1 if a.quick else 2
    workloads = [
        ("ResNet-50, 224², batch 1", "resnet50", ["bench", "resnet50", "--model", RESNET, "--batch", "1"], ["torch", "torch-cl", "ort"], "images/s"),
        ("ResNet-50, batch 8", "resnet50", ["bench", "resnet50", "--model", RESNET, "--batch", "8"], ["torch", "torch-cl", "ort"], "images/s"),
        ("ResNet-50, batch 32", "resnet50", ["bench", "resnet50", "--model", RESNET, "--batch", "32"], ["torch", "torch-cl", "ort"], "images/s"),
        ("bert-base, T=128, batch 1", "bert", ["bench", "bert-base", "--model", BERT, "--batch", "1", "--seq", "128"], ["torch", "ort"], "seq/s"),
        ("bert-base, T=128, batch 8", "bert", ["bench", "bert-base", "--model", BERT, "--batch", "8", "--seq", "128"], ["torch", "ort"], "seq/s"),
        ("bert-base, T=32, batch 32", "bert", ["bench", "bert-base", "--model", BERT, "--batch", "32", "--seq", "32"], ["torch", "ort"], "seq/s"),
        ("all-MiniLM-L6-v2, 1,000 captions", "captions", ["bench", "minilm", "--model", MINILM, "--texts", os.path.join(CACHE, "captions.txt")], ["st"], "sentences/s"),
        ("bert-base, 2,000 mixed-length texts (5–300 tokens)", "mixed", ["bench", "bert-base", "--model", BERT, "--texts", os.path.join(CACHE, "mixed.txt"), "--no-warmup", "--min-iterations", "1", "--min-time", "0"], ["st", "ort-padded"], "texts/s"),
    ]
    if a.only:
        workloads = [w for w in workloads if any(o in w[0] or o == w[1] for o in a.only)]
    results = []
    for title, kind, vlm_args, peers, unit in workloads:
        print(f"== {title}", flush=True)
        vin, vout = os.path.join(CACHE, "vlm_in.npy"), os.path.join(CACHE, "vlm_out.npy")
        per = {"vlm": [], **{p: [] for p in peers}}
        rss = {}
        parity = {}
        for r in range(1 if kind == "mixed" else rounds):
            cmd = [VLM] + vlm_args + ["--backend", "blas", "--threads", str(THREADS), "--json", "--min-time", str(min_time),
                                      "--save-output", vout] + (["--save-input", vin] if kind in ("resnet50", "bert") else [])
            if "--min-time" in vlm_args:
                cmd = [VLM] + vlm_args + ["--backend", "blas", "--threads", str(THREADS), "--json", "--save-output", vout]
            rep, mb = measure(cmd)
            per["vlm"].append(rep["results"][0]["itemsPerSecond"])
            gflop_per_item = rep["results"][0]["gflops"] / rep["results"][0]["itemsPerSecond"]
            rss["vlm"] = max(rss.get("vlm", 0), mb)
            gflops = rep["results"][0]["gflops"]
            ref = np.load(vout)
            for p in peers:
                pin = vin if kind in ("resnet50", "bert") else os.path.join(CACHE, "mixed.txt" if kind == "mixed" else "captions.txt")
                pout = os.path.join(CACHE, f"{p}_out.npy")
                res, mb = measure([py, me, "worker", p, kind, "--input", pin, "--output", pout, "--min-time", str(min_time)])
                per[p].append(res["items_per_s"])
                rss[p] = max(rss.get(p, 0), mb)
                parity[p] = rel_err(ref, np.load(pout))
                print(f"   {p}: {res['items_per_s']:.2f} {unit}, parity {parity[p]:.1e}", flush=True)
                if not parity[p] <= PARITY:
                    raise SystemExit(f"parity miss: vlm vs {p} on {title}: relative error {parity[p]:.2e} > {PARITY:.0e}")
            print(f"   vlm: {per['vlm'][-1]:.2f} {unit} ({gflops:.0f} GFLOP/s)", flush=True)
        # GFLOP/s at vlm's median throughput (the work per item is the same in every round).
        gflops = statistics.median(per["vlm"]) * gflop_per_item
        results.append(dict(title=title, unit=unit, vlm=statistics.median(per["vlm"]), gflops=gflops,
                            peers={p: statistics.median(v) for p, v in per.items() if p != "vlm"}, rss=rss, parity=parity))
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = dict(machine=machine(), peak=peak, results=results, commit=commit or "unknown",
                  command="Benchmarks/peers.py run" + (" --quick" if a.quick else "") + (" --only " + " ".join(a.only) if a.only else ""))
    with open(os.path.join(CACHE, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    print(text)
    if a.quick or a.only:
        print("(partial run: BENCHMARKS.md left as it is)")
    else:
        write_benchmarks(text)


def machine():
    """CPU model, cores and memory, from lscpu and /proc/meminfo."""
    model, cores = "unknown CPU", os.cpu_count()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{model}, {cores} cores{mem}"


BEGIN, END = "<!-- peers.py: begin -->", "<!-- peers.py: end -->"


def write_benchmarks(text):
    """Replaces the block between the markers in BENCHMARKS.md (atomically)."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    doc = open(path, encoding="utf-8").read()
    if BEGIN not in doc or END not in doc:
        print(f"BENCHMARKS.md has no {BEGIN} … {END} block; not written", file=sys.stderr)
        return
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(head + BEGIN + "\n" + text + "\n" + END + tail)
    os.replace(tmp, path)
    print("BENCHMARKS.md updated", file=sys.stderr)


PEER_NAMES = {"torch": "PyTorch eager", "torch-cl": "PyTorch channels-last", "ort": "ONNX Runtime",
              "st": "sentence-transformers encode", "ort-padded": "ONNX Runtime, padded batches of 32"}


def markdown(report):
    import onnxruntime
    import torch

    peak = report["peak"]
    fma, sg = peak.get("peakGFLOPs", peak["fmaGFLOPs"]), peak["sgemmGFLOPs"]
    lines = [f"Commit {report.get('commit', 'unknown')}. Machine: {report['machine']}; OpenBLAS kernels {peak['openblasCore']}. "
             f"PyTorch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}, {THREADS} threads for everyone.",
             f"Peaks measured in the same run (`vlm bench peak`): FMA {fma:.0f} GFLOP/s, sgemm 2048³ {sg:.0f} GFLOP/s. "
             f"Command: `.venv/bin/python {report['command']}`.", "",
             "| workload | vlm | peer | peer's | vlm ÷ peer | vlm GFLOP/s (share of sgemm / FMA peak) | parity (rel. err.) | peak RSS vlm / peer |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        for p, v in r["peers"].items():
            lines.append(f"| {r['title']} | {r['vlm']:.2f} {r['unit']} | {PEER_NAMES[p]} | {v:.2f} | **{r['vlm'] / v:.2f}×** | "
                         f"{r['gflops']:.0f} ({100 * r['gflops'] / sg:.0f}% / {100 * r['gflops'] / fma:.0f}%) | "
                         f"{r['parity'][p]:.1e} | {r['rss']['vlm']:.0f} / {r['rss'][p]:.0f} MB |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--quick", action="store_true")
    r.add_argument("--only", nargs="*")
    w = sub.add_parser("worker")
    w.add_argument("peer")
    w.add_argument("workload")
    w.add_argument("--input", required=True)
    w.add_argument("--output", required=True)
    w.add_argument("--min-time", type=float, default=3)
    sub.add_parser("texts")
    a = ap.parse_args()
    {"run": run, "worker": worker, "texts": lambda a: make_texts()}[a.cmd](a)
