"""The verdict table: exactly one row per input sample, errors included (see DESIGN.md for the columns).

Keys are carried losslessly: `key_bytes` holds the exact bytes of the name in the tar, `key` the same
as UTF-8 text, where bytes that are not valid UTF-8 appear as \\xNN (so `key` is exact whenever the
name is valid UTF-8). A sample with several image members has each examined; its row is that of the
most severe member (illusion, then error, then uncertain, then clean), named in `member`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..io.shards import as_text, key_bytes

if TYPE_CHECKING:
    from ..defense.consensus import SampleResult


def verdict_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("key", pa.string()),
        ("key_bytes", pa.binary()),
        ("shard", pa.string()),
        ("member", pa.string()),  # the image member this row describes (extension)
        ("image_members", pa.int32()),  # image members examined in the sample
        ("status", pa.string()),
        ("error", pa.string()),
        ("verdict", pa.string()),
        ("label_original", pa.string()),
        ("label_consensus", pa.string()),
        ("agreement", pa.float32()),
        ("samples_used", pa.int32()),
        ("drift", pa.float32()),
        ("witness_gap", pa.float32()),  # 1 - cos(encoder, robust witness) of the image, when a witness ran
        ("witness_margin", pa.float32()),  # the witness's best-label cosine minus its cosine to label_original, when a witness ran
        ("caption", pa.string()),  # the sample's caption (txt member or json "caption"), for retrieval exports
        ("caption_cos_original", pa.float32()),
        ("caption_cos_purified", pa.float32()),
        ("replacement_accepted", pa.bool_()),  # illusions: whether the purified image passed its re-embedding check
        ("truth", pa.bool_()),  # ground truth from the sample's json `illusion` field, when the corpus carries it
        ("original_width", pa.int32()),  # the stored image's size; the defense saw it at the working size
        ("original_height", pa.int32()),
        ("embedding", pa.list_(pa.float32(), dim)),
    ])


SEVERITY = {"illusion": 3, "error": 2, "uncertain": 1, "clean": 0}


def ok_row(key: str, shard: str, result: SampleResult, original_size: tuple[int, int] | None = None, member: str | None = None) -> dict[str, Any]:
    width, height = original_size or (None, None)
    return {
        "key": key,
        "shard": shard,
        "member": member,
        "status": "ok",
        "error": None,
        "verdict": result.verdict,
        "label_original": result.label_original_name,
        "label_consensus": result.label_consensus_name,
        "agreement": result.agreement,
        "samples_used": result.samples_used,
        "drift": result.drift,
        "witness_gap": result.witness_gap,
        "witness_margin": result.witness_margin,
        "caption_cos_original": result.caption_cos_original,
        "caption_cos_purified": result.caption_cos_purified,
        "replacement_accepted": result.replacement_accepted if result.verdict == "illusion" else None,
        "original_width": width,
        "original_height": height,
        "embedding": result.embedding.float().tolist(),
    }


def error_row(key: str, shard: str, message: str, member: str | None = None) -> dict[str, Any]:
    row = {name: None for name in verdict_schema(1).names if name != "key_bytes"}
    row.update(key=key, shard=shard, member=member, status="error", error=message)
    return row


def outcome(row: dict[str, Any]) -> str:
    """'error' or the verdict."""
    return "error" if row["status"] == "error" else row["verdict"]


def sample_row(member_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for a sample from the rows of its image members (in tar order): the most severe."""
    row = dict(max(member_rows, key=lambda r: SEVERITY[outcome(r)]))  # max keeps the first of equals
    row["image_members"] = sum(r["member"] is not None for r in member_rows)
    return row


def verdict_table(rows: list[dict[str, Any]], dim: int) -> pa.Table:
    """Rows as built above (keys, members, messages and captions as read, possibly with surrogate
    escapes) -> the Parquet table: `key_bytes` holds the exact key, every text column valid UTF-8."""
    table_rows = [{**{k: as_text(v) for k, v in r.items()}, "key_bytes": key_bytes(r["key"])} for r in rows]
    return pa.Table.from_pylist(table_rows, schema=verdict_schema(dim))
