"""Faults injected into real runs, each followed by a rerun that leaves every sample exactly once:
a worker node lost mid-run (a three-node local Ray cluster), the object store (SeaweedFS) down before
and during a run, and Ctrl-C. (An actor killed mid-run and the driver killed with SIGKILL are in
test_runner.py.) The runs are `disillusion` processes of their own, as an operator starts them."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.storage import Storage
from tests.corpora import write_corpus

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "AWS_MAX_ATTEMPTS": "2"}


def job(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs", *args, "--n", "2", "--batch-size", "8"]


def exactly_once(storage: Storage, output: str, shards) -> None:
    keys = []
    for uri in storage.list_prefix(f"{output}/verdicts"):
        keys += pq.read_table(pa.BufferReader(storage.read_bytes(uri))).column("key").to_pylist()
    assert sorted(keys) == sorted(s.key for shard in shards for s in shard)


def start(command: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(command, env=ENV, stdout=log, stderr=subprocess.PIPE, text=True)


def wait_for_manifests(storage: Storage, output: str, count: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            if len(storage.list_prefix(f"{output}/manifests")) >= count:
                return
        except Exception:
            pass
        time.sleep(0.1)


def test_a_lost_worker_node_is_planned_around(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tests.distributed.node_loss", str(tmp_path)], env=ENV, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert any(line.startswith("killed a worker node") for line in result["lines"])
    # The run finishes on the capacity that remains, or says it cannot and stops; the rerun finishes.
    first = result["first"]
    assert "stopped" in first or first["processed"] == 12, first
    assert result["rerun"]["processed"] + result["rerun"]["skipped"] == 12
    if "processed" in first:
        assert first["replans"] >= 1 and any(line.startswith("lost capacity") for line in result["lines"])
    from tests.distributed.node_loss import PER_SHARD, SHARDS

    keys = [k for name in os.listdir(tmp_path / "out" / "verdicts") for k in pq.read_table(tmp_path / "out" / "verdicts" / name).column("key").to_pylist()]
    assert len(keys) == len(set(keys)) == SHARDS * PER_SHARD


def test_a_store_down_before_a_rerun_stops_it_with_one_line(tmp_path, seaweed):
    storage = Storage(seaweed.endpoint)
    seaweed.client().create_bucket(Bucket="before")
    shards = write_corpus(lambda name, data: Storage().write_bytes(str(tmp_path / "in" / name), data), shards=3, per_shard=4)
    command = job("sanitize", "--input", str(tmp_path / "in"), "--output", "s3://before/out", "--s3-endpoint", seaweed.endpoint)
    assert subprocess.run(command, env=ENV, capture_output=True, timeout=300).returncode == 0
    late = write_corpus(lambda name, data: Storage().write_bytes(str(tmp_path / "in" / "shard-late.tar"), data), shards=1, per_shard=4)
    seaweed.stop()
    try:
        down = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    finally:
        seaweed.start()
    assert down.returncode == 3, down.stderr
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1, down.stderr
    line = lines[0]
    assert "cannot be reached" in line and "rerun to resume" in line
    assert subprocess.run(command, env=ENV, capture_output=True, timeout=300).returncode == 0
    exactly_once(storage, "s3://before/out", [*shards, *late])
    assert len(storage.list_prefix("s3://before/out/manifests")) == 4


def test_a_store_that_dies_mid_run_stops_it_and_a_rerun_finishes(tmp_path, seaweed):
    storage = Storage(seaweed.endpoint)
    seaweed.client().create_bucket(Bucket="during")
    shards = write_corpus(lambda name, data: Storage().write_bytes(str(tmp_path / "in" / name), data), shards=8, per_shard=6)
    command = job("sanitize", "--input", str(tmp_path / "in"), "--output", "s3://during/out", "--s3-endpoint", seaweed.endpoint)
    with open(tmp_path / "run.log", "w") as log:
        process = start(command, log)
        wait_for_manifests(storage, "s3://during/out", 1, process)
        seaweed.stop()
        try:
            _, err = process.communicate(timeout=600)
        finally:
            seaweed.start()
    assert process.returncode == 3, err
    assert len(err.strip().splitlines()) == 1 and "rerun to resume" in err
    done = len(storage.list_prefix("s3://during/out/manifests"))
    assert 1 <= done < 8, "the run finished before the store could be stopped; make the corpus larger"
    assert subprocess.run(command, env=ENV, capture_output=True, timeout=300).returncode == 0
    exactly_once(storage, "s3://during/out", shards)


def test_ctrl_c_stops_with_one_line_and_a_rerun_finishes(tmp_path):
    storage = Storage()
    shards = write_corpus(lambda name, data: storage.write_bytes(str(tmp_path / "in" / name), data), shards=8, per_shard=6)
    output = str(tmp_path / "out")
    command = job("sanitize", "--input", str(tmp_path / "in"), "--output", output)
    with open(tmp_path / "run.log", "w") as log:
        process = start(command, log)
        wait_for_manifests(storage, output, 1, process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    [line] = err.strip().splitlines()
    assert "interrupted" in line and "rerun to resume" in line
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "interrupted"
    done = len(os.listdir(tmp_path / "out" / "manifests"))
    assert done < 8, "the run finished before it could be interrupted; make the corpus larger"
    assert subprocess.run(command, env=ENV, capture_output=True, timeout=300).returncode == 0
    exactly_once(storage, output, shards)
