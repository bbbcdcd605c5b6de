"""From a WebDataset sample to what the defense needs (an image tensor or the reason there is none)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..io.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from ..io.shards import Sample


@dataclass
class Record:
    key: str
    image: torch.Tensor | None
    error: str | None
    caption: str | None


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


def to_record(sample: Sample, max_pixels: int = DEFAULT_MAX_PIXELS) -> Record:
    ext = sample.image_extension()
    if ext is None:
        return Record(sample.key, None, f"no image member (members: {', '.join(sample.members) or 'none'})", caption_of(sample))
    try:
        image = decode_image(sample.members[ext], max_pixels=max_pixels)
    except ImageDecodeError as error:
        return Record(sample.key, None, f"{ext}: {error}", caption_of(sample))
    return Record(sample.key, image, None, caption_of(sample))
