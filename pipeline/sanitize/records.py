"""From a WebDataset sample to what the defense needs: pixels at the working geometry, or the reason
there are none."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..io.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_working
from ..io.shards import Sample

if TYPE_CHECKING:
    import torch


@dataclass
class Record:
    key: str
    pixels: np.ndarray | None  # size x size x 3 uint8 at the working geometry; None on error
    error: str | None
    caption: str | None
    original_size: tuple[int, int] | None = None  # (width, height) of the stored image


def caption_of(sample: Sample) -> str | None:
    """A caption from a `txt` member or the json `caption` field."""
    text = sample.members.get("txt")
    if text is not None:
        try:
            caption = text.decode("utf-8").strip()
            return caption or None
        except UnicodeDecodeError:
            return None
    try:
        meta = json.loads(sample.members.get("json", b"{}") or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    caption = meta.get("caption") if isinstance(meta, dict) else None
    return caption.strip() or None if isinstance(caption, str) else None


def to_record(sample: Sample, work_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Record:
    """Decode the sample's image straight to `work_size` x `work_size` (see `decode_working`)."""
    ext = sample.image_extension()
    if ext is None:
        return Record(sample.key, None, f"no image member (members: {', '.join(sample.members) or 'none'})", caption_of(sample))
    try:
        image = decode_working(sample.members[ext], work_size, max_pixels=max_pixels)
    except ImageDecodeError as error:
        return Record(sample.key, None, f"{ext}: {error}", caption_of(sample))
    return Record(sample.key, image.pixels, None, caption_of(sample), image.original_size)


def as_images(pixels: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 H x W x 3 arrays of one shape -> B x 3 x H x W float32 in [0, 1] (the library's convention)."""
    import torch

    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
