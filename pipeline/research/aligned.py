"""Training an encoder-aligned reconstructor: the seed paper's open question, a generative model
aligned with the target encoder's embedding space. The demo VAE is fine-tuned, the image encoder
frozen, so that the reconstruction of a perturbed image embeds where the encoder puts the clean one:

    min_R  E_x [ max_{|d| <= eps} || E(R(x + d)) - E(x) ||^2                 (unit embeddings)
                 + clean_weight * || E(R(x)) - E(x) ||^2 + pixel_weight * mse(R(x), x) ]

The inner maximum by PGD through the reconstruction and the encoder (signed steps of eps/4, random
start); R draws its latent sample as the purifier does (the reconstructor's own options), so the
training sees the randomness the consensus votes over. The pixel term keeps R a reconstructor: a
purified image written downstream must still look like its input. Against the detect-adaptive
attacker this aims at the consensus itself: to keep the vote on its target, the attacker must now
move a model trained to keep the reconstruction on the clean image's embedding.

Seeded; the demo's size trains on a CPU in minutes per few thousand images.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..models.encoders import CLIPEncoder
from ..models.reconstructors.vae import VAEReconstructor
from .data.fashion_mnist import LabelledImages
from .training.demo_models import _augment, fit, seeded
from .witness import furthest


def _embedding_distance(encoder: CLIPEncoder, reconstruct, x: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Per image: squared distance of the encoder's unit embedding of R(x) from the anchor."""
    return (encoder.embed_images(reconstruct(x)) - anchor).pow(2).sum(-1)


def train_aligned_vae(
    reconstructor: VAEReconstructor,
    encoder: CLIPEncoder,
    data: LabelledImages,
    *,
    epochs: int,
    eps: float = 16 / 255,
    pgd_steps: int = 3,
    clean_weight: float = 1.0,
    pixel_weight: float = 50.0,
    batch_size: int = 64,
    lr: float = 2e-4,
    seed: int = 0,
) -> VAEReconstructor:
    """A copy of `reconstructor` (left unchanged) fine-tuned on the images of `data` as above;
    `encoder` stays frozen. Each step draws its latent samples from fresh seeds of the run's generator."""
    generator = seeded(seed)
    student = VAEReconstructor(copy.deepcopy(reconstructor.vae), sample_scale=reconstructor.sample_scale,
                               latent_noise=reconstructor.latent_noise, resolution=reconstructor.resolution)
    student.vae.requires_grad_(True)  # the constructor freezes the model it is given
    encoder.model.requires_grad_(False)
    images, _ = data.tensors()

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        seeds = torch.randint(0, 2**62, (len(x),), generator=generator).tolist()
        return student.reconstruct(x, 1, seeds)[:, 0]

    def step(index: torch.Tensor) -> torch.Tensor:
        x = _augment(images[index], generator)
        with torch.no_grad():
            anchor = encoder.embed_images(x)
        adversarial = furthest(lambda z: _embedding_distance(encoder, reconstruct, z, anchor), x, eps=eps, steps=pgd_steps,
                               generator=generator)
        clean = reconstruct(x)
        loss = _embedding_distance(encoder, reconstruct, adversarial, anchor).mean()
        loss = loss + clean_weight * (encoder.embed_images(clean) - anchor).pow(2).sum(-1).mean()
        return loss + pixel_weight * F.mse_loss(clean, x)

    fit("aligned-vae", list(student.vae.parameters()), step, images=len(data), batch_size=batch_size, epochs=epochs, lr=lr,
        generator=generator)
    student.vae.requires_grad_(False)
    return student


@torch.no_grad()
def aligned_metrics(reconstructor: VAEReconstructor, aligned: VAEReconstructor, encoder: CLIPEncoder, test: LabelledImages, *,
                    eps: float, count: int = 500, seed: int = 0) -> dict[str, float]:
    """Each reconstructor on `count` clean test images: PSNR, the median embedding drift 1 - cos(E(x),
    E(R(x))), and how far a 20-step PGD through it inside eps moves the reconstruction's embedding
    from the clean image's (median 1 - cos): what the alignment is for."""
    x, _ = test.tensors(slice(0, count))
    anchor = encoder.embed_images(x)
    generator = torch.Generator().manual_seed(seed)

    def measured(model: VAEReconstructor) -> dict[str, float]:
        seeds = list(range(len(x)))  # the draws fixed, so that PGD sees one function

        def reconstruct(images: torch.Tensor) -> torch.Tensor:
            return model.reconstruct(images, 1, seeds)[:, 0]

        recon = reconstruct(x)
        psnr = float((10 * torch.log10(1.0 / (recon - x).pow(2).flatten(1).mean(1).clamp_min(1e-10))).mean())
        adversarial = furthest(lambda z: _embedding_distance(encoder, reconstruct, z, anchor), x, eps=eps, steps=20, generator=generator)
        moved = encoder.embed_images(reconstruct(adversarial))
        return {"psnr": round(psnr, 2), "drift_clean_median": round(float((1 - (encoder.embed_images(recon) * anchor).sum(-1)).median()), 4),
                "pgd20_moves_reconstruction": round(float((1 - (moved * anchor).sum(-1)).median()), 4)}

    return {"before": measured(reconstructor), "after": measured(aligned)}
