"""PyTorch checkpoints read without Python (issue 14), against torch itself: every form torch.save
writes — zip and legacy; F32, F16, BF16, F64; views with offsets, transposes and channels-last
strides; storages shared between tensors; nn.Parameter; pickle protocols 2 and 4; DataParallel's
prefix; wrapped dicts — gives the same output bits as its safetensors twin, for ResNets
(embed-image) and BERT (embed-text). `vlm convert` writes files safetensors.torch.load_file reads
back equal to the checkpoint. Malicious pickles are refused with one line and nothing executed.
Every checkpoint is written here by torch.save, in the test's own temporary folder."""
import collections
import io
import os
import pickle
import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import BERT, IMAGES, ROOT, VLM

RESNETS = {name: os.path.join(ROOT, "Tests", "Fixtures", "resnet", name) for name in ["bottleneck_f32", "basic_f16", "basic_bf16"]}
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")


def run(*args, check=True):
    r = subprocess.run([VLM, *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    for name in ["astronaut.jpg", "chelsea.png", "coffee.jpg"]:
        shutil.copy(os.path.join(IMAGES, name), d / name)
    return d


def embed_image(model, images, out):
    run("embed-image", images, "--model", model, "-o", out, "--quiet")
    return open(out, "rb").read()


# MARK: - The forms torch.save writes

def channels_last_and_transposed(sd):
    """Every 4-d weight saved channels-last (or, for 1×1 kernels, with its channel axes swapped), every 2-d one transposed."""
    out = collections.OrderedDict()
    for k, v in sd.items():
        if v.dim() == 4:
            out[k] = v.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
            if out[k].is_contiguous():  # a 1×1 kernel: channels-last is contiguous, so swap the channel axes
                out[k] = v.transpose(0, 1).contiguous().transpose(0, 1)
        elif v.dim() == 2:
            out[k] = v.t().contiguous().t()
        else:
            out[k] = v
    assert all(not v.is_contiguous() for v in out.values() if v.dim() >= 2 and min(v.shape[:2]) > 1)
    return out


def one_shared_storage(sd):
    """All tensors of a dtype are windows, at offsets, on one storage (a gap between each)."""
    out = collections.OrderedDict()
    by_dtype = collections.defaultdict(list)
    for k, v in sd.items():
        by_dtype[v.dtype].append(k)
    for dtype, keys in by_dtype.items():
        total = sum(sd[k].numel() + 3 for k in keys)
        flat = torch.zeros(total, dtype=dtype)
        at = 1
        for k in keys:
            n = sd[k].numel()
            flat[at:at + n] = sd[k].reshape(-1)
            out[k] = flat[at:at + n].view(sd[k].shape)
            at += n + 3
    assert len({v.untyped_storage().data_ptr() for v in out.values()}) == len(by_dtype)
    return collections.OrderedDict((k, out[k]) for k in sd)


def as_parameters(sd):
    return collections.OrderedDict((k, torch.nn.Parameter(v, requires_grad=v.is_floating_point())) for k, v in sd.items())


VARIANTS = {
    "zip": lambda sd, p: torch.save(sd, p),
    "legacy": lambda sd, p: torch.save(sd, p, _use_new_zipfile_serialization=False),
    "views": lambda sd, p: torch.save(channels_last_and_transposed(sd), p),
    "views-legacy": lambda sd, p: torch.save(channels_last_and_transposed(sd), p, _use_new_zipfile_serialization=False),
    "shared": lambda sd, p: torch.save(one_shared_storage(sd), p),
    "shared-legacy": lambda sd, p: torch.save(one_shared_storage(sd), p, _use_new_zipfile_serialization=False),
    "parameters": lambda sd, p: torch.save(as_parameters(sd), p),
    "protocol4": lambda sd, p: torch.save(sd, p, pickle_protocol=4),
    # Protocol 1 has no PROTO opcode: the legacy file opens with the magic number as text.
    "protocol1": lambda sd, p: torch.save(sd, p, pickle_protocol=1),
    "protocol1-legacy": lambda sd, p: torch.save(sd, p, pickle_protocol=1, _use_new_zipfile_serialization=False),
    "dataparallel": lambda sd, p: torch.save(collections.OrderedDict(("module." + k, v) for k, v in sd.items()), p),
    "wrapped": lambda sd, p: torch.save({"epoch": 7, "arch": "resnet", "best_acc1": 0.5, "state_dict": sd,
                                         "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}}, p),
    "wrapped-model-dataparallel": lambda sd, p: torch.save({"model": collections.OrderedDict(("module." + k, v) for k, v in sd.items()), "step": 3}, p,
                                                           _use_new_zipfile_serialization=False),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("model", sorted(RESNETS))
def test_resnet_checkpoints_equal_their_safetensors_twin(tmp_path, images, model, variant):
    twin = os.path.join(RESNETS[model], "model.safetensors")
    sd = load_file(twin)
    ckpt = tmp_path / f"{variant}.pth"
    VARIANTS[variant](sd, ckpt)
    want = embed_image(twin, images, tmp_path / "twin.npy")
    got = embed_image(ckpt, images, tmp_path / "ckpt.npy")
    assert got == want, f"{model} {variant}: outputs differ from the safetensors twin"
    # inspect lists the same tensors, dtypes and shapes as torch.load.
    listed = [line.split("\t") for line in run("inspect", ckpt).stdout.splitlines() if "\t" in line]
    assert [(n, d, s) for n, d, s in listed] == [
        (k, {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.int64": "I64"}[str(v.dtype)],
         str(list(v.shape))) for k, v in sd.items()]


def test_f64_checkpoint_is_converted_as_its_f64_twin(tmp_path, images):
    sd = {k: (v.double() if v.is_floating_point() else v) for k, v in load_file(os.path.join(RESNETS["bottleneck_f32"], "model.safetensors")).items()}
    save_file(sd, tmp_path / "twin.safetensors")
    torch.save(sd, tmp_path / "f64.pt")
    assert embed_image(tmp_path / "f64.pt", images, tmp_path / "a.npy") == embed_image(tmp_path / "twin.safetensors", images, tmp_path / "b.npy")


def test_model_folders_find_their_torch_checkpoint(tmp_path, images):
    twin = os.path.join(RESNETS["basic_f16"], "model.safetensors")
    want = embed_image(twin, images, tmp_path / "twin.npy")
    sd = load_file(twin)
    one = tmp_path / "one"
    one.mkdir()
    torch.save(sd, one / "resnet-0123abcd.pth")
    assert embed_image(one, images, tmp_path / "one.npy") == want
    hf = tmp_path / "hf"
    hf.mkdir()
    torch.save(sd, hf / "pytorch_model.bin")
    assert embed_image(hf, images, tmp_path / "hf.npy") == want
    torch.save(sd, one / "second.pt")
    r = run("embed-image", images, "--model", one, "-o", tmp_path / "x.npy", check=False)
    assert r.returncode == 1 and "2 checkpoints in this folder" in r.stderr and len(r.stderr.splitlines()) == 1


def bert_folder(src, dst, save):
    """A copy of a Hugging Face model folder whose weights are pytorch_model.bin."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.npy"))
    save(load_file(os.path.join(src, "model.safetensors")), dst / "pytorch_model.bin")
    return dst


@pytest.mark.parametrize("variant", ["zip", "legacy", "views", "shared-legacy", "protocol1-legacy"])
def test_bert_pytorch_model_bin_equals_safetensors(tmp_path, variant):
    texts = "A cat sat on the mat.\nnaïve café, 東京 and emoji 🎉\n\nthe quick brown fox jumps over the lazy dog " * 3 + "\n"
    folder = bert_folder(BERT, tmp_path / "bert", VARIANTS[variant])
    r = subprocess.run([VLM, "embed-text", "--model", str(folder), "-o", str(tmp_path / "bin.npy"), "--quiet"], input=texts, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([VLM, "embed-text", "--model", BERT, "-o", str(tmp_path / "twin.npy"), "--quiet"], input=texts, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert open(tmp_path / "bin.npy", "rb").read() == open(tmp_path / "twin.npy", "rb").read()


@pytest.mark.skipif(not os.path.exists(os.path.join(MINILM, "model.safetensors")), reason="make models fetches all-MiniLM-L6-v2")
def test_real_minilm_as_a_legacy_pytorch_model_bin(tmp_path):
    """The real all-MiniLM-L6-v2 weights in the oldest form its repository could ship."""
    folder = bert_folder(MINILM, tmp_path / "minilm", VARIANTS["legacy"])
    texts = "A man is eating food.\nA man is riding a horse.\nThe new movie is awesome.\n"
    outs = []
    for m in [MINILM, folder]:
        r = subprocess.run([VLM, "embed-text", "--model", str(m), "-o", str(tmp_path / "o.npy"), "--quiet"], input=texts, text=True, capture_output=True)
        assert r.returncode == 0, r.stderr
        outs.append(open(tmp_path / "o.npy", "rb").read())
    assert outs[0] == outs[1]


# MARK: - vlm convert

@pytest.mark.parametrize("dtype", [None, "f16", "bf16", "f32"])
@pytest.mark.parametrize("variant", ["zip", "legacy", "views", "shared", "wrapped-model-dataparallel"])
def test_convert_reads_back_equal_with_safetensors(tmp_path, variant, dtype):
    sd = load_file(os.path.join(RESNETS["basic_bf16"], "model.safetensors"))
    sd["extra.f64"] = torch.linspace(-3, 3, 17, dtype=torch.float64) / 7
    sd["extra.f32"] = torch.tensor([1.0, float("inf"), -0.0, 1e-40, 65520.0, 3.0e38, 1.00048828125])
    ckpt = tmp_path / "in.pth"
    VARIANTS[variant](sd, ckpt)
    out = tmp_path / "out.safetensors"
    run("convert", ckpt, "-o", out, *(["--dtype", dtype] if dtype else []), "--quiet")
    got = load_file(out)
    assert list(got) == list(sd), "keys kept, in the checkpoint's order"
    to = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}.get(dtype)
    for k, v in sd.items():
        want = v.to(to) if to is not None and v.is_floating_point() else v
        assert got[k].dtype == want.dtype, k
        assert got[k].shape == want.shape, k
        assert torch.equal(got[k].view(torch.uint8) if got[k].dim() else got[k], want.contiguous().view(torch.uint8) if want.dim() else want), k
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")], "no temporary file left behind"


def test_convert_refuses_what_it_cannot_read_and_leaves_nothing(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"\x80\x02}q\x00.")  # a pickle without torch's magic number
    r = run("convert", tmp_path / "bad.pth", "-o", tmp_path / "out.safetensors", check=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "bad.pth" in r.stderr
    assert os.listdir(tmp_path) == ["bad.pth"]


# MARK: - Malicious pickles: refused, one line, nothing executed

def torch_zip(path, pkl, storages=None, name="archive", compress=None):
    """A zip laid out as torch.save's, around any data.pkl bytes."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/data.pkl", pkl)
        z.writestr(f"{name}/byteorder", "little")
        for key, data in (storages or {}).items():
            z.writestr(zipfile.ZipInfo(f"{name}/data/{key}"), data, compress_type=compress or zipfile.ZIP_STORED)
        z.writestr(f"{name}/version", "3\n")


def legacy_stream(obj_pickle):
    """Legacy torch.save framing around one pickled object, with no storages."""
    head = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + pickle.dumps(1001, protocol=2)
    head += pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    return head + obj_pickle + pickle.dumps([], protocol=2)


def payloads(marker):
    """(name, pickle bytes, the text the refusal must name), each a live attack if unpickled."""
    cmd = f"touch {marker}"

    class System:
        def __reduce__(self):
            return (os.system, (cmd,))

    class Eval:
        def __reduce__(self):
            return (eval, (f"__import__('os').system({cmd!r})",))

    class Exec:
        def __reduce__(self):
            return (exec, (f"import os; os.system({cmd!r})",))

    class Popen:
        def __reduce__(self):
            return (subprocess.Popen, (["touch", str(marker)],))

    class Getattr:
        def __reduce__(self):
            return (getattr, ("", "join"))

    out = []
    for cls, named in [(System, "system'"), (Eval, "eval'"), (Exec, "exec'"), (Popen, "Popen'"), (Getattr, "getattr'")]:
        for proto in (2, 4):
            out.append((f"{cls.__name__}-p{proto}", pickle.dumps({"w": cls()}, protocol=proto), named))
    # A REDUCE nested inside an allowed call: _rebuild_tensor_v2's arguments hold os.system(...).
    inner = pickle.dumps(System(), protocol=2)[2:-1]
    nested = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(" + inner + b"K\x00)))\x89ccollections\nOrderedDict\n)Rtq\x00R.")
    out.append(("nested-reduce", nested, "system"))
    # INST and OBJ (protocol 0/1 instance creation), and a BUILD on a list.
    out.append(("inst", f"(S'{cmd}'\nios\nsystem\n.".encode(), "INST"))
    out.append(("obj", b"(cos\nsystem\nS'" + cmd.encode() + b"'\no.", "system"))
    out.append(("build-on-list", b"\x80\x02]}b.", "BUILD on a list"))
    out.append(("reduce-on-storage", b"\x80\x02ctorch\nFloatStorage\n)R.", "REDUCE on torch.FloatStorage"))
    out.append(("ext", b"\x80\x02\x82\x01.", "EXT"))
    out.append(("newobj-ex", b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93)}\x92.", "system"))
    return out


def assert_refused(r, path, names):
    lines = r.stderr.splitlines()
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("vlm: error: ") and str(path) in lines[0], r.stderr
    assert names in lines[0], (names, lines[0])


def test_the_payloads_are_live(tmp_path):
    """Guards the test itself: Python's own unpickler does run these payloads."""
    marker = tmp_path / "ran"
    for name, data, _ in payloads(marker):
        if name in ("System-p2", "Popen-p4", "Eval-p2"):
            marker.unlink(missing_ok=True)
            obj = pickle.loads(data)
            if isinstance(obj.get("w"), subprocess.Popen):
                obj["w"].wait()
            assert marker.exists(), name
    marker.unlink()


def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path, images):
    marker = tmp_path / "ran"
    for name, data, named in payloads(marker):
        for form, write in [("zip", lambda p: torch_zip(p, data)), ("legacy", lambda p: p.write_bytes(legacy_stream(data)))]:
            path = tmp_path / f"{name}.{form}.pth"
            write(path)
            for cmd in (["inspect", path], ["convert", path, "-o", tmp_path / "out.safetensors"],
                        ["embed-image", images, "--model", path, "-o", tmp_path / "out.npy"]):
                r = run(*cmd, check=False)
                assert_refused(r, path, named)
            assert not marker.exists(), f"{name} ({form}) ran"
            assert not (tmp_path / "out.npy").exists() and not (tmp_path / "out.safetensors").exists()


def test_hostile_streams_and_archives_are_refused(tmp_path):
    sd = {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.ones(4, dtype=torch.float16)}
    good = tmp_path / "good.pth"
    torch.save(sd, good)
    with zipfile.ZipFile(good) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        storages = {n.rsplit("/", 1)[1]: z.read(n) for n in z.namelist() if "/data/" in n}
    cases = []
    # A huge memo index put and then asked for: stored in a dict, never an array of that size.
    p = tmp_path / "memo.pth"; torch_zip(p, b"\x80\x02}r\xff\xff\xff\xffj\xfe\xff\xff\xff.", storages); cases.append((p, "memo index 4294967294"))
    # Truncated data.pkl at several cuts.
    for cut in (1, 2, 30, len(pkl) // 2, len(pkl) - 1):
        p = tmp_path / f"cut{cut}.pth"; torch_zip(p, pkl[:cut], storages); cases.append((p, "truncated"))
    # A storage shorter than its tensor needs.
    p = tmp_path / "short.pth"; torch_zip(p, pkl, {k: v[:-2] for k, v in storages.items()}); cases.append((p, "damaged or truncated"))
    # An entry escaping the archive.
    p = tmp_path / "escape.pth"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("../../escaped/data/0", storages["0"])
    cases.append((p, "escapes the archive"))
    # A zip bomb: a storage entry deflated from 256 MiB of zeros.
    p = tmp_path / "bomb.pth"
    torch_zip(p, pkl, {"0": bytes(256 << 20), "1": storages["1"]}, compress=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(p) < 2 << 20
    cases.append((p, "deflate-compressed"))
    # A single tensor, and a dict without tensors.
    p = tmp_path / "tensor.pth"; torch.save(torch.ones(3), p); cases.append((p, "single tensor"))
    p = tmp_path / "empty.pth"; torch.save({}, p); cases.append((p, "no tensors"))
    for path, named in cases:
        assert_refused(run("inspect", path, check=False), path, named)
    # Every cut of a legacy file is an error, never a crash.
    legacy = tmp_path / "legacy.pth"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    for cut in range(1, len(data), 7):
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        r = run("inspect", tmp_path / "cut.pth", check=False)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, (cut, r.returncode, r.stderr)


def test_torchscript_archives_are_read_without_their_code(tmp_path):
    """A scripted module's tensors, by attribute path as state_dict() names them: inspect names
    the format, convert writes the same tensors (the archive's code is never read)."""
    torch.manual_seed(0)
    m = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 4)))
    p = tmp_path / "script.pt"
    torch.jit.save(m, p)
    r = run("inspect", p)
    assert "TorchScript archive (torch.jit.save)" in r.stdout and "2.weight" in r.stdout, r.stdout
    run("convert", p, "-o", tmp_path / "s.safetensors", "--quiet")
    got = load_file(tmp_path / "s.safetensors")
    want = m.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_zip64_archives_are_read(tmp_path):
    """More than 65,535 entries: Python's zipfile writes the ZIP64 end records."""
    sd = {"w": torch.arange(12, dtype=torch.float32).view(3, 4).t()}
    torch.save(sd, tmp_path / "small.pth")
    with zipfile.ZipFile(tmp_path / "small.pth") as src, zipfile.ZipFile(tmp_path / "z64.pth", "w") as dst:
        for n in src.namelist():
            dst.writestr(src.getinfo(n), src.read(n))
        for k in range(65_540):
            dst.writestr(f"small/extra/{k}", b"")
    with open(tmp_path / "z64.pth", "rb") as f:
        assert b"PK\x06\x06" in f.read()[-200:]
    run("convert", tmp_path / "z64.pth", "-o", tmp_path / "z.safetensors", "--quiet")
    assert torch.equal(load_file(tmp_path / "z.safetensors")["w"], sd["w"])


# MARK: - The registry: direct URLs, torch.hub's hash-prefix check, declared preprocessing

@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server for tmp_path/www, as $VLM_URL_MIRROR."""
    import functools
    import http.server
    import threading
    www = tmp_path / "www"
    (www / "models").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_by_url_checks_the_hash_prefix_and_models_declare_preprocessing(tmp_path, mirror, images):
    import hashlib
    import json
    www, url = mirror
    sd = load_file(os.path.join(RESNETS["bottleneck_f32"], "model.safetensors"))
    blob = tmp_path / "blob.pth"
    torch.save(sd, blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    good, bad = f"tinyres-{digest[:8]}.pth", f"tinyres-{'0' * 8}.pth"
    for name in (good, bad):
        shutil.copy(blob, www / "models" / name)
    pre = {"resize": 40, "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    registry = {"models": [
        {"name": "tinyres", "kind": "image", "preprocess": pre,
         "files": [{"path": good, "url": f"https://download.example.org/models/{good}", "size": None, "sha256": None}]},
        {"name": "tampered", "kind": "image",
         "files": [{"path": bad, "url": f"https://download.example.org/models/{bad}", "size": None, "sha256": None}]},
        {"name": "plain", "kind": "image",
         "files": [{"path": "x.pth", "url": "https://download.example.org/models/x.pth", "size": None, "sha256": None}]}]}
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    models = tmp_path / "models"
    env = dict(os.environ, VLM_URL_MIRROR=url, VLM_REGISTRY=str(tmp_path / "registry.json"), VLM_MODELS=str(models))

    def vlm(*args):
        return subprocess.run([VLM, *map(str, args)], capture_output=True, text=True, env=env)

    listed = vlm("models", "list")
    assert "tinyres\timage\thttps://download.example.org/models/" + good + "\tnot fetched (checked by sha256 prefix, as torch.hub)" in listed.stdout
    r = vlm("models", "fetch", "tinyres")
    assert r.returncode == 0, r.stderr
    assert f"starts with {digest[:8]}" in r.stderr and digest in r.stderr
    assert (models / "tinyres" / good).read_bytes() == blob.read_bytes()
    assert json.loads((models / "tinyres" / "preprocess.json").read_text()) == pre
    again = vlm("models", "fetch", "tinyres")
    assert again.returncode == 0 and "already present and verified" in again.stderr

    r = vlm("models", "fetch", "tampered")
    assert r.returncode == 1 and f"does not start with {'0' * 8}" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (models / "tampered").exists(), "nothing placed"
    r = vlm("models", "fetch", "plain")
    assert r.returncode == 1 and "--allow-unpinned" in r.stderr

    def embed(*args):
        out = tmp_path / "o.npy"
        r = vlm("embed-image", images, "-o", out, "--quiet", *args)
        assert r.returncode == 0, r.stderr
        return out.read_bytes()

    declared = embed("--model", models / "tinyres")
    explicit = embed("--model", blob, "--resize", 40, "--crop", 32, "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25")
    assert declared == explicit, "the folder's preprocess.json is used when no option is given"
    assert embed("--model", "tinyres") == declared, "a registry name is its folder"
    assert embed("--model", models / "tinyres" / good) == declared, "the checkpoint file inside the folder too"
    assert declared != embed("--model", blob), "a checkpoint elsewhere keeps the defaults"
    assert embed("--model", models / "tinyres", "--resize", 48) == embed("--model", blob, "--resize", 48, "--crop", 32, "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"), \
        "a given option wins; the rest still come from the model"
    r = vlm("preprocess", images / "coffee.jpg", "--model", "tinyres", "-o", tmp_path / "p.npy")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "p.npy").shape == (1, 3, 32, 32)


def test_review_findings_stay_fixed(tmp_path):
    """From a hostile review: a ':' in the file name (torch's archive prefix) is valid; control
    characters a pickle carries never reach stderr raw; broadcast windows claiming gigabytes from
    a few stored bytes are refused; a call re-applied through the memo cannot take quadratic time."""
    sd = {"w": torch.arange(6, dtype=torch.float32).view(2, 3)}
    torch.save(sd, tmp_path / "m:v1.pt")
    run("convert", tmp_path / "m:v1.pt", "-o", tmp_path / "a.safetensors", "--quiet")
    assert torch.equal(load_file(tmp_path / "a.safetensors")["w"], sd["w"])
    evil = tmp_path / "ansi.pth"
    torch_zip(evil, b"\x80\x04\x8c\x12os\x1b[2K\rvlm: fake\x0b\x0c\xe2\x80\xa8x\x8c\x06system\x93.")
    r = run("inspect", evil, check=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert not any(c in r.stderr for c in "\x1b\r\x0b\x0c\u2028"), repr(r.stderr)
    wide = tmp_path / "broadcast.pth"
    torch.save({"w": torch.ones(4).expand(1 << 31, 4)[:, 0]}, wide)
    assert_refused(run("inspect", wide, check=False), wide, "broadcast")
    torch.save({"pos": torch.arange(512).expand(1, -1)}, tmp_path / "ok.pth")  # BERT's position_ids: a small broadcast loads
    run("convert", tmp_path / "ok.pth", "-o", tmp_path / "b.safetensors", "--quiet")
    assert torch.equal(load_file(tmp_path / "b.safetensors")["pos"], torch.arange(512).expand(1, -1))
    fifo = tmp_path / "fifo.pth"
    os.mkfifo(fifo)
    r = subprocess.run([VLM, "inspect", str(fifo)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "not a regular file" in r.stderr, "a FIFO is refused, not waited on"
    slow = tmp_path / "memo.pth"
    torch_zip(slow, b"\x80\x02c__builtin__\nset\nq\x00]q\x01(" + b"N" * 100_000 + b"e0" + b"h\x00h\x01\x85R0" * 20_000 + b"}.")
    assert_refused(run("inspect", slow, check=False), slow, "more work than")


def test_a_changed_byte_in_any_entry_is_refused_naming_the_file_and_entry(tmp_path, images):
    """Every zip entry a checkpoint uses is checked against its CRC-32 before its bytes are used:
    a flipped bit in a storage or in data.pkl is an error naming both, never a vector."""
    sd = load_file(os.path.join(RESNETS["bottleneck_f32"], "model.safetensors"))
    good = tmp_path / "good.pth"
    torch.save(sd, good)
    embed_image(good, images, tmp_path / "ok.npy")
    with zipfile.ZipFile(good) as z:
        infos = {i.filename: i for i in z.infolist()}
    biggest = max((i for n, i in infos.items() if "/data/" in n), key=lambda i: i.file_size)
    pkl = next(i for n, i in infos.items() if n.endswith("/data.pkl"))
    data = good.read_bytes()
    for info in (biggest, pkl):
        # The entry's data follows its local header (30 bytes, the name, the extra field).
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        bad = bytearray(data)
        bad[start + info.file_size // 2] ^= 0x10
        path = tmp_path / f"flipped-{info.filename.split('/')[-1]}.pth"
        path.write_bytes(bytes(bad))
        r = run("embed-image", images, "--model", path, "-o", tmp_path / "x.npy", "--quiet", check=False)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert str(path) in r.stderr and f"'{info.filename}'" in r.stderr and "CRC-32" in r.stderr, r.stderr
        assert not (tmp_path / "x.npy").exists()


def test_protocol_0_and_plain_pickles_are_named_for_what_they_are(tmp_path):
    """Protocol 0 and 1 pickles have no PROTO opcode; they were once read as safetensors headers."""
    sd = {"a": torch.arange(4.0)}
    for zipped in (False, True):
        p = tmp_path / f"p0-{zipped}.pth"
        torch.save(sd, p, pickle_protocol=0, _use_new_zipfile_serialization=zipped)
        with pytest.raises(AssertionError):      # torch cannot read its own protocol-0 tensors
            torch.load(p, weights_only=False)
        r = run("inspect", p, check=False)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert str(p) in r.stderr and "a pickle of protocol 0 (text)" in r.stderr and "torch.save's default protocol" in r.stderr
    for protocol in (0, 1):
        p = tmp_path / f"plain{protocol}.pkl"
        with open(p, "wb") as f:
            pickle.dump({"a": [1, 2]}, f, protocol=protocol)
        r = run("inspect", p, check=False)
        assert r.returncode == 1 and r.stderr.strip() == f"vlm: error: {p}: a pickle, but not a torch checkpoint (no torch.save magic number)"


# MARK: - Sharded checkpoints

def embed_texts(model, out, texts="A cat sat on the mat.\nnaïve café, 東京 🎉\n\nthe quick brown fox\n"):
    r = subprocess.run([VLM, "embed-text", "--model", str(model), "-o", str(out), "--quiet"], input=texts, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr
    return open(out, "rb").read()


@pytest.mark.parametrize("safe", [True, False])
def test_sharded_checkpoints_load_as_one_model(tmp_path, safe):
    """transformers' own save_pretrained shards, as users download them from the hub."""
    import json
    from huggingface_hub import split_torch_state_dict_into_shards
    from transformers import BertModel
    folder = tmp_path / "sharded"
    model = BertModel.from_pretrained(BERT)
    if safe:
        model.save_pretrained(folder, max_shard_size="100KB")
    else:
        # transformers 5 writes safetensors only; pytorch_model-*.bin shards are how
        # transformers 4 wrote them: huggingface_hub's split, each shard by torch.save.
        model.save_pretrained(folder)
        (folder / "model.safetensors").unlink()
        sd = model.state_dict()
        split = split_torch_state_dict_into_shards(sd, filename_pattern="pytorch_model{suffix}.bin", max_shard_size="100KB")
        for name, keys in split.filename_to_tensors.items():
            torch.save({k: sd[k].contiguous() for k in keys}, folder / name)
        json.dump({"metadata": split.metadata, "weight_map": split.tensor_to_filename}, open(folder / "pytorch_model.bin.index.json", "w"))
    shutil.copy(os.path.join(BERT, "vocab.txt"), folder / "vocab.txt")
    index = folder / ("model.safetensors.index.json" if safe else "pytorch_model.bin.index.json")
    shards = sorted(set(json.load(open(index))["weight_map"].values()))
    assert len(shards) >= 2 and not (folder / "model.safetensors").exists() and not (folder / "pytorch_model.bin").exists()
    want = embed_texts(BERT, tmp_path / "want.npy")
    assert embed_texts(folder, tmp_path / "folder.npy") == want
    r = run("inspect", folder)
    assert f"format: sharded, {len(shards)} shards" in r.stdout and "architecture: BERT" in r.stdout
    # vlm convert merges the shards into one safetensors file equal to the model's tensors.
    run("convert", index, "-o", tmp_path / "merged.safetensors", "--quiet")
    merged = load_file(tmp_path / "merged.safetensors")
    ref = BertModel.from_pretrained(BERT).state_dict()
    assert set(merged) <= set(ref) and set(ref) - set(merged) <= {"embeddings.position_ids"}
    for k, v in merged.items():
        assert torch.equal(v, ref[k]), k


def test_sharded_image_checkpoints_and_every_disagreement_is_an_error(tmp_path, images):
    import json
    twin = os.path.join(RESNETS["bottleneck_f32"], "model.safetensors")
    sd = load_file(twin)
    keys = list(sd)
    half = len(keys) // 2
    folder = tmp_path / "resnet"
    folder.mkdir()

    def write(parts, index=None, fmt="safetensors"):
        for f in folder.iterdir():
            f.unlink()
        weight_map = {}
        for name, ks in parts.items():
            part = collections.OrderedDict((k, sd[k]) for k in ks)
            if fmt == "safetensors":
                save_file(part, folder / name)
            else:
                torch.save(part, folder / name)
            weight_map.update({k: name for k in ks})
        idx = folder / f"model.{fmt}.index.json" if fmt == "safetensors" else folder / "pytorch_model.bin.index.json"
        json.dump(index if index is not None else {"metadata": {"total_size": 0}, "weight_map": weight_map}, open(idx, "w"))
        return idx

    want = embed_image(twin, images, tmp_path / "twin.npy")
    for fmt in ("safetensors", "bin"):
        idx = write({f"a.{fmt}": keys[:half], f"b.{fmt}": keys[half:]}, fmt=fmt)
        assert embed_image(folder, images, tmp_path / f"{fmt}.npy") == want
        assert embed_image(idx, images, tmp_path / f"{fmt}-index.npy") == want

    def refused(idx, *words):
        r = run("embed-image", images, "--model", idx, "-o", tmp_path / "x.npy", check=False)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        for w in words:
            assert w in r.stderr, (w, r.stderr)
        assert not (tmp_path / "x.npy").exists()

    good = {"a.safetensors": keys[:half], "b.safetensors": keys[half:]}
    wm = {k: ("a.safetensors" if i < half else "b.safetensors") for i, k in enumerate(keys)}
    idx = write(good)
    (folder / "b.safetensors").unlink()
    refused(idx, str(idx), "names the shard 'b.safetensors', which is missing")
    idx = write({"a.safetensors": keys[:half + 1], "b.safetensors": keys[half:]}, index={"weight_map": wm})
    refused(idx, f"tensor '{keys[half]}' is in two shards, 'a.safetensors' and 'b.safetensors'")
    idx = write(good, index={"weight_map": {k: v for k, v in wm.items() if k != keys[0]}})
    refused(idx, f"the shard 'a.safetensors' holds tensor '{keys[0]}', which the index does not list")
    idx = write(good, index={"weight_map": {**wm, "extra.weight": "a.safetensors"}})
    refused(idx, "the index places tensor 'extra.weight' in 'a.safetensors', which does not hold it")
    idx = write(good, index={"weight_map": {**wm, keys[0]: "b.safetensors"}})
    refused(idx, f"the shard 'a.safetensors' holds tensor '{keys[0]}', which the index places in 'b.safetensors'")
    for bad in ("../b.safetensors", "/etc/passwd", "sub/b.safetensors", ""):
        idx = write(good, index={"weight_map": {**wm, keys[-1]: bad}})
        refused(idx, "a shard must be a file beside the index")
    for bad in ([], {"weight_map": []}, {"weight_map": {}}, {"weight_map": {keys[0]: 3}}):
        idx = write(good, index=bad)
        refused(idx, str(idx))
    (folder / "model.safetensors.index.json").write_text("{not json")
    refused(folder / "model.safetensors.index.json", "not a JSON object")
    # A damaged shard is caught by the shard's own check, naming the shard.
    idx = write({"a.bin": keys[:half], "b.bin": keys[half:]}, fmt="bin")
    data = bytearray(open(folder / "b.bin", "rb").read())
    z = zipfile.ZipFile(folder / "b.bin")
    entry = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size > 64)
    data[entry.header_offset + 30 + len(entry.filename) + len(entry.extra) + 8] ^= 0x01
    open(folder / "b.bin", "wb").write(bytes(data))
    refused(idx, str(folder / "b.bin"), "CRC")


# MARK: - timm checkpoints and whole pickled models

def test_timm_resnets_read_as_torchvision_and_other_timm_resnets_are_refused(tmp_path, images):
    import timm
    import torchvision
    torch.manual_seed(3)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    sd = model.state_dict()
    # timm's resnet18 is torchvision's: the same weights give the same outputs.
    tv = torchvision.models.resnet18(num_classes=10).eval()
    tv.load_state_dict(sd)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), tv(x), atol=1e-5)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "twin.safetensors")
    torch.save(sd, tmp_path / "timm.pth")
    head = collections.OrderedDict((("head." + k) if k.startswith("fc.") else k, v) for k, v in sd.items())
    torch.save(head, tmp_path / "head_fc.pth")
    for layer in ("pooled", "logits"):
        def out(m):
            run("embed-image", images, "--model", m, "--layer", layer, "-o", tmp_path / "o.npy", "--quiet")
            return open(tmp_path / "o.npy", "rb").read()
        want = out(tmp_path / "twin.safetensors")
        assert out(tmp_path / "timm.pth") == want and out(tmp_path / "head_fc.pth") == want
    for name, words in (("resnet50d", "deep-stem ResNet"), ("resnetv2_50", "pre-activation ResNetV2")):
        torch.save(timm.create_model(name, pretrained=False).state_dict(), tmp_path / f"{name}.pth")
        r = run("embed-image", images, "--model", tmp_path / f"{name}.pth", "-o", tmp_path / "x.npy", check=False)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and words in r.stderr, r.stderr


