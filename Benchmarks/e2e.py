#!/usr/bin/env python3
"""Image jobs end to end: a folder of JPEGs to ResNet-50 pooled features (or CLIP image
embeddings), vlm against the pipelines users write, side by side in one run (rounds alternate;
medians).

  python Benchmarks/e2e.py run [--rounds N] [--only phone|web] [--model resnet50|clip-rn50|clip-vitb32]

With a CLIP model (the full-size RN50 and ViT-B/32 fixtures of `make fixtures`, seeded weights):
vlm `embed-image --model FOLDER --no-normalize-images` (open_clip's encode_image as it is);
PyTorch: open_clip's model and its own transform (image_transform: bicubic resize of the shorter
side to 224, centre crop, RGB last, CLIP's mean and std) in a DataLoader; ONNX Runtime: the image
tower exported, fed by the same transform; --draft asks Pillow's draft for 224.

Folders (seeded, cached in Benchmarks/.cache/): 48 phone photos (4032×3024, q92) and 160
web/ImageNet-sized JPEGs (500×375), made from scikit-image's photos with sensor-like noise.
Pipelines, all with 2 threads, the same seeded torchvision weights, Resize(256) → CenterCrop(224):
  vlm        `vlm embed-image DIR -o f.npy` (and --draft)
  torch      PyTorch DataLoader, Pillow + torchvision transforms, batch 16, the best of
             num_workers 0, 1, 2 (and the same with Image.draft("RGB", (256, 256)))
  ort        ONNX Runtime fed by Pillow + torchvision in the main loop, batches of 16 (and draft)
Measured per run, each in its own process tree: images/s (whole command, model load included),
peak PSS summed over the process tree (sampled every 0.1 s; DataLoader workers included), CPU
seconds (user + system of the tree), and the largest per-row relative error of vlm's rows to PyTorch's on the same
decoding (full or draft).
"""
import argparse
import json
import os
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
THREADS = 2
FOLDERS = {"phone": (48, (4032, 3024), 92), "web": (160, (500, 375), 90)}
CLIP = {"clip-rn50": ("RN50-quickgelu", "full-rn50"), "clip-vitb32": ("ViT-B-32", "full-vitb32")}


def clip_folder(model):
    return os.path.join(ROOT, "Tests", "Fixtures", "generated", "clip-models", CLIP[model][1])


def clip_model(model):
    import open_clip
    from safetensors.torch import load_file
    m = open_clip.create_model(CLIP[model][0], pretrained=None)
    m.load_state_dict(load_file(os.path.join(clip_folder(model), "open_clip_model.safetensors")))
    return m.eval()


def make_folder(kind):
    n, (w, h), q = FOLDERS[kind]
    folder = os.path.join(CACHE, f"e2e_{kind}")
    if os.path.isdir(folder) and len(os.listdir(folder)) == n:
        return folder
    from PIL import Image
    import skimage.data as data
    os.makedirs(folder, exist_ok=True)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field()]
    rng = np.random.default_rng(21)
    for k in range(n):
        base = Image.fromarray(photos[k % len(photos)]).resize((w, h), Image.BICUBIC)
        # Sensor-like noise: per-pixel Gaussian plus a little per-channel gain, so the JPEGs have
        # the entropy (and the decode cost) of real photos, not of smooth upscales.
        arr = np.asarray(base, np.float32) * rng.uniform(0.9, 1.1, 3) + rng.normal(0, 5, (h, w, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{k:03d}.jpg"), quality=q)
    return folder


# MARK: - Peers (run as `e2e.py worker ...` in their own process)

def transforms():
    from torchvision import transforms as T
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def load_pil(path, draft):
    from PIL import Image
    im = Image.open(path)
    if draft:
        im.draft("RGB", (256, 256))
    return im.convert("RGB")


def load_clip_image(path, draft):
    """As open_clip's users open images: Image.open, the transform converts to RGB last."""
    from PIL import Image
    im = Image.open(path)
    if draft:
        im.draft("RGB", (224, 224))
    return im


def clip_worker(a):
    import torch
    from open_clip.transform import image_transform
    torch.set_num_threads(THREADS)
    files = sorted(os.path.join(a.folder, f) for f in os.listdir(a.folder))
    tf = image_transform(224, is_train=False)
    rows = []
    if a.peer == "torch":
        class DS(torch.utils.data.Dataset):
            def __len__(self):
                return len(files)

            def __getitem__(self, i):
                return tf(load_clip_image(files[i], a.draft))

        model = clip_model(a.model)
        dl = torch.utils.data.DataLoader(DS(), batch_size=16, num_workers=a.num_workers)
        with torch.inference_mode():
            for x in dl:
                rows.append(model.encode_image(x).numpy())
    else:
        sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))
        from peers import onnx_path, ort_session

        def export(p):
            visual = clip_model(a.model).visual
            torch.onnx.export(visual, torch.randn(1, 3, 224, 224), p, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
        s = ort_session(onnx_path(f"{a.model}-visual.onnx", export))
        for i in range(0, len(files), 16):
            x = np.stack([tf(load_clip_image(f, a.draft)).numpy() for f in files[i:i + 16]])
            rows.append(s.run(["y"], {"x": x})[0])
    np.save(a.output, np.concatenate(rows).astype(np.float32))


def worker(a):
    import torch
    if a.model in CLIP:
        return clip_worker(a)
    torch.set_num_threads(THREADS)
    files = sorted(os.path.join(a.folder, f) for f in os.listdir(a.folder))
    tf = transforms()
    rows = []
    if a.peer == "torch":
        sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))
        from peers import resnet_model

        class DS(torch.utils.data.Dataset):
            def __len__(self):
                return len(files)

            def __getitem__(self, i):
                return tf(load_pil(files[i], a.draft))

        model = resnet_model()
        dl = torch.utils.data.DataLoader(DS(), batch_size=16, num_workers=a.num_workers)
        with torch.inference_mode():
            for x in dl:
                rows.append(model(x).numpy())
    else:
        sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))
        from peers import export_resnet, onnx_path, ort_session
        s = ort_session(onnx_path("resnet50.onnx", export_resnet))
        for i in range(0, len(files), 16):
            x = np.stack([tf(load_pil(f, a.draft)).numpy() for f in files[i:i + 16]])
            rows.append(s.run(["y"], {"x": x})[0])
    np.save(a.output, np.concatenate(rows).astype(np.float32))


