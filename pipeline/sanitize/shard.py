"""The work on one input shard, in four steps any executor can call: read the shard's bytes, decode
its images to the working geometry, purify them (`purify.py`), and write the outputs from the same
bytes that were examined (never a second read). No Ray here, and no torch: reading, decoding and
writing workers never load a model library.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.images import DEFAULT_MAX_PIXELS, encode_png
from ..io.shards import Sample, ShardProblem, read_samples
from ..io.storage import Storage, shard_name
from .outputs import sanitised_samples, write_shard_outputs
from .records import Record, to_record
from .verdicts import verdict_table

CANNOT_READ = "cannot read shard"


@dataclass
class ShardInput:
    uri: str
    name: str
    data: bytes = b""  # the shard's bytes as read: outputs are built from these
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_shard(uri: str, data: bytes) -> ShardInput:
    """The samples of shard bytes already read; parsing the same bytes always gives the same samples."""
    shard = ShardInput(uri, shard_name(uri), data)
    for item in read_samples(data) if data else ():
        if isinstance(item, ShardProblem):
            shard.problems.append(item.message)
        else:
            shard.samples.append(item)
    return shard


def read_shard(storage: Storage, uri: str) -> ShardInput:
    """All samples of a shard; a missing or unreadable shard becomes a problem, not an exception."""
    try:
        data = storage.read_bytes(uri)
    except Exception as error:  # missing object, permissions, network after retries
        return ShardInput(uri, shard_name(uri), problems=[f"{CANNOT_READ}: {type(error).__name__}: {error}"])
    return parse_shard(uri, data)


def decode_shard(shard: ShardInput, work_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Record]:
    """One record per sample, images at `work_size` x `work_size` (errors as records, not exceptions)."""
    return [to_record(sample, work_size, max_pixels) for sample in shard.samples]


@dataclass
class Purified:
    """What purification produced for one shard's records."""

    rows: dict[str, dict[str, Any]]  # verdict row by key, errors included
    images: dict[str, np.ndarray]  # purified image (working size, H x W x 3 uint8) of each illusion, when asked for
    batch_size: int  # images per purifier call at most
    batches: int = 0  # purifier calls
    batched_images: int = 0  # images over those calls: batched_images / (batches * batch_size) is the batch fill


def finish_shard(
    storage: Storage,
    output: str,
    shard: ShardInput,
    purified: Purified,
    *,
    dim: int,
    policy: str | None,
    seconds: float,
    fingerprints: dict[str, str],
    work_size: int,
    complete: bool = True,
) -> dict[str, Any]:
    """Write the shard's outputs (policy None: audit, no sanitised shard) and return its manifest.

    complete=False (the shard could not be read at all) still writes a manifest that reports the
    problem, but marks it incomplete so that the next run tries the shard again."""
    rows = purified.rows
    ordered = [rows[s.key] for s in shard.samples]
    pngs = {key: encode_png(image) for key, image in purified.images.items()} if policy == "purify" else {}
    kept, quarantined = (None, []) if policy is None else sanitised_samples(shard.samples, rows, pngs, policy, work_size)
    verdicts = Counter(r["verdict"] for r in ordered if r["status"] == "ok")
    manifest = {
        "shard": shard.name,
        "input": shard.uri,
        "complete": complete,
        "samples": len(ordered),
        "ok": sum(r["status"] == "ok" for r in ordered),
        "errors": sum(r["status"] == "error" for r in ordered),
        "verdicts": {v: verdicts.get(v, 0) for v in ("clean", "illusion", "uncertain")},
        "purified": len(pngs),
        "quarantined": len(quarantined),
        "problems": shard.problems,
        "policy": policy or "audit",
        "work_size": work_size,
        "batches": {"count": purified.batches, "images": purified.batched_images, "size": purified.batch_size},
        "seconds": round(seconds, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": fingerprints,
    }
    write_shard_outputs(
        storage, output, shard.name, verdicts=verdict_table(ordered, dim), kept=kept, quarantined=quarantined, manifest=manifest
    )
    return manifest


def unreadable(shard: ShardInput) -> bool:
    return any(p.startswith(CANNOT_READ) for p in shard.problems)
