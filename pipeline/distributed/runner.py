"""Run a sanitisation or audit over a corpus on Ray Data.

    shard URIs -> read + decode (CPU tasks) -> purify (actor pool) -> driver: assemble per shard
               -> write outputs (manifest last), a line per finished shard, a summary at the end

Streaming end to end: Ray Data bounds the rows in flight, and the driver keeps only shards whose
rows are still arriving. Shards that already have a complete manifest are skipped (resume and
incremental runs); `overwrite` redoes them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from ..io.storage import Storage, join, shard_name
from ..sanitize.config import SanitizeConfig
from ..sanitize.outputs import output_paths
from ..sanitize.shard import finish_shard, read_shard, unreadable
from .rows import unpack_verdict

log = logging.getLogger(__name__)


ACTOR_RESTARTS = 3


@dataclass
class PlanResources:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    read_cpus: float


def plan_resources(cluster: dict[str, float], actors: int | None = None) -> PlanResources:
    """Size the purification pool from the cluster: one actor per GPU; on CPUs only, leave a CPU
    free for the read tasks (a pool that takes every CPU deadlocks the read stage)."""
    gpus = int(cluster.get("GPU", 0))
    cpus = float(cluster.get("CPU", 1))
    if gpus:
        return PlanResources(actors or gpus, cpus_per_actor=1.0 if cpus >= 2 * gpus else 0.5, gpus_per_actor=1.0, read_cpus=0.5)
    if cpus <= 2:
        return PlanResources(actors or 1, cpus_per_actor=max(0.5, cpus - 1), gpus_per_actor=0.0, read_cpus=0.5)
    per_actor = 2.0
    return PlanResources(actors or max(1, int((cpus - 1) // per_actor)), cpus_per_actor=per_actor, gpus_per_actor=0.0, read_cpus=0.5)


@dataclass
class ShardProgress:
    uri: str
    total: int | None = None
    problems: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    purified: dict[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0  # purification time in the actors

    def complete(self) -> bool:
        return self.total is not None and len(self.rows) == self.total


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
    echo=print,
) -> dict[str, Any]:
    """Process every shard of `input_spec` not yet done; returns the run summary."""
    import ray

    from .stages import PurifyStage, read_and_decode

    storage = Storage(config.s3_endpoint)
    shards = storage.expand(input_spec)
    names = [shard_name(u) for u in shards]
    if len(set(names)) != len(names):
        raise ValueError("two input shards share a name; outputs are named after input shards")
    todo = shards if overwrite else [u for u in shards if not is_done(storage, output, u)]
    echo(f"{len(shards)} shard(s), {len(shards) - len(todo)} already done, {len(todo)} to process")

    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    resources = plan_resources(ray.cluster_resources(), actors)
    started = time.perf_counter()
    summary = {"shards": len(shards), "skipped": len(shards) - len(todo), "processed": 0, "samples": 0, "errors": 0,
               "verdicts": {"clean": 0, "illusion": 0, "uncertain": 0}, "problems": {}}
    _write_run_json(storage, output, config, resources, summary, None)
    if not todo:
        return summary

    threads = max(1, int(resources.cpus_per_actor))
    with warnings.catch_warnings():
        # Ray 2.60 (pinned) has no named parameter for actor restarts yet; the generic one it
        # deprecates is the only way to bound them.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        dataset = (
            ray.data.from_items([{"uri": u} for u in todo], override_num_blocks=len(todo))
            .flat_map(read_and_decode, fn_kwargs={"s3_endpoint": config.s3_endpoint}, num_cpus=resources.read_cpus)
            .map_batches(
                PurifyStage,
                fn_constructor_kwargs={"config": config, "threads": threads},
                compute=ray.data.ActorPoolStrategy(size=resources.actors),
                num_cpus=resources.cpus_per_actor,
                num_gpus=resources.gpus_per_actor,
                batch_size=config.batch_size,
                # A crashed actor (OOM kill, lost node) restarts and its batch is retried, a bounded number of times.
                max_restarts=ACTOR_RESTARTS,
                max_task_retries=ACTOR_RESTARTS,
            )
        )
    progress: dict[str, ShardProgress] = {}
    fingerprints: dict[str, str] = {}
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="shard-writer") as writers:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["key"])):
                name = str(batch["shard"][i])
                shard = progress.setdefault(name, ShardProgress(str(batch["uri"][i])))
                if not fingerprints and batch["models"][i]:
                    fingerprints.update(json.loads(batch["models"][i]))
                if int(batch["index"][i]) < 0:
                    shard.total = int(batch["total"][i])
                    shard.problems = json.loads(batch["problems"][i])
                else:
                    row = unpack_verdict(str(batch["verdict"][i]), bytes(batch["embedding"][i]))
                    shard.seconds += float(batch["seconds"][i])
                    shard.rows[row["key"]] = row
                    if len(batch["purified"][i]):
                        shard.purified[row["key"]] = bytes(batch["purified"][i])
                if shard.complete():
                    del progress[name]
                    pending.append(writers.submit(_finish, storage, output, config, shard, fingerprints))
            pending = _collect(pending, summary, echo, wait=False)
        _collect(pending, summary, echo, wait=True)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["samples_per_second"] = round(summary["samples"] / summary["seconds"], 3) if summary["seconds"] else None
    _write_run_json(storage, output, config, resources, summary, fingerprints)
    return summary


def _finish(storage: Storage, output: str, config: SanitizeConfig, shard: ShardProgress, fingerprints: dict) -> dict[str, Any]:
    # Re-read the input for the original members; only verdicts and purified images crossed the pipeline.
    source = read_shard(storage, shard.uri)
    source.problems = shard.problems or source.problems
    manifest = finish_shard(
        storage, output, source, shard.rows, shard.purified, dim=_dim(shard), policy=config.policy,
        seconds=shard.seconds, fingerprints=fingerprints,
        complete=not unreadable(source),
    )
    return manifest


def _dim(shard: ShardProgress) -> int:
    for row in shard.rows.values():
        if row.get("embedding"):
            return len(row["embedding"])
    return 1


def _collect(pending: list[Future], summary: dict, echo, wait: bool) -> list[Future]:
    still = []
    for future in pending:
        if not wait and not future.done():
            still.append(future)
            continue
        manifest = future.result()
        summary["processed"] += 1
        summary["samples"] += manifest["samples"]
        summary["errors"] += manifest["errors"]
        for verdict, count in manifest["verdicts"].items():
            summary["verdicts"][verdict] += count
        if manifest["problems"]:
            summary["problems"][manifest["shard"]] = manifest["problems"]
        v = manifest["verdicts"]
        echo(f"{manifest['shard']}: {manifest['samples']} samples, {v['clean']} clean, {v['illusion']} illusion, "
             f"{v['uncertain']} uncertain, {manifest['errors']} errors, {manifest['seconds']:.1f} s purifying"
             + (f", PROBLEMS: {'; '.join(manifest['problems'])}" if manifest["problems"] else ""))
    return still


def _write_run_json(storage: Storage, output: str, config: SanitizeConfig, resources: PlanResources, summary: dict, fingerprints) -> None:
    import ray
    import torch

    from .. import __version__

    snapshot = {
        "config": config.to_json(),  # holds an endpoint URL at most; credentials never enter the config
        "verdict_policy": asdict(config.verdict_policy()),  # the thresholds in effect
        "resources": resources.__dict__,
        "versions": {"disillusion": __version__, "torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version()},
        "models": fingerprints,
        "summary": summary,
        "host": platform.node(),
        "pid": os.getpid(),
    }
    storage.write_bytes(join(output, "run.json"), json.dumps(snapshot, indent=2, sort_keys=True).encode())
