"""One thread budget (issue 30, item 5): with --threads N, at most N of vlm's OS threads work at
once, whatever the work — a ResNet-50 forward pass of 8 images, BERT, an image-folder job
(decoding overlapped with the model) — and the same N threads do it all. Measured from outside,
by the kernel's own account of each thread (/proc/PID/task/TID/schedstat, nanoseconds on the
CPU): a counter inside vlm's pool could not see OpenBLAS's or Dispatch's threads. The default
count follows the affinity mask (taskset), not the machine's cores."""
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import IMAGES, ROOT, VLM

RESNET50 = os.path.join(ROOT, "Tests", "Fixtures", "generated", "resnet50")
BERT_BASE = os.path.join(ROOT, "Tests", "Fixtures", "generated", "bert-base")
# A sampling interval, and the CPU time within it that counts a thread as one that did work (a
# thread that ran a tenth of the interval was not merely woken to hand work over).
INTERVAL = 0.1
WORKING = 0.1 * INTERVAL * 1e9
# Threads at work at once, measured per interval as CPU time gained ÷ wall time passed, may read
# above the truth by the skew of reading each thread's counter at a slightly different moment.
SKEW = 0.1


def on_cpu(pid):
    """{tid: (name, nanoseconds on the CPU)} for every thread of `pid` now."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        out[tid] = (name, ns)
    return out


def process_cpu(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def openblas_threads(threads, pid):
    """OpenBLAS's own threads: started by the library as it loads, before vlm's code runs — so
    before the engine's first thread (vlm-0) — apart from the main thread."""
    engine = [int(t) for t, (name, _) in threads.items() if name.startswith("vlm-")]
    return {t for t in threads if int(t) != pid and (not engine or int(t) < min(engine))}


def watch(args, **kw):
    """Runs vlm with `args`, sampling its threads every INTERVAL. Returns (the most threads at
    work at once over one interval — CPU time gained ÷ wall time —, the names of every thread
    that did some interval's work, the share of the process's CPU time the samples account for,
    the finished process).

    OpenBLAS's threads, started as the library loads, spin about 0.1 s there (its THREAD_TIMEOUT,
    2^28 cycles) before they sleep, whatever vlm then does: they are left out of the intervals,
    and the caller checks they did no more than that spin in all."""
    p = subprocess.Popen([VLM, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    last, seen, most, workers = {}, {}, 0.0, set()
    total, then = 0, time.monotonic_ns()
    while True:
        try:
            now = on_cpu(p.pid)
            total = max(total, process_cpu(p.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        at = time.monotonic_ns()
        gained = {tid: ns - last.get(tid, (None, 0))[1] for tid, (_, ns) in now.items()}
        blas = openblas_threads(now, p.pid)
        if last:
            most = max(most, sum(g for t, g in gained.items() if t not in blas) / max(1, at - then))
        workers.update(f"{'openblas' if t in blas else now[t][0]}#{t}" for t, g in gained.items() if g >= WORKING)
        for tid, v in now.items():
            seen[tid] = v
        last, then = now, at
        if p.poll() is not None:
            break
        time.sleep(INTERVAL)
    out, err = p.communicate(timeout=600)
    accounted = sum(ns for _, ns in seen.values()) / max(1, total)
    blas = sum(seen[t][1] for t in openblas_threads(seen, p.pid)) / 1e9
    return most, workers, accounted, blas, subprocess.CompletedProcess(p.args, p.returncode, out, err)


def folder_of_images(tmp_path, n=16):
    d = tmp_path / "photos"
    d.mkdir()
    names = sorted(f for f in os.listdir(IMAGES) if f.endswith((".jpg", ".png")))
    for k in range(n):
        shutil.copy(os.path.join(IMAGES, names[k % len(names)]), d / f"{k:03d}_{names[k % len(names)]}")
    return d


WORKLOADS = {
    "resnet50 batch 8": lambda tmp: ["bench", "resnet50", "--batch", "8", "--backend", "blas", "--model", RESNET50,
                                     "--min-time", "0", "--min-iterations", "1"],
    "bert": lambda tmp: ["bench", "bert-base", "--model", BERT_BASE, "--batch", "8", "--seq", "64", "--backend", "blas",
                         "--min-time", "0", "--min-iterations", "1"],
    "image folder job": lambda tmp: ["embed-image", folder_of_images(tmp), "--model", RESNET50, "-o", tmp / "out.npy",
                                     "--quiet"],
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_threads_doing_work_never_exceed_the_budget(tmp_path, workload, threads):
    most, workers, accounted, blas, r = watch(WORKLOADS[workload](tmp_path) + ["--threads", threads])
    assert r.returncode == 0, r.stderr.decode()
    # The samples saw (nearly) all of the CPU time the process spent: no thread came and went
    # unseen between them.
    assert accounted >= 0.95, accounted
    assert most <= threads + SKEW, (most, sorted(workers))
    # OpenBLAS's threads spun at load and did no work after (each sgemm runs on the engine's
    # thread that calls it).
    assert blas <= 0.3, f"OpenBLAS's threads ran {blas:.2f} s"
    # The work is done by the engine's own threads (vlm-0 … vlm-N-1), plus the main thread (it
    # loads the model, then hands its work over and waits): no other thread does any.
    engine = {w for w in workers if w.startswith("vlm-")}
    assert {w.split("#")[0] for w in engine} <= {f"vlm-{k}" for k in range(threads)}, sorted(workers)
    assert {w.split("#")[0] for w in workers - engine} <= {"vlm", "openblas"}, sorted(workers)
    assert len([w for w in workers if w.startswith("vlm#")]) <= 1, sorted(workers)


def test_the_default_follows_the_affinity_mask():
    if not shutil.which("taskset"):
        pytest.fail("taskset (util-linux) is needed")
    args = ["bench", "resnet18", "--batch", "1", "--size", "64", "--backend", "blas", "--min-time", "0",
            "--min-iterations", "1", "--no-warmup", "--json"]
    env = {k: v for k, v in os.environ.items() if k not in ("VLM_THREADS", "OMP_NUM_THREADS")}
    r = subprocess.run(["taskset", "-c", "0", VLM, *args], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["threads"] == 1, r.stdout
    if len(os.sched_getaffinity(0)) >= 2:
        r = subprocess.run(["taskset", "-c", "0,1", VLM, *args], capture_output=True, text=True, env=env, timeout=300)
        assert json.loads(r.stdout)["results"][0]["threads"] == 2, r.stdout
