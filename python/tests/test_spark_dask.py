"""The README's Spark (mapInPandas) and Dask (map_partitions) snippets, run as written against
real engines — pyspark in local mode on the machine's Java, and a Dask distributed local cluster
of worker processes — with only the model path and the input frame filled in. Every row must
come back, equal to `vlm embed-text`'s row for its text; a null text must be an error value of
kind missing, never a lost row or the embedding of the text "None"."""
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import BERT, ROOT, VLM

TEXTS = ["A cat sitting on a couch.", "naïve café — 東京 🙂", "", "a dog", None, "Hello, world!\tTabs.", "x " * 300]


def snippet(engine):
    """The python block defining `embed` after the README's **Spark** or **Dask** heading (the one
    before it builds an example frame; the test passes its own), the model path replaced."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"\*\*" + engine + r"\*\*.*?```python\n((?:(?!```).)*?def embed.*?)```", readme, re.S).group(1)
    assert "/models/all-MiniLM-L6-v2" in block
    return block.replace("/models/all-MiniLM-L6-v2", BERT)


def frame_snippet(engine):
    """The python block after the README's **Spark** or **Dask** heading that builds its example
    frame (the README test skips it for Spark: it starts a session, which this test has)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    return re.search(r"\*\*" + engine + r"\*\*.*?```python\n((?:(?!```).)*?)```", readme, re.S).group(1)


def frame():
    return pd.DataFrame({"id": [f"t{k}" for k in range(len(TEXTS))], "text": pd.Series(TEXTS, dtype=object)})


def cli_rows(tmp_path):
    present = [t for t in TEXTS if t is not None]
    out = tmp_path / "cli.npy"
    r = subprocess.run([VLM, "embed-text", "--model", BERT, "--file", "-", "-o", str(out), "--quiet"],
                       input=("\n".join(present) + "\n").encode(), capture_output=True)
    assert r.returncode == 0, r.stderr
    rows = np.load(out)
    return {t: rows[k] for k, t in enumerate(present)}


def check(out, tmp_path):
    assert sorted(out["id"]) == sorted(frame()["id"]), "every row comes back"
    want = cli_rows(tmp_path)
    for _, row in out.iterrows():
        text = TEXTS[int(row["id"][1:])]
        v = np.asarray(row["embedding"], dtype=np.float32)
        if text is None:
            assert np.isnan(v).all() and row["error"] == "no value (None, NaN or NA)", row
        else:
            assert row["error"] is None or pd.isna(row["error"]), row
            assert np.linalg.norm(v - want[text]) <= 1e-6 * np.linalg.norm(want[text]), text


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_spark_snippet_on_local_spark(workdir):
    import sys
    from pyspark.sql import SparkSession
    # Spark's Python workers run this interpreter (the venv's, with pyarrow and numpy).
    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    spark = (SparkSession.builder.master("local[2]").appName("vlm-test").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    try:
        example = {}
        exec(frame_snippet("Spark"), example)  # the README's own frame, on this session
        assert example["spark_df"].count() == 2
        spark_df = spark.createDataFrame(frame(), schema="id string, text string").repartition(2)
        exec(snippet("Spark"), {"spark_df": spark_df})
    finally:
        spark.stop()
    check(pd.read_parquet(workdir / "out"), workdir)


def test_the_dask_snippet_on_a_distributed_cluster(workdir):
    import dask.dataframe as dd
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster):
        ddf = dd.from_pandas(frame(), npartitions=3)
        exec(snippet("Dask"), {"ddf": ddf})
    check(pd.read_parquet(workdir / "out"), workdir)
