"""The Ray pipeline on a real local Ray cluster with the bundled demo models."""

import json
import os
from dataclasses import replace
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from pipeline.distributed.runner import plan_resources, run_corpus
from pipeline.io.shards import read_samples, write_samples
from pipeline.io.storage import Storage
from pipeline.presets import get_preset
from pipeline.sanitize.config import SanitizeConfig
from pipeline.sanitize.stages import process_shard
from tests.corpora import write_corpus

CONFIG = SanitizeConfig.resolve(preset="demo", n=4, batch_size=8)


def test_resources_never_take_every_cpu():
    assert plan_resources({"CPU": 2.0}).cpus_per_actor <= 1.0
    two = plan_resources({"CPU": 2.0})
    assert two.actors * two.cpus_per_actor + two.task_cpus <= 2.0
    assert plan_resources({"CPU": 16.0, "GPU": 4.0}).actors == 4
    assert plan_resources({"CPU": 16.0, "GPU": 4.0}).gpus_per_actor == 1.0
    big = plan_resources({"CPU": 32.0})
    assert big.actors * big.cpus_per_actor < 32


def test_the_scheduling_wait_the_runner_sets_exists_in_the_pinned_ray():
    """A private constant of Ray Data's executor: a Ray upgrade that renames it must fail here, not
    silently bring the driver's busy loop back."""
    from ray.data._internal.execution import streaming_executor_state as state

    from pipeline.distributed.runner import RAY_SCHEDULING_WAIT_S, pace_scheduling_loop, scheduling_wait

    assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == RAY_SCHEDULING_WAIT_S
    try:
        pace_scheduling_loop(0.4)
        assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == 0.4
    finally:
        pace_scheduling_loop(RAY_SCHEDULING_WAIT_S)
    # A quarter of a shard's purification time, within [Ray's 0.1 s, 1 s]; Ray's own before any shard is done.
    assert [scheduling_wait(s) for s in (None, 0.2, 1.0, 2.0, 60.0)] == [0.1, 0.1, 0.25, 0.5, 1.0]


def verdict_rows(out_dir):
    rows = []
    for name in sorted(os.listdir(os.path.join(out_dir, "verdicts"))):
        rows += pq.read_table(os.path.join(out_dir, "verdicts", name)).to_pylist()
    return rows


def test_sanitize_resume_and_equivalence_with_the_local_path(tmp_path, ray_cluster):
    storage = Storage()
    (tmp_path / "noise.key").write_bytes(os.urandom(32))  # a key file: the local run below must draw what the Ray run drew
    config = replace(CONFIG, noise_key_file=str(tmp_path / "noise.key"))
    shards = write_corpus(lambda name, data: storage.write_bytes(str(tmp_path / "in" / name), data), shards=3, per_shard=8)
    # A shard with a corrupt image and a missing image: error rows, not a crash.
    bad = shards[0][:2]
    bad[0].members["png"] = b"broken"
    del bad[1].members["png"]
    storage.write_bytes(str(tmp_path / "in" / "shard-000003.tar"), write_samples(bad))

    out = tmp_path / "out"
    summary = run_corpus(config, str(tmp_path / "in"), str(out), echo=lambda line: None)
    assert summary["processed"] == 4 and summary["samples"] == 26 and summary["errors"] == 2 and not summary["problems"]
    # The driver's own cost, over the run and once the first shard is out (what bounds a cluster's speed).
    assert summary["driver_cpu_seconds"] > 0 and summary["steady_driver_cpu_per_1000_samples"] > 0
    rows = verdict_rows(out)
    assert sorted(r["key"] for r in rows if r["shard"] != "shard-000003") == sorted(s.key for shard in shards for s in shard)
    assert len(rows) == 26
    for name in ("shard-000000", "shard-000003"):
        manifest = json.loads((out / "manifests" / f"{name}.json").read_text())
        assert manifest["complete"] and manifest["models"]["encoder"].startswith("clip-")
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["samples"] == 26 and run["config"]["n"] == 4
    assert SanitizeConfig.resolve(run["config"]) == config  # every setting in effect, thresholds included: repeatable
    key = config.noise_key()
    assert run["noise"]["fingerprint"] == key.fingerprint == manifest["models"]["noise"]  # the key's name, never the key
    for written in [out / "run.json", *(out / "manifests").iterdir()]:
        assert key.secret.hex() not in written.read_text() and key.secret not in written.read_bytes()
    assert run["config"]["max-drift"] == get_preset("demo").verdict.max_drift

    # Same verdicts as the single-process path under the same key (seeds come from the key and the
    # samples, not from batches or workers).
    local = tmp_path / "local"
    purifier = config.build_purifier()
    process_shard(storage, str(tmp_path / "in" / "shard-000001.tar"), str(local), purifier, policy=config.policy, noise=key)
    ray_rows = pq.read_table(out / "verdicts" / "shard-000001.parquet").to_pylist()
    local_rows = pq.read_table(local / "verdicts" / "shard-000001.parquet").to_pylist()
    assert [(r["key"], r["verdict"], r["label_consensus"], r["samples_used"]) for r in ray_rows] == [
        (r["key"], r["verdict"], r["label_consensus"], r["samples_used"]) for r in local_rows
    ]
    ray_shard = list(read_samples((out / "shards" / "shard-000001.tar").read_bytes()))
    local_shard = list(read_samples((local / "shards" / "shard-000001.tar").read_bytes()))
    for a, b in zip(ray_shard, local_shard):  # the notes hold floats that may differ in the last bits
        assert json.loads(a.members.pop("disillusion.json"))["verdict"] == json.loads(b.members.pop("disillusion.json"))["verdict"]
        assert a.members == b.members

    # Re-running skips finished shards; a new shard is processed incrementally.
    again = run_corpus(config, str(tmp_path / "in"), str(out), echo=lambda line: None)
    assert again["skipped"] == 4 and again["processed"] == 0
    write_corpus(lambda name, data: storage.write_bytes(str(tmp_path / "in" / name.replace("000000", "000009")), data), shards=1, per_shard=3)
    incremental = run_corpus(config, str(tmp_path / "in"), str(out), echo=lambda line: None)
    assert incremental["skipped"] == 4 and incremental["processed"] == 1


