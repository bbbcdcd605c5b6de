"""VAE reconstruction: encode once, decode posterior samples (diffusers AutoencoderKL)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from ..noise import randn_per_draw
from .base import LatentReconstructor, compile_autoencoder


class VAEReconstructor(LatentReconstructor):
    """z = mean + sample_scale * std * eps (+ latent_noise * eps'), decoded per draw.

    sample_scale=1 is `latent_dist.sample()`, 0 is the posterior mode; latent_noise adds isotropic
    Gaussian noise on top, in latent units, for models whose posterior is too narrow to wash out a
    perturbation on its own.
    """

    kind = "vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        *,
        sample_scale: float = 1.0,
        latent_noise: float = 0.0,
        resolution: int | None = None,
        decode_batch_size: int = 32,
    ):
        super().__init__(resolution=resolution, decode_batch_size=decode_batch_size)
        if sample_scale < 0 or latent_noise < 0:
            raise ValueError("sample_scale and latent_noise must be non-negative")
        self.vae = vae.eval().requires_grad_(False)
        self.sample_scale = float(sample_scale)
        self.latent_noise = float(latent_noise)
        self.multiple = 2 ** (len(vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return self.vae.device

    def _encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        return {"mean": dist.mean, "std": dist.std}

    def _decode_draws(self, state, generators):
        mean, std = state["mean"], state["std"]
        eps = randn_per_draw(generators, mean.shape[1:], mean.device, mean.dtype)
        z = mean.unsqueeze(1) + self.sample_scale * std.unsqueeze(1) * eps
        if self.latent_noise:
            z = z + self.latent_noise * randn_per_draw(generators, mean.shape[1:], mean.device, mean.dtype)
        return self.vae.decode(z.flatten(0, 1)).sample.unflatten(0, z.shape[:2])

    def compile(self) -> None:
        """torch.compile encoder and decoder (worth it on a GPU for long runs; compiling takes a while)."""
        compile_autoencoder(self.vae)

    def _fingerprint_parts(self):
        return {"vae": self.vae}, {"sample_scale": self.sample_scale, "latent_noise": self.latent_noise}

    def save_pretrained(self, directory: str) -> None:
        self.vae.save_pretrained(directory, safe_serialization=True)
