"""The row format between pipeline stages: one row per input shard, plain strings, integers and
bytes, so Arrow carries them as they are.

A shard's row keeps the bytes that were read (`data`) all the way to the writer, which rebuilds the
samples from them: the outputs come from exactly the bytes that were examined, and the input is
read once. Pixels travel as uint8 blobs at the working geometry; verdicts as JSON plus a float32
blob of embeddings.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..sanitize.records import Record
from ..sanitize.shard import Purified, ShardInput, parse_shard


# What every stage passes on unchanged: the shard, its bytes as read and its problems, the working size.
PASSED_ON = ("uri", "data", "problems", "incomplete", "work_size")


def uri_field(uri: str) -> bytes:
    """A shard URI as a row carries it: bytes, as a local file name need not be valid UTF-8 and
    Arrow strings must be."""
    return uri.encode("utf-8", "surrogateescape")


def uri_of(row: dict[str, Any]) -> str:
    return bytes(row["uri"]).decode("utf-8", "surrogateescape")


def shard_of(row: dict[str, Any]) -> ShardInput:
    """The shard behind a row: its samples re-parsed from the bytes that were read (parsing is
    deterministic, so these are the samples that were decoded), its problems as first recorded."""
    shard = parse_shard(uri_of(row), bytes(row["data"]))
    shard.problems, shard.incomplete = json.loads(row["problems"]), bool(row["incomplete"])
    return shard


def decoded_row(shard: ShardInput, records: list[Record], work_size: int) -> dict[str, Any]:
    meta = [{"key": r.key, "member": r.member, "error": r.error, "caption": r.caption, "original_size": r.original_size} for r in records]
    pixels = [r.pixels for r in records if r.pixels is not None]
    return {
        "uri": uri_field(shard.uri), "data": shard.data, "problems": json.dumps(shard.problems),
        "incomplete": shard.incomplete, "work_size": work_size,
        "records": json.dumps(meta),
        "pixels": np.stack(pixels).tobytes() if pixels else b"",
    }


def row_records(row: dict[str, Any]) -> list[Record]:
    size = int(row["work_size"])
    pixels = np.frombuffer(bytes(row["pixels"]), dtype=np.uint8).reshape(-1, size, size, 3)
    records, used = [], 0
    for meta in json.loads(row["records"]):
        image = None
        if meta["error"] is None:
            image, used = pixels[used], used + 1
        original = tuple(meta["original_size"]) if meta["original_size"] else None
        records.append(Record(meta["key"], meta["member"], image, meta["error"], meta["caption"], original))
    return records


def purified_row(row: dict[str, Any], purified: Purified, *, seconds: float, models: dict[str, str], dim: int) -> dict[str, Any]:
    """What the purification stage passes on: the shard's bytes, its verdict rows and purified images
    (raw pixels: PNG encoding is host work for the writer, not for the actor that holds the GPU)."""
    rows = purified.rows.values()
    embeddings = [r["embedding"] for r in rows if r.get("embedding") is not None]
    keys = list(purified.images)
    return {
        **{name: row[name] for name in PASSED_ON},
        "verdicts": json.dumps([{k: v for k, v in r.items() if k != "embedding"} for r in rows]),
        "embeddings": np.asarray(embeddings, dtype=np.float32).tobytes() if embeddings else b"",
        "dim": dim,
        "purified_keys": json.dumps(keys),  # (key, member) pairs
        "members": json.dumps(purified.members),
        "purified": np.stack([purified.images[k] for k in keys]).tobytes() if keys else b"",
        "batch_size": purified.batch_size,
        "batches": purified.batches,
        "batched_images": purified.batched_images,
        "seconds": seconds,
        "models": json.dumps(models),
    }


def purified_of(row: dict[str, Any]) -> Purified:
    """Inverse of `purified_row`."""
    dim, size = int(row["dim"]), int(row["work_size"])
    embeddings = np.frombuffer(bytes(row["embeddings"]), dtype=np.float32).reshape(-1, dim)
    rows, used = {}, 0
    for verdict in json.loads(row["verdicts"]):
        if verdict["status"] == "ok":
            verdict["embedding"], used = embeddings[used].tolist(), used + 1
        else:
            verdict["embedding"] = None
        rows[verdict["key"]] = verdict
    pixels = np.frombuffer(bytes(row["purified"]), dtype=np.uint8).reshape(-1, size, size, 3)
    images = {tuple(member): image for member, image in zip(json.loads(row["purified_keys"]), pixels)}
    return Purified(rows, images, int(row["batch_size"]), int(row["batches"]), int(row["batched_images"]), json.loads(row["members"]))
