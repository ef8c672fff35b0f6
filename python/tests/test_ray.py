"""vlm inside Ray Data: map_batches with vlm.ray.TextEmbedder / ImageEmbedder, written to
Parquet, equals the command line's rows; broken files are error rows with errors.jsonl's kind;
each actor starts one child; a child killed mid-run still yields every row exactly once."""
import json
import os
import signal
import subprocess
import threading

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import BERT, RESNET, VLM

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def read_parquet(folder):
    t = pq.read_table(folder).to_pandas()
    return {str(r["id"]): r for _, r in t.iterrows()}


def test_text_and_image_jobs_equal_the_cli(ray_cluster, tmp_path, photos):
    import vlm.ray
    starts = tmp_path / "starts.log"
    log = {"runtime_env": {"env_vars": {"VLM_WORKER_START_LOG": str(starts)}}}   # each child start, one line
    texts = [f"a photo of thing {i}" + " with more words" * (i % 7) for i in range(300)]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    ref = np.load(subprocess_rows(["embed-text", "--model", BERT, "--file", str(tmp_path / "texts.txt")], tmp_path / "t.npy"))
    ds = ray.data.from_items([{"id": str(i + 1), "text": t} for i, t in enumerate(texts)])
    ds = ds.map_batches(vlm.ray.TextEmbedder, fn_constructor_kwargs={"model": BERT}, batch_format="numpy",
                        batch_size=64, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, **log)
    ds.write_parquet(str(tmp_path / "text_out"))
    rows = read_parquet(str(tmp_path / "text_out"))
    assert len(rows) == 300
    for i in range(300):
        v = np.asarray(rows[str(i + 1)]["embedding"], dtype=np.float32)
        assert np.linalg.norm(v - ref[i]) / np.linalg.norm(ref[i]) <= 1e-6
        assert pd.isna(rows[str(i + 1)]["error"]), "no error (null)"

    good, broken = photos
    paths = good + list(broken)
    out = tmp_path / "i.npy"
    subprocess_rows(["embed-image", "--list", "-", "--model", RESNET], out, stdin="\n".join(paths).encode())
    iref, iids = np.load(out), (tmp_path / "i.npy.ids.txt").read_text().splitlines()
    kinds = {json.loads(l)["id"]: json.loads(l)["kind"] for l in (tmp_path / "i.npy.errors.jsonl").read_text().splitlines()}
    ds = ray.data.from_items([{"id": p, "path": p} for p in paths])
    ds = ds.map_batches(vlm.ray.ImageEmbedder, fn_constructor_kwargs={"model": RESNET}, batch_format="numpy",
                        batch_size=4, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, **log)
    ds.write_parquet(str(tmp_path / "image_out"))
    rows = read_parquet(str(tmp_path / "image_out"))
    assert len(rows) == len(paths)
    for p in good:
        v = np.asarray(rows[p]["embedding"], dtype=np.float32)
        r = iref[iids.index(p)]
        assert np.linalg.norm(v - r) / np.linalg.norm(r) <= 1e-6
    for p, kind in broken.items():
        assert rows[p]["error_kind"] == kind == kinds[p]
        assert np.isnan(np.asarray(rows[p]["embedding"], dtype=np.float32)).all()
    # One actor per job, each with one child (nothing was killed here).
    assert len(starts.read_text().splitlines()) == 2


def test_child_killed_mid_run_yields_every_row_once(ray_cluster, tmp_path):
    import vlm.ray
    starts, kills = tmp_path / "starts.log", tmp_path / "kills.log"
    log = {"runtime_env": {"env_vars": {"VLM_WORKER_START_LOG": str(starts)}}}
    texts = [f"caption {i} " * 30 for i in range(4000)]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    ref = np.load(subprocess_rows(["embed-text", "--model", BERT, "--file", str(tmp_path / "texts.txt")], tmp_path / "t.npy"))

    # Defined here, so Ray ships the class itself to the actor (cloudpickle by value).
    class KilledMidBatch(vlm.ray.TextEmbedder):
        """A TextEmbedder whose vlm child is SIGKILLed once, in the middle of its second batch, at
        an event rather than after a delay: the batch's first fifth is sent and the rest held
        back; once that fifth is answered (the child waits for more, nothing half written) the
        child is killed, and the rest go to the dead child."""

        def __init__(self, kill_log, **kw):
            super().__init__(**kw)
            self.kill_log, self.batches = kill_log, 0

        def __call__(self, batch):
            self.batches += 1
            n = len(batch[self.text_column])
            if self.batches >= 2 and n >= 2 and not os.path.exists(self.kill_log):
                self.kill_mid_run(self.worker._child, n // 5 or 1)
            return super().__call__(batch)

        def kill_mid_run(self, child, answered):
            from killing import kill_mid_run

            def record(pid, answered, n):
                with open(self.kill_log, "a") as f:
                    f.write(f"{pid} {answered} {n}\n")
            kill_mid_run(child, answered, record)

    ds = ray.data.from_items([{"id": str(i + 1), "text": t} for i, t in enumerate(texts)])
    ds = ds.map_batches(KilledMidBatch, fn_constructor_kwargs={"model": BERT, "kill_log": str(kills)}, batch_format="numpy",
                        batch_size=500, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, **log)
    ds.write_parquet(str(tmp_path / "out"))
    t = pq.read_table(str(tmp_path / "out")).to_pandas()
    assert sorted(t["id"], key=int) == [str(i + 1) for i in range(4000)], "every row exactly once"
    started = [int(l.split()[1]) for l in starts.read_text().splitlines()]
    pid, answered, sent = map(int, kills.read_text().split())
    assert pid == started[0] and 0 < answered < sent, "the first child was killed mid-batch, part of it answered"
    assert len(started) == 2, "the killed child was restarted"
    for _, r in t.iterrows():
        i = int(r["id"]) - 1
        assert pd.isna(r["error"]), (r["id"], r["error_kind"], r["error"])
        v = np.asarray(r["embedding"], dtype=np.float32)
        assert np.linalg.norm(v - ref[i]) / np.linalg.norm(ref[i]) <= 1e-6


def subprocess_rows(args, out, stdin=None):
    r = subprocess.run([VLM] + args + ["-o", str(out), "--quiet"], input=stdin, capture_output=True)
    assert r.returncode in (0, 2), r.stderr
    return str(out)
