"""vlm serve on loopback: vectors equal the CLI's, concurrent clients each get their own
answer, batching happens, overload is 429 without a crash, bad inputs get JSON errors with the
right 4xx, and SIGTERM drains in-flight requests and exits 0. Every request loop is bounded."""
import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
import weakref

import numpy as np
import pytest

from conftest import BERT, RESNET, ROOT, VLM

MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")


class Server:
    def __init__(self, args, cwd=None):
        self.proc = subprocess.Popen([VLM, "serve", "--port", "0"] + args, stderr=subprocess.PIPE, cwd=cwd)
        self.lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.proc.stderr.readline().decode()
            if not line:
                raise AssertionError("vlm serve ended before listening: " + "".join(self.lines))
            self.lines.append(line)
            m = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        else:
            raise AssertionError("vlm serve did not listen within 120 s")
        # Keep draining stderr so the server never blocks on a full pipe.
        self.reader = threading.Thread(target=lambda: self.lines.extend(l.decode() for l in self.proc.stderr), daemon=True)
        self.reader.start()

    def request(self, method, path, body=None, headers=None, timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, r.getheader("Content-Type") or "", data
        finally:
            c.close()

    def post(self, path, body, **kw):
        status, ctype, data = self.request("POST", path, body, **kw)
        return status, (json.loads(data) if ctype.startswith("application/json") else data)

    def get(self, path):
        status, ctype, data = self.request("GET", path)
        return status, (json.loads(data) if ctype.startswith("application/json") else data.decode())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        code = self.stop()
        if exc[0] is None:
            assert code == 0, "".join(self.lines)


class PartialRequest:
    """A POST whose body is half sent: the server counts it as arriving, so a batch lingers for
    it (the tests hold a request in the queue this way); `finish` sends the rest. It asks
    `Expect: 100-continue` and waits for the 100 before sending the first bytes of its body:
    the server has read its head and admitted it (rather than a sleep that hopes it has)."""

    def __init__(self, port, path, body):
        self.body = json.dumps(body).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(self.body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):      # the 100 and nothing after it (no answer comes before the body)
            chunk = self.sock.recv(1)
            assert chunk, f"the connection closed before 100 Continue: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 100"), head
        self.sock.sendall(self.body[:5])

    def finish(self):
        self.sock.sendall(self.body[5:])
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        self.sock.close()
        assert data, "the connection closed without an answer"
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)


def cli_rows(args, tmp_path, stdin=None):
    out = tmp_path / f"{uuid.uuid4().hex}.npy"
    r = subprocess.run([VLM] + args + ["-o", str(out), "--quiet"], input=stdin, capture_output=True)
    assert r.returncode == 0, r.stderr
    return np.load(out)


def texts_cli(texts, model, tmp_path, *flags):
    return cli_rows(["embed-text", "--model", model, "--file", "-", *flags], tmp_path, stdin=("\n".join(texts) + "\n").encode())


def rel_rows(a, b):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    assert a.shape == b.shape, (a.shape, b.shape)
    return max(np.linalg.norm(a[i] - b[i]) / np.linalg.norm(b[i]) for i in range(len(b)))


TEXTS = ["A cat sitting on a couch.", "", "naïve café 東京 🙂", "a dog", "Hello, world!\tTabs and  spaces."]


def test_texts_equal_the_cli_on_the_real_minilm(tmp_path):
    assert os.path.exists(os.path.join(MINILM, "model.safetensors")), "make models fetches all-MiniLM-L6-v2"
    ref = texts_cli(TEXTS, MINILM, tmp_path)                           # sentence-transformers' config: normalised
    raw = texts_cli(TEXTS, MINILM, tmp_path, "--no-normalize")
    with Server(["--text-model", MINILM]) as s:
        status, v = s.post("/embed", {"inputs": TEXTS})
        assert status == 200 and rel_rows(v, ref) <= 1e-6
        status, v = s.post("/embed", {"inputs": TEXTS[0]})             # one string, TEI's short form
        assert status == 200 and rel_rows(v, ref[:1]) <= 1e-6
        status, v = s.post("/embed", {"inputs": TEXTS, "normalize": False})
        assert status == 200 and rel_rows(v, raw) <= 1e-6
        # OpenAI's route: floats, base64 of little-endian float32, shortened and renormalised.
        status, r = s.post("/v1/embeddings", {"input": TEXTS, "model": "all-MiniLM-L6-v2"})
        assert status == 200 and r["object"] == "list" and r["model"] == "all-MiniLM-L6-v2"
        assert [d["index"] for d in r["data"]] == list(range(len(TEXTS)))
        assert rel_rows([d["embedding"] for d in r["data"]], ref) <= 1e-6
        tokens = sum(len(json.loads(subprocess.run([VLM, "tokenize", "--model", MINILM, t], capture_output=True, check=True).stdout)["ids"]) for t in TEXTS)
        assert r["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
        status, r = s.post("/v1/embeddings", {"input": TEXTS, "encoding_format": "base64"})
        b64 = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r["data"]])
        assert status == 200 and rel_rows(b64, ref) <= 1e-6
        status, r = s.post("/v1/embeddings", {"input": TEXTS, "dimensions": 64})
        short = ref[:, :64] / np.linalg.norm(ref[:, :64], axis=1, keepdims=True)
        assert status == 200 and rel_rows([d["embedding"] for d in r["data"]], short) <= 1e-6
        # One model serves texts: any name picks it (LangChain and others send OpenAI's names),
        # and the answer names the model that served it.
        status, r = s.post("/v1/embeddings", {"input": TEXTS, "model": "text-embedding-3-small"})
        assert status == 200 and r["model"] == "all-MiniLM-L6-v2"
        assert rel_rows([d["embedding"] for d in r["data"]], ref) <= 1e-6
        status, r = s.get("/v1/models")
        assert status == 200 and [m["id"] for m in r["data"]] == ["all-MiniLM-L6-v2"]
    # --served-model-name, repeatable: the names /v1/models lists; a request naming one of them
    # is answered with that name, any other with the first.
    with Server(["--text-model", MINILM, "--served-model-name", "minilm", "--served-model-name", "text-embedding-3-small"]) as s:
        status, r = s.get("/v1/models")
        assert status == 200 and [m["id"] for m in r["data"]] == ["minilm", "text-embedding-3-small"]
        status, r = s.post("/v1/embeddings", {"input": TEXTS, "model": "text-embedding-3-small"})
        assert status == 200 and r["model"] == "text-embedding-3-small" and rel_rows([d["embedding"] for d in r["data"]], ref) <= 1e-6
        status, r = s.post("/v1/embeddings", {"input": TEXTS, "model": "ada"})
        assert status == 200 and r["model"] == "minilm"
        status, info = s.get("/info")
        assert info["served_model_names"] == ["minilm", "text-embedding-3-small"] and info["served_model_name"] == "minilm"
        assert status == 200 and info["text_dim"] == 384 and info["limits"]["max_inputs"] == 256
    r = subprocess.run([VLM, "serve", "--text-model", MINILM, "--served-model-name", ""], capture_output=True, text=True, timeout=60)
    assert r.returncode == 64 and "--served-model-name must not be empty" in r.stderr


