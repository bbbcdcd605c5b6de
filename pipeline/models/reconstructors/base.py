"""Shared machinery for latent reconstructors: geometry in and out, chunked decoding, seeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..imaging import Geometry, from_model_space, to_model_space
from ..noise import draw_generators


def compile_autoencoder(autoencoder: torch.nn.Module) -> None:
    """torch.compile a diffusers autoencoder's encoder and decoder (the modules that carry the image work)."""
    autoencoder.encoder = torch.compile(autoencoder.encoder)
    autoencoder.decoder = torch.compile(autoencoder.decoder)


@dataclass
class Encoded:
    """The deterministic part of a reconstruction, computed once per image batch."""

    state: dict[str, torch.Tensor]  # per-image tensors, leading dim B
    geometry: Geometry

    @property
    def batch_size(self) -> int:
        return next(iter(self.state.values())).shape[0]

    def select(self, indices: Sequence[int]) -> "Encoded":
        """The same encoding restricted to some images (early exit drops finished ones)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return Encoded({k: v[index.to(v.device)] for k, v in self.state.items()}, self.geometry)


class LatentReconstructor:
    """Base class: subclasses implement `_encode` (model space -> state) and `_decode_draws`.

    resolution: a fixed square working size (models trained at one size), or None to keep the
        input size, reflect-padded to a multiple of `multiple`.
    decode_batch_size: how many reconstructions go through the decoder at once.
    """

    kind = "base"
    multiple = 8

    def __init__(self, *, resolution: int | None = None, decode_batch_size: int = 32):
        if decode_batch_size < 1:
            raise ValueError("decode_batch_size must be at least 1")
        self.resolution = resolution
        self.decode_batch_size = decode_batch_size
        self._fingerprint: str | None = None

    # --- to implement -------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _decode_draws(self, state: dict[str, torch.Tensor], generators: list[list[torch.Generator]]) -> torch.Tensor:
        """state for B images, generators[b][k] -> B x K x 3 x h x w in model space ([-1, 1])."""
        raise NotImplementedError

    def _fingerprint_parts(self) -> tuple[dict[str, torch.nn.Module | None], dict[str, Any]]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    # --- public -------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from ..fingerprint import fingerprint_modules

            modules, settings = self._fingerprint_parts()
            settings = {"resolution": self.resolution, **settings}
            self._fingerprint = fingerprint_modules(self.kind, modules, settings)
        return self._fingerprint

    def encode(self, images: torch.Tensor) -> Encoded:
        x, geometry = to_model_space(images.to(self.device), self.resolution, self.multiple)
        return Encoded(self._encode(x), geometry)

    def decode_samples(self, encoded: Encoded, seeds: Sequence[int], draws: Sequence[int]) -> torch.Tensor:
        batch = encoded.batch_size
        if len(seeds) != batch:
            raise ValueError(f"got {len(seeds)} seeds for {batch} images")
        draws = list(draws)
        generators = draw_generators(seeds, draws)
        # At most decode_batch_size reconstructions go through the model at once. Each (image, draw)
        # owns its generator, so any chunking yields the same pixels.
        draw_chunk = max(1, min(len(draws), self.decode_batch_size))
        image_chunk = max(1, self.decode_batch_size // draw_chunk)
        rows = []
        for i in range(0, batch, image_chunk):
            state = {k: v[i : i + image_chunk] for k, v in encoded.state.items()}
            parts = []
            for j in range(0, len(draws), draw_chunk):
                decoded = self._decode_draws(state, [g[j : j + draw_chunk] for g in generators[i : i + image_chunk]])
                b, k = decoded.shape[:2]
                parts.append(from_model_space(decoded.flatten(0, 1), encoded.geometry).unflatten(0, (b, k)))
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows)

    def reconstruct(self, images: torch.Tensor, n: int, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """n stochastic reconstructions per image: B x n x 3 x H x W in [0, 1]."""
        encoded = self.encode(images)
        if seeds is None:
            seeds = list(range(encoded.batch_size))
        return self.decode_samples(encoded, seeds, range(n))

