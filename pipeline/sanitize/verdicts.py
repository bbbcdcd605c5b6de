"""The verdict table: exactly one row per input sample, errors included (see DESIGN.md for the columns)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from ..defense.consensus import SampleResult


def verdict_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("key", pa.string()),
        ("shard", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("verdict", pa.string()),
        ("label_original", pa.string()),
        ("label_consensus", pa.string()),
        ("agreement", pa.float32()),
        ("samples_used", pa.int32()),
        ("drift", pa.float32()),
        ("caption_cos_original", pa.float32()),
        ("caption_cos_purified", pa.float32()),
        ("original_width", pa.int32()),  # the stored image's size; the defense saw it at the working size
        ("original_height", pa.int32()),
        ("embedding", pa.list_(pa.float32(), dim)),
    ])


def ok_row(key: str, shard: str, result: SampleResult, original_size: tuple[int, int] | None = None) -> dict[str, Any]:
    width, height = original_size or (None, None)
    return {
        "key": key,
        "shard": shard,
        "status": "ok",
        "error": None,
        "verdict": result.verdict,
        "label_original": result.label_original_name,
        "label_consensus": result.label_consensus_name,
        "agreement": result.agreement,
        "samples_used": result.samples_used,
        "drift": result.drift,
        "caption_cos_original": result.caption_cos_original,
        "caption_cos_purified": result.caption_cos_purified,
        "original_width": width,
        "original_height": height,
        "embedding": result.embedding.float().tolist(),
    }


def error_row(key: str, shard: str, message: str) -> dict[str, Any]:
    row = {name: None for name in verdict_schema(1).names}
    row.update(key=key, shard=shard, status="error", error=message)
    return row


def verdict_table(rows: list[dict[str, Any]], dim: int) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=verdict_schema(dim))
