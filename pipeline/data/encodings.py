"""Clean images as scraped corpora store them, for calibrating thresholds that hold on real corpora.

A threshold calibrated on lossless images at the working size flags more clean JPEGs of other sizes
(their drift under reconstruction is larger). Calibration therefore sees each clean image as PNG
at its own size and as a JPEG resized to a random size and aspect at a random quality, and both
go through the decoding `sanitize` uses (`decode_working`).
"""

from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image

from ..io.images import decode_working

ENCODINGS = ("png", "jpeg")


def as_stored(image: torch.Tensor, encoding: str, rng: random.Random) -> bytes:
    """A 3 x H x W image in [0, 1] as file bytes: `png` as it is; `jpeg` with its shorter side
    resized to 32-256 px, its aspect ratio to 3:4-4:3, at quality 70-95."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}")
    picture = Image.fromarray((image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    if encoding == "png":
        picture.save(buffer, format="PNG")
        return buffer.getvalue()
    short, aspect = rng.randint(32, 256), rng.uniform(0.75, 4 / 3)
    size = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)
    picture.resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=rng.randint(70, 95))
    return buffer.getvalue()


def at_working_size(data: bytes, work_size: int) -> torch.Tensor:
    """Stored bytes -> 3 x S x S in [0, 1], exactly as `sanitize` examines them."""
    return torch.from_numpy(decode_working(data, work_size).pixels.copy()).permute(2, 0, 1).float().div(255.0)


def stored_at_working_size(images, encoding: str, work_size: int, rng: random.Random) -> list[torch.Tensor]:
    """Each image stored as `encoding` and decoded back as `sanitize` examines it."""
    return [at_working_size(as_stored(image, encoding, rng), work_size) for image in images]
