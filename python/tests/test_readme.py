"""Every fenced sh and python block of README.md, run as written, in README order, in one
sandbox folder laid out as a user's would be: `vlm` on PATH, the models folder ($VLM_MODELS) with
the real all-MiniLM-L6-v2 and a seeded full-size ResNet-50 standing in for `vlm models fetch
resnet50`, and small inputs under the names the README uses (photos/, cat.jpg, captions.txt, …).

What is substituted, and nothing else: the absolute example folders (/data, /out, /models) move
into the sandbox, the port 8080 becomes a free loopback port, and `vlm bench` lines get a small
input size and one timed run. Each shell block runs under `set -e -o pipefail`, so any failing
command fails the test with its README line; each python block runs in a fresh interpreter.

What the README shows is checked too: a comment that starts with `{` or `[` — on its own line
after a command, or at the end of the command's line — is that command's stdout (up to the first
run of two spaces; `...`/`…` stand for anything, a decimal number for any number, whitespace is
ignored), and a comment line starting with `vlm:` must appear on the block's stderr.

Blocks or commands that cannot run here are marked in README.md's source, just before the block:
    <!-- readme-test: skip NAME -- reason -->
    <!-- readme-test: without "COMMAND" -- reason -->
and this file lists the names it expects (SKIPPED, WITHOUT), so a new skip fails until it is
reviewed here too; pytest reports each skip with its reason."""
import os
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import IMAGES, ROOT, VLM

README = os.path.join(ROOT, "README.md")
GENERATED = os.path.join(ROOT, "Tests", "Fixtures", "generated")
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")

# Skips the README declares, by name: each must be here, and each here must be in the README.
SKIPPED = {"make", "spark-frame", "spark-embed", "dask-embed"}
WITHOUT = {"vlm models fetch resnet50"}

MARKER = re.compile(r'<!--\s*readme-test:\s*(skip\s+(?P<name>[\w-]+)|without\s+"(?P<command>[^"]+)")\s*--\s*(?P<reason>.*?)\s*-->')


def blocks():
    """(name, language, first line's README line number, text, skip reason, {command: reason})."""
    lines = open(README, encoding="utf-8").read().split("\n")
    found, heading, count, pending = [], "top", {}, []
    k = 0
    while k < len(lines):
        line = lines[k]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        m = MARKER.search(line)
        if m:
            pending.append(m)
        if re.match(r"^\s*(```|~~~)", line) and not re.match(r"^```(\w*)\s*$", line):
            raise AssertionError(f"README.md:{k + 1}: a fence this test does not read ({line.strip()!r}): use ```sh, ```python or ```text")
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            end = k + 1
            while not lines[end].startswith("```"):
                end += 1
            language = fence.group(1)
            # Every block is run, skipped by name, or declared text: none is passed over unseen.
            assert language in ("sh", "python", "text"), f"README.md:{k + 1}: block language {language!r}: use sh, python or text"
            if language in ("sh", "python"):
                count[heading] = count.get(heading, 0) + 1
                skip = next((m for m in pending if m.group("name")), None)
                name = skip.group("name") if skip else f"{heading} #{count[heading]}"
                without = {m.group("command"): m.group("reason") for m in pending if m.group("command")}
                found.append((name, language, k + 2, "\n".join(lines[k + 1:end]),
                              skip.group("reason") if skip else None, without))
            pending = []
            k = end
        elif line.strip() and not m:
            pending = []
        k += 1
    return found


BLOCKS = blocks()


