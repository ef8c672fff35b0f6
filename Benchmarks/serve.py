"""Serving benchmark: `vlm serve` against infinity-emb (`infinity_emb v2`, torch engine, CPU) and
sentence-transformers behind a plain HTTP loop, on the same all-MiniLM-L6-v2 folder, the same
machine, in one run, one after another (never two servers at once).

Load: wrk (Debian's) on loopback, one thread, keep-alive connections, at concurrency 1, 8 and 32;
each request is one caption (seeded, 6–22 words) sent OpenAI-style ({"input": [TEXT]}) so every
server takes the same body. Each point: 3 s of warm-up, then 15 s measured. Reported: sentences
per second, p50 / p99 latency, non-2xx answers, and the server's peak RSS (VmHWM, over the whole
run). Before the load every server's vector of one caption is checked against
sentence-transformers (relative error <= 1e-4).

  .venv/bin/python Benchmarks/serve.py [--seconds 15] [--write]   (make bench runs it with --write)

--write puts the table into BENCHMARKS.md between the serve markers."""
import argparse
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "Benchmarks", ".cache")
VLM = os.environ.get("VLM_BINARY") or os.path.join(ROOT, ".build", "release", "vlm")
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
SERVE_VENV = os.path.join(ROOT, ".venv-serve")
NAME = "all-MiniLM-L6-v2"


def captions(n=2000):
    rng = random.Random(11)
    words = "a dog cat man woman child red car bicycle bird runs sits jumps near over the green field street beach river snow".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 22))) + "." for _ in range(n)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=30):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


# MARK: - The servers

def st_loop_server(port):
    """sentence-transformers behind a plain loop: one request at a time, model.encode per request."""
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(2)
    model = SentenceTransformer(MINILM, device="cpu")

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: the connection closes after each answer, so waiting clients take turns
        # (one kept-alive connection would have the loop to itself while the others starve).
        protocol_version = "HTTP/1.0"
        disable_nagle_algorithm = True   # headers and body go out in separate writes

        def do_GET(self):
            self.reply(200, b'{"status":"ok"}')

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            v = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
            self.reply(200, json.dumps({"object": "list", "data": [{"object": "embedding", "index": i, "embedding": x.tolist()} for i, x in enumerate(v)]}).encode())

        def reply(self, status, data):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def servers():
    """(name, command, embeddings path, health path, extra body fields) for each peer."""
    inf = os.path.join(SERVE_VENV, "bin", "infinity_emb")
    out = [("vlm serve", [VLM, "serve", "--text-model", MINILM, "--port", "{port}"], "/v1/embeddings", "/health", {})]
    if os.path.exists(inf):
        out.append(("infinity-emb 0.0.78 (torch, CPU)",
                    [inf, "v2", "--model-id", MINILM, "--served-model-name", NAME, "--engine", "torch", "--device", "cpu",
                     "--port", "{port}", "--host", "127.0.0.1"],
                    "/embeddings", "/health", {"model": NAME}))
    else:
        print(f"note: {inf} missing (make bench installs it); infinity-emb skipped", file=sys.stderr)
    out.append(("sentence-transformers, plain loop", [sys.executable, os.path.abspath(__file__), "st-server", "{port}"], "/embeddings", "/health", {}))
    return out


