"""vlm serve as a hostile or careless client meets it (issue 27): double signals on an idle
server, links out of --root, huge files named by path, slow and garbled requests, and what
/metrics and /info say of them. Every wait is for an event, bounded by a timeout that only
fails; every request loop is bounded; the server listens on loopback only."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BERT, IMAGES, RESNET, VLM
from test_serve import Server, closes, read_answer


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))


def start_idle(args=()):
    """A server that has printed its address (so its signal handlers are in place)."""
    p = subprocess.Popen([VLM, "serve", "--port", "0", "--text-model", BERT, *args], stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = p.stderr.readline().decode()
        assert line, "vlm serve ended before listening"
        if "serving on" in line:
            return p
    raise AssertionError("vlm serve did not listen within 60 s")


def test_two_signals_on_an_idle_server_exit_0():
    # `timeout` and many supervisors send SIGTERM and soon after another: an idle server has
    # nothing to cut short, so it exits 0 every time. 52 servers, four at a time.
    codes = []
    for _ in range(13):
        procs = [start_idle() for _ in range(4)]
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.send_signal(signal.SIGTERM if len(codes) % 2 == 0 else signal.SIGINT)
        for p in procs:
            codes.append(p.wait(timeout=60))
            rest = p.stderr.read().decode()
            assert "cut short" not in rest, rest
    assert codes == [0] * 52


def test_links_out_of_the_root_are_403_whether_or_not_their_target_exists(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(open(os.path.join(IMAGES, "coffee.jpg"), "rb").read())
    os.symlink(outside, root / "exists.jpg")
    os.symlink(tmp_path / "missing.jpg", root / "dangling.jpg")
    os.symlink(tmp_path / "nowhere", root / "dangling-dir")
    with Server(["--image-model", RESNET, "--root", str(root)]) as s:
        for name in ("exists.jpg", "dangling.jpg", "dangling-dir/x.jpg"):
            status, r = s.post("/embed_image", {"paths": [name]})
            assert status == 403, (name, status, r)
            assert "outside the server's root" in r["error"]
        status, r = s.post("/embed_image", {"paths": ["not-there.jpg"]})
        assert status == 404, r


def test_an_image_path_over_the_body_limit_is_refused_before_it_is_read(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    big = root / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(1 << 30)                 # 1 GiB, sparse: costs no disk
    with Server(["--image-model", RESNET, "--root", str(root), "--max-body-bytes", str(8 << 20)]) as s:
        before = vm_hwm_kib(s.proc.pid)
        for _ in range(6):
            status, r = s.post("/embed_image", {"paths": ["big.jpg"]})
            assert status == 413 and "--max-body-bytes" in r["error"], r
        # Not one byte of the file was held: the peak grew by far less than the file.
        assert vm_hwm_kib(s.proc.pid) - before < 64 * 1024


def test_metrics_count_what_the_http_layer_and_the_router_refuse():
    with Server(["--text-model", BERT]) as s:
        assert s.request("GET", "/nowhere")[0] == 404
        assert s.request("GET", "/embed")[0] == 405
        for raw in (b"GARBAGE\r\n\r\n", b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"):
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            sock.sendall(raw)
            status, _, _ = read_answer(sock)
            assert status == 400
            sock.close()
        metrics = s.get("/metrics")[1]
        assert re.search(r'vlm_requests_total\{endpoint="\(unknown\)",status="404"\} 1', metrics), metrics
        assert re.search(r'vlm_requests_total\{endpoint="/embed",status="405"\} 1', metrics), metrics
        assert re.search(r'vlm_requests_total\{endpoint="\(unparsed\)",status="400"\} 2', metrics), metrics


def test_slow_clients_get_408_not_a_silent_close():
    # A body shorter than its Content-Length, with an idle timeout shorter than the read
    # timeout: answered 408 at --read-timeout, not closed silently by the idle timer.
    with Server(["--text-model", BERT, "--idle-timeout", "1", "--read-timeout", "2"]) as s:
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"in")
        status, _, body = read_answer(sock)
        assert status == 408 and "--read-timeout" in json.loads(body)["error"]
        assert closes(sock)
        assert 'endpoint="(unparsed)"' not in s.get("/metrics")[1], "the short body's 408 is the request's, counted once" 
    # Headers dribbled a byte at a time are bounded by --read-timeout, not by the idle timer.
    with Server(["--text-model", BERT, "--idle-timeout", "60", "--read-timeout", "2"]) as s:
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        stop = threading.Event()

        def dribble():
            for b in b"POST /embed HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
                if stop.is_set():
                    return
                try:
                    sock.send(bytes([b]))
                except OSError:
                    return
                time.sleep(0.05)

        t = threading.Thread(target=dribble, daemon=True)
        t.start()
        status, _, body = read_answer(sock)      # bounded by the socket's 30 s timeout
        stop.set()
        assert status == 408 and "headers" in json.loads(body)["error"]
        sock.close()
        # Counted once, as the 408 it was (not also as a 400 when the connection closed).
        metrics = s.get("/metrics")[1]
        assert re.search(r'vlm_requests_total\{endpoint="\(unparsed\)",status="408"\} 1', metrics), metrics
        assert 'status="400"' not in metrics, metrics
        # An idle keep-alive connection is still closed by --idle-timeout, after a full answer.
    with Server(["--text-model", BERT, "--idle-timeout", "1"]) as s:
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[0] == 200
        assert closes(sock)


def test_multipart_image_parts_without_a_filename_are_images(tmp_path):
    jpeg = open(os.path.join(IMAGES, "coffee.jpg"), "rb").read()
    with Server(["--image-model", RESNET]) as s:
        boundary = "vlmtestboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"\r\n\r\n".encode() + jpeg
                + f"\r\n--{boundary}--\r\n".encode())
        status, _, data = s.request("POST", "/embed_image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status == 200 and len(json.loads(data)) == 1
        body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{boundary}--\r\n".encode()
        status, _, data = s.request("POST", "/embed_image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status == 422 and "no image part" in json.loads(data)["error"] and '"note"' in json.loads(data)["error"]


def test_start_up_messages_and_info():
    # --max-queue alone lowers the per-request default; it does not blame --max-inputs.
    p = start_idle(["--max-queue", "64"])
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 0
    # An address that is none: one line, no Swift type name.
    r = subprocess.run([VLM, "serve", "--port", "0", "--text-model", BERT, "--host", "999.1.1.1"], capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode != 0 and "999.1.1.1" in err and "NIO" not in err and "Error(" not in err, err
    assert len([l for l in err.splitlines() if not l.startswith("vlm: note:")]) == 1, err
    # OPENBLAS_CORETYPE from the environment is kept and reported as the environment's choice.
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell")
    p = subprocess.Popen([VLM, "serve", "--port", "0", "--text-model", BERT], stderr=subprocess.PIPE, env=env)
    port = None
    while port is None:
        line = p.stderr.readline().decode()
        assert line, "vlm serve ended before listening"
        m = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
        port = int(m.group(1)) if m else None
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/info")
    info = json.loads(c.getresponse().read())
    c.close()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 0
    assert info["openblas_kernels"].startswith("Haswell (set by OPENBLAS_CORETYPE=Haswell in the environment"), info


def test_info_says_which_models_are_loaded_and_why_not(tmp_path, monkeypatch):
    # The default image model's folder, without weights (as on a fresh clone): the server runs
    # for texts, and /info says the image model is not loaded, and why, without the server's paths.
    (tmp_path / "resnet50").mkdir()
    monkeypatch.setenv("VLM_MODELS", str(tmp_path))
    with Server(["--text-model", BERT]) as s:
        status, info = s.get("/info")
        assert status == 200 and info["text_loaded"] is True and info["image_loaded"] is False, info
        assert "vlm models fetch resnet50" in info["image_error"] and str(tmp_path) not in info["image_error"], info
        assert s.post("/embed_image", {"inputs": ["eA=="]})[0] == 503


def test_answers_end_in_a_newline_and_latency_is_labelled_by_status(tmp_path):
    # A shell loop appending each answer to a file gets one line per answer.
    with Server(["--text-model", BERT]) as s:
        out = b""
        for t in ("a cat", "a dog"):
            status, _, data = s.request("POST", "/embed", {"inputs": t})
            assert status == 200 and data.endswith(b"]\n")
            out += data
        assert [len(json.loads(l)) for l in out.decode().splitlines()] == [1, 1]
        status, _, data = s.request("POST", "/embed", b"{", {"Content-Type": "application/json"})
        assert status == 400 and data.endswith(b"}\n")
        metrics = s.get("/metrics")[1]
        assert re.search(r'vlm_request_duration_seconds_count\{endpoint="/embed",status="200"\} 2', metrics), metrics
        assert re.search(r'vlm_request_duration_seconds_count\{endpoint="/embed",status="400"\} 1', metrics), metrics


def test_a_cut_drain_under_image_load_answers_every_request(tmp_path):
    # 24 clients each send 4 large photos by path; two signals cut the drain while decoding
    # and forward passes run. Every client gets an answer (200 before the cut, 503 after),
    # none a connection closed without one, and the server ends promptly.
    import shutil
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(os.path.join(IMAGES, "large_4032x3024.jpg"), root / "big.jpg")
    s = Server(["--image-model", RESNET, "--root", str(root), "--shutdown-timeout", "60"])
    got, lock = [], threading.Lock()

    def client():
        try:
            status, _ = s.post("/embed_image", {"paths": ["big.jpg"] * 4}, timeout=120)
        except (OSError, http.client.HTTPException) as e:
            status = repr(e)
        with lock:
            got.append(status)

    threads = [threading.Thread(target=client) for _ in range(24)]
    for t in threads:
        t.start()
    # Wait (bounded) until some requests are being worked on, then cut.
    for _ in range(200):
        m = re.search(r'^vlm_batch_size_count\{kind="image"\} (\S+)', s.get("/metrics")[1], re.M)
        if m and float(m.group(1)) >= 1:
            break
        time.sleep(0.05)
    s.proc.send_signal(signal.SIGTERM)
    s.proc.send_signal(signal.SIGTERM)
    code = s.proc.wait(timeout=60)
    for t in threads:
        t.join(timeout=60)
    assert len(got) == 24 and all(g in (200, 503) for g in got), got
    assert code in (0, 1), "".join(s.lines)
