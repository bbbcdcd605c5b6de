"""The work on one input shard, in three steps any executor can call: read the shard into records,
purify the records, and assemble and write the outputs. No Ray here."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..defense.consensus import ConsensusPurifier
from ..io.images import encode_png
from ..io.shards import Sample, ShardProblem, read_samples
from ..io.storage import Storage, shard_name
from ..models.noise import seed_for_key
from .outputs import sanitised_samples, write_shard_outputs
from .records import Record, to_record
from .verdicts import error_row, ok_row, verdict_table


CANNOT_READ = "cannot read shard"


@dataclass
class ShardInput:
    uri: str
    name: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_shard(storage: Storage, uri: str) -> ShardInput:
    """All samples of a shard; a missing or unreadable shard becomes a problem, not an exception."""
    shard = ShardInput(uri, shard_name(uri))
    try:
        data = storage.read_bytes(uri)
    except Exception as error:  # missing object, permissions, network after retries
        shard.problems.append(f"{CANNOT_READ}: {type(error).__name__}: {error}")
        return shard
    for item in read_samples(data):
        if isinstance(item, ShardProblem):
            shard.problems.append(item.message)
        else:
            shard.samples.append(item)
    return shard


def purify_records(
    purifier: ConsensusPurifier, records: Sequence[Record], shard: str, *, seed: int, batch_size: int, want_images: bool
) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    """Verdict rows for every record (errors included) and purified PNGs for illusions.

    Images are batched by size; each sample's seed comes from its key, so verdicts do not depend on
    batching or on which worker ran them. A batch that fails (e.g. out of memory on one huge image)
    is retried one image at a time so that only the culprit becomes an error row.
    """
    rows: dict[str, dict[str, Any]] = {}
    purified: dict[str, bytes] = {}
    by_size: dict[tuple, list[Record]] = defaultdict(list)
    for record in records:
        if record.image is None:
            rows[record.key] = error_row(record.key, shard, record.error or "no image")
        else:
            by_size[tuple(record.image.shape)].append(record)

    def run(batch: list[Record]) -> None:
        images = torch.stack([r.image for r in batch])
        results = purifier.purify(
            images,
            seeds=[seed_for_key(seed, r.key) for r in batch],
            captions=[r.caption for r in batch],
            keep_images=want_images,
        )
        for record, result in zip(batch, results):
            rows[record.key] = ok_row(record.key, shard, result)
            if want_images and result.verdict == "illusion":
                purified[record.key] = encode_png(result.image)

    for group in by_size.values():
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            try:
                run(batch)
            except Exception:
                for record in batch:
                    try:
                        run([record])
                    except Exception as error:
                        rows[record.key] = error_row(record.key, shard, f"purification failed: {type(error).__name__}: {error}")
    return rows, purified


def finish_shard(
    storage: Storage,
    output: str,
    shard: ShardInput,
    rows: dict[str, dict[str, Any]],
    purified: dict[str, bytes],
    *,
    dim: int,
    policy: str | None,
    seconds: float,
    fingerprints: dict[str, str],
    complete: bool = True,
) -> dict[str, Any]:
    """Write the shard's outputs (policy None: audit, no sanitised shard) and return its manifest.

    complete=False (the shard could not be read at all) still writes a manifest that reports the
    problem, but marks it incomplete so that the next run tries the shard again."""
    ordered = [rows[s.key] for s in shard.samples]
    kept, quarantined = (None, []) if policy is None else sanitised_samples(shard.samples, rows, purified, policy)
    verdicts = Counter(r["verdict"] for r in ordered if r["status"] == "ok")
    manifest = {
        "shard": shard.name,
        "input": shard.uri,
        "complete": complete,
        "samples": len(ordered),
        "ok": sum(r["status"] == "ok" for r in ordered),
        "errors": sum(r["status"] == "error" for r in ordered),
        "verdicts": {v: verdicts.get(v, 0) for v in ("clean", "illusion", "uncertain")},
        "purified": len(purified) if policy == "purify" else 0,
        "quarantined": len(quarantined),
        "problems": shard.problems,
        "policy": policy or "audit",
        "seconds": round(seconds, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": fingerprints,
    }
    write_shard_outputs(
        storage, output, shard.name, verdicts=verdict_table(ordered, dim), kept=kept, quarantined=quarantined, manifest=manifest
    )
    return manifest


def process_shard(
    storage: Storage,
    uri: str,
    output: str,
    purifier: ConsensusPurifier,
    *,
    policy: str | None,
    seed: int = 0,
    batch_size: int = 16,
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """Read, purify and write one shard in this process (the unit a worker runs)."""
    start = time.perf_counter()
    shard = read_shard(storage, uri)
    kwargs = {"max_pixels": max_pixels} if max_pixels else {}
    records = [to_record(s, **kwargs) for s in shard.samples]
    rows, purified = purify_records(purifier, records, shard.name, seed=seed, batch_size=batch_size, want_images=policy == "purify")
    fingerprints = {"reconstructor": purifier.reconstructor.fingerprint, "encoder": purifier.encoder.fingerprint}
    return finish_shard(
        storage, output, shard, rows, purified, dim=purifier.encoder.dim, policy=policy,
        seconds=time.perf_counter() - start, fingerprints=fingerprints, complete=not unreadable(shard),
    )


def unreadable(shard: ShardInput) -> bool:
    return any(p.startswith(CANNOT_READ) for p in shard.problems)
