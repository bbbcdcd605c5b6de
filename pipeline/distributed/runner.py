"""Run a sanitisation or audit over a corpus on Ray Data.

    shard URIs -> read + decode (CPU tasks) -> purify (actor pool) -> write outputs (CPU tasks)
               -> driver: one manifest per shard, a line per finished shard, a summary at the end

Workers own whole shards; the driver handles shard URIs and manifests only, so its work grows with
the number of shards, not with samples or pixels. Ray Data streams and bounds the shards in flight.
Shards that already have a complete manifest are skipped (resume and incremental runs); `overwrite`
redoes them. Everything that can be checked before Ray starts is checked first: the input names
shards, the output is writable and not inside the input. Each run leaves a record of its own in
`runs/` (settings, summary, problems); `run.json` is a copy of the latest.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..io.shards import display
from ..io.storage import OutputWriteError, Storage, is_inside, join, shard_name
from ..sanitize.config import SanitizeConfig
from ..sanitize.outputs import output_paths

log = logging.getLogger(__name__)

# Ray Data's executor waits on its running tasks for at most a fixed time per scheduling step (and,
# waiting for all of them, usually for all of it). Its 0.1 s is made for short tasks; ours last
# seconds (a shard each), so most steps find nothing to do, and the loop cost the driver 5.8% of a
# core for as long as a run lasted (BENCHMARKS.md). Once the first shard is done the runner waits a
# quarter of a shard's purification time (0.1 to 1 s): the loop then costs about as much per shard
# whatever the shard takes, and a stage hand-over waits at most a quarter of a shard, which the
# actor's queue of shards hides. The constant is private to Ray (2.60, pinned):
# tests/distributed/test_runner.py checks it is there. DISILLUSION_SCHEDULING_WAIT_S fixes the wait
# (0.1: Ray's own).
RAY_SCHEDULING_WAIT_S, MAX_SCHEDULING_WAIT_S, SHARD_FRACTION = 0.1, 1.0, 4


def scheduling_wait(mean_shard_seconds: float | None) -> float:
    fixed = os.environ.get("DISILLUSION_SCHEDULING_WAIT_S")
    if fixed:
        return float(fixed)
    if not mean_shard_seconds:
        return RAY_SCHEDULING_WAIT_S
    return min(MAX_SCHEDULING_WAIT_S, max(RAY_SCHEDULING_WAIT_S, mean_shard_seconds / SHARD_FRACTION))


def pace_scheduling_loop(seconds: float) -> None:
    from ray.data._internal.execution import streaming_executor_state

    streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = seconds


@dataclass
class PlanResources:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    task_cpus: float  # each read+decode and each write task
    threads_per_actor: int


def plan_resources(cluster: dict[str, float], actors: int | None = None) -> PlanResources:
    """Size the purification pool from the cluster: one actor per GPU; on CPUs only, leave a CPU
    free for the read and write tasks (a pool that takes every CPU deadlocks the read stage).

    A CPU actor's torch threads may exceed its reservation: on a small machine the reserved CPU
    count would halve the purifier's speed, while reading and writing use a fraction of a core."""
    gpus = int(cluster.get("GPU", 0))
    cpus = float(cluster.get("CPU", 1))
    if gpus:
        return PlanResources(actors or gpus, cpus_per_actor=1.0 if cpus >= 2 * gpus else 0.5, gpus_per_actor=1.0, task_cpus=0.5,
                             threads_per_actor=2)
    if cpus <= 2:
        count = actors or 1
        return PlanResources(count, cpus_per_actor=max(0.5, cpus - 1), gpus_per_actor=0.0, task_cpus=0.5,
                             threads_per_actor=max(1, int(cpus) // count))
    per_actor = 2.0
    count = actors or max(1, int((cpus - 1) // per_actor))
    return PlanResources(count, cpus_per_actor=per_actor, gpus_per_actor=0.0, task_cpus=0.5, threads_per_actor=int(per_actor))


def is_done(storage: Storage, output: str, uri: str) -> bool:
    path = output_paths(output, shard_name(uri))["manifest"]
    if not storage.exists(path):
        return False
    try:
        return bool(json.loads(storage.read_bytes(path)).get("complete", True))
    except ValueError:
        return False


def run_corpus(
    config: SanitizeConfig,
    input_spec: str,
    output: str,
    *,
    overwrite: bool = False,
    ray_address: str | None = None,
    actors: int | None = None,
    report: bool = False,
    echo=print,
) -> dict[str, Any]:
    """Process every shard of `input_spec` not yet done; returns the run summary. With `report`,
    report.html describes the whole output (shards of earlier runs included) once the run is done."""
    import ray

    from .rows import uri_field
    from .stages import plan_stages

    storage = Storage(config.s3_endpoint)
    shards = check_input_and_output(storage, input_spec, output)
    todo = shards if overwrite else [u for u in shards if not is_done(storage, output, u)]
    record = RunRecord(storage, output, config)
    summary = {"shards": len(shards), "skipped": len(shards) - len(todo), "processed": 0, "samples": 0, "errors": 0,
               "verdicts": {"clean": 0, "illusion": 0, "uncertain": 0}, "problems": {},
               "batches": {"count": 0, "images": 0, "slots": 0}, "purifying_seconds": 0.0}
    record.write(summary, status="starting")  # also proves the output writable before Ray starts
    echo(f"{len(shards)} shard(s), {len(shards) - len(todo)} already done, {len(todo)} to process")

    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    record.resources = plan_resources(ray.cluster_resources(), actors)
    summary["actors"] = record.resources.actors
    started, cpu_started = time.perf_counter(), time.process_time()
    if not todo:
        record.write(summary, status="finished")
        _report(config, output, summary, report, echo, record.resources)
        return summary

    ray.data.DataContext.get_current().enable_progress_bars = False  # `echo` reports each finished shard
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # its advice to turn them back on
    dataset = ray.data.from_items([{"uri": uri_field(u)} for u in todo], override_num_blocks=len(todo))
    for stage in plan_stages(config, output, record.resources):
        dataset = stage.apply(dataset)
    try:
        first = _collect(dataset, len(todo), summary, record, echo, started)
    finally:
        pace_scheduling_loop(RAY_SCHEDULING_WAIT_S)  # Ray's own again, for whatever else runs in this process
    summary["seconds"], cpu = round(time.perf_counter() - started, 2), time.process_time()  # the run's end, in wall and CPU time
    summary["samples_per_second"] = round(summary["samples"] / summary["seconds"], 3) if summary["seconds"] else None
    # The rate once the pipeline is full: from the first finished shard to the last (given a few shards).
    steady = (summary["seconds"] - first.seconds, summary["samples"] - first.samples) if first and summary["processed"] >= 3 else (0, 0)
    summary["first_shard_seconds"] = round(first.seconds, 2) if first else None
    summary["steady_samples_per_second"] = round(steady[1] / steady[0], 3) if steady[0] > 0 and steady[1] else None
    # What this process (the driver) costs: CPU seconds over the run, and per 1,000 samples once the
    # pipeline is full, which bounds how fast a cluster of any size can go with one driver.
    summary["driver_cpu_seconds"] = round(cpu - cpu_started, 3)
    summary["steady_driver_cpu_per_1000_samples"] = round(1000 * (cpu - first.cpu_seconds) / steady[1], 3) if steady[1] else None
    batches = summary["batches"]
    batches["fill"] = round(batches["images"] / batches["slots"], 4) if batches["slots"] else None
    record.write(summary, status="finished")
    _report(config, output, summary, report, echo, record.resources)
    return summary


class FirstShard(NamedTuple):
    """Where the run stood when its first shard was done (start-up included)."""

    seconds: float
    samples: int
    cpu_seconds: float  # this process's CPU time (time.process_time)


def _collect(dataset, total: int, summary: dict[str, Any], record: RunRecord, echo, started: float) -> FirstShard | None:
    """Count each shard's manifest as it arrives; returns where the run stood at its first shard."""
    first = None
    pace_scheduling_loop(scheduling_wait(None))
    for row in dataset.iter_rows():
        if row["write_error"]:
            summary["write_error"] = row["write_error"]
            record.write(summary, status="stopped: outputs cannot be written", best_effort=True)
            raise OutputWriteError(f"{row['write_error']} (the run stopped; shards finished so far are kept, rerun to resume)")
        manifest = json.loads(row["manifest"])
        record.models = record.models or manifest["models"]
        _count(manifest, summary)
        pace_scheduling_loop(scheduling_wait(summary["purifying_seconds"] / summary["processed"]))
        first = first or FirstShard(time.perf_counter() - started, summary["samples"], time.process_time())
        echo(f"{progress(summary['processed'], total, summary['samples'], time.perf_counter() - started)} {shard_line(manifest)}")
    return first


def _report(config: SanitizeConfig, output: str, summary: dict[str, Any], wanted: bool, echo, resources: PlanResources) -> None:
    """The report's gallery purifies a dozen samples again: in a task with a purification actor's
    resources (a GPU worker on a GPU cluster), not on the driver's node."""
    if wanted:
        import ray

        from ..report import write_report

        task = ray.remote(num_cpus=resources.task_cpus, num_gpus=resources.gpus_per_actor, max_retries=1)(write_report)
        echo(f"report: {ray.get(task.remote(config, output, summary=summary))}")


def progress(done: int, total: int, samples: int, seconds: float) -> str:
    """[shards done/total, samples/s, time left]: the time left from the mean time per shard so far."""
    rate = f"{samples / seconds:.1f} samples/s" if seconds > 0 else "-"
    left = (total - done) * seconds / done if done else 0
    eta = f"{left / 3600:.1f} h" if left >= 5400 else f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
    return f"[{done}/{total} shards, {rate}, about {eta} left]"


def check_input_and_output(storage: Storage, input_spec: str, output: str) -> list[str]:
    """The input's shard URIs, once the run is known to make sense: some shards, distinct names, and
    an output that is neither among nor below the input (its shards would be read as input by the
    next run, and rewritten while being read)."""
    shards = storage.expand(input_spec)
    names = [shard_name(u) for u in shards]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"input shards share a name ({', '.join(twice[:3])}); outputs are named after input shards")
    inputs = [input_spec] if storage.is_directory(input_spec) else shards
    if any(is_inside(output, uri) for uri in inputs) or any(is_inside(uri, output) for uri in shards):
        raise ValueError(f"the output {output} is inside the input {input_spec}; choose an output outside it")
    return shards


def _count(manifest: dict[str, Any], summary: dict[str, Any]) -> None:
    summary["processed"] += 1
    batches = manifest["batches"]
    summary["batches"]["count"] += batches["count"]
    summary["batches"]["images"] += batches["images"]
    summary["batches"]["slots"] += batches["count"] * batches["size"]
    summary["samples"] += manifest["samples"]
    summary["purifying_seconds"] = round(summary["purifying_seconds"] + manifest["seconds"], 3)  # actor time, summed over actors
    summary["errors"] += manifest["errors"]
    for verdict, count in manifest["verdicts"].items():
        summary["verdicts"][verdict] += count
    if manifest["problems"]:
        summary["problems"][manifest["shard"]] = manifest["problems"]


def shard_line(manifest: dict[str, Any]) -> str:
    v = manifest["verdicts"]
    return (f"{display(manifest['shard'])}: {manifest['samples']} samples, {v['clean']} clean, {v['illusion']} illusion, "
            f"{v['uncertain']} uncertain, {manifest['errors']} errors, {manifest['seconds']:.1f} s purifying"
            + (f", PROBLEMS: {'; '.join(manifest['problems'])}" if manifest["problems"] else ""))


class RunRecord:
    """What a run did: `runs/<start time>-<pid>.json` for this run (kept: every run's problems stay on
    record) and `run.json`, the latest run."""

    def __init__(self, storage: Storage, output: str, config: SanitizeConfig):
        self.storage, self.output, self.config = storage, output, config
        self.resources: PlanResources | None = None
        self.models: dict[str, str] = {}
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.name = f"{self.started_at.replace(':', '')}-{os.getpid()}.json"

    def write(self, summary: dict, *, status: str, best_effort: bool = False) -> None:
        import ray
        import torch

        from .. import __version__

        snapshot = json.dumps({
            "status": status,
            "started_at": self.started_at,
            "config": self.config.to_json(),  # the settings in effect (thresholds included): `--config run.json` repeats the run
            "work_size": self.config.working_size(),
            "resources": self.resources.__dict__ if self.resources else None,
            "versions": {"disillusion": __version__, "torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version()},
            "models": self.models or None,
            "summary": summary,
            "host": platform.node(),
            "pid": os.getpid(),
        }, indent=2, sort_keys=True).encode()
        try:
            self.storage.write_bytes(join(self.output, "runs", self.name), snapshot)
            self.storage.write_bytes(join(self.output, "run.json"), snapshot)
        except OutputWriteError:
            if not best_effort:
                raise