def test_the_skips_are_the_reviewed_ones():
    assert {b[0] for b in BLOCKS if b[4] is not None} == SKIPPED
    assert {c for b in BLOCKS for c in b[5]} == WITHOUT
    for b in BLOCKS:
        for command in b[5]:
            assert command in b[3], f"{b[0]}: the marked command {command!r} is not in the block"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The user's folder: inputs under the README's names, models, `vlm` on PATH."""
    s = tmp_path_factory.mktemp("readme")
    bin_dir = s / ".bin"
    bin_dir.mkdir()
    os.symlink(VLM, bin_dir / "vlm")
    models = s / "models"
    models.mkdir()
    for name in ("registry.json", "imagenet_classes.txt"):
        os.symlink(os.path.join(ROOT, "models", name), models / name)
    os.symlink(MINILM, models / "all-MiniLM-L6-v2")
    (models / "resnet50").mkdir()  # seeded weights of the real architecture, in fetch's place
    os.symlink(os.path.join(GENERATED, "resnet50", "model.safetensors"), models / "resnet50" / "model.safetensors")
    # A small CLIPModel of the hub's layout with seeded weights, in a downloaded checkpoint's place.
    os.symlink(os.path.join(GENERATED, "clip-models", "hf-vit"), models / "clip-vit-base-patch32")

    photos = ["astronaut.jpg", "coffee.jpg", "chelsea.png", "rocket.jpg", "hubble.jpg", "palette.png",
              "camera_gray.png", "coins_gray.jpg"]
    (s / "photos").mkdir()
    for p in photos:
        shutil.copy(os.path.join(IMAGES, p), s / "photos" / p)
    shutil.copy(os.path.join(IMAGES, "chelsea.jpg"), s / "cat.jpg")
    from PIL import Image
    Image.open(os.path.join(IMAGES, "coffee.jpg")).save(s / "dog.png")
    (s / "data" / "photos" / "2024").mkdir(parents=True)
    for p in ("chelsea.jpg", "rocket.jpg", "astronaut.jpg"):
        shutil.copy(os.path.join(IMAGES, p), s / "data" / "photos" / "2024" / p.replace("chelsea", "cat"))
    (s / "out").mkdir()

    shutil.copy(os.path.join(ROOT, "demo", "captions.txt"), s / "captions.txt")
    (s / "docs.jsonl").write_text("".join(
        f'{{"id": "doc-{k}", "title": "Title {k}", "body": "The body of document {k}, about cats and dogs."}}\n'
        for k in range(5)))
    (s / "huge.txt").write_text("".join(f"line {k}: a sentence about the weather\n" for k in range(40)))
    (s / "queries.txt").write_text("a cat on a couch\nthe rocket launch\nhot coffee\n")
    (s / "pairs.tsv").write_text("".join(f"photos/{p}\tA photo named {p}.\n" for p in photos))
    rng = np.random.default_rng(0)
    for name in ("features.npy", "more.npy"):
        np.save(s / name, rng.standard_normal((300, 2048)).astype(np.float32))
    import torch
    from safetensors.torch import load_file
    state = load_file(os.path.join(ROOT, "Tests", "Fixtures", "resnet", "bottleneck_f32", "model.safetensors"))
    for name in ("resnet50-11ad3fa6.pth", "finetuned.pth"):
        torch.save(state, s / name)
    return s


def environment(sandbox):
    env = {k: v for k, v in os.environ.items() if k != "VLM_BINARY"}
    env["PATH"] = f"{sandbox / '.bin'}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
    env["VLM_MODELS"] = str(sandbox / "models")
    env["JOB_COMPLETION_INDEX"] = "63"     # shard 64/64: the last photo (shard 1/64 of a few is empty)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def substituted(text, sandbox, port):
    for folder in ("/data", "/out", "/models"):
        text = re.sub(r"(?<![\w./])" + folder + r"(?=/|\b)", str(sandbox) + folder, text)
    text = re.sub(r"\b8080\b", str(port), text)
    return re.sub(r"^(vlm bench [^#\n]*?)(\s*(#.*)?)$", r"\1 --size 64 --min-iterations 1 --min-time 0\2", text, flags=re.M)


def split_comment(line):
    """(code, comment) of a shell line: the comment starts at a # outside quotes after a blank."""
    quote, escaped = None, False
    for k, c in enumerate(line):
        if escaped:
            escaped = False
        elif quote:
            if c == "\\" and quote == '"':
                escaped = True
            elif c == quote:
                quote = None
        elif c == "\\":
            escaped = True
        elif c in "'\"":
            quote = c
        elif c == "#" and (k == 0 or line[k - 1] in " \t"):
            return line[:k], line[k + 1:].strip()
    return line, None


def shown(comment):
    return re.split(r"\s{2,}", comment)[0]


