"""Ray Data stages as plain callables: reading and decoding (CPU tasks) and purification (an actor
pool that loads the models once per actor)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from ..io.storage import Storage
from ..sanitize.config import SanitizeConfig
from ..sanitize.records import to_record
from ..sanitize.shard import purify_records, read_shard
from .rows import marker_row, pack_verdict, record_row, row_record


def read_and_decode(item: dict[str, Any], s3_endpoint: str | None = None) -> list[dict[str, Any]]:
    """One input shard URI -> a marker row plus one row per sample (decoded pixels or an error)."""
    shard = read_shard(Storage(s3_endpoint), item["uri"])
    return [marker_row(shard)] + [record_row(shard, i, to_record(s)) for i, s in enumerate(shard.samples)]


class PurifyStage:
    """Consensus purification of a batch of sample rows; marker rows pass through."""

    def __init__(self, config: SanitizeConfig, threads: int | None = None):
        import torch

        # Ray sets OMP_NUM_THREADS=1 in workers; give torch the threads this actor was granted.
        torch.set_num_threads(max(1, threads or int(os.environ.get("DISILLUSION_ACTOR_THREADS", "1"))))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.config = config
        self.purifier = config.build_purifier(device)
        self.models = json.dumps({"reconstructor": self.purifier.reconstructor.fingerprint, "encoder": self.purifier.encoder.fingerprint})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(batch["key"])
        rows = [{name: _plain(batch[name][i]) for name in batch} for i in range(count)]
        verdict_json = [""] * count
        embeddings = [b""] * count
        purified = [b""] * count
        seconds = np.zeros(count)  # purification time, shared out over the rows it was spent on
        by_shard: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            if row["index"] >= 0:
                by_shard.setdefault(row["shard"], []).append(i)
        for shard, indices in by_shard.items():
            start = time.perf_counter()
            records = [row_record(rows[i]) for i in indices]
            results, images = purify_records(
                self.purifier, records, shard, seed=self.config.seed, batch_size=self.config.batch_size,
                want_images=self.config.policy == "purify",
            )
            for i, record in zip(indices, records):
                verdict_json[i], embeddings[i] = pack_verdict(results[record.key])
                purified[i] = images.get(record.key, b"")
            seconds[indices] = (time.perf_counter() - start) / len(indices)
        return {
            "uri": batch["uri"], "shard": batch["shard"], "index": batch["index"], "total": batch["total"],
            "problems": batch["problems"], "key": batch["key"],
            "verdict": np.array(verdict_json, dtype=object), "embedding": np.array(embeddings, dtype=object),
            "purified": np.array(purified, dtype=object), "models": np.array([self.models] * count, dtype=object),
            "seconds": seconds,
        }


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
