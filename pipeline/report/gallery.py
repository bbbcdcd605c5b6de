"""The report's gallery: for a few flagged samples, the image as the defense saw it, some of its
reconstructions (the same noise the run drew: same sample key and pixels, the run's noise key) and the purified image.

Only the gallery's samples are purified again, in the process that writes the report: a dozen at
most, from the few shards they come from."""

from __future__ import annotations

import base64
from collections import defaultdict
from typing import Any

from ..io.images import encode_png
from ..io.sandbox import shared_sandbox
from ..io.shards import key_bytes
from ..io.storage import Storage
from ..models.noise import NoiseKey
from ..sanitize.config import SanitizeConfig
from ..sanitize.records import as_images, to_records
from ..sanitize.shard import read_shard

DRAWS_SHOWN = 3


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def gallery_images(config: SanitizeConfig, storage: Storage, entries: list[dict[str, Any]], device: str, noise: NoiseKey) -> list[dict[str, Any]]:
    """Each entry (a verdict row with its shard's input URI) with `original`, `reconstructions` and
    `purified` as PNG data URIs and the reconstructions' labels; entries whose input is gone are left out."""
    if not entries:
        return []
    import torch

    purifier = config.build_purifier(device)
    text = purifier.label_embeddings()
    sandbox = shared_sandbox(config.budgets())  # the input is read again: under the same budgets as the run
    by_input: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_input[entry["input"]].append(entry)
    shown = []
    for uri, wanted in by_input.items():
        shard = read_shard(storage, uri, config.max_shard_bytes, sandbox)
        samples = {key_bytes(s.key): s for s in shard.samples}
        for entry in wanted:
            sample = samples.get(entry["key_bytes"])
            records = [r for r in to_records(sample, config.working_size(), decode=sandbox.decode) if r.member == entry["member"]] if sample else []
            if not records or records[0].pixels is None:
                continue  # the input changed or went away since the run
            images = as_images([records[0].pixels]).to(device)
            seeds = [noise.sample_seed(sample.key, records[0].pixels.tobytes())]
            [result] = purifier.purify(images, seeds=seeds, keep_images=True)
            with torch.no_grad():
                recon = purifier.reconstructor.decode_samples(purifier.reconstructor.encode(images), seeds, range(DRAWS_SHOWN))[0]
                labels = (purifier.encoder.embed_images(recon).float() @ text.T).argmax(dim=-1).tolist()
            shown.append({
                **entry,
                "original": data_uri(encode_png(images[0].cpu())),
                "reconstructions": [(data_uri(encode_png(r.float().cpu())), purifier.labels.labels[label]) for r, label in zip(recon, labels)],
                "purified": data_uri(encode_png(result.image.float().cpu())),
                "purified_accepted": bool(result.replacement_accepted) if result.verdict == "illusion" else None,
            })
    return sorted(shown, key=lambda e: e["rank"])