def start(command, health, port):
    env = dict(os.environ, INFINITY_ANONYMOUS_USAGE_STATS="0", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = tempfile.TemporaryFile()
    p = subprocess.Popen([a.replace("{port}", str(port)) for a in command], stdout=log, stderr=log, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        if p.poll() is not None:
            log.seek(0)
            raise SystemExit(f"{command[0]} ended before serving:\n{log.read().decode()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=2) as r:
                if r.status == 200:
                    return p
        except OSError:
            time.sleep(0.5)
    p.kill()
    raise SystemExit(f"{command[0]} did not answer {health} within 300 s")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


# MARK: - Load

WRK_SCRIPT = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  return wrk.format(nil, "%(path)s", nil, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("WRKJSON {\\"requests\\": %%d, \\"seconds\\": %%f, \\"p50_us\\": %%d, \\"p99_us\\": %%d, \\"errors\\": %%d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), bad))
end
"""


def wrk(port, path, extra, concurrency, seconds, texts):
    with tempfile.TemporaryDirectory() as d:
        bodies = os.path.join(d, "bodies.txt")
        with open(bodies, "w") as f:
            for t in texts:
                f.write(json.dumps({"input": [t], **extra}) + "\n")
        script = os.path.join(d, "post.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT % {"bodies": bodies, "path": path})
        r = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s", script, f"http://127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=seconds + 120)
        m = re.search(r"WRKJSON (\{.*\})", r.stdout)
        if not m:
            raise SystemExit("wrk failed:\n" + r.stdout + r.stderr)
        return json.loads(m.group(1))


def relative_error(a, b):
    """‖a − b‖ / ‖b‖ (a cosine of 0.9999 would pass rows 1% apart)."""
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def reference(text):
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(MINILM, device="cpu").encode([text], normalize_embeddings=True)[0]


def run(seconds, write):
    texts = captions()
    ref = reference(texts[0])
    rows = []
    for name, command, path, health, extra in servers():
        port = free_port()
        p = start(command, health, port)
        try:
            v = post(f"http://127.0.0.1:{port}{path}", {"input": [texts[0]], **extra})["data"][0]["embedding"]
            err = relative_error(v, ref)
            assert err <= 1e-4, f"{name}: relative error {err} against sentence-transformers"
            mine = []
            for c in (1, 8, 32):
                wrk(port, path, extra, c, 3, texts)   # warm-up
                r = wrk(port, path, extra, c, seconds, texts)
                mine.append((name, c, r["requests"] / r["seconds"], r["p50_us"] / 1000, r["p99_us"] / 1000, r["errors"]))
                print(f"{name:36s} c={c:2d} {mine[-1][2]:8.1f} sentences/s  p50 {mine[-1][3]:7.2f} ms  p99 {mine[-1][4]:7.2f} ms  errors {r['errors']}", flush=True)
            rss = peak_rss_mb(p.pid)
            rows += [m + (rss,) for m in mine]
            if name == "vlm serve":
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as m:
                    metrics = m.read().decode()
                total = float(re.search(r'vlm_batch_size_sum\{kind="text"\} (\S+)', metrics).group(1))
                count = float(re.search(r'vlm_batch_size_count\{kind="text"\} (\S+)', metrics).group(1))
                print(f"vlm serve: {count:.0f} forward passes, {total / count:.1f} sentences each on average", flush=True)
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    cpu = platform.processor() or ""
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    except (OSError, AttributeError):
        pass
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"Measured at commit {commit} on {cpu} ({os.cpu_count()} cores), {seconds} s per point after 3 s of warm-up, "
             f"wrk -t1 on loopback, one caption per request:", "",
             "| server | concurrency | sentences/s | p50 ms | p99 ms | non-2xx | peak RSS MB |", "|---|---|---|---|---|---|---|"]
    for name, c, rate, p50, p99, err, rss in rows:
        lines.append(f"| {name} | {c} | {rate:.0f} | {p50:.2f} | {p99:.2f} | {err} | {rss:.0f} |")
    by = {(r[0], r[1]): r for r in rows}
    inf = next((r[0] for r in rows if r[0].startswith("infinity")), None)
    if inf:
        for c in (1, 8, 32):
            v, i = by[("vlm serve", c)], by[(inf, c)]
            lines.append(f"\nAt concurrency {c}: vlm serve {v[2] / i[2]:.2f}× infinity's throughput, p99 {v[4]:.2f} vs {i[4]:.2f} ms." if c == 1 else
                         f"At concurrency {c}: vlm serve {v[2] / i[2]:.2f}× infinity's throughput, p99 {v[4]:.2f} vs {i[4]:.2f} ms.")
    table = "\n".join(lines)
    print(table)
    if write:
        path = os.path.join(ROOT, "BENCHMARKS.md")
        text = open(path).read()
        begin, end = "<!-- serve:begin -->", "<!-- serve:end -->"
        if begin in text:
            text = text[:text.index(begin) + len(begin)] + "\n" + table + "\n" + text[text.index(end):]
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        else:
            print("note: BENCHMARKS.md has no serve markers; not written", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "st-server":
        st_loop_server(int(sys.argv[2]))
    else:
        ap = argparse.ArgumentParser()
        ap.add_argument("--seconds", type=int, default=15)
        ap.add_argument("--write", action="store_true")
        a = ap.parse_args()
        run(a.seconds, a.write)
