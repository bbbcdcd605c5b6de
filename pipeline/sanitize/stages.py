"""A shard's work as three stage objects, each declaring the resources it needs:

    ReadDecode (task)  ->  Judge (models loaded once per instance: an actor, GPU when there is one)
                       ->  WriteOutputs (task; manifest last)  ->  {"manifest", "stop"}

A row is one input shard (the codec: row_codec.py). Stages hand each other rows only, so two
executors run the same objects: `run_in_process` below (one process, one shard after another;
`process_shard` runs one shard with a purifier already built: the benchmark, the fuzzer, the tests)
and Ray Data (pipeline/distributed/stages.py). The read and write stages hold plain settings and
never import torch (a Ray worker's start-up would cost seconds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..io.sandbox import Budgets, Sandbox, shared_sandbox
from ..io.shards import DEFAULT_MAX_SHARD_BYTES
from ..io.storage import Storage, StoreUnreachable, shard_name
from ..stops import RunStopped
from .row_codec import decoded_row, judgement_of, judgement_row, row_records, shard_of, uri_field, uri_of
from .shard import ShardInput, decode_shard, finish_shard, read_shard

if TYPE_CHECKING:
    from ..defense.consensus import ConsensusPurifier
    from ..models.noise import NoiseKey
    from .config import SanitizeConfig


@dataclass(frozen=True)
class Resources:
    """What each task or actor of a stage reserves."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    actors: int = 0  # 0: stateless tasks; else a pool of this many instances, each holding its models
    max_actors: int = 0  # above `actors`: the pool grows with the cluster up to this many


@dataclass(frozen=True)
class Stage:
    """A step of a shard's work: the stage class, its constructor's arguments and its resources."""

    name: str
    make: type
    kwargs: dict[str, Any] = field(default_factory=dict)
    resources: Resources = Resources()

    def build(self):
        return self.make(**self.kwargs)


class ReadDecode:
    """A shard URI -> its samples, and every image decoded to the working geometry (uint8), both in
    this process's sandbox (budgets of time and memory). An unreachable store is passed on as the
    reason to stop the run (`stop`), as the write stage passes on an output it cannot write."""

    def __init__(self, *, work_size: int, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, s3_endpoint: str | None = None,
                 budgets: Budgets = Budgets(), storage: Storage | None = None, sandbox: Sandbox | None = None):
        self.work_size, self.max_shard_bytes, self.s3_endpoint, self.budgets = work_size, max_shard_bytes, s3_endpoint, budgets
        self.storage, self.sandbox = storage, sandbox  # in process: the caller's; on a worker: made there

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        sandbox = self.sandbox or shared_sandbox(self.budgets)
        uri = uri_of(item)
        try:
            shard = read_shard(self.storage or Storage(self.s3_endpoint), uri, self.max_shard_bytes, sandbox)
        except StoreUnreachable as error:
            return decoded_row(ShardInput(uri, shard_name(uri)), [], self.work_size, stop=str(error))
        return decoded_row(shard, decode_shard(shard, self.work_size, sandbox=sandbox), self.work_size)


class Judge:
    """The verdict on every sample of a shard by consensus purification, in full batches. The
    purifier is built from the config once per instance (`purifier`: one already built, as
    `process_shard` is given)."""

    def __init__(self, config: SanitizeConfig, noise: NoiseKey, threads: int | None = None,
                 purifier: ConsensusPurifier | None = None):
        import os

        import torch

        from ..malloc_tuning import keep_freed_memory
        from .judge import fingerprints

        if threads is not None:  # Ray sets OMP_NUM_THREADS=1 in workers; give torch the threads this actor was granted
            torch.set_num_threads(max(1, int(os.environ.get("DISILLUSION_ACTOR_THREADS", threads))))
            keep_freed_memory()  # a fresh process otherwise page-faults through every batch (malloc_tuning.py)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.noise, self.batch_size, self.want_images = noise, config.execution(device).batch_size, config.policy == "purify"
        self.purifier = purifier or config.build_purifier(device)
        self.models = fingerprints(self.purifier, noise)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from .judge import judge_records  # torch: imported by the actor, never by the task workers

        start = time.perf_counter()
        judgement = judge_records(self.purifier, row_records(row), shard_name(uri_of(row)), noise=self.noise,
                                  batch_size=self.batch_size, want_images=self.want_images)
        return judgement_row(row, judgement, seconds=time.perf_counter() - start, models=self.models, dim=self.purifier.encoder.dim)


