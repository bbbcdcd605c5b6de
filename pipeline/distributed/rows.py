"""The row format between pipeline stages: plain scalars and bytes, so Arrow carries them as is.

Every shard contributes one marker row (index -1) with its sample count and problems, so the driver
knows when a shard is complete even if it has no readable samples.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from ..sanitize.records import Record
from ..sanitize.shard import ShardInput


def marker_row(shard: ShardInput) -> dict[str, Any]:
    return {
        "uri": shard.uri, "shard": shard.name, "index": -1, "total": len(shard.samples), "problems": json.dumps(shard.problems),
        "key": "", "pixels": b"", "height": 0, "width": 0, "error": None, "caption": None,
    }


def record_row(shard: ShardInput, index: int, record: Record) -> dict[str, Any]:
    image = record.image
    return {
        "uri": shard.uri, "shard": shard.name, "index": index, "total": len(shard.samples), "problems": "[]",
        "key": record.key,
        "pixels": b"" if image is None else image.numpy().astype(np.float32).tobytes(),
        "height": 0 if image is None else int(image.shape[1]),
        "width": 0 if image is None else int(image.shape[2]),
        "error": record.error, "caption": record.caption,
    }


def row_record(row: dict[str, Any]) -> Record:
    image = None
    if row["height"]:
        array = np.frombuffer(row["pixels"], dtype=np.float32).reshape(3, int(row["height"]), int(row["width"]))
        image = torch.from_numpy(array.copy())
    # Arrow -> numpy turns missing strings into None or NaN depending on the batch: keep strings only.
    text = lambda value: value if isinstance(value, str) else None  # noqa: E731
    return Record(row["key"], image, text(row["error"]), text(row["caption"]))


def pack_verdict(row: dict[str, Any]) -> tuple[str, bytes]:
    """A verdict row as (JSON without the embedding, float32 embedding bytes)."""
    embedding = row.get("embedding")
    rest = {k: v for k, v in row.items() if k != "embedding"}
    return json.dumps(rest), b"" if embedding is None else np.asarray(embedding, dtype=np.float32).tobytes()


def unpack_verdict(text: str, embedding: bytes) -> dict[str, Any]:
    row = json.loads(text)
    row["embedding"] = np.frombuffer(embedding, dtype=np.float32).tolist() if embedding else None
    return row
