"""The thread budget (issue 30), before and after in one run: two vlm binaries alternating on the
same workloads with --threads 1 and 2 — throughput, and the process's CPU time ÷ wall time
(≤ 1.05 with --threads 1 when the budget holds).

    python Benchmarks/threads.py --before /path/to/old/vlm [--rounds 2]

Workloads: `vlm bench resnet50 --batch 8` on the generated seeded ResNet-50 (images/s of the
timed passes), an image-folder job (`embed-image` of 48 copies of the test images, whole
command), and `vlm bench minilm --sentences 1000` (texts/s, tokenization included). Run with
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` as every benchmark here is.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AFTER = os.path.join(ROOT, ".build", "release", "vlm")
RESNET = os.path.join(ROOT, "Tests", "Fixtures", "generated", "resnet50")
IMAGES = os.path.join(ROOT, "Tests", "Fixtures", "generated", "images")


def timed(cmd):
    """(wall s, CPU s of the child, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout


def workloads(folder, out):
    def bench(args):
        def run(vlm, threads):
            wall, cpu, stdout = timed([vlm, *args, "--backend", "blas", "--threads", str(threads), "--json"])
            return json.loads(stdout)["results"][0]["itemsPerSecond"], cpu / wall
        return run

    def job(vlm, threads):
        wall, cpu, _ = timed([vlm, "embed-image", folder, "--model", RESNET, "-o", out, "--quiet", "--threads", str(threads)])
        return len(os.listdir(folder)) / wall, cpu / wall

    return {
        "resnet50 batch 8 (images/s)": bench(["bench", "resnet50", "--model", RESNET, "--batch", "8", "--min-time", "3"]),
        "image-folder job, 48 images (images/s)": job,
        "minilm, 1000 sentences (texts/s)": bench(["bench", "minilm", "--sentences", "1000", "--min-time", "3"]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default=AFTER)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "photos")
        os.mkdir(folder)
        names = sorted(f for f in os.listdir(IMAGES) if f.endswith(".jpg"))
        for k in range(48):
            shutil.copy(os.path.join(IMAGES, names[k % len(names)]), os.path.join(folder, f"{k:02d}_{names[k % len(names)]}"))
        results = {}
        for name, run in workloads(folder, os.path.join(tmp, "out.npy")).items():
            for threads in (1, 2):
                for _ in range(args.rounds):
                    for label, vlm in (("before", args.before), ("after", args.after)):
                        results.setdefault((name, threads, label), []).append(run(vlm, threads))
        print("| workload | --threads | before | after | after ÷ before | CPU ÷ wall before | CPU ÷ wall after |")
        print("|---|---|---|---|---|---|---|")
        for name in workloads(folder, "").keys():
            for threads in (1, 2):
                b, a = results[(name, threads, "before")], results[(name, threads, "after")]
                rb, ra = statistics.median(x[0] for x in b), statistics.median(x[0] for x in a)
                cb, ca = statistics.median(x[1] for x in b), statistics.median(x[1] for x in a)
                print(f"| {name} | {threads} | {rb:.2f} | {ra:.2f} | {ra / rb:.2f}× | {cb:.2f} | {ca:.2f} |")


if __name__ == "__main__":
    main()
