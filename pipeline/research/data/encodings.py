"""Clean images as scraped corpora store them, for calibrating thresholds that hold on real corpora.

A threshold calibrated on lossless images at the working size flags more clean JPEGs of other sizes
(their drift under reconstruction is larger), and more still when a scraper upscaled a small image
or stored it at low quality. Calibration therefore sees each clean image as each scraper pipeline
below would store it, and every stored copy goes through the decoding `sanitize` uses (`decode_working`):

- `png`: as it is;
- `jpeg`: shorter side resized (bicubic) to 32-256 px, aspect 3:4-4:3, quality 70-95;
- `jpeg-any`: any resampling filter, shorter side 24-512 px, quality 50-100, chroma 4:4:4, 4:2:2 or 4:2:0;
- `upscaled`: shrunk to 14-28 px and blown up to 64-256 px (any filters), JPEG quality 85-100;
- `webp`: any filter, shorter side 24-512 px, WebP quality 50-100 (one in five lossless).
"""

from __future__ import annotations

import io
import json
import random

import numpy as np
import torch
from PIL import Image

from ...io.images import decode_working
from ...io.shards import Sample

ENCODINGS = ("png", "jpeg", "jpeg-any", "upscaled", "webp")
SCRAPED = ENCODINGS[2:]  # the pipelines calibration did not see before 2026-11-27
FILTERS = tuple(Image.Resampling)  # nearest, lanczos, bilinear, bicubic, box, hamming


def as_stored(image: torch.Tensor, encoding: str, rng: random.Random) -> bytes:
    """A 3 x H x W image in [0, 1] as file bytes, stored as the pipeline `encoding` (above) would."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}")
    picture = Image.fromarray((image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    if encoding == "png":
        picture.save(buffer, format="PNG")
    elif encoding == "jpeg":
        _resized(picture, rng.randint(32, 256), rng, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=rng.randint(70, 95))
    elif encoding == "jpeg-any":
        _resized(picture, rng.randint(24, 512), rng).save(buffer, format="JPEG", quality=rng.randint(50, 100), subsampling=rng.randint(0, 2))
    elif encoding == "upscaled":
        small = _resized(picture, rng.randint(14, 28), rng)
        _resized(small, rng.randint(64, 256), rng).save(buffer, format="JPEG", quality=rng.randint(85, 100))
    else:
        lossless = rng.random() < 0.2
        _resized(picture, rng.randint(24, 512), rng).save(buffer, format="WEBP", quality=rng.randint(50, 100), lossless=lossless)
    return buffer.getvalue()


def _resized(picture: Image.Image, short: int, rng: random.Random, method: Image.Resampling | None = None) -> Image.Image:
    """Shorter side to `short` px at a random aspect ratio of 3:4-4:3, with `method` or a random filter."""
    aspect = rng.uniform(0.75, 4 / 3)
    size = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)
    return picture.resize(size, method if method is not None else rng.choice(FILTERS))


def at_working_size(data: bytes, work_size: int) -> torch.Tensor:
    """Stored bytes -> 3 x S x S in [0, 1], exactly as `sanitize` examines them."""
    return torch.from_numpy(decode_working(data, work_size).pixels.copy()).permute(2, 0, 1).float().div(255.0)


def stored_at_working_size(images, encoding: str, work_size: int, rng: random.Random) -> list[torch.Tensor]:
    """Each image stored as `encoding` and decoded back as `sanitize` examines it."""
    return [at_working_size(as_stored(image, encoding, rng), work_size) for image in images]


def held_out_stored(data_dir: str, *, offset: int, limit: int, encodings: list[str],
                    seed: int = 0) -> dict[str, list[tuple[str, int, bytes]]]:
    """Clean images from the distribution the demo corpus comes from, none of them in that corpus
    (Fashion-MNIST test images outside the bundled sample, `limit` from `offset`), each stored by
    every pipeline of `encodings` (a seeded random size and quality): {encoding: [(key, label, file bytes)]}."""
    from .fashion_mnist import held_out_test_indices, load_split

    indices = held_out_test_indices()[offset : offset + limit]
    x, labels = load_split("t10k", data_dir).tensors(indices)
    rng = random.Random(seed)
    keys = [f"t10k-{i:05d}" for i in indices]
    return {encoding: [(key, int(label), as_stored(image, encoding, rng)) for key, label, image in zip(keys, labels, x)]
            for encoding in encodings}


def held_out_groups(data_dir: str, *, offset: int, limit: int, encodings: list[str], work_size: int,
                    seed: int = 0) -> dict[str, tuple[list[torch.Tensor], list[str]]]:
    """`held_out_stored`, decoded as `sanitize` does: {encoding: (images, keys)}, for `calibrate` and the frontier."""
    stored = held_out_stored(data_dir, offset=offset, limit=limit, encodings=encodings, seed=seed)
    return {encoding: ([at_working_size(data, work_size) for _, _, data in files], [key for key, _, _ in files])
            for encoding, files in stored.items()}


EXTENSIONS = {"png": "png", "jpeg": "jpg", "jpeg-any": "jpg", "upscaled": "jpg", "webp": "webp"}  # the member each pipeline writes


def scraped_samples(data_dir: str, *, offset: int, limit: int, encodings: list[str], seed: int = 0) -> list[Sample]:
    """`held_out_stored` (the same files) as WebDataset samples, the way a scraped corpus arrives: each
    image's copies side by side (so that any prefix holds every pipeline), `{key}-{encoding}` with its
    image member and a json member {"label": class name, "encoding"}."""
    from .fashion_mnist import CLASSES

    stored = held_out_stored(data_dir, offset=offset, limit=limit, encodings=encodings, seed=seed)
    return [Sample(f"{key}-{encoding}", {EXTENSIONS[encoding]: data,
                                         "json": json.dumps({"label": CLASSES[label], "encoding": encoding}).encode()})
            for copies in zip(*stored.values()) for encoding, (key, label, data) in zip(stored, copies)]