# MARK: - Measuring a process tree

def tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def pss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def measure(cmd):
    """(seconds, peak PSS MB of the tree, CPU seconds of the tree) of running cmd."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], pss_kb(tree(p.pid)))
            done.wait(0.1)
    s = threading.Thread(target=sample, daemon=True)
    s.start()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    done.set()
    s.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {err.decode()[-2000:]}")
    return seconds, peak[0] / 1024, usage.ru_utime + usage.ru_stime


def max_relative_error(a, b):
    """The largest per-row ‖a − b‖ / ‖b‖. Not a cosine: seeded random ResNet-50 weights map two
    unrelated photos to cosine 0.9994, so a cosine near 1 says nothing here."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def run(a):
    os.makedirs(CACHE, exist_ok=True)
    me = os.path.abspath(__file__)
    py = sys.executable
    results = []
    for kind in a.only or ["phone", "web"]:
        folder = make_folder(kind)
        n = len(os.listdir(folder))
        for draft in [False, True]:
            tag = " --draft" if draft else ""
            out = {}
            runs = {"vlm": [], "torch": {w: [] for w in (0, 1, 2)}, "ort": []}
            stats = {}
            for r in range(a.rounds):
                vo = os.path.join(CACHE, "e2e_vlm.npy")
                model = ["--model", clip_folder(a.model), "--no-normalize-images"] if a.model in CLIP else ["--model", RESNET]
                m = measure([VLM, "embed-image", folder, *model, "--threads", str(THREADS), "--quiet", "-o", vo]
                            + (["--draft"] if draft else []))
                runs["vlm"].append(m)
                out["vlm"] = np.load(vo)
                for w in (0, 1, 2):
                    to = os.path.join(CACHE, "e2e_torch.npy")
                    m = measure([py, me, "worker", "torch", folder, "--model", a.model, "--num-workers", str(w), "--output", to] + (["--draft"] if draft else []))
                    runs["torch"][w].append(m)
                    out["torch"] = np.load(to)
                oo = os.path.join(CACHE, "e2e_ort.npy")
                runs["ort"].append(measure([py, me, "worker", "ort", folder, "--model", a.model, "--output", oo] + (["--draft"] if draft else [])))
                out["ort"] = np.load(oo)
                print(f"   {kind}{tag} round {r + 1}: vlm {n / runs['vlm'][-1][0]:.2f} img/s", flush=True)

            def med(ms):
                return (n / statistics.median(x[0] for x in ms), max(x[1] for x in ms), statistics.median(x[2] for x in ms))
            vlm = med(runs["vlm"])
            tw = {w: med(ms) for w, ms in runs["torch"].items()}
            best_w = max(tw, key=lambda w: tw[w][0])
            torch_best, ort = tw[best_w], med(runs["ort"])
            row = dict(model=a.model, folder=kind, draft=draft, n=n, vlm=vlm, torch=torch_best, torch_workers=best_w,
                       torch_all={w: v[0] for w, v in tw.items()}, ort=ort,
                       err_torch=max_relative_error(out["vlm"], out["torch"]), err_ort=max_relative_error(out["ort"], out["torch"]))
            results.append(row)
            print(json.dumps(row), flush=True)
    print(markdown(results))
    with open(os.path.join(CACHE, f"e2e_results_{a.model}.json"), "w") as f:
        json.dump(results, f, indent=1)


def markdown(results):
    lines = ["| folder | decode | vlm img/s | PyTorch DataLoader (best workers) | ONNX Runtime + Pillow | vlm ÷ PyTorch | vlm ÷ ORT "
             "| peak PSS vlm / PyTorch / ORT (MB) | CPU s vlm / PyTorch / ORT | max row relative error vlm–PyTorch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        v, t, o = r["vlm"], r["torch"], r["ort"]
        lines.append(f"| {r['n']} {'phone photos 4032×3024' if r['folder'] == 'phone' else 'web JPEGs 500×375'} "
                     f"| {'draft' if r['draft'] else 'full'} | {v[0]:.2f} | {t[0]:.2f} (num_workers {r['torch_workers']}) | {o[0]:.2f} "
                     f"| **{v[0] / t[0]:.2f}×** | **{v[0] / o[0]:.2f}×** | {v[1]:.0f} / {t[1]:.0f} / {o[1]:.0f} "
                     f"| {v[2]:.0f} / {t[2]:.0f} / {o[2]:.0f} | {r['err_torch']:.1e} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--rounds", type=int, default=2)
    r.add_argument("--only", nargs="*")
    r.add_argument("--model", choices=["resnet50", *CLIP], default="resnet50")
    w = sub.add_parser("worker")
    w.add_argument("peer", choices=["torch", "ort"])
    w.add_argument("folder")
    w.add_argument("--num-workers", type=int, default=0)
    w.add_argument("--draft", action="store_true")
    w.add_argument("--output", required=True)
    w.add_argument("--model", choices=["resnet50", *CLIP], default="resnet50")
    a = ap.parse_args()
    run(a) if a.cmd == "run" else worker(a)


if __name__ == "__main__":
    main()
