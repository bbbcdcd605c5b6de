"""Run a sanitisation or audit over a corpus on Ray Data.

    shard URIs -> read + decode (CPU tasks) -> judge (actor pool) -> write outputs (CPU tasks)
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
import _thread
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..io.shards import display
from ..io.storage import OutputWriteError, Storage, is_inside, join, shard_name
from ..models.noise import NoiseKey
from ..sanitize.config import SanitizeConfig
from ..sanitize.outputs import is_done, output_paths
from ..stops import RESUMABLY, CannotProgress, RunStopped

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
# A run that finishes no shard for this long stops resumably (CannotProgress): it must exceed the
# slowest shard, the models' start-up included (`--stall-timeout`).
DEFAULT_STALL_SECONDS = 1800.0
# Plans in a row that finish no shard after the cluster lost capacity before the run gives up.
MAX_FRUITLESS_PLANS = 3


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
    max_actors: int = 0  # above `actors`: the pool grows up to this many as the cluster scales up


def plan_resources(cluster: dict[str, float], actors: int | tuple[int, int] | None = None) -> PlanResources:
    """Size the purification pool from the cluster as it is now: one actor per GPU; on CPUs only,
    leave a CPU free for the read and write tasks (a pool that takes every CPU deadlocks the read
    stage). `actors`: a fixed size, or (min, max) for a pool that grows with the cluster.

    A CPU actor's torch threads may exceed its reservation: on a small machine the reserved CPU
    count would halve the purifier's speed, while reading and writing use a fraction of a core."""
    if isinstance(actors, tuple):
        plan = plan_resources(cluster, actors[0])
        plan.max_actors = actors[1]
        return plan
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


def run_corpus(
    config: SanitizeConfig,
    input_spec: str,
    output: str,
    *,
    overwrite: bool = False,
    ray_address: str | None = None,
    actors: int | tuple[int, int] | None = None,
    report: bool = False,
    echo=print,
    stall_seconds: float = DEFAULT_STALL_SECONDS,
) -> dict[str, Any]:
    """Process every shard of `input_spec` not yet done; returns the run summary. With `report`,
    report.html describes the whole output (shards of earlier runs included) once the run is done.

    `actors`: the pool's size, or (min, max) to let it grow with the cluster (default: sized from
    the cluster). A run that cannot go on raises RunStopped (the run record says why); Ctrl-C
    leaves the record `interrupted`. Either way the finished shards are kept and a rerun resumes."""
    import ray

    storage = Storage(config.s3_endpoint)
    shards = check_input_and_output(storage, input_spec, output)
    todo = shards if overwrite else [u for u in shards if not is_done(storage, output, u)]
    noise = config.noise_key()  # once: every shard of the run draws under the same key
    record = RunRecord(storage, output, config, noise)
    summary = {"shards": len(shards), "skipped": len(shards) - len(todo), "processed": 0, "samples": 0, "errors": 0,
               "verdicts": {"clean": 0, "illusion": 0, "uncertain": 0}, "problems": {},
               "batches": {"count": 0, "images": 0, "slots": 0}, "purifying_seconds": 0.0, "replans": 0}
    record.write(summary, status="starting")  # also proves the output writable before Ray starts
    echo(f"{len(shards)} shard(s), {len(shards) - len(todo)} already done, {len(todo)} to process")
    try:
        if not ray.is_initialized():
            connect(ray_address)
        started, cpu_started = time.perf_counter(), time.process_time()
        first = _process(Run(config, storage, output, todo, actors, summary, record, echo, started, stall_seconds))
    except KeyboardInterrupt:
        record.write(summary, status="interrupted", best_effort=True)
        raise
    except RunStopped as error:
        summary["stopped"] = str(error)
        record.write(summary, status=f"stopped: {error}", best_effort=True)
        raise
    _finish_summary(summary, started, cpu_started, first)
    record.write(summary, status="finished")
    _report(config, noise, output, summary, report, echo, record.resources)
    return summary