def test_whole_pickled_models_are_refused_with_the_command_that_extracts_them(tmp_path, images):
    import shlex
    import sys
    import timm
    import torchvision
    torch.manual_seed(5)
    odd = tmp_path / "it's $HOME \"odd\""
    odd.mkdir()
    for k, (model, legacy) in enumerate([(torchvision.models.resnet18(), False), (timm.create_model("resnet18", pretrained=False), True),
                                         (torchvision.models.resnet18(), True)]):
        path = (odd if k == 0 else tmp_path) / f"whole{k}.pth"
        torch.save(model, path, _use_new_zipfile_serialization=not legacy)
        r = run("embed-image", images, "--model", path, "-o", tmp_path / "x.npy", check=False)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert "a whole pickled model" in r.stderr and ".models.resnet.ResNet" in r.stderr and "nothing was run" in r.stderr
        command = r.stderr.split("extract its weights in PyTorch: ", 1)[1].strip()
        assert command.startswith("python -c ")
        # The command, run as printed (with this venv's python), writes the state dict beside the file.
        subprocess.run(["sh", "-c", shlex.quote(sys.executable) + command[len("python"):]], check=True, cwd=tmp_path)
        extracted = str(path)[:-len(".pth")] + ".state_dict.pth"
        assert os.path.exists(extracted)
        save_file({n: v.contiguous() for n, v in model.state_dict().items()}, tmp_path / "twin.safetensors")
        assert embed_image(extracted, images, tmp_path / "a.npy") == embed_image(tmp_path / "twin.safetensors", images, tmp_path / "b.npy")
