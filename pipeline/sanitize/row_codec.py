"""The row codec between a shard's stages (pipeline/sanitize/stages.py), whichever executor runs
them: one row per input shard, plain strings, integers and bytes, so Arrow carries them as they are.

A shard's row keeps the samples as they were read (an index in JSON and their members' bytes in one
blob) all the way to the writer: the outputs come from exactly the bytes that were examined, the
input is read once, and no later stage parses corpus bytes again. Pixels travel as uint8 blobs at
the working geometry; verdicts as JSON plus a float32 blob of embeddings.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..io.shards import Sample
from ..io.storage import shard_name
from .records import Record
from .shard import Judgement, ShardInput


# What every stage passes on unchanged: the shard, its samples as read and its problems, the working size.
PASSED_ON = ("uri", "samples", "payloads", "problems", "incomplete", "work_size", "stop")


def uri_field(uri: str) -> bytes:
    """A shard URI as a row carries it: bytes, as a local file name need not be valid UTF-8 and
    Arrow strings must be."""
    return uri.encode("utf-8", "surrogateescape")


def uri_of(row: dict[str, Any]) -> str:
    return bytes(row["uri"]).decode("utf-8", "surrogateescape")


def pack_samples(samples: list[Sample]) -> tuple[str, bytes]:
    """Samples -> (a JSON index, their payloads end to end). JSON escapes names that are not UTF-8
    (surrogates) and reads them back exactly."""
    index, payloads = [], []
    for sample in samples:
        index.append({"key": sample.key, "members": [[ext, len(data)] for ext, data in sample.members.items()],
                      "extra": [[ext, len(data)] for ext, data in sample.extra], "errors": sample.errors})
        payloads += [*sample.members.values(), *(data for _, data in sample.extra)]
    return json.dumps(index), b"".join(payloads)


def unpack_samples(index: str, payloads: bytes) -> list[Sample]:
    samples, at = [], 0
    for entry in json.loads(index):
        sample = Sample(entry["key"], errors=entry["errors"])
        for ext, size in entry["members"]:
            sample.members[ext], at = payloads[at : at + size], at + size
        for ext, size in entry["extra"]:
            sample.extra.append((ext, payloads[at : at + size]))
            at += size
        samples.append(sample)
    return samples


def shard_of(row: dict[str, Any]) -> ShardInput:
    """The shard behind a row: its samples as they were read and decoded, its problems."""
    samples = unpack_samples(row["samples"], bytes(row["payloads"]))
    return ShardInput(uri_of(row), shard_name(uri_of(row)), samples, json.loads(row["problems"]), bool(row["incomplete"]))


def decoded_row(shard: ShardInput, records: list[Record], work_size: int, stop: str = "") -> dict[str, Any]:
    """`stop`: why the run must stop (the shard could not be read because the store is unreachable); a
    string either way, so that every block has the same column types."""
    meta = [{"key": r.key, "member": r.member, "error": r.error, "caption": r.caption, "original_size": r.original_size} for r in records]
    pixels = [r.pixels for r in records if r.pixels is not None]
    index, payloads = pack_samples(shard.samples)
    return {
        "uri": uri_field(shard.uri), "samples": index, "payloads": payloads, "problems": json.dumps(shard.problems),
        "incomplete": shard.incomplete, "work_size": work_size, "stop": stop,
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


def judgement_row(row: dict[str, Any], judgement: Judgement, *, seconds: float, models: dict[str, str], dim: int) -> dict[str, Any]:
    """What the judging stage passes on: the shard's bytes, its verdict rows and purified images
    (raw pixels: PNG encoding is host work for the writer, not for the actor that holds the GPU)."""
    rows = judgement.rows.values()
    embeddings = [r["embedding"] for r in rows if r.get("embedding") is not None]
    keys = list(judgement.images)
    return {
        **{name: row[name] for name in PASSED_ON},
        "verdicts": json.dumps([{k: v for k, v in r.items() if k != "embedding"} for r in rows]),
        "embeddings": np.asarray(embeddings, dtype=np.float32).tobytes() if embeddings else b"",
        "dim": dim,
        "purified_keys": json.dumps(keys),  # (key, member) pairs
        "members": json.dumps(judgement.members),
        "purified": np.stack([judgement.images[k] for k in keys]).tobytes() if keys else b"",
        "batch_size": judgement.batch_size,
        "batches": judgement.batches,
        "batched_images": judgement.batched_images,
        "seconds": seconds,
        "models": json.dumps(models),
    }


def judgement_of(row: dict[str, Any]) -> Judgement:
    """Inverse of `judgement_row`."""
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
    return Judgement(rows, images, int(row["batch_size"]), int(row["batches"]), int(row["batched_images"]), json.loads(row["members"]))