class WriteOutputs:
    """Sanitised shard, verdicts, quarantine and (last) manifest, from the bytes that were examined.
    An output that cannot be written (full disk, read-only) is passed on as the reason to stop the
    run: retrying would fail the same way, and the shards finished so far stay done."""

    def __init__(self, *, output: str, policy: str | None, on_error: str = "keep", on_uncertain: str = "drop",
                 s3_endpoint: str | None = None, storage: Storage | None = None):
        self.output, self.policy, self.on_error, self.on_uncertain = output, policy, on_error, on_uncertain
        self.s3_endpoint, self.storage = s3_endpoint, storage

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["stop"]:
            return {"manifest": "", "stop": row["stop"]}
        try:
            manifest = finish_shard(
                self.storage or Storage(self.s3_endpoint), self.output, shard_of(row), judgement_of(row), dim=int(row["dim"]),
                policy=self.policy, seconds=float(row["seconds"]), fingerprints=json.loads(row["models"]),
                work_size=int(row["work_size"]), on_error=self.on_error, on_uncertain=self.on_uncertain,
            )
        except RunStopped as error:
            return {"manifest": "", "stop": str(error)}
        return {"manifest": json.dumps(manifest), "stop": ""}


def shard_stages(config: SanitizeConfig, output: str, noise: NoiseKey, *, task_cpus: float = 1.0,
                 judge: Resources = Resources(actors=1), threads: int | None = None, **injected: Any) -> list[Stage]:
    """A run's three stages. The noise key reaches the purifiers as a constructor argument, never
    through the config that run.json records. `injected`: in-process extras (`storage`, `sandbox`,
    `purifier`), each given to the stages that take it."""
    def given(*names: str) -> dict[str, Any]:
        return {name: injected[name] for name in names if injected.get(name) is not None}

    return [
        Stage("read+decode", ReadDecode, {"work_size": config.working_size(), "max_shard_bytes": config.max_shard_bytes,
                                          "budgets": config.budgets(), "s3_endpoint": config.s3_endpoint, **given("storage", "sandbox")},
              Resources(num_cpus=task_cpus)),
        Stage("judge", Judge, {"config": config, "noise": noise, "threads": threads, **given("purifier")}, judge),
        Stage("write", WriteOutputs, {"output": output, "policy": config.policy, "on_error": config.on_error,
                                      "on_uncertain": config.on_uncertain, "s3_endpoint": config.s3_endpoint, **given("storage")},
              Resources(num_cpus=task_cpus)),
    ]


def run_in_process(stages: Iterable[Stage], uris: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The in-process executor: each stage built once, then every shard through all of them in turn;
    yields each shard's manifest. A stage's reason to stop (an unreachable store, an output that
    cannot be written) is raised as RunStopped."""
    steps = [stage.build() for stage in stages]
    for uri in uris:
        row: dict[str, Any] = {"uri": uri_field(uri)}
        for step in steps:
            row = step(row)
        if row["stop"]:
            raise RunStopped(row["stop"])
        yield json.loads(row["manifest"])


def process_shard(
    storage: Storage,
    uri: str,
    output: str,
    purifier: ConsensusPurifier,
    *,
    policy: str | None,
    work_size: int | None = None,
    noise: NoiseKey | None = None,
    batch_size: int = 16,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    on_error: str = "keep",
    on_uncertain: str = "drop",
    budgets: Budgets = Budgets(),
    sandbox: Sandbox | None = None,
) -> dict[str, Any]:
    """Read, decode, judge and write one shard in this process with `purifier`: the stages a Ray run
    spreads over workers (stages.py), run by the in-process executor; returns the manifest.
    `work_size` defaults to the encoder's input size; `noise` to a fresh secret (pass the run's key
    to every shard of one run)."""
    from ..models.noise import NoiseKey
    from .config import SanitizeConfig

    config = SanitizeConfig.resolve(
        on_illusion=policy, batch_size=batch_size, work_size=work_size or purifier.encoder.image_size, max_shard_bytes=max_shard_bytes,
        on_error=on_error, on_uncertain=on_uncertain, parse_budget_seconds=budgets.parse_seconds,
        decode_budget_seconds=budgets.decode_seconds, decode_budget_bytes=budgets.decode_memory_bytes)
    stages = shard_stages(config, output, noise or NoiseKey.fresh(), storage=storage, sandbox=sandbox or shared_sandbox(budgets),
                          purifier=purifier)
    return next(run_in_process(stages, [uri]))
