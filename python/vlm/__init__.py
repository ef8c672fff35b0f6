"""vlm from Python: `Worker` owns one long-lived `vlm worker` child and speaks its JSON-lines
protocol (requests on the child's stdin, one response per request, in order, on its stdout).

    with vlm.Worker(text_model="models/all-MiniLM-L6-v2") as w:
        vectors, errors = w.embed_texts(["a cat", "a dog"])    # (2, 384) float32, []

Rows come back in input order; a failed item's row is NaN and its entry in `errors` is
(index, kind, message). The binary is `$VLM_BINARY`, else `vlm` on PATH. If the child dies, it is
restarted and the unanswered requests are sent again; an item that kills it a second time
becomes an error row (kind "worker_crash"), never a failed call.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np

__all__ = ["Worker", "WorkerError", "find_binary"]
__version__ = "0.2.0"


class WorkerError(RuntimeError):
    """The worker could not start, or its options were refused."""


def find_binary():
    """$VLM_BINARY, else `vlm` on PATH."""
    path = os.environ.get("VLM_BINARY") or shutil.which("vlm")
    if not path:
        raise WorkerError("no vlm binary: put it on PATH or set VLM_BINARY")
    return path


def _flags(options):
    """Keyword options as worker flags: max_length=128 → --max-length 128; normalize=False →
    --no-normalize; normalize_parts=True → --normalize-parts; None → nothing."""
    out = []
    for key, value in options.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            out += [flag, ",".join(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out


class _Child:
    """One running `vlm worker`: a writer thread feeds it requests while the caller reads."""

    def __init__(self, argv, env):
        # Buffered pipes (an unbuffered readline reads a byte per system call); the writer
        # flushes after each batch of requests.
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     bufsize=1 << 20)
        self.last_error = ""
        # The child's stderr goes on to ours (Ray shows it in the actor's log); its last line is
        # kept for messages.
        def relay():
            for line in self.proc.stderr:
                text = line.decode(errors="replace")
                sys.stderr.write(text)
                if text.strip():
                    self.last_error = text.strip()
        threading.Thread(target=relay, daemon=True).start()

    def exchange(self, lines, on_response):
        """Sends `lines` (bytes each, newline-terminated) from a thread and calls on_response with
        each response line as it arrives. Returns the number of responses read (fewer than sent
        when the child died)."""
        def write():
            try:
                for line in lines:
                    self.proc.stdin.write(line)
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        got = 0
        while got < len(lines):
            line = self.proc.stdout.readline()
            if not line.endswith(b"\n"):
                # The end of the pipe, or a line cut short by the child's death: the request is
                # unanswered (resent to the next child), never parsed as a half answer.
                break
            on_response(got, line)
            got += 1
        writer.join()
        return got

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Worker:
    """A context manager owning one `vlm worker` child.

    image_model, text_model: the worker's --image-model and --text-model (None: vlm's defaults).
    threads: --threads (None: $OMP_NUM_THREADS, which Ray and Spark set, else the CPUs the process may use).
    **options: the worker's flags by name, e.g. max_length=128, normalize=False, layer="logits",
    resize=232, normalize_parts=True, image_batch_size=16.
    """

    def __init__(self, image_model=None, text_model=None, threads=None, binary=None, **options):
        self.binary = binary or find_binary()
        opts = dict(image_model=image_model, text_model=text_model, threads=threads)
        opts.update(options)
        self.argv = [self.binary, "worker", "--vectors", "base64"] + _flags(opts)
        self.env = dict(os.environ)
        self.starts = 0        # children started (1, plus one per restart)
        self._child = None
        self._lock = threading.Lock()
        # A child killed by a signal while starting (an engine's OOM killer, a test) is started
        # again, once; one that exits by itself (a bad model, a bad flag) is an error at once.
        for attempt in range(2):
            self._start()
            first = self._child
            out = self._child.exchange([b'{"id": "info", "info": true}\n'], lambda k, line: None)
            if out != 0:
                break
            first.proc.wait()
            if first.proc.returncode >= 0 or attempt == 1:
                raise WorkerError(f"vlm worker did not start ({' '.join(self.argv)}): {first.last_error or 'exit code ' + str(first.proc.returncode)}")

    # -- lifecycle

    def _start(self):
        self._child = _Child(self.argv, self.env)
        self.starts += 1
        log = os.environ.get("VLM_WORKER_START_LOG")   # one line per child started, for tests and audits
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {self._child.proc.pid}\n")

    def close(self):
        if self._child is not None:
            self._child.close()
            self._child = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def pid(self):
        return self._child.proc.pid if self._child else None

    # -- the protocol

    def info(self):
        """The worker's {"info": true} answer: models, dimensions, options."""
        out = self._run([{"id": "info", "info": True}])
        return out[0].get("info", out[0])

    def _run(self, requests):
        """Responses (parsed JSON) for `requests`, in order, surviving child crashes: unanswered
        requests are sent again to a new child; after a crash, they go one at a time, so the item
        that kills a child is found, and one that kills it twice is answered with an error."""
        with self._lock:
            responses = [None] * len(requests)
            crashes = [0] * len(requests)
            lines = [json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in requests]
            pending = list(range(len(requests)))
            careful = False
            while pending:
                if self._child is None or not self._child.alive():
                    self._start()
                batch = pending[:1] if careful else pending

                def store(k, line, batch=batch):
                    responses[batch[k]] = json.loads(line)
                got = self._child.exchange([lines[i] for i in batch], store)
                if got == len(batch):
                    pending = pending[len(batch):]
                    careful = False
                    continue
                # The child died: the first unanswered request was running (in careful mode,
                # certainly; otherwise perhaps) when it did.
                self._child.close()
                self._child = None
                first = batch[got]
                crashes[first] += 1
                pending = pending[got:]
                if crashes[first] >= 2:
                    responses[first] = {"id": requests[first].get("id"),
                                        "error": {"kind": "worker_crash", "message": "the vlm worker died twice on this item"}}
                    pending = pending[1:]
                careful = True
            return responses

    def _embed(self, requests):
        # A missing value (None, NaN, pandas' NA: a null cell of a Spark or Dask frame) is an
        # error row of kind "missing", never the text "None" or "nan".
        present = [i for i, r in enumerate(requests) if r is not None]
        answered = self._run([requests[i] for i in present]) if present else []
        out = [{"error": {"kind": "missing", "message": "no value (None, NaN or NA)"}}] * len(requests)
        for i, r in zip(present, answered):
            out[i] = r
        dim = next((r["dim"] for r in out if "dim" in r), None)
        if dim is None:
            dim = self._dim_for([requests[i] for i in present] or self._kind_of(requests))
        if not dim:
            # No model answers this kind of request: rows without width would be no rows at all.
            raise WorkerError("no model can embed these inputs: " + self._why_not([requests[i] for i in present] or self._kind_of(requests)))
        vectors = np.full((len(requests), dim), np.nan, dtype=np.float32)
        errors = []
        for i, r in enumerate(out):
            if "vector" in r:
                vectors[i] = np.frombuffer(base64.b64decode(r["vector"]), dtype="<f4")
            else:
                e = r.get("error", {})
                errors.append((i, e.get("kind", "error"), e.get("message", "")))
        return vectors, errors

    @staticmethod
    def _kind_of(requests):
        """A stand-in request of the batch's kind, when every value is missing."""
        return getattr(requests, "kind", [])

    def _why_not(self, requests):
        info = self.info()
        sample = requests[0] if requests else {}
        kinds = [k for k in ("image", "text") if k in sample or (k == "image" and "image_bytes" in sample)]
        reasons = [f"{k} model {info.get(k + '_model', '?')}: {info[k + '_error']}" for k in kinds if info.get(k + "_error")]
        return "; ".join(reasons) or "the worker reports no dimension for them"

    def _dim_for(self, requests):
        info = self.info()
        if requests and "text" in requests[0] and ("image" in requests[0] or "image_bytes" in requests[0]):
            return int(info.get("pair_dim", 0))
        if requests and "text" in requests[0]:
            return int(info.get("text_dim", 0))
        return int(info.get("image_dim", 0))

    def embed_images(self, paths):
        """(vectors (N, D) float32, errors) for image files."""
        return self._embed(_Requests([None if _missing(p) else {"id": str(i), "image": os.fspath(p)} for i, p in enumerate(paths)],
                                     {"image": ""}))

    def embed_image_bytes(self, blobs):
        """(vectors, errors) for encoded JPEG/PNG bytes."""
        return self._embed(_Requests([None if _missing(b) else {"id": str(i), "image_bytes": base64.b64encode(bytes(b)).decode()}
                                      for i, b in enumerate(blobs)], {"image": ""}))

    def embed_texts(self, texts):
        """(vectors, errors) for texts."""
        return self._embed(_Requests([None if _missing(t) else {"id": str(i), "text": str(t)} for i, t in enumerate(texts)], {"text": ""}))

    def embed_pairs(self, paths, texts):
        """(vectors, errors) for image–text pairs: image vector ⧺ text vector, as `vlm fuse`."""
        paths, texts = list(paths), list(texts)
        if len(paths) != len(texts):
            raise ValueError(f"{len(paths)} images but {len(texts)} texts")
        return self._embed(_Requests([None if _missing(p) or _missing(t) else {"id": str(i), "image": os.fspath(p), "text": str(t)}
                                      for i, (p, t) in enumerate(zip(paths, texts))], {"image": "", "text": ""}))


class _Requests(list):
    """Requests, with the kind of request they are (for the width when none can be sent)."""

    def __init__(self, items, kind):
        super().__init__(items)
        self.kind = [kind]


def _missing(value):
    """None, a float NaN (numpy's included), or pandas' NA / NaT."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)) and value != value:
        return True
    return type(value).__name__ in ("NAType", "NaTType")
