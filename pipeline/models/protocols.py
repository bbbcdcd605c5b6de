"""The two small interfaces the defense is written against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Reconstructor(Protocol):
    """A stochastic generative reconstruction: images in [0, 1] -> n reconstructions each.

    `encode` does the deterministic part once per image; `decode_samples` draws reconstructions for
    the requested draw indices, with noise fixed by (seed, draw) so that rounds of draws equal one
    large draw. Both are differentiable (callers choose `torch.no_grad` or not), which adaptive
    attacks need.
    """

    kind: str

    @property
    def fingerprint(self) -> str: ...

    def encode(self, images: torch.Tensor) -> Any:
        """Opaque per-batch state; supports `.select(indices)` to keep a subset of the images."""
        ...

    def decode_samples(self, encoded: Any, seeds: Sequence[int], draws: Sequence[int]) -> torch.Tensor:
        """Returns B x len(draws) x 3 x H x W in [0, 1], at the input size."""
        ...

    def reconstruct(self, images: torch.Tensor, n: int, seeds: Sequence[int] | None = None) -> torch.Tensor: ...


@runtime_checkable
class Encoder(Protocol):
    """A multi-modal embedding model with an image tower and a text tower in one space."""

    kind: str
    dim: int
    image_size: int  # the square input the image tower sees; a corpus is decoded to it (its working geometry)

    @property
    def fingerprint(self) -> str: ...

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] (any size) -> B x dim, L2-normalised; preprocessing included, differentiable."""
        ...

    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """len(prompts) x dim, L2-normalised."""
        ...
