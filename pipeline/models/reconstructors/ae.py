"""Deterministic autoencoder made stochastic with latent noise (diffusers AutoencoderTiny)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderTiny

from ..noise import randn_per_draw
from .base import LatentReconstructor, compile_autoencoder


class AEReconstructor(LatentReconstructor):
    """z = encoder(x) + noise_scale * eps, decoded per draw.

    AutoencoderTiny has no posterior (`encode` returns latents only), so the sampling randomness is
    explicit Gaussian noise in latent units.
    """

    kind = "ae"

    def __init__(
        self,
        ae: AutoencoderTiny,
        *,
        noise_scale: float = 0.5,
        resolution: int | None = None,
        decode_batch_size: int = 32,
    ):
        super().__init__(resolution=resolution, decode_batch_size=decode_batch_size)
        if noise_scale < 0:
            raise ValueError("noise_scale must be non-negative")
        self.ae = ae.eval().requires_grad_(False)
        self.noise_scale = float(noise_scale)
        self.multiple = 2 ** (len(ae.config.encoder_block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return self.ae.device

    def _encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"latents": self.ae.encode(x.to(self.ae.dtype)).latents}

    def _decode_draws(self, state, generators):
        latents = state["latents"]
        eps = randn_per_draw(generators, latents.shape[1:], latents.device, latents.dtype)
        z = latents.unsqueeze(1) + self.noise_scale * eps
        return self.ae.decode(z.flatten(0, 1)).sample.unflatten(0, z.shape[:2])

    def compile(self) -> None:
        compile_autoencoder(self.ae)

    def _fingerprint_parts(self):
        return {"ae": self.ae}, {"noise_scale": self.noise_scale}

    def save_pretrained(self, directory: str) -> None:
        self.ae.save_pretrained(directory, safe_serialization=True)