def output_pattern(text):
    """A README sample of output as a regex over the output with its whitespace removed."""
    out = ""
    for token in re.findall(r"\.\.\.|…|-?\d+\.\d+(?:[eE][-+]?\d+)?|\s+|.", text):
        if token in ("...", "…"):
            out += ".*?"
        elif re.fullmatch(r"-?\d+\.\d+(?:[eE][-+]?\d+)?", token):
            out += r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
        elif not token.isspace():
            out += re.escape(token)
    return out


def instrumented(text, outputs):
    """The block with each command whose output the README shows piped through tee into
    `outputs` (keeping every line where it was), and [(file, shown output)] to compare."""
    lines = text.split("\n")
    checks = []
    for k, line in enumerate(lines):
        code, comment = split_comment(line)
        if not code.strip():
            if comment and comment[:1] in "{[":
                prev = k - 1
                while prev >= 0 and not split_comment(lines[prev])[0].strip():
                    prev -= 1
                if prev >= 0:
                    path = os.path.join(outputs, f"{len(checks)}.out")
                    c, tail = split_comment(lines[prev])
                    lines[prev] = f'{c.rstrip()} | tee "{path}"' + (f"  # {tail}" if tail else "")
                    checks.append((path, shown(comment), k))
            continue
        if code.rstrip().endswith("\\"):
            continue
        if comment and comment[:1] in "{[":
            path = os.path.join(outputs, f"{len(checks)}.out")
            lines[k] = f'{code.rstrip()} | tee "{path}"'
            checks.append((path, shown(comment), k))
    return "\n".join(lines), checks


def expected_stderr(text):
    return [shown(c) for c in (split_comment(l)[1] for l in text.split("\n") if not split_comment(l)[0].strip()) if c and c.startswith("vlm:")]


def run_group(args, cwd, env, timeout=300):
    """Runs a block in a process group of its own, killed whole when it ends or times out (a
    server or a Ray cluster it started is never left behind)."""
    import signal
    p = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"{args}: still running after {timeout} s:\n{err.decode(errors='replace')[-2000:]}")
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(args, p.returncode, out, err)


RUNNABLE = [pytest.param(b, id=b[0]) for b in BLOCKS]


@pytest.mark.parametrize("block", RUNNABLE)
def test_readme_block(block, sandbox, tmp_path):
    name, language, first, text, skip, without = block
    if skip is not None:
        pytest.skip(f"{name}: {skip}")
    port = free_port()
    text = substituted(text, sandbox, port)
    for command in without:
        text = "\n".join(code.replace(command, "true") + ("#" + line[len(code) + 1:] if comment is not None else "")
                         for line in text.split("\n") for code, comment in [split_comment(line)])
    env = environment(sandbox)
    if language == "python":
        script = tmp_path / "block.py"
        script.write_text(text)
        r = run_group([sys.executable, str(script)], sandbox, env)
        assert r.returncode == 0, f"README.md:{first}: the python block failed:\n{r.stderr.decode(errors='replace')[-3000:]}"
        return
    body, checks = instrumented(text, str(tmp_path))
    prelude = (f"set -e -o pipefail; trap 'echo \"README.md:$((LINENO + {first - 2})): exit $?: $BASH_COMMAND\" >&2' ERR; "
               "trap 'st=$?; kill $(jobs -p) 2>/dev/null || true; wait || true; exit $st' EXIT")
    script = tmp_path / "block.sh"
    script.write_text(prelude + "\n" + body + "\n")
    r = run_group(["bash", str(script)], sandbox, env)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, f"README.md:{first}: the block failed (exit {r.returncode}):\n{err[-3000:]}"
    # curl exits 0 on an HTTP error: no answer the block printed may be one of vlm's error bodies.
    out = r.stdout.decode(errors="replace")
    assert '"error_type"' not in out and '{"error":' not in out, f"README.md:{first}: an error answer:\n{out[-2000:]}"
    for path, sample, k in checks:
        got = open(path, encoding="utf-8", errors="replace").read()
        assert re.fullmatch(output_pattern(sample), re.sub(r"\s+", "", got), re.S), \
            f"README.md:{first + k}: shows {sample!r}, the command printed {got[:300]!r}"
    for line in expected_stderr(text):
        assert line in err, f"README.md: the block at line {first} shows {line!r} on stderr; it printed:\n{err[-2000:]}"
