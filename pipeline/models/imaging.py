"""Image tensor helpers shared by reconstructors and encoders.

Convention everywhere in the library: images are float tensors in [0, 1], shaped B x 3 x H x W.
Models see their own range and size; these helpers convert in and out (differentiably).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Inside `straight_through_clamps()` the output clamps pass gradients as the identity (BPDA): an
# attacker's tool for gradients a clamp would zero (saturated background pixels); values are unchanged.
_STRAIGHT_THROUGH: ContextVar[bool] = ContextVar("straight_through_clamps", default=False)


@contextlib.contextmanager
def straight_through_clamps() -> Iterator[None]:
    token = _STRAIGHT_THROUGH.set(True)
    try:
        yield
    finally:
        _STRAIGHT_THROUGH.reset(token)


def _clamp01(x: torch.Tensor) -> torch.Tensor:
    clamped = x.clamp(0.0, 1.0)
    return x + (clamped - x).detach() if _STRAIGHT_THROUGH.get() else clamped


def as_rgb_batch(images: torch.Tensor) -> torch.Tensor:
    """Return a B x 3 x H x W float batch from B x C x H x W (C in 1, 3, 4) or a single C x H x W image.

    Grayscale is replicated to three channels; an alpha channel is dropped (compositing, if wanted,
    belongs to decoding, where the background colour is known).
    """
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"expected images shaped B x C x H x W, got {tuple(images.shape)}")
    channels = images.shape[1]
    if channels == 1:
        images = images.expand(-1, 3, -1, -1)
    elif channels == 4:
        images = images[:, :3]
    elif channels != 3:
        raise ValueError(f"expected 1, 3 or 4 channels, got {channels}")
    if not images.is_floating_point():
        raise TypeError(f"expected float images in [0, 1], got dtype {images.dtype}")
    return images


def resize(images: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize to (H, W); a no-op when the size already matches. Antialiased when shrinking."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    kwargs = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
    if mode in ("bilinear", "bicubic"):
        kwargs["align_corners"] = False
    return F.interpolate(images, size=size, mode=mode, **kwargs)


def resize_shorter_and_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """CLIP-style preprocessing geometry: shorter side to `size`, then a central `size` x `size` crop."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    images = resize(images, (new_h, new_w))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return images[..., top : top + size, left : left + size]


@dataclass(frozen=True)
class Geometry:
    """How a batch was brought to a model's working size, so that it can be brought back."""

    input_size: tuple[int, int]
    model_size: tuple[int, int]
    padded: bool  # True: reflect-padded (crop back); False: resized (resize back)


def to_model_space(images: torch.Tensor, resolution: int | None, multiple: int) -> tuple[torch.Tensor, Geometry]:
    """Map [0, 1] images to the [-1, 1] range and the size a generative model accepts.

    With a fixed `resolution` the image is resized to a square of that side (models trained at one
    size); without one it keeps its size and is reflect-padded up to a multiple of `multiple`.
    """
    images = as_rgb_batch(images)
    h, w = images.shape[-2:]
    if resolution is not None:
        model = resize(images, (resolution, resolution))
        geometry = Geometry((h, w), (resolution, resolution), padded=False)
    else:
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        model = F.pad(images, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else images
        geometry = Geometry((h, w), (h + pad_h, w + pad_w), padded=True)
    return model * 2.0 - 1.0, geometry


def from_model_space(decoded: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Inverse of `to_model_space`: back to [0, 1] at the input size."""
    images = _clamp01((decoded.float() + 1.0) / 2.0)
    h, w = geometry.input_size
    if geometry.padded:
        return images[..., :h, :w]
    return _clamp01(resize(images, (h, w)))