def test_truncation_follows_the_request_and_the_cli(tmp_path):
    long = " ".join(["word"] * 300)                                    # the tiny model takes 128 tokens
    ref = texts_cli([long, "short"], BERT, tmp_path)
    with Server(["--text-model", BERT]) as s:
        status, r = s.post("/embed", {"inputs": ["short", long]})
        assert status == 413 and r["error_type"] == "Validation" and "inputs[1]" in r["error"] and "302 tokens" in r["error"]
        status, v = s.post("/embed", {"inputs": [long, "short"], "truncate": True})
        assert status == 200 and rel_rows(v, ref) <= 1e-6
    with Server(["--text-model", BERT, "--auto-truncate", "--max-length", "16"]) as s:
        status, v = s.post("/embed", {"inputs": [long, "short"]})
        assert status == 200 and rel_rows(v, texts_cli([long, "short"], BERT, tmp_path, "--max-length", "16")) <= 1e-6


def jpeg_bytes(photos, k):
    return open(photos[0][k], "rb").read()


def test_images_and_pairs_equal_the_cli(tmp_path, photos):
    good, broken = photos
    ref = cli_rows(["embed-image", *good[:4], "--model", RESNET], tmp_path)
    paths = [os.path.basename(p) for p in good[:4]]
    fused = cli_rows(["fuse", "--pairs", "-", "--image-model", RESNET, "--text-model", BERT], tmp_path,
                     stdin="".join(f"{p}\t{t}\n" for p, t in zip(good[:3], TEXTS)).encode())
    root = os.path.dirname(good[0])
    with Server(["--image-model", RESNET, "--text-model", BERT, "--root", root]) as s:
        b64 = [base64.b64encode(open(p, "rb").read()).decode() for p in good[:4]]
        status, v = s.post("/embed_image", {"inputs": b64})
        assert status == 200 and rel_rows(v, ref) <= 1e-6
        status, v = s.post("/embed_image", {"inputs": "data:image/jpeg;base64," + b64[0]})
        assert status == 200 and rel_rows(v, ref[:1]) <= 1e-6
        status, v = s.post("/embed_image", {"paths": paths})
        assert status == 200 and rel_rows(v, ref) <= 1e-6
        status, v = s.post("/embed_image", {"paths": paths[:2], "normalize": True})
        assert status == 200 and rel_rows(v, ref[:2] / np.linalg.norm(ref[:2], axis=1, keepdims=True)) <= 1e-6
        # A multipart upload (as curl -F file=@a.jpg -F file=@b.png sends it): its file parts in order.
        boundary = "----vlm" + uuid.uuid4().hex
        parts = b"".join(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{n}\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            + open(p, "rb").read() + b"\r\n" for n, p in zip(paths, good[:4]))
        body = parts + f"--{boundary}--\r\n".encode()
        status, v = s.post("/embed_image", body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status == 200 and rel_rows(v, ref) <= 1e-6
        # Expect: 100-continue (curl asks it before bodies over 1 MB) is answered before the body is sent.
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(f"POST /embed_image HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                      f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".encode())
            c.settimeout(5)
            assert c.recv(100).startswith(b"HTTP/1.1 100 Continue")
            c.sendall(body)
            c.settimeout(60)
            data = b""
            while chunk := c.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200") and rel_rows(json.loads(data.partition(b"\r\n\r\n")[2]), ref) <= 1e-6
        status, r = s.post("/embed_image", parts, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status == 400 and "closing boundary" in r["error"]
        # Pairs: image ⧺ text, by path or by bytes.
        # One meaning per key on every front end: "image" a path (as in fuse --pairs and the
        # worker), "image_bytes" base64; "path" is the older name of "image".
        status, v = s.post("/fuse", {"inputs": [{"image": paths[0], "text": TEXTS[0]}, {"image_bytes": b64[1], "text": TEXTS[1]},
                                                {"path": paths[2], "text": TEXTS[2]}]})
        assert status == 200 and rel_rows(v, fused) <= 1e-6
        status, r = s.post("/fuse", {"inputs": [{"image": b64[1], "text": TEXTS[1]}]})
        assert status == 422 and "image_bytes" in r["error"], r
        # Bad images: the request is refused naming the input and the problem; nothing crashes.
        for name, kind in broken.items():
            status, r = s.post("/embed_image", {"inputs": [b64[0], base64.b64encode(open(name, "rb").read() or b"\0").decode()]})
            assert status == 422 and "inputs[1]" in r["error"], r
        status, r = s.post("/embed_image", {"paths": [paths[0], os.path.basename(next(iter(broken)))]})
        assert status == 422 and r["error"].startswith('paths[1] ("empty.jpg")') and r["error_kind"] == "empty" and root not in r["error"]
        # Paths stay under --root: no absolute paths, no .., no link leading out.
        os.symlink("/etc", os.path.join(root, "out"))
        for p in ["/etc/passwd", "../x.jpg", "a/../../x.jpg", "out/passwd"]:
            status, r = s.post("/embed_image", {"paths": [p]})
            assert status == 403, (p, r)
        status, r = s.post("/embed_image", {"paths": ["missing.jpg"]})
        assert status == 404
        # /info tells clients what is served, not where the server keeps it.
        info = s.get("/info")[1]
        assert root not in json.dumps(info) and ROOT not in json.dumps(info)
        assert info["paths_under_root"] is True and info["image_model"] == os.path.basename(RESNET) and info["text_model"] == "tiny"
    with Server(["--image-model", RESNET, "--text-model", BERT]) as s:
        status, r = s.post("/embed_image", {"paths": paths[:1]})
        assert status == 403 and "--root" in r["error"]


# The server takes embed-image's, embed-text's and fuse's model options: each, given to the
# server, gives the command's vectors with the same flag.
SERVER_OPTIONS = {
    "layer-logits": (["--layer", "logits"], "/embed_image"),
    "resize-crop": (["--resize", "160", "--crop", "128"], "/embed_image"),
    "pooling-cls": (["--pooling", "cls"], "/embed"),
    "normalize-parts": (["--normalize-parts"], "/fuse"),
}


@pytest.mark.parametrize("option", sorted(SERVER_OPTIONS))
def test_model_options_equal_the_cli(tmp_path, photos, option):
    flags, endpoint = SERVER_OPTIONS[option]
    good, _ = photos
    root = os.path.dirname(good[0])
    names = [os.path.basename(p) for p in good[:4]]
    b64 = [base64.b64encode(open(p, "rb").read()).decode() for p in good[:4]]
    with Server(["--image-model", RESNET, "--text-model", BERT, "--root", root, *flags]) as s:
        if endpoint == "/embed_image":
            ref = cli_rows(["embed-image", *good[:4], "--model", RESNET, *flags], tmp_path)
            status, v = s.post("/embed_image", {"inputs": b64})
            assert status == 200 and rel_rows(v, ref) <= 1e-6, option
            status, v = s.post("/embed_image", {"paths": names})
            assert status == 200 and rel_rows(v, ref) <= 1e-6, option
        if endpoint == "/embed":
            status, v = s.post("/embed", {"inputs": TEXTS})
            assert status == 200 and rel_rows(v, texts_cli(TEXTS, BERT, tmp_path, *flags)) <= 1e-6, option
        if endpoint in ("/fuse",) or option == "resize-crop":
            # Pairs (by path and by bytes) as fuse makes them with the same flags; --resize and
            # --crop shape the image half of a pair too.
            fused = cli_rows(["fuse", "--pairs", "-", "--image-model", RESNET, "--text-model", BERT, *flags], tmp_path,
                             stdin="".join(f"{p}\t{t}\n" for p, t in zip(good[:3], TEXTS)).encode())
            status, v = s.post("/fuse", {"inputs": [{"image": names[0], "text": TEXTS[0]}, {"image_bytes": b64[1], "text": TEXTS[1]},
                                                    {"image": names[2], "text": TEXTS[2]}]})
            assert status == 200 and rel_rows(v, fused) <= 1e-6, option


def fit_pca(tmp_path, dim, k, name, whiten=True):
    """A PCA file (vlm pca fit) on seeded rows of width `dim`."""
    rng = np.random.default_rng(dim)
    train = tmp_path / f"{name}-train.npy"
    np.save(train, (rng.standard_normal((300, dim)) * (1 + np.arange(dim) % 7) + 0.1).astype(np.float32))
    out = tmp_path / f"{name}.safetensors"
    r = subprocess.run([VLM, "pca", "fit", str(train), "--dim", str(k), "-o", str(out), "--quiet"] + (["--whiten"] if whiten else []),
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    return str(out)


@pytest.mark.parametrize("normalize_output", [False, True])
def test_pca_and_normalize_output_equal_the_cli(tmp_path, photos, normalize_output):
    """--pca and --normalize-output reach the server: its vectors are the commands' with the
    same flags, for every kind the PCA fits; a kind it does not fit answers 503 saying why."""
    good, _ = photos
    out_flags = ["--normalize-output"] if normalize_output else []
    text_pca = fit_pca(tmp_path, 32, 4, "text")
    image_pca = fit_pca(tmp_path, 256, 5, "image")
    b64 = [base64.b64encode(open(p, "rb").read()).decode() for p in good[:3]]
    with Server(["--image-model", RESNET, "--text-model", BERT, "--pca", text_pca, *out_flags]) as s:
        for normalize in [None, False, True]:
            # The request's "normalize" is the model's normalisation, before the projection.
            norm = [] if normalize is None else ["--normalize" if normalize else "--no-normalize"]
            ref = texts_cli(TEXTS, BERT, tmp_path, "--pca", text_pca, *out_flags, *norm)
            body = {"inputs": TEXTS} if normalize is None else {"inputs": TEXTS, "normalize": normalize}
            status, v = s.post("/embed", body)
            assert status == 200 and np.asarray(v).shape == (len(TEXTS), 4) and rel_rows(v, ref) <= 1e-6, normalize
        status, r = s.post("/v1/embeddings", {"input": TEXTS[:2], "model": "x"})
        assert status == 200 and rel_rows([d["embedding"] for d in r["data"]], texts_cli(TEXTS[:2], BERT, tmp_path, "--pca", text_pca, *out_flags)) <= 1e-6
        status, r = s.post("/v1/embeddings", {"input": TEXTS[:2], "dimensions": 5})
        assert status == 422 and "from 1 to 4" in r["error"]["message"], r
        # Shortened vectors are normalised again only when they were unit vectors: after the
        # projection, only --normalize-output makes them so, whatever the request's "normalize".
        for normalize in [True, False]:
            status, r = s.post("/v1/embeddings", {"input": TEXTS[:2], "dimensions": 3, "normalize": normalize})
            ref = texts_cli(TEXTS[:2], BERT, tmp_path, "--pca", text_pca, *out_flags, "--normalize" if normalize else "--no-normalize")[:, :3]
            want = ref / np.linalg.norm(ref, axis=1, keepdims=True) if normalize_output else ref
            assert status == 200 and rel_rows([d["embedding"] for d in r["data"]], want) <= 1e-6, (normalize, r)
        info = s.get("/info")[1]
        assert info["text_dim"] == 4 and info["options"]["pca"] == "text.safetensors" and info["options"]["normalize_output"] is normalize_output
        assert str(tmp_path) not in json.dumps(info)
        # Images are 256-d: this PCA takes 32-d rows, so the image endpoints say it.
        status, r = s.post("/embed_image", {"inputs": b64[:1]})
        assert status == 503, r
        assert any("32-d" in line and "256-d" in line for line in s.lines), "".join(s.lines)
    with Server(["--image-model", RESNET, "--text-model", BERT, "--pca", image_pca, *out_flags]) as s:
        ref = cli_rows(["embed-image", *good[:3], "--model", RESNET, "--pca", image_pca, *out_flags], tmp_path)
        status, v = s.post("/embed_image", {"inputs": b64})
        assert status == 200 and np.asarray(v).shape == (3, 5) and rel_rows(v, ref) <= 1e-6
        assert s.get("/info")[1]["image_dim"] == 5
    # A PCA file that cannot be read ends the server at start, naming it.
    r = subprocess.run([VLM, "serve", "--port", "0", "--text-model", BERT, "--pca", str(tmp_path / "nope.safetensors")],
                       capture_output=True, timeout=60)
    assert r.returncode == 1 and b"nope.safetensors" in r.stderr, r.stderr


def test_bad_requests_get_json_errors_and_the_server_lives_on(tmp_path, photos):
    with Server(["--text-model", BERT, "--image-model", RESNET, "--max-inputs", "8", "--max-body-bytes", "4096"]) as s:
        cases = [
            ("/embed", b"{not json", {"Content-Type": "application/json"}, 400),
            ("/embed", b"", {}, 400),
            ("/embed", [1, 2], None, 422),
            ("/embed", {"inputs": 3}, None, 422),
            ("/embed", {"inputs": []}, None, 422),
            ("/embed", {"inputs": ["a", 2]}, None, 422),
            ("/embed", {"text": "a"}, None, 422),
            ("/embed", {"inputs": ["a"] * 9}, None, 413),
            ("/embed", {"inputs": "x" * 5000}, None, 413),
            ("/embed", {"inputs": "a", "normalize": "yes"}, None, 422),
            ("/embed", {"inputs": "a", "truncation_direction": "left"}, None, 422),
            ("/v1/embeddings", {"input": "a", "encoding_format": "int8"}, None, 422),
            ("/v1/embeddings", {"input": "a", "dimensions": 0}, None, 422),
            ("/v1/embeddings", {"input": "a", "dimensions": 33}, None, 422),
            ("/v1/embeddings", {"input": [[101, 102]]}, None, 422),
            ("/embed_image", {"inputs": ["!!!not base64!!!"]}, None, 422),
            ("/embed_image", {"inputs": ["aGVsbG8="]}, None, 422),
            ("/embed_image", {"inputs": ["data:image/png,raw"]}, None, 422),
            ("/embed_image", {"inputs": ["aGVsbG8="], "paths": ["a"]}, None, 422),
            ("/embed_image", b"GIF89a", {"Content-Type": "image/gif"}, 415),
            ("/embed_image", b"--x\r\n", {"Content-Type": "multipart/form-data"}, 400),
            ("/embed_image", b"garbage", {"Content-Type": "multipart/form-data; boundary=abc"}, 400),
            ("/fuse", {"inputs": [{"text": "a"}]}, None, 422),
            ("/fuse", {"inputs": "a"}, None, 422),
            ("/embed", b'{"inputs": "a"}', {"Content-Type": "text/plain"}, 415),
            ("/v1/embeddings", {"input": "a", "model": 5}, None, 422),
            # Strict JSON: what a lenient decoder would take, or read differently, is refused.
            ("/embed", b'{"inputs": ["a",]}', {}, 400),
            ("/embed", b'{"inputs": ["a"],}', {}, 400),
            ("/embed", b'{"inputs": ["a"], "inputs": ["b"]}', {}, 400),
            ("/embed", b'{"inputs": ["a\x01"]}', {}, 400),
            ("/embed", b'{"inputs": ["a"], "normalize": tru}', {}, 400),
            ("/embed", b'{"inputs": ["a"]} {}', {}, 400),
            ("/embed", b'{"inputs": ["a"], "n": 01}', {}, 400),
            ("/embed", b'[' * 600 + b']' * 600, {}, 400),
            ("/embed", b'{"inputs": "a", "\\u0069nputs": ["b"]}', {}, 400),     # the same key, escaped
            ("/embed", b'{"inputs": "a\xff\xfeb"}', {}, 400),                     # not UTF-8
            ("/embed", b'{"inputs": "\xc0\xaf \xed\xa0\x80"}', {}, 400),          # overlong, a surrogate
            ("/embed", b'{"inputs": "\\ud800"}', {}, 400),                          # a lone surrogate escape
            ("/v1/embeddings", {"input": "a", "dimensions": 8.5}, None, 422),
            ("/v1/embeddings", b'{"input": "a", "dimensions": 1e400}', {}, 422),
        ]
        for path, body, headers, want in cases:
            status, r = s.post(path, body, headers=headers)
            assert status == want, (path, body, status, r)
            err = r["error"]["message"] if path.startswith("/v1") else r["error"]
            assert isinstance(err, str) and err and "\n" not in err
        assert s.post("/embed", {"inputs": ["a", 2]})[1]["error"] == "inputs[1] must be a string"
        assert s.post("/embed", {"input": "a"})[1]["error"] == '"inputs" is missing'
        assert s.post("/embed", b'{"inputs": ["a"], "inputs": ["b"]}')[1]["error"] == \
            'the body is not JSON (at byte 18: the key "inputs" appears twice in one object)'
        assert s.post("/embed", b'{"inputs": ["a",]}')[1]["error"] == "the body is not JSON (at byte 16: a trailing comma in a list)"
        assert s.post("/embed", b'{"inputs": "a", "\\u0069nputs": ["b"]}')[1]["error"] == \
            'the body is not JSON (at byte 16: the key "inputs" appears twice in one object)'
        assert s.post("/embed", b'{"inputs": "a\xffb"}')[1]["error"] == "the body is not JSON (at byte 13: not UTF-8)"
        assert s.post("/embed", b'"a"')[1]["error"] == "the body must be an object"
        assert s.post("/embed", b"null")[1]["error"] == "the body must be an object, not null"
        assert s.post("/embed", {"inputs": 5})[1]["error"] == "inputs must be a string or a list of strings"
        assert s.post("/v1/embeddings", {"input": "a", "dimensions": 8.5})[1]["error"]["message"] == "dimensions must be a whole number from 1 to 32, not 8.5"
        status, r = s.post("/v1/embeddings", {"input": "a", "dimensions": 8.0})
        assert status == 200 and len(r["data"][0]["embedding"]) == 8
        # Escapes, unicode, numbers and nesting that are JSON still decode.
        status, v = s.post("/embed", '{"inputs": ["caf\\u00e9 \\"q\\" \\/ 東京"], "normalize": false, "x": [-0.5e+3, {}, [], null]}'.encode())
        assert status == 200 and rel_rows(v, texts_cli(['café "q" / 東京'], BERT, tmp_path, "--no-normalize")) <= 1e-6
        status, _, body = s.request("GET", "/no/such/route")
        assert status == 404 and "no such endpoint" in json.loads(body)["error"]
        status, _, body = s.request("GET", "/embed")
        assert status == 405 and json.loads(body)["error"] == "/embed takes POST, not GET"
        # A broken chunked body is the client's fault: 400, not 500.
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                      b"Connection: close\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n")
            assert c.recv(100).startswith(b"HTTP/1.1 400")
        # Bodies far over the limit, with and without a Content-Length.
        status, r = s.post("/embed", b"x" * 100000, headers={"Content-Type": "application/json"})
        assert status == 413
        assert s.get("/health") == (200, {"status": "ok"})
        status, v = s.post("/embed", {"inputs": ["still fine"]})
        assert status == 200 and len(v[0]) == 32
    # A model that cannot load ends the server at start with one line and exit 1.
    r = subprocess.run([VLM, "serve", "--port", "0", "--text-model", str(tmp_path / "nope")], capture_output=True, timeout=60)
    assert r.returncode == 1 and r.stderr.decode().count("\n") == 1 and "nope" in r.stderr.decode()
    for bad in (["--max-inputs", "0"], ["--max-batch-tokens", "0"], ["--linger-ms", "-1"]):
        r = subprocess.run([VLM, "serve", *bad], capture_output=True, timeout=60)
        assert r.returncode == 64, bad
    with Server(["--text-model", BERT, "--max-batch-tokens", "512", "--max-inputs", "2"]) as s:
        assert s.get("/info")[1]["limits"]["max_batch_tokens"] == 512
        # Far more JSON values than a request of 2 inputs holds: refused before decoding them.
        status, r = s.post("/embed", b'{"inputs": "a", "x": [' + b",".join([b"0"] * 5000) + b']}')
        assert status == 400 and "more than 4128 values" in r["error"]
    with Server(["--text-model", BERT]) as s:
        r = subprocess.run([VLM, "serve", "--port", str(s.port), "--text-model", BERT], capture_output=True, timeout=60)
        assert r.returncode == 1 and r.stderr.decode().strip().endswith(f"cannot listen on 127.0.0.1:{s.port}: the address is already in use")


def test_64_concurrent_clients_each_get_their_own_vectors(tmp_path):
    rng = np.random.default_rng(7)
    words = "the a cat dog sits runs on under couch table red blue quickly slowly 東京 café".split()
    requests = [[" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(rng.integers(1, 6))] for _ in range(64 * 3)]
    everything = [t for r in requests for t in r]
    ref = texts_cli(everything, BERT, tmp_path)
    offsets = np.cumsum([0] + [len(r) for r in requests])
    results = {}
    with Server(["--text-model", BERT]) as s:
        barrier = threading.Barrier(64)

        def client(c):
            barrier.wait()
            for k in range(c, len(requests), 64):
                results[k] = s.post("/embed", {"inputs": requests[k]})

        threads = [threading.Thread(target=client, args=(c,)) for c in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert len(results) == len(requests)
        for k, (status, v) in results.items():
            assert status == 200 and rel_rows(v, ref[offsets[k]:offsets[k + 1]]) <= 1e-6, k
        # The batch metrics are recorded just after each batch's answers go out: wait for the last.
        for _ in range(200):
            status, metrics = s.get("/metrics")
            if status == 200 and f'vlm_batch_requests_sum{{kind="text"}} {float(len(requests))}' in metrics and "vlm_queue_depth 0" in metrics:
                break
            time.sleep(0.05)
        assert status == 200
        count = lambda name: float(re.search(name + r'_count\{kind="text"\} (\S+)', metrics).group(1))
        total = lambda name: float(re.search(name + r'_sum\{kind="text"\} (\S+)', metrics).group(1))
        assert total("vlm_batch_requests") == len(requests) and total("vlm_batch_size") == len(everything)
        assert count("vlm_batch_requests") < len(requests), "concurrent requests shared forward passes"
        assert 'vlm_requests_total{endpoint="/embed",status="200"} %d' % len(requests) in metrics
        assert "vlm_queue_depth 0" in metrics and "vlm_request_duration_seconds_bucket" in metrics


def test_image_batches_stay_within_max_image_batch_size(tmp_path, photos):
    good, _ = photos
    ref = cli_rows(["embed-image", *good[:6], "--model", RESNET], tmp_path)
    b64 = [base64.b64encode(open(p, "rb").read()).decode() for p in good[:6]]
    # A batch lingers while a request arrives, until it is full or 10 s pass: six one-image
    # requests sent together make batches of exactly --max-image-batch-size 2 (16 would let
    # them run as one of six).
    with Server(["--image-model", RESNET, "--text-model", BERT, "--max-image-batch-size", "2", "--linger-ms", "10000"]) as s:
        arriving = PartialRequest(s.port, "/embed_image", {"inputs": b64[:2]})
        answers = {}
        threads = [threading.Thread(target=lambda k: answers.setdefault(k, s.post("/embed_image", {"inputs": [b64[k]]})), args=(k,))
                   for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for k in range(6):
            assert answers[k][0] == 200 and rel_rows(answers[k][1], ref[k:k + 1]) <= 1e-6, k
        status, v = arriving.finish()                    # two images: a full batch of its own
        assert status == 200 and rel_rows(v, ref[:2]) <= 1e-6
        metrics = wait_metric(s, "vlm_batch_size_sum", 8, kind="image")
        count = metric(metrics, "vlm_batch_size_count", kind="image")
        assert metric(metrics, "vlm_batch_size_bucket", kind="image", le="2.0") == count, "no image batch above 2"
        assert count == 4 and metric(metrics, "vlm_batch_requests_sum", kind="image") == 7


def test_concurrent_image_and_pair_requests_each_get_their_own_rows(tmp_path, photos):
    good, _ = photos
    root = os.path.dirname(good[0])
    names = [os.path.basename(p) for p in good]
    b64 = [base64.b64encode(open(p, "rb").read()).decode() for p in good]
    texts = [f"caption {k}: " + TEXTS[k % len(TEXTS)] for k in range(8)]
    images = cli_rows(["embed-image", *good, "--model", RESNET], tmp_path)
    pairs = [(k + 3) % 12 for k in range(8)]                                   # pair k: image pairs[k], texts[k]
    fused = cli_rows(["fuse", "--pairs", "-", "--image-model", RESNET, "--text-model", BERT], tmp_path,
                     stdin="".join(f"{good[i]}\t{t}\n" for i, t in zip(pairs, texts)).encode())
    # Image requests of two images (four of them: images 0-7) and pair requests of one pair
    # (eight), sent at once by as many threads. A request arriving holds each batch until it
    # is full (4 inputs, or 10 s), so requests of both kinds share forward passes, and each
    # must still get its own rows.
    requests = [("/embed_image", {"inputs": [b64[2 * k], b64[2 * k + 1]]} if k % 2 else {"paths": names[2 * k:2 * k + 2]},
                 images[2 * k:2 * k + 2]) for k in range(4)]
    requests += [("/fuse", {"inputs": [{"image": names[i], "text": t} if k % 2 else {"image_bytes": b64[i], "text": t}]}, fused[k:k + 1])
                 for k, (i, t) in enumerate(zip(pairs, texts))]
    with Server(["--image-model", RESNET, "--text-model", BERT, "--root", root, "--max-image-batch-size", "4", "--linger-ms", "10000"]) as s:
        arriving = PartialRequest(s.port, "/embed_image", {"inputs": b64[8:12]})
        answers = {}
        barrier = threading.Barrier(len(requests))

        def client(k):
            barrier.wait()
            answers[k] = s.post(requests[k][0], requests[k][1])

        threads = [threading.Thread(target=client, args=(k,)) for k in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for k, (endpoint, _, ref) in enumerate(requests):
            status, v = answers[k]
            assert status == 200 and rel_rows(v, ref) <= 1e-6, (k, endpoint, v)
        status, v = arriving.finish()
        assert status == 200 and rel_rows(v, images[8:12]) <= 1e-6
        metrics = wait_metric(s, "vlm_batch_size_sum", 12, kind="image")
        metrics = wait_metric(s, "vlm_batch_size_sum", 8, kind="pair")
        assert metric(metrics, "vlm_batch_requests_count", kind="image") == 3, "two image requests per batch, then the one that arrived last"
        assert metric(metrics, "vlm_batch_requests_count", kind="pair") == 2, "four pair requests per batch"


def test_overload_is_429_and_a_timeout_is_503(tmp_path):
    # While another request is arriving, a batch lingers for it — until the batch is full (5
    # inputs, with the one arriving) or 10 s pass: the first request holds 4 inputs of the
    # queue's 5 and the one arriving the fifth, and every request sent meanwhile is refused at
    # once with 429.
    with Server(["--text-model", BERT, "--max-queue", "5", "--max-inputs", "5", "--max-batch-size", "5", "--linger-ms", "10000"]) as s:
        slow = PartialRequest(s.port, "/embed", {"inputs": ["slow"]})
        first = {}
        t = threading.Thread(target=lambda: first.setdefault("r", s.post("/embed", {"inputs": ["a", "b", "c", "d"]})))
        t.start()
        wait_queued(s, 4)                # the first request is queued, lingering for the one arriving
        answers = []
        lock = threading.Lock()

        def client():
            r = s.post("/embed", {"inputs": ["e"]})
            with lock:
                answers.append(r)

        threads = [threading.Thread(target=client) for _ in range(16)]
        for c in threads:
            c.start()
        for c in threads:
            c.join(timeout=60)
        assert [a[0] for a in answers] == [429] * 16 and answers[0][1]["error_type"] == "Overloaded"
        assert t.is_alive(), "the first request still lingers for the one arriving"
        status, v = slow.finish()        # it arrives: the batch is full and runs
        assert status == 200 and len(v) == 1
        t.join(timeout=60)
        assert first["r"][0] == 200 and len(first["r"][1]) == 4
        status, v = s.post("/embed", {"inputs": ["after"] * 5})      # a full batch: no linger
        assert status == 200 and len(v) == 5
    # A linger never times a request out: it is capped at half the deadline.
    with Server(["--text-model", BERT, "--linger-ms", "3000", "--request-timeout", "0.6"]) as s:
        slow = PartialRequest(s.port, "/embed", {"inputs": ["slow"]})
        status, v = s.post("/embed", {"inputs": ["late"]})
        assert status == 200 and len(v) == 1
        assert slow.finish()[0] == 200
    # A request still queued at its deadline, behind a long forward pass (seconds on one
    # thread), is answered 503 then, while that pass still runs.
    with Server(["--text-model", MINILM, "--request-timeout", "0.3", "--threads", "1"]) as s:
        big = {}
        t = threading.Thread(target=lambda: big.setdefault("r", s.post("/embed", {"inputs": LONG, "truncate": True}, timeout=300)))
        t.start()
        wait_queued(s, len(LONG))
        status, r = s.post("/embed", {"inputs": ["late"]})
        assert status == 503 and r["error_type"] == "Timeout"
        assert t.is_alive(), "the deadline was answered only after the long pass"
        t.join(timeout=300)
        assert big["r"][0] == 200 and len(big["r"][1]) == len(LONG)


# 64 texts of 256 tokens: a forward pass of seconds on the real MiniLM.
LONG = [" ".join(f"word{k} number{j}" for j in range(200)) for k in range(64)]


def wait_queued(s, items):
    """Waits (bounded) until /metrics counts `items` inputs queued or running."""
    for _ in range(600):
        m = re.search(r"^vlm_queue_depth (\S+)", s.get("/metrics")[1], re.M)
        if m and float(m.group(1)) >= items:
            return
        time.sleep(0.05)
    raise AssertionError("the requests never queued")


def metric(text, name, **labels):
    """One sample of /metrics' text (labels in the order written), or None when absent."""
    key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    m = re.search("^" + re.escape(key) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def wait_metric(s, name, value, below=False, **labels):
    """/metrics' text once the sample reaches `value` — or, `below`, falls to it (bounded: batch
    metrics are recorded just after the batch's answers go out)."""
    for _ in range(600):
        text = s.get("/metrics")[1]
        got = metric(text, name, **labels) or 0
        if (got <= value) if below else (got >= value):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{name}{labels} never {'fell to' if below else 'reached'} {value}: {metric(text, name, **labels)}")


# Bytes read past one answer (the next answers, when the server's replies to pipelined
# requests arrive in one recv), kept for the next read_answer or closes on that socket.
_unread = weakref.WeakKeyDictionary()


def read_answer(sock):
    """One HTTP answer from a raw socket: (status, lower-cased headers, body), skipping 1xx."""
    data = _unread.pop(sock, b"")
    while True:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed before an answer: {data!r}"
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        if status >= 200:
            break
    length = int(headers.get("content-length", "0"))
    while len(data) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside an answer"
        data += chunk
    if data[length:]:
        _unread[sock] = data[length:]
    return status, headers, data[:length]


def closes(sock, within=10):
    """Whether the server closes the connection (within `within` s) with nothing more to say."""
    if _unread.get(sock):
        return False
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def idle_connection(s):
    """A keep-alive connection the server has accepted and answered once, left idle."""
    c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(c)[0] == 200
    return c


def test_pipelined_requests_are_answered_in_order():
    body = json.dumps({"inputs": ["a cat"]}).encode()

    def post(version, extra=""):
        return (f"POST /embed HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body

    with Server(["--text-model", BERT, "--max-queue", "3", "--max-inputs", "2"]) as s:
        # Pipelined requests are answered in order; the connection closes after the one that
        # asked for it, not before.
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(post("1.1", "Connection: keep-alive\r\n") * 2 + post("1.1", "Connection: close\r\n"))
            assert [read_answer(c)[0] for _ in range(3)] == [200] * 3 and closes(c)
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(post("1.1") + post("1.0") + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert [read_answer(c)[0] for _ in range(2)] == [200] * 2 and closes(c)


def test_connections_close_when_http_says_so():
    body = json.dumps({"inputs": ["a cat"]}).encode()

    def post(version, extra=""):
        return (f"POST /embed HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body

    with Server(["--text-model", BERT, "--max-body-bytes", "1000", "--max-buffered-bytes", "1000", "--read-timeout", "1",
                 "--max-queue", "3", "--max-inputs", "2"]) as s:
        # HTTP/1.0: the request is the connection's last, unless it asks for keep-alive.
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(post("1.0"))
            status, headers, _ = read_answer(c)
            assert status == 200 and headers.get("connection") == "close" and closes(c)
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            for _ in range(2):
                c.sendall(post("1.0", "Connection: keep-alive\r\n"))
                status, headers, _ = read_answer(c)
                assert status == 200 and headers.get("connection") == "keep-alive"
        # A body over the limit by its Content-Length: 413 without 100-continue, and the
        # connection closes (the body is never read).
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            c.settimeout(30)
            first = c.recv(12)
            assert first.startswith(b"HTTP/1.1 413"), first
        # Over the limit as it arrives (chunked), and a body too slow: 413 and 408, then closed.
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + b"".join(b"200\r\n" + b" " * 512 + b"\r\n" for _ in range(3)))
            status, headers, answer = read_answer(c)
            assert status == 413 and "--max-body-bytes" in json.loads(answer)["error"] and closes(c)
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(post("1.1")[:-3])
            status, headers, answer = read_answer(c)
            assert status == 408 and headers.get("connection") == "close" and closes(c)
        # Bodies held at once are bounded (--max-buffered-bytes): one of 900 bytes half in, a
        # second that would pass 1000 is answered 429 and its connection closed.
        held = json.dumps({"inputs": ["x" * 870], "truncate": True}).encode()
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as first, \
                socket.create_connection(("127.0.0.1", s.port), timeout=30) as second:
            first.sendall(f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: {len(held)}\r\n\r\n".encode() + held[:800])
            # /metrics' gauge says when the server holds those 800 bytes.
            wait_metric(s, "vlm_body_bytes_held", 800)
            extra = json.dumps({"inputs": ["y" * 300]}).encode()
            second.sendall(f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: {len(extra)}\r\n\r\n".encode() + extra)
            status, headers, answer = read_answer(second)
            assert status == 429 and "--max-buffered-bytes" in json.loads(answer)["error"] and headers.get("retry-after") == "1"
            assert closes(second)
            first.sendall(held[800:])
            assert read_answer(first)[0] == 200
        # Every byte is given back once its request is answered.
        assert metric(wait_metric(s, "vlm_body_bytes_held", 0, below=True), "vlm_body_bytes_held") == 0
        # Admission comes before the body: with the queue's room taken by requests arriving,
        # the next is answered 429 without sending a byte of its body, and is not told to
        # send it (no 100 Continue).
        arriving = [PartialRequest(s.port, "/embed", {"inputs": ["slow"]}) for _ in range(3)]
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n")
            status, headers, answer = read_answer(c)
            assert status == 429 and json.loads(answer)["error_type"] == "Overloaded"
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 900\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            first = c.recv(12)
            assert first == b"HTTP/1.1 429", first
        assert [a.finish()[0] for a in arriving] == [200] * 3


def test_max_connections_holds_the_next_connection_until_one_closes():
    # --max-connections 2: with two open the server stops accepting (Hummingbird's
    # MaximumAvailableConnections stops reading its listening socket). The third connection is
    # not refused — the kernel completes it into the listen backlog — but its request is not
    # read or answered until one of the two closes.
    with Server(["--text-model", BERT, "--max-connections", "2"]) as s:
        held = [idle_connection(s) for _ in range(2)]
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as third:
            third.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            for c in held:                                   # the two are still served
                c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_answer(c)[0] == 200
            # Nothing comes on the third. (A negative needs a window: this one can only let a
            # server that answers late pass, never fail one that holds the connection.)
            third.settimeout(1)
            with pytest.raises(socket.timeout):
                third.recv(1)
            held.pop(0).close()
            third.settimeout(30)
            assert read_answer(third)[0] == 200, "served once one of the two closed"
        held[0].close()


def test_idle_connections_close_after_idle_timeout_but_not_inside_a_request():
    with Server(["--text-model", BERT, "--idle-timeout", "0.5"]) as s:
        busy = PartialRequest(s.port, "/embed", {"inputs": ["half sent"]})   # quiet inside a request
        idle = idle_connection(s)                                            # answered after busy went quiet
        assert closes(idle), "the idle keep-alive connection was closed by the server"
        idle.close()
        # busy has been quiet longer than idle was: it is still open, and answered.
        status, v = busy.finish()
        assert status == 200 and len(v) == 1


def test_sigterm_drains_requests_in_flight_and_exits_0(tmp_path):
    ref = texts_cli(["in flight", "half sent"], BERT, tmp_path)
    # A batch lingers until it is full (2 texts) or 10 s pass: the queued request cannot be
    # answered before the half-sent one arrives.
    s = Server(["--text-model", BERT, "--linger-ms", "10000", "--max-batch-size", "2"])
    slow = PartialRequest(s.port, "/embed", {"inputs": ["half sent"]})
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("r", s.post("/embed", {"inputs": ["in flight"]})))
    t.start()
    wait_queued(s, 1)                    # one request queued and lingering, one half sent
    idle = idle_connection(s)
    s.proc.send_signal(signal.SIGTERM)
    assert closes(idle), "the drain began: idle connections are closed"
    assert t.is_alive(), "the queued request is still lingering"
    status, v = slow.finish()            # the half-sent one is still read and answered
    assert status == 200 and rel_rows(v, ref[1:]) <= 1e-6
    t.join(timeout=60)
    assert s.proc.wait(timeout=60) == 0, "".join(s.lines)
    status, v = got["r"]
    assert status == 200 and rel_rows(v, ref[:1]) <= 1e-6
    with pytest.raises(OSError):
        s.request("GET", "/health", timeout=5)


def test_a_stalled_upload_cannot_hold_the_shutdown():
    # The drain waits --shutdown-timeout for a body that never arrives, then exits 1; a second
    # signal cuts it short at once.
    for second in (False, True):
        s = Server(["--text-model", BERT, "--shutdown-timeout", "2" if not second else "60"])
        stalled = PartialRequest(s.port, "/embed", {"inputs": ["never finished"]})
        idle = idle_connection(s)
        s.proc.send_signal(signal.SIGTERM)
        if second:                       # once the drain has begun (it closes idle connections)
            assert closes(idle), "the drain began: idle connections are closed"
            s.proc.send_signal(signal.SIGINT)
        assert s.proc.wait(timeout=30) == 1
        assert "the drain was cut short" in "".join(s.lines + [s.proc.stderr.read().decode()])
        stalled.sock.close()
        idle.close()


def test_a_cut_short_drain_answers_what_is_queued_without_running_it():
    # One long forward pass runs, three requests wait behind it; the drain is cut short by a
    # second signal while that pass runs: the waiting ones are answered 503 (stopping), not
    # run, and vlm exits 1.
    # Two engine threads: the long pass (about 0.4 TFLOP) lasts over a second even on the
    # fastest cores, so it is still running when the cut comes (checked below, not assumed);
    # the requests behind it are tokenized meanwhile (a free engine thread takes that first).
    s = Server(["--text-model", MINILM, "--shutdown-timeout", "60", "--max-batch-size", "64", "--threads", "2"])
    got = {}

    def client(k):
        try:
            got[k] = s.post("/embed", {"inputs": LONG, "truncate": True}, timeout=300)
        except OSError as e:
            got[k] = (None, str(e))

    threads = [threading.Thread(target=client, args=(0,))]
    threads[0].start()
    wait_queued(s, len(LONG))
    for k in (1, 2, 3):
        threads.append(threading.Thread(target=client, args=(k,)))
        threads[-1].start()
    wait_queued(s, 4 * len(LONG))
    idle = idle_connection(s)
    # The first pass has not ended (no text batch recorded), and it lasts seconds: the cut
    # follows at once, on events (the drain has begun; a second signal), not after a delay.
    assert metric(s.get("/metrics")[1], "vlm_batch_size_count", kind="text") is None, "the first pass is still running"
    s.proc.send_signal(signal.SIGTERM)
    assert closes(idle), "the drain began: idle connections are closed"
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=120) == 1
    idle.close()
    for t in threads:
        t.join(timeout=60)
    note = "".join(s.lines + [s.proc.stderr.read().decode()])
    # The long pass (seconds) is still running at the cut: it and the three queued behind it
    # are answered 503 (stopping) at once, none left without an answer.
    m = re.search(r"the drain was cut short .*: (\d+) requests queued, running or arriving were answered 503", note)
    assert m and int(m.group(1)) == 4, note
    for k in (0, 1, 2, 3):
        assert got[k][0] == 503 and got[k][1]["error"] == "the server is stopping", got[k]
