"""Training an encoder-aligned VAE: tiny models, a few steps, the properties that matter."""

import numpy as np
import torch

from pipeline.models.reconstructors.vae import VAEReconstructor
from pipeline.models.registry import load_reconstructor
from pipeline.research.aligned import _embedding_distance, aligned_metrics, train_aligned_vae
from pipeline.research.data.fashion_mnist import LabelledImages
from pipeline.research.witness import furthest
from tests.tiny_models import tiny_clip_encoder, tiny_vae


def worst_distance(encoder, reconstructor, x, eps=16 / 255, steps=5):
    """How far PGD inside eps pushes clip's embedding of R(x + d) from its embedding of x (the draws fixed)."""
    anchor = encoder.embed_images(x).detach()
    seeds = list(range(len(x)))

    def distance(images):
        return _embedding_distance(encoder, lambda z: reconstructor.reconstruct(z, 1, seeds)[:, 0], images, anchor)

    adversarial = furthest(distance, x, eps=eps, steps=steps, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float(distance(adversarial).mean())


def test_the_aligned_vae_keeps_perturbed_reconstructions_at_the_clean_embedding_and_leaves_its_teachers_alone(bpe_path, tmp_path):
    encoder, vae = tiny_clip_encoder(bpe_path), VAEReconstructor(tiny_vae(), sample_scale=1.0, resolution=32)
    encoder_before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    vae_before = {k: v.clone() for k, v in vae.vae.state_dict().items()}
    rng = np.random.default_rng(0)
    data = LabelledImages(rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64))
    x, _ = data.tensors()

    aligned = train_aligned_vae(vae, encoder, data, epochs=6, pgd_steps=2, batch_size=32, lr=2e-3, pixel_weight=1.0, seed=0)
    assert all(torch.equal(v, encoder_before[k]) for k, v in encoder.model.state_dict().items())
    assert all(torch.equal(v, vae_before[k]) for k, v in vae.vae.state_dict().items())
    assert worst_distance(encoder, aligned, x) < 0.5 * worst_distance(encoder, vae, x)
    assert not any(p.requires_grad for p in aligned.vae.parameters())
    assert (aligned.sample_scale, aligned.resolution) == (1.0, 32)  # the purifier's options, kept
    # It saves and loads as any VAE reconstructor (safetensors), and reconstructs the same.
    aligned.save_pretrained(str(tmp_path / "aligned"))
    (tmp_path / "aligned" / "disillusion.json").write_text('{"resolution": 32}')
    loaded = load_reconstructor(f"vae:{tmp_path / 'aligned'}", sample_scale=1.0)
    torch.testing.assert_close(loaded.reconstruct(x[:4], 2, [1, 2, 3, 4]), aligned.reconstruct(x[:4], 2, [1, 2, 3, 4]))
    metrics = aligned_metrics(vae, aligned, encoder, data, eps=16 / 255, count=16)
    assert metrics["after"]["pgd20_moves_reconstruction"] < metrics["before"]["pgd20_moves_reconstruction"]


def test_aligned_training_is_deterministic(bpe_path):
    encoder, vae = tiny_clip_encoder(bpe_path), VAEReconstructor(tiny_vae(), sample_scale=1.0, resolution=32)
    rng = np.random.default_rng(1)
    data = LabelledImages(rng.integers(0, 256, (32, 28, 28), dtype=np.uint8), rng.integers(0, 10, 32))
    first, second = (train_aligned_vae(vae, encoder, data, epochs=1, pgd_steps=1, batch_size=16, seed=3).vae.state_dict() for _ in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)