def connect(address: str | None) -> None:
    """Join the cluster at `address`, or at RAY_ADDRESS (a driver inside a Ray job), or start a local
    one. Never the cluster a file left by an earlier local run points to: that one may be long dead,
    and joining it would hang, then fail."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or "local"
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as error:
        raise CannotProgress(f"the Ray cluster at {address} cannot be reached ({error}); nothing was done") from None


@dataclass
class Run:
    """What the parts of one run share."""

    config: SanitizeConfig
    storage: Storage
    output: str
    todo: list[str]
    actors: int | tuple[int, int] | None
    summary: dict[str, Any]
    record: RunRecord
    echo: Any
    started: float
    stall_seconds: float
    reported: set[str] = field(default_factory=set)  # shards whose manifest the driver has counted
    first: FirstShard | None = None


def _process(run: Run) -> FirstShard | None:
    """Run the shards to do on Ray Data; when the cluster loses an actor, a worker or a node, plan
    again on the capacity that remains for the shards not yet done, until a few plans in a row finish
    nothing (CannotProgress)."""
    import ray

    from ..sanitize.row_codec import uri_field
    from .stages import apply, plan_stages

    fruitless, total = 0, len(run.todo)
    ray.data.DataContext.get_current().enable_progress_bars = False  # `echo` reports each finished shard
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # its advice to turn them back on
    while run.todo:
        run.record.resources = plan_resources(ray.cluster_resources(), run.actors)
        run.summary["actors"] = run.record.resources.actors
        dataset = ray.data.from_items([{"uri": uri_field(u)} for u in run.todo], override_num_blocks=len(run.todo))
        for stage in plan_stages(run.config, run.output, run.record.resources, run.record.noise):
            dataset = apply(stage, dataset)
        before = run.summary["processed"]
        try:
            _collect(dataset, total, run)
            return run.first
        except Exception as error:
            if not lost_capacity(error):
                raise
            fruitless = 0 if run.summary["processed"] > before else fruitless + 1
            run.todo = _not_done(run)
            if fruitless >= MAX_FRUITLESS_PLANS:
                raise CannotProgress(f"the cluster lost capacity and {fruitless} plans in a row finished no shard "
                                     f"({_fault(error)}; {describe_cluster()}); {RESUMABLY}") from error
            run.summary["replans"] += 1
            run.echo(f"lost capacity ({_fault(error)}): planning again for {len(run.todo)} shard(s) on {describe_cluster()}")
        finally:
            pace_scheduling_loop(RAY_SCHEDULING_WAIT_S)  # Ray's own again, for whatever else runs in this process
    return run.first


def _not_done(run: Run) -> list[str]:
    """The shards still to do after an execution ended early: a shard whose manifest was written but
    not yet reported to the driver is counted now."""
    left = []
    for uri in run.todo:
        if shard_name(uri) in run.reported:
            continue
        if is_done(run.storage, run.output, uri):
            _count(json.loads(run.storage.read_bytes(output_paths(run.output, shard_name(uri))["manifest"])), run.summary)
            run.reported.add(shard_name(uri))
        else:
            left.append(uri)
    return left


def lost_capacity(error: BaseException) -> bool:
    """Whether an execution ended because the cluster lost an actor, a worker or a node (anywhere in
    the exception's chain), rather than because of the data or the code."""
    from ray import exceptions

    kinds = (exceptions.ActorDiedError, exceptions.ActorUnavailableError, exceptions.NodeDiedError, exceptions.ObjectLostError,
             exceptions.WorkerCrashedError, exceptions.LocalRayletDiedError, exceptions.ActorUnschedulableError,
             exceptions.TaskUnschedulableError, exceptions.RaySystemError)
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kinds):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _fault(error: BaseException) -> str:
    """The exception's type and the first sentence of its message (Ray's run to many lines)."""
    text = str(error).split(". ")[0].splitlines()[0][:120] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def describe_cluster() -> str:
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    nodes = sum(node["Alive"] for node in ray.nodes())
    gpus = f", {free.get('GPU', 0):g} of {total.get('GPU', 0):g} GPUs free" if total.get("GPU") else ""
    return f"{nodes} node(s), {free.get('CPU', 0):g} of {total.get('CPU', 0):g} CPUs free{gpus}"


def _finish_summary(summary: dict[str, Any], started: float, cpu_started: float, first: FirstShard | None) -> None:
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


class FirstShard(NamedTuple):
    """Where the run stood when its first shard was done (start-up included)."""

    seconds: float
    samples: int
    cpu_seconds: float  # this process's CPU time (time.process_time)


def _collect(dataset, total: int, run: Run) -> None:
    """Count each shard's manifest as it arrives; `run.first`: where the run stood at its first shard."""
    pace_scheduling_loop(scheduling_wait(None))
    with Watchdog(run.stall_seconds) as watchdog:
        try:
            for row in dataset.iter_rows():
                watchdog.progress()
                if row["stop"]:
                    raise RunStopped(row["stop"])
                manifest = json.loads(row["manifest"])
                run.record.models = run.record.models or manifest["models"]
                run.reported.add(manifest["shard"])
                _count(manifest, run.summary)
                pace_scheduling_loop(scheduling_wait(run.summary["purifying_seconds"] / run.summary["processed"]))
                run.first = run.first or FirstShard(time.perf_counter() - run.started, run.summary["samples"], time.process_time())
                elapsed = time.perf_counter() - run.started
                run.echo(f"{progress(run.summary['processed'], total, run.summary['samples'], elapsed)} {shard_line(manifest)}")
        except KeyboardInterrupt:
            if watchdog.fired:
                raise CannotProgress(f"no shard finished in {run.stall_seconds:g} s ({describe_cluster()}); {RESUMABLY} "
                                     "(or raise --stall-timeout)") from None
            raise


class Watchdog:
    """Interrupts the driver's thread (as Ctrl-C would) when no shard has finished for `seconds`:
    lost capacity that never comes back, a task that can never be scheduled. The run then stops with
    one line instead of waiting forever; interrupting the thread that iterates lets Ray Data shut
    the execution down as it does on Ctrl-C."""

    def __init__(self, seconds: float):
        self.seconds, self.fired = seconds, False
        self._last, self._lock, self._done = time.monotonic(), threading.Lock(), threading.Event()

    def progress(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(1.0):
            with self._lock:
                if not self._done.is_set() and time.monotonic() - self._last > self.seconds:
                    self.fired = True
                    _thread.interrupt_main()
                    return

    def __enter__(self) -> Watchdog:
        threading.Thread(target=self._watch, name="disillusion-watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._done.set()


def _report(config: SanitizeConfig, noise: NoiseKey, output: str, summary: dict[str, Any], wanted: bool, echo, resources: PlanResources) -> None:
    """The report's gallery purifies a dozen samples again: in a task with a purification actor's
    resources (a GPU worker on a GPU cluster), not on the driver's node."""
    if wanted:
        import ray

        from ..report import write_report

        task = ray.remote(num_cpus=resources.task_cpus, num_gpus=resources.gpus_per_actor, max_retries=1)(write_report)
        echo(f"report: {ray.get(task.remote(config, output, summary=summary, noise=noise))}")


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

    def __init__(self, storage: Storage, output: str, config: SanitizeConfig, noise: NoiseKey):
        self.storage, self.output, self.config, self.noise = storage, output, config, noise
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
            "noise": self.noise.describe(),  # where the key came from and its fingerprint; never the key
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