def test_unreadable_shard_is_reported_and_retried(tmp_path, ray_cluster):
    storage = Storage()
    write_corpus(lambda name, data: storage.write_bytes(str(tmp_path / "in" / name), data), shards=1, per_shard=4)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'in' / 'shard-000000.tar'}\n{tmp_path / 'in' / 'missing.tar'}\n")
    summary = run_corpus(CONFIG, str(listing), str(tmp_path / "out"), echo=lambda line: None)
    assert summary["processed"] == 2 and "missing" in summary["problems"]
    manifest = json.loads((tmp_path / "out" / "manifests" / "missing.json").read_text())
    assert manifest["complete"] is False and "cannot read shard" in manifest["problems"][0]
    assert run_corpus(CONFIG, str(listing), str(tmp_path / "out"), echo=lambda line: None)["skipped"] == 1  # retried


def test_kill_and_resume_processes_every_sample_exactly_once(tmp_path):
    storage = Storage()
    shards = write_corpus(lambda name, data: storage.write_bytes(str(tmp_path / "in" / name), data), shards=10, per_shard=6)
    command = [sys.executable, "-m", "jobs", "sanitize", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--n", "4", "--batch-size", "4"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    with open(tmp_path / "killed-run.log", "wb") as log:  # a file, so a full pipe never stalls the job
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    manifests = tmp_path / "out" / "manifests"
    while time.time() < deadline and process.poll() is None and not (manifests.exists() and any(manifests.iterdir())):
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the whole job, Ray workers included
    process.wait()
    done_before = len(list(manifests.iterdir())) if manifests.exists() else 0
    assert done_before < 10, "the job finished before it could be killed; make the corpus larger"

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    keys = [r["key"] for r in verdict_rows(tmp_path / "out")]
    assert sorted(keys) == sorted(s.key for shard in shards for s in shard)  # exactly once
    assert len(list(manifests.iterdir())) == 10
    for name in os.listdir(tmp_path / "out" / "shards"):
        assert [s.key for s in read_samples((tmp_path / "out" / "shards" / name).read_bytes())]


def map_worker_pids() -> list[int]:
    """Processes of Ray Data actors (Ray titles them `ray::MapWorker(...)`)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if b"MapWorker" in handle.read():
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


def test_a_killed_actor_is_restarted_and_loses_nothing(tmp_path, ray_cluster):
    import threading

    storage = Storage()
    shards = write_corpus(lambda name, data: storage.write_bytes(str(tmp_path / "in" / name), data), shards=6, per_shard=8)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_corpus(CONFIG, str(tmp_path / "in"), str(tmp_path / "out"), echo=lambda line: None)))
    runner.start()
    manifests, killed = tmp_path / "out" / "manifests", None
    deadline = time.time() + 600  # generous: on a loaded machine the actor can take minutes to start
    while killed is None and runner.is_alive() and time.time() < deadline:
        workers = map_worker_pids()
        if workers and manifests.exists() and any(manifests.iterdir()):  # mid-run: some shards done, others not
            killed = len(list(manifests.iterdir()))
            os.kill(workers[0], signal.SIGKILL)
        time.sleep(0.05)
    runner.join(timeout=600)
    assert killed is not None and killed < 6, "the run finished before an actor could be killed; make the corpus larger"
    assert result["samples"] == 48 and not result["problems"]
    assert sorted(r["key"] for r in verdict_rows(tmp_path / "out")) == sorted(s.key for shard in shards for s in shard)


def test_an_output_that_fails_mid_run_stops_it_with_exit_code_3(tmp_path, ray_cluster, capsys):
    """The output checks out before Ray starts, then writing a shard's outputs fails (here its
    `verdicts` directory is a file, as a full disk or a revoked permission would fail it): one clear
    line, exit code 3, and a rerun once the cause is gone finishes the corpus."""
    from jobs.cli import main

    storage = Storage()
    write_corpus(lambda name, data: storage.write_bytes(str(tmp_path / "in" / name), data), shards=2, per_shard=3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "verdicts").write_text("in the way")
    argv = ["audit", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--n", "2"]
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "verdicts" in err[0] and "rerun to resume" in err[0]
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["status"].startswith("stopped") and "cannot write" in record["summary"]["stopped"]
    (tmp_path / "out" / "verdicts").unlink()
    assert main(argv) == 0
    assert len(os.listdir(tmp_path / "out" / "manifests")) == 2


def test_a_full_disk_stops_the_run_with_exit_code_3(tmp_path, ray_cluster, capsys):
    from jobs.cli import main

    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        storage = Storage()
        write_corpus(lambda name, data: storage.write_bytes(str(tmp_path / "in" / name), data), shards=4, per_shard=8)
        assert main(["sanitize", "--input", str(tmp_path / "in"), "--output", str(disk / "out"), "--n", "2"]) == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "No space left on device" in err[0]
    finally:
        subprocess.run(["umount", str(disk)], check=True)
