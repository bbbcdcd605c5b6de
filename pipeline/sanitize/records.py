"""From a WebDataset sample to what the defense needs: pixels at the working geometry, or the reason
there are none."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..io.images import DEFAULT_MAX_PIXELS, ImageDecodeError, WorkingImage, decode_working
from ..io.shards import Sample

if TYPE_CHECKING:
    import torch


@dataclass
class Record:
    """One image member of a sample (or, with `member` None, a sample that has no usable image)."""

    key: str
    member: str | None  # the image member's extension
    pixels: np.ndarray | None  # size x size x 3 uint8 at the working geometry; None on error
    error: str | None
    caption: str | None
    original_size: tuple[int, int] | None = None  # (width, height) of the stored image


def caption_of(sample: Sample) -> str | None:
    """A caption from a `txt` member or the json `caption` field, as valid Unicode text: a JSON escape
    can make a lone surrogate, which no tokenizer takes (the sample would go unexamined)."""
    text = sample.members.get("txt")
    if text is not None:
        try:
            caption = text.decode("utf-8").strip()
            return caption or None
        except UnicodeDecodeError:
            return None
    caption = _json_meta(sample).get("caption")
    return caption.encode("utf-8", "replace").decode("utf-8").strip() or None if isinstance(caption, str) else None


def truth_of(sample: Sample) -> bool | None:
    """Ground truth, when the corpus carries it: the json member's boolean `illusion` field (as
    `disillusion attack` and the demo write it). Reports draw the detector's ROC curve from it."""
    truth = _json_meta(sample).get("illusion")
    return truth if isinstance(truth, bool) else None


def _json_meta(sample: Sample) -> dict:
    """The sample's json member as a mapping; empty when it is missing or not a JSON object."""
    try:
        meta = json.loads(sample.members.get("json", b"{}") or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: crafted nesting ([[[[...)
        return {}
    return meta if isinstance(meta, dict) else {}


def to_records(
    sample: Sample, work_size: int, max_pixels: int = DEFAULT_MAX_PIXELS, decode: Callable[..., WorkingImage] = decode_working
) -> list[Record]:
    """One record per image member, each decoded straight to `work_size` x `work_size` (see
    `decode_working`, or a sandbox's `decode`); a sample that cannot be examined as it stands is one
    error record."""
    caption = caption_of(sample)
    if sample.errors:
        return [Record(sample.key, None, None, "; ".join(sample.errors), caption)]
    images = sample.image_extensions()
    if not images:
        return [Record(sample.key, None, None, f"no image member (members: {', '.join(sample.members) or 'none'})", caption)]
    records = []
    for ext in images:
        try:
            image = decode(sample.members[ext], work_size, max_pixels=max_pixels)
        except ImageDecodeError as error:
            records.append(Record(sample.key, ext, None, f"{ext}: {error}", caption))
        else:
            records.append(Record(sample.key, ext, image.pixels, None, caption, image.original_size))
    return records


def as_images(pixels: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 H x W x 3 arrays of one shape -> B x 3 x H x W float32 in [0, 1] (the library's convention)."""
    import torch

    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
