"""Per-input-shard outputs, written in an order that makes a crash harmless.

    shards/NAME.tar        the sanitised shard (same keys, same order; see `sanitised_samples`)
    verdicts/NAME.parquet  one row per input sample
    quarantine/NAME.tar    original bytes of samples removed by the `drop` policy
    manifests/NAME.json    written last: its presence means the shard is done

Every file is written atomically, and the manifest only after the others, so a shard without a
manifest is simply redone and a shard with one is never partial.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..io.shards import Sample, write_samples
from ..io.storage import Storage, join

POLICIES = ("purify", "drop", "keep")


def output_paths(output: str, name: str) -> dict[str, str]:
    return {
        "shard": join(output, "shards", f"{name}.tar"),
        "verdicts": join(output, "verdicts", f"{name}.parquet"),
        "quarantine": join(output, "quarantine", f"{name}.tar"),
        "manifest": join(output, "manifests", f"{name}.json"),
    }


def sanitised_samples(
    samples: Iterable[Sample], rows: dict[str, dict[str, Any]], purified_png: dict[str, bytes], policy: str, work_size: int
) -> tuple[list[Sample], list[Sample]]:
    """(kept samples, quarantined samples) under a policy for samples judged `illusion`.

    purify: the image member is replaced by the purified PNG (same key; extension png), at the working
    size `work_size`; the note records the original size. keep: the
    image stays as it is. drop: the sample moves to quarantine with its original bytes. Every kept
    sample gets a `disillusion.json` member with its verdict; other members stay byte-identical.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {POLICIES}")
    kept, quarantined = [], []
    for sample in samples:
        row = rows[sample.key]
        illusion = row.get("verdict") == "illusion"
        if illusion and policy == "drop":
            quarantined.append(sample)
            continue
        image_ext = sample.image_extension()
        purify = illusion and policy == "purify" and image_ext is not None and sample.key in purified_png
        if purify:
            members = {("png" if ext == image_ext else ext): (purified_png[sample.key] if ext == image_ext else data) for ext, data in sample.members.items()}
        else:
            members = dict(sample.members)
        note = {k: row.get(k) for k in ("status", "error", "verdict", "label_original", "label_consensus", "agreement", "drift")}
        note["original_size"] = [row["original_width"], row["original_height"]] if row.get("original_width") else None
        note["action"] = "purified" if purify else "kept"
        if purify:
            note["purified_size"] = [work_size, work_size]
        members["disillusion.json"] = json.dumps(note).encode()
        kept.append(Sample(sample.key, members))
    return kept, quarantined


def write_shard_outputs(
    storage: Storage,
    output: str,
    name: str,
    *,
    verdicts: pa.Table,
    kept: list[Sample] | None,
    quarantined: list[Sample],
    manifest: dict[str, Any],
) -> dict[str, str]:
    """Write one shard's outputs; the manifest goes last. `kept=None` (audit) writes no shard."""
    paths = output_paths(output, name)
    buffer = io.BytesIO()
    pq.write_table(verdicts, buffer)
    storage.write_bytes(paths["verdicts"], buffer.getvalue())
    if kept is not None:
        storage.write_bytes(paths["shard"], write_samples(kept))
    if quarantined:
        storage.write_bytes(paths["quarantine"], write_samples(quarantined))
    storage.write_bytes(paths["manifest"], json.dumps(manifest, indent=2, sort_keys=True).encode())
    return paths
