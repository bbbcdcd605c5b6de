"""The judging step of a shard's work (torch): the consensus verdict row of every record, and the
purified images of those judged illusions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..batching import map_batched
from ..defense.consensus import ConsensusPurifier
from ..io.images import to_uint8
from ..models.noise import NoiseKey
from .records import Record, as_images
from .shard import Judgement
from .verdicts import error_row, ok_row, outcome, sample_row


def judge_records(
    purifier: ConsensusPurifier, records: Sequence[Record], shard: str, *, noise: NoiseKey, batch_size: int, want_images: bool
) -> Judgement:
    """One verdict row per sample (errors included; see `sample_row` for samples with several image
    members) and the purified image of every member judged an illusion.

    Records share one working geometry, so every batch but the last is full. Each image's seed comes
    from the run's noise key, its sample's key and its pixels, so verdicts do not depend on batching
    or on which worker ran them, and an attacker cannot compute them; a batch that fails is retried
    one image at a time so that only the culprit becomes an error row.
    """
    out = Judgement({}, {}, batch_size)
    decoded = [r for r in records if r.pixels is not None]

    def run(batch: list[Record]) -> list[dict[str, Any]]:
        out.batches += 1
        out.batched_images += len(batch)
        results = purifier.purify(
            as_images([r.pixels for r in batch]),
            seeds=[noise.sample_seed(r.key, r.pixels.tobytes()) for r in batch],
            captions=[r.caption for r in batch],
            keep_images=want_images,
        )
        for record, result in zip(batch, results):
            if want_images and result.verdict == "illusion" and result.replacement_accepted:
                out.images[(record.key, record.member)] = to_uint8(result.image)
        return [ok_row(r.key, shard, result, r.original_size, r.member) for r, result in zip(batch, results)]

    def failed(record: Record, error: Exception) -> dict[str, Any]:
        return error_row(record.key, shard, f"purification failed: {type(error).__name__}: {error}", record.member)

    examined = dict(zip(map(id, decoded), map_batched(decoded, batch_size, run, key=lambda r: r.pixels.shape, on_error=failed)))
    by_key: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        row = examined.get(id(record)) or error_row(record.key, shard, record.error or "no image", record.member)
        row["caption"] = record.caption
        by_key.setdefault(record.key, []).append(row)
    for key, member_rows in by_key.items():
        out.rows[key] = sample_row(member_rows)
        out.members[key] = {r["member"]: outcome(r) for r in member_rows if r["member"] is not None}
    return out


def fingerprints(purifier: ConsensusPurifier, noise: NoiseKey) -> dict[str, str]:
    """What judged a shard: the models' weights and the noise key, each by a fingerprint (never the key)."""
    models = {"reconstructor": purifier.reconstructor.fingerprint, "encoder": purifier.encoder.fingerprint, "noise": noise.fingerprint}
    if purifier.witness is not None:
        models["witness"] = purifier.witness.fingerprint
    return models
