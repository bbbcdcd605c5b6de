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

from ..io.shards import Sample, as_text, display, write_samples
from ..io.storage import Storage, join, shard_name

POLICIES = ("purify", "drop", "keep")  # for samples judged `illusion`
ON_ERROR = ("keep", "drop")  # for samples that could not be examined
ON_UNCERTAIN = ("keep", "drop")  # for samples judged `uncertain`


def output_paths(output: str, name: str) -> dict[str, str]:
    return {
        "shard": join(output, "shards", f"{name}.tar"),
        "verdicts": join(output, "verdicts", f"{name}.parquet"),
        "quarantine": join(output, "quarantine", f"{name}.tar"),
        "manifest": join(output, "manifests", f"{name}.json"),
    }


def sanitised_samples(
    samples: Iterable[Sample],
    rows: dict[str, dict[str, Any]],
    members: dict[str, dict[str, str]],
    purified_png: dict[tuple[str, str], bytes],
    *,
    policy: str,
    on_error: str = "keep",
    on_uncertain: str = "drop",
    work_size: int,
) -> tuple[list[Sample], list[Sample]]:
    """(kept samples, quarantined samples).

    A sample is an error when it, or any of its image members, could not be examined: `on_error`
    drop moves it to quarantine, keep writes it on. `policy` applies to a sample with an image
    member judged `illusion` (an error sample with one included): purify replaces each such member
    by its purified PNG at the working size `work_size` (extension png, or `<ext>.png` when the
    sample has a png member already), keep leaves it, drop moves the sample to quarantine with its
    original bytes. `on_uncertain` drop moves a sample with a member judged `uncertain` (and none
    judged `illusion`, which its policy decides) to quarantine; keep writes it on. Under purify, a sample with an illusion whose purified image failed its check
    (`VerdictPolicy.replacement_accepted`: absent from `purified_png`) is quarantined instead. Every
    kept sample gets a `disillusion.json` member with its verdict; every other member, repeated
    members included, stays byte-identical.
    """
    if policy not in POLICIES or on_error not in ON_ERROR or on_uncertain not in ON_UNCERTAIN:
        raise ValueError(f"unknown policy {policy!r}, on_error {on_error!r} or on_uncertain {on_uncertain!r}; "
                         f"choose from {POLICIES}, {ON_ERROR} and {ON_UNCERTAIN}")
    kept, quarantined = [], []
    for sample in samples:
        row, outcomes = rows[sample.key], members.get(sample.key, {})
        error = row["status"] == "error" or "error" in outcomes.values()
        illusions = [ext for ext, outcome in outcomes.items() if outcome == "illusion"]
        unpurified = policy == "purify" and any((sample.key, ext) not in purified_png for ext in illusions)
        doubted = not illusions and "uncertain" in outcomes.values() and on_uncertain == "drop"
        if (error and on_error == "drop") or (illusions and policy == "drop") or unpurified or doubted:
            quarantined.append(sample)
            continue
        replaced = {ext: purified_png[(sample.key, ext)] for ext in outcomes if (sample.key, ext) in purified_png} if policy == "purify" else {}
        out = Sample(sample.key, extra=list(sample.extra))
        for ext, data in sample.members.items():
            if ext in replaced:
                out.members[_purified_name(ext, sample.members)] = replaced[ext]
            else:
                out.members[ext] = data
        # Text as valid UTF-8 (bytes that are not UTF-8 as \xNN); `key` as the verdict table names it
        # (the member names may differ: see `safe_key`).
        note = {k: as_text(row.get(k)) for k in
                ("status", "error", "verdict", "label_original", "label_consensus", "agreement", "drift", "witness_gap", "witness_margin", "member")}
        note["key"] = display(sample.key)
        note["original_size"] = [row["original_width"], row["original_height"]] if row.get("original_width") else None
        note["images"] = {display(ext): outcome for ext, outcome in outcomes.items()}
        note["action"] = "purified" if replaced else "kept"
        if replaced:
            note["purified"] = {display(ext): display(_purified_name(ext, sample.members)) for ext in replaced}
            note["purified_size"] = [work_size, work_size]
        out.members["disillusion.json"] = json.dumps(note).encode()
        kept.append(out)
    return kept, quarantined


def _purified_name(ext: str, members: dict[str, bytes]) -> str:
    """`jpg` -> `png`, `001.jpg` -> `001.png`; `<ext>.png` when that name belongs to another member."""
    stem, _, _ = ext.rpartition(".")
    name = f"{stem}.png" if stem else "png"
    return name if name == ext or name not in members else f"{ext}.png"


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


def is_done(storage: Storage, output: str, uri: str) -> bool:
    """Whether the shard `uri` has a complete manifest under `output` (resume skips it)."""
    path = output_paths(output, shard_name(uri))["manifest"]
    if not storage.exists(path):
        return False
    try:
        return bool(json.loads(storage.read_bytes(path)).get("complete", True))
    except ValueError:
        return False


def read_manifests(storage: Storage, output: str) -> list[dict[str, Any]]:
    """Every shard manifest under `output`, in name order (what reports and exports start from)."""
    manifests = []
    for uri in sorted(u for u in storage.list_prefix(join(output, "manifests")) if u.endswith(".json")):
        try:
            manifests.append(json.loads(storage.read_bytes(uri)))
        except ValueError:
            continue  # not a manifest this project wrote
    return manifests


def read_verdicts(storage: Storage, output: str, name: str) -> pa.Table | None:
    """A shard's verdict table, or None when it has none."""
    path = output_paths(output, name)["verdicts"]
    return pq.read_table(pa.BufferReader(storage.read_bytes(path))) if storage.exists(path) else None
