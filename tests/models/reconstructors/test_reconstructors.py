"""Behaviour every reconstructor kind shares: shapes, range, determinism, variation, persistence."""

import pytest
import torch

from pipeline.models import load_reconstructor
from pipeline.models.reconstructors import AEReconstructor, DiffusionReconstructor, VAEReconstructor
from tests.tiny_models import tiny_ae, tiny_scheduler, tiny_unet, tiny_vae


def make(kind: str):
    if kind == "vae":
        return VAEReconstructor(tiny_vae())
    if kind == "ae":
        return AEReconstructor(tiny_ae(), noise_scale=0.5)
    if kind == "dm":
        return DiffusionReconstructor(tiny_unet(), tiny_scheduler(), strength=0.2, denoise_steps=4)
    if kind == "ldm":
        return DiffusionReconstructor(tiny_unet(channels=4, sample_size=16), tiny_scheduler(), vae=tiny_vae(), strength=0.2, denoise_steps=4)
    raise AssertionError(kind)


KINDS = ["vae", "ae", "dm", "ldm"]


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_dtype_and_range(kind, images):
    out = make(kind).reconstruct(images, 3, seeds=[1, 2, 3])
    assert out.shape == (3, 3, 3, 30, 36)  # B x n x 3 x H x W at the input size
    assert out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_draws_are_reproducible_and_vary(kind, images):
    recon = make(kind)
    a = recon.reconstruct(images, 3, seeds=[7, 8, 9])
    b = recon.reconstruct(images, 3, seeds=[7, 8, 9])
    assert torch.equal(a, b)
    assert (a[:, 0] - a[:, 1]).abs().mean() > 1e-4  # sampling actually varies between draws
    c = recon.reconstruct(images, 3, seeds=[70, 80, 90])
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kind", KINDS)
def test_rounds_and_batch_composition_do_not_change_draws(kind, images):
    recon = make(kind)
    encoded = recon.encode(images)
    full = recon.decode_samples(encoded, [1, 2, 3], range(4))
    rounds = torch.cat([recon.decode_samples(encoded, [1, 2, 3], range(0, 3)), recon.decode_samples(encoded, [1, 2, 3], range(3, 4))], dim=1)
    torch.testing.assert_close(full, rounds, atol=1e-5, rtol=0)
    alone = recon.decode_samples(encoded.select([2]), [3], range(4))
    torch.testing.assert_close(full[2:3], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_decode_batch_size_changes_neither_results_nor_an_attacks_gradient(kind, images):
    """How many reconstructions go through the model per call is execution only: attacks on a GPU
    decode a whole step at once, everything else in chunks."""
    recon = make(kind)

    def run(decode_batch_size):
        recon.decode_batch_size = decode_batch_size
        x = images.clone().requires_grad_(True)
        out = recon.reconstruct(x, 5, seeds=[4, 5, 6])
        (grad,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[-1])).sum(), x)
        return out.detach(), grad

    (whole, whole_grad), (chunked, chunked_grad) = run(64), run(2)
    torch.testing.assert_close(whole, chunked, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole_grad, chunked_grad, atol=1e-4, rtol=1e-4)
    assert whole_grad.abs().sum() > 0


def test_vae_sample_scale_zero_is_the_posterior_mode(images):
    recon = VAEReconstructor(tiny_vae(), sample_scale=0.0)
    out = recon.reconstruct(images, 3)
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-5, rtol=0)
    noisy = VAEReconstructor(tiny_vae(), sample_scale=0.0, latent_noise=0.5).reconstruct(images, 3)
    assert (noisy[:, 0] - noisy[:, 1]).abs().mean() > 1e-4


def test_fixed_resolution_resizes_and_returns_input_size(images):
    recon = VAEReconstructor(tiny_vae(), resolution=16)
    assert recon.encode(images).state["mean"].shape[-2:] == (8, 8)
    assert recon.reconstruct(images, 2).shape[-2:] == (30, 36)


def test_grayscale_and_single_image_inputs():
    recon = VAEReconstructor(tiny_vae())
    gray = torch.rand(2, 1, 16, 16)
    assert recon.reconstruct(gray, 2).shape == (2, 2, 3, 16, 16)
    assert recon.reconstruct(torch.rand(3, 16, 16), 1).shape == (1, 1, 3, 16, 16)


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_gradients_reach_the_pixels(kind, images):
    x = images.clone().requires_grad_(True)
    make(kind).reconstruct(x, 2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip(kind, images, tmp_path):
    recon = make(kind)
    recon.save_pretrained(str(tmp_path))
    spec_kind = "dm" if kind == "ldm" else kind
    options = {"vae": {}, "ae": {"noise_scale": 0.5}, "dm": {"strength": 0.2, "denoise_steps": 4}, "ldm": {"strength": 0.2, "denoise_steps": 4}}[kind]
    loaded = load_reconstructor(f"{spec_kind}:{tmp_path}", **options)
    assert type(loaded) is type(recon)
    assert loaded.fingerprint == recon.fingerprint
    torch.testing.assert_close(loaded.reconstruct(images, 2), recon.reconstruct(images, 2), atol=1e-6, rtol=0)
    assert list((tmp_path).rglob("*.safetensors")), "weights must be saved as safetensors"


def test_diffusion_timesteps_stay_below_t_star():
    recon = DiffusionReconstructor(tiny_unet(), tiny_scheduler(), strength=0.3, denoise_steps=5)
    assert max(recon.timesteps) <= 30 and recon.timesteps[-1] == 0
    assert recon.timesteps == sorted(recon.timesteps, reverse=True)
    with pytest.raises(ValueError):
        DiffusionReconstructor(tiny_unet(), tiny_scheduler(), strength=1.5)
