"""Reproducible noise for stochastic reconstruction.

Each reconstruction (image b, draw j) gets its own CPU generator seeded from (seed_b, j). The noise an
image sees therefore depends only on its own seed and the draw index: not on batch composition, device,
or whether draws are taken all at once or in early-exit rounds. That is what makes early exit agree
with full-N runs and lets a re-run on other hardware reproduce the same votes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def draw_seed(seed: int, draw: int) -> int:
    """A well-mixed 63-bit seed for draw `draw` of the image seeded `seed`."""
    return _splitmix64(_splitmix64(seed & _MASK64) ^ draw) >> 1


def draw_generators(seeds: Sequence[int], draws: Sequence[int]) -> list[list[torch.Generator]]:
    """generators[b][k] for image b and the k-th requested draw."""
    return [[torch.Generator().manual_seed(draw_seed(s, j)) for j in draws] for s in seeds]


def randn_per_draw(
    generators: list[list[torch.Generator]],
    shape: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One standard normal tensor of `shape` per (image, draw): returns B x K x *shape.

    Successive calls advance each generator, so a reconstructor may take several noises per draw
    (for instance one per denoising step) in a fixed order.
    """
    rows = [torch.stack([torch.randn(tuple(shape), generator=g) for g in row]) for row in generators]
    return torch.stack(rows).to(device=device, dtype=dtype)


def seed_for_key(seed: int, key: str) -> int:
    """A per-sample seed from the run seed and a stable sample key (a file name, a WebDataset key), so
    a sample's reconstructions do not depend on its position in a batch or a corpus."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()  # names need not be valid UTF-8
    return draw_seed(seed, int.from_bytes(digest[:8], "little"))
