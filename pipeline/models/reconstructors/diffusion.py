"""Diffusion purification in the DiffPure / SDEdit manner.

Diffuse the input to timestep t* = strength * T, then run the reverse process back to t = 0 with a
DDIM sampler. With eta = 1 every reverse step adds DDPM-posterior noise; each draw has its own noise
stream, so draws differ while staying reproducible. Works in pixel space (UNet2DModel on images) or
in latent space (UNet2DModel on the latents of an AutoencoderKL).

denoise_steps sets the spacing of the DDIM grid: the chain runs every grid timestep at or below t*
(about denoise_steps + 1 of them, the last at t = 0).
"""

from __future__ import annotations

import hashlib
import math
import os

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel

from ..noise import randn_per_draw
from .base import LatentReconstructor, compile_autoencoder

_SAMPLER_KEYS = ("prediction_type", "clip_sample", "clip_sample_range", "thresholding", "set_alpha_to_one", "steps_offset")


class DiffusionReconstructor(LatentReconstructor):
    kind = "dm"

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler,
        *,
        vae: AutoencoderKL | None = None,
        strength: float = 0.1,
        denoise_steps: int = 10,
        eta: float = 1.0,
        resolution: int | None = None,
        decode_batch_size: int = 32,
    ):
        super().__init__(resolution=resolution, decode_batch_size=decode_batch_size)
        if not 0.0 < strength < 1.0:
            raise ValueError("strength must lie in (0, 1)")
        if denoise_steps < 1:
            raise ValueError("denoise_steps must be at least 1")
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.source_scheduler = scheduler
        self.strength = float(strength)
        self.eta = float(eta)
        # DDIM accepts explicit per-sample variance noise; DDPM's step only takes one generator per batch.
        self.scheduler = DDIMScheduler.from_config(scheduler.config)
        total = self.scheduler.config.num_train_timesteps
        t_star = min(total - 1, max(1, round(strength * total)))
        self.scheduler.set_timesteps(min(total, math.ceil(total * denoise_steps / t_star)))
        self.timesteps = [int(t) for t in self.scheduler.timesteps if int(t) <= t_star]
        if not self.timesteps:
            raise ValueError(f"no scheduler timestep at or below t*={t_star}; raise strength or denoise_steps")
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        self.multiple = vae_factor * 2 ** (len(unet.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor) if self.vae is not None else 1.0

    def _encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.vae is None:
            return {"x0": x.to(self.unet.dtype)}
        latents = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode()
        return {"x0": latents * self.latent_scale}

    def _decode_draws(self, state, generators):
        x0 = state["x0"]
        b, k = len(generators), len(generators[0])
        shape = x0.shape[1:]
        start = torch.full((b * k,), self.timesteps[0], device=x0.device, dtype=torch.long)
        noise = randn_per_draw(generators, shape, x0.device, x0.dtype).flatten(0, 1)
        x = self.scheduler.add_noise(x0.repeat_interleave(k, dim=0), noise, start)
        for t in self.timesteps:
            predicted = self.unet(x, t).sample
            variance_noise = randn_per_draw(generators, shape, x0.device, x0.dtype).flatten(0, 1)
            x = self.scheduler.step(predicted, t, x, eta=self.eta, variance_noise=variance_noise).prev_sample
        if self.vae is not None:
            x = self.vae.decode(x / self.latent_scale).sample
        return x.unflatten(0, (b, k))

    def compile(self) -> None:
        self.unet = torch.compile(self.unet)
        if self.vae is not None:
            compile_autoencoder(self.vae)

    def _fingerprint_parts(self):
        settings = {
            "strength": self.strength,
            "timesteps": self.timesteps,
            "eta": self.eta,
            # What the DDIM sampler actually uses; other config keys vary with how the config was saved.
            "alphas_cumprod": hashlib.sha256(self.scheduler.alphas_cumprod.numpy().tobytes()).hexdigest(),
            "scheduler": {k: self.scheduler.config.get(k) for k in _SAMPLER_KEYS},
        }
        return {"unet": self.unet, "vae": self.vae}, settings

    def save_pretrained(self, directory: str) -> None:
        """Pipeline-style layout: unet/, scheduler/ and, for latent diffusion, vae/."""
        self.unet.save_pretrained(os.path.join(directory, "unet"), safe_serialization=True)
        self.source_scheduler.save_pretrained(os.path.join(directory, "scheduler"))
        if self.vae is not None:
            self.vae.save_pretrained(os.path.join(directory, "vae"), safe_serialization=True)
