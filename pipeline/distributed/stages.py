"""The three stages of a run, each with the resources it declares, as Ray Data steps.

    read + decode (CPU task)  ->  purify (actor pool: models loaded once per actor, GPU when there is one)
                              ->  write outputs, manifest last (CPU task)  ->  the driver gets the manifest

A row is one input shard. Workers own whole shards: the bytes read, the pixels decoded and the
outputs written never pass through the driver, which only counts manifests. Reading and writing
tasks get plain settings and never import torch (a worker's start-up would cost seconds of CPU).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..io.sandbox import Budgets, shared_sandbox
from ..io.storage import Storage, StoreUnreachable, shard_name
from ..sanitize.shard import ShardInput, decode_shard, finish_shard, read_shard
from ..stops import RunStopped
from .rows import decoded_row, purified_of, purified_row, row_records, shard_of, uri_of

if TYPE_CHECKING:
    from ..models.noise import NoiseKey
    from ..sanitize.config import SanitizeConfig

# A lost actor (OOM kill, lost node) is not restarted by Ray: a restart would wait for the resources
# of the capacity that was lost, and take CPUs the read and write tasks need. Its shard's task fails,
# the execution ends, and the runner plans again on the capacity that remains (runner.py).
ACTOR_RESTARTS = 0


@dataclass(frozen=True)
class Stage:
    """A step of the plan: a function of one row (stateless tasks) or a class whose instances hold
    models (an actor pool of `actors`), with the resources each task or actor reserves."""

    name: str
    fn: Callable[..., dict[str, Any]] | type
    num_cpus: float
    num_gpus: float = 0.0
    actors: int = 0  # 0: tasks
    max_actors: int = 0  # above `actors`: the pool grows with the cluster up to this many
    kwargs: dict[str, Any] = field(default_factory=dict)  # function kwargs, or constructor kwargs of an actor

    def apply(self, dataset):
        import warnings

        import ray

        if not self.actors:
            return dataset.map(self.fn, fn_kwargs=self.kwargs, num_cpus=self.num_cpus, num_gpus=self.num_gpus)
        pool = ray.data.ActorPoolStrategy(min_size=self.actors, max_size=max(self.actors, self.max_actors))
        with warnings.catch_warnings():
            # Ray 2.60 (pinned) has no named parameter for actor restarts yet; the generic one it
            # deprecates is the only way to set them.
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            return dataset.map(
                self.fn, fn_constructor_kwargs=self.kwargs, compute=pool, num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS,
            )


def read_and_decode(
    item: dict[str, Any], *, work_size: int, max_shard_bytes: int, s3_endpoint: str | None, budgets: Budgets = Budgets()
) -> dict[str, Any]:
    """A shard URI -> its samples, and every image decoded to the working geometry (uint8), both in
    this worker's sandbox (budgets of time and memory). An unreachable store is passed on as the
    reason to stop the run (`stop`), as the write stage passes on an output it cannot write."""
    sandbox = shared_sandbox(budgets)
    try:
        shard = read_shard(Storage(s3_endpoint), uri_of(item), max_shard_bytes, sandbox)
    except StoreUnreachable as error:
        return decoded_row(ShardInput(uri_of(item), shard_name(uri_of(item))), [], work_size, stop=str(error))
    return decoded_row(shard, decode_shard(shard, work_size, sandbox=sandbox), work_size)


class Purify:
    """Consensus purification of every sample of a shard, in full batches."""

    def __init__(self, config: SanitizeConfig, noise: NoiseKey, threads: int = 1):
        import torch

        # Ray sets OMP_NUM_THREADS=1 in workers; give torch the threads this actor was granted.
        torch.set_num_threads(max(1, int(os.environ.get("DISILLUSION_ACTOR_THREADS", threads))))
        from ..heap import keep_freed_memory
        from ..sanitize.purify import fingerprints

        keep_freed_memory()  # a fresh process otherwise page-faults through every batch (heap.py)

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.config, self.noise, self.batch_size = config, noise, config.execution(device).batch_size
        self.purifier = config.build_purifier(device)
        self.models = fingerprints(self.purifier, noise)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from ..sanitize.purify import purify_records  # torch: imported by the actor, never by the task workers

        start = time.perf_counter()
        purified = purify_records(
            self.purifier, row_records(row), shard_name(uri_of(row)), noise=self.noise, batch_size=self.batch_size,
            want_images=self.config.policy == "purify",
        )
        return purified_row(row, purified, seconds=time.perf_counter() - start, models=self.models, dim=self.purifier.encoder.dim)


def write_outputs(row: dict[str, Any], *, output: str, policy: str | None, on_error: str, on_uncertain: str,
                  s3_endpoint: str | None) -> dict[str, Any]:
    """Sanitised shard, verdicts, quarantine and (last) manifest, from the bytes that were examined.
    An output that cannot be written (full disk, read-only) is reported to the driver, which stops
    the run: retrying would fail the same way, and the shards finished so far stay done."""
    if row["stop"]:
        return {"manifest": "", "stop": row["stop"]}
    shard = shard_of(row)
    try:
        manifest = finish_shard(
            Storage(s3_endpoint), output, shard, purified_of(row), dim=int(row["dim"]), policy=policy,
            seconds=float(row["seconds"]), fingerprints=json.loads(row["models"]), work_size=int(row["work_size"]), on_error=on_error,
            on_uncertain=on_uncertain,
        )
    except RunStopped as error:
        return {"manifest": "", "stop": str(error)}
    return {"manifest": json.dumps(manifest), "stop": ""}


def plan_stages(config: SanitizeConfig, output: str, resources, noise: NoiseKey) -> list[Stage]:
    """The run's stages; the noise key reaches the actors as an argument of their constructor (through
    Ray's object store), never through the config that run.json records."""
    return [
        Stage("read+decode", read_and_decode, num_cpus=resources.task_cpus,
              kwargs={"work_size": config.working_size(), "max_shard_bytes": config.max_shard_bytes, "budgets": config.budgets(),
                      "s3_endpoint": config.s3_endpoint}),
        Stage("purify", Purify, num_cpus=resources.cpus_per_actor, num_gpus=resources.gpus_per_actor, actors=resources.actors,
              max_actors=resources.max_actors, kwargs={"config": config, "noise": noise, "threads": resources.threads_per_actor}),
        Stage("write", write_outputs, num_cpus=resources.task_cpus,
              kwargs={"output": output, "policy": config.policy, "on_error": config.on_error,
                      "on_uncertain": config.on_uncertain, "s3_endpoint": config.s3_endpoint}),
    ]
