"""The work on one input shard, in four steps any executor can call: read the shard's bytes, decode
its images to the working geometry, purify them (`purify.py`), and write the outputs from the same
bytes that were examined (never a second read). No Ray here, and no torch: reading, decoding and
writing workers never load a model library. Walking the tar and decoding images run in a sandbox
(`pipeline.io.sandbox`) with budgets of time and memory: no shard can abort, hang or exhaust a worker.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.images import DEFAULT_MAX_PIXELS, encode_png
from ..io.sandbox import Sandbox, shared_sandbox
from ..io.shards import DEFAULT_MAX_SHARD_BYTES, Sample, parse
from ..io.storage import Storage, StoreUnreachable, shard_name
from .outputs import sanitised_samples, write_shard_outputs
from .records import Record, to_records, truth_of
from .verdicts import verdict_table

CANNOT_READ = "cannot read shard"


@dataclass
class ShardInput:
    uri: str
    name: str
    samples: list[Sample] = field(default_factory=list)  # as read: outputs are built from these bytes
    problems: list[str] = field(default_factory=list)
    incomplete: bool = False  # not every byte could be read: the manifest says so and the next run retries


def parse_shard(uri: str, data: bytes, max_bytes: int = DEFAULT_MAX_SHARD_BYTES, sandbox: Sandbox | None = None) -> ShardInput:
    """The samples of shard bytes already read, the tar walked in `sandbox` (default: this process's)."""
    _, samples, problems = parse(data, max_bytes, walk=(sandbox or shared_sandbox()).walk)
    return ShardInput(uri, shard_name(uri), samples, [p.message for p in problems], any(p.incomplete for p in problems))


def read_shard(storage: Storage, uri: str, max_bytes: int = DEFAULT_MAX_SHARD_BYTES, sandbox: Sandbox | None = None) -> ShardInput:
    """All samples of a shard; a missing or unreadable shard becomes a problem, not an exception. An
    unreachable store (StoreUnreachable) stops the run instead: every shard would fail the same way."""
    try:
        data = storage.read_bytes(uri)
    except StoreUnreachable:
        raise
    except Exception as error:  # missing object, permissions
        return ShardInput(uri, shard_name(uri), problems=[f"{CANNOT_READ}: {type(error).__name__}: {error}"], incomplete=True)
    return parse_shard(uri, data, max_bytes, sandbox)


def decode_shard(shard: ShardInput, work_size: int, max_pixels: int = DEFAULT_MAX_PIXELS, sandbox: Sandbox | None = None) -> list[Record]:
    """Records of every image member at `work_size` x `work_size` (errors as records, not exceptions),
    each decoded in `sandbox` (default: this process's)."""
    decode = (sandbox or shared_sandbox()).decode
    return [record for sample in shard.samples for record in to_records(sample, work_size, max_pixels, decode)]


@dataclass
class Judgement:
    """What judging produced for one shard's records: their verdict rows and the purified images of its illusions."""

    rows: dict[str, dict[str, Any]]  # verdict row by key, errors included
    images: dict[tuple[str, str], np.ndarray]  # (key, member) -> purified image (H x W x 3 uint8) of each illusion, when asked for
    batch_size: int  # images per purifier call at most
    batches: int = 0  # purifier calls
    batched_images: int = 0  # images over those calls: batched_images / (batches * batch_size) is the batch fill
    members: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> image member -> verdict or 'error'


def finish_shard(
    storage: Storage,
    output: str,
    shard: ShardInput,
    judgement: Judgement,
    *,
    dim: int,
    policy: str | None,
    seconds: float,
    fingerprints: dict[str, str],
    work_size: int,
    on_error: str = "keep",
    on_uncertain: str = "drop",
) -> dict[str, Any]:
    """Write the shard's outputs (policy None: audit, no sanitised shard) and return its manifest.

    A shard that was not read in full (unreadable, truncated, empty, over the size cap) still gets
    its outputs and a manifest that reports the problem, marked incomplete so that the next run
    tries the shard again."""
    rows = judgement.rows
    ordered = [{**rows[s.key], "truth": truth_of(s)} for s in shard.samples]
    pngs = {member: encode_png(image) for member, image in judgement.images.items()} if policy == "purify" else {}
    kept, quarantined = (None, []) if policy is None else sanitised_samples(
        shard.samples, rows, judgement.members, pngs, policy=policy, on_error=on_error, on_uncertain=on_uncertain, work_size=work_size)
    verdicts = Counter(r["verdict"] for r in ordered if r["status"] == "ok")
    manifest = {
        "shard": shard.name,
        "input": shard.uri,
        "complete": not shard.incomplete,
        "samples": len(ordered),
        "ok": sum(r["status"] == "ok" for r in ordered),
        "errors": sum(r["status"] == "error" for r in ordered),
        "verdicts": {v: verdicts.get(v, 0) for v in ("clean", "illusion", "uncertain")},
        "purified": len(pngs),
        # illusions whose purified image failed its re-embedding check: quarantined, never replaced
        "replacements_rejected": sum(outcome == "illusion" and (key, ext) not in judgement.images
                                     for key, outcomes in judgement.members.items() for ext, outcome in outcomes.items())
                                 if policy == "purify" else 0,
        "quarantined": len(quarantined),
        "problems": shard.problems,
        "policy": policy or "audit",
        "on_error": on_error if policy else None,
        "on_uncertain": on_uncertain if policy else None,
        "work_size": work_size,
        "batches": {"count": judgement.batches, "images": judgement.batched_images, "size": judgement.batch_size},
        "seconds": round(seconds, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": fingerprints,
    }
    write_shard_outputs(
        storage, output, shard.name, verdicts=verdict_table(ordered, dim), kept=kept, quarantined=quarantined, manifest=manifest
    )
    return manifest

