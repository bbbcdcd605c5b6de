import torch

from pipeline.models.reconstructors import VAEReconstructor
from pipeline.research.attacks import AttackConfig, bpda, eot_objective, illusion_attack, pick_targets
from pipeline.research.attacks.illusion import cosine_objective
from pipeline.research.baselines import gaussian_blur, jpeg
from tests.tiny_models import tiny_clip_encoder, tiny_vae

PROMPTS = ["a photo of a cat.", "a photo of a dog.", "a photo of a hello."]


def test_targets_are_seeded_and_never_the_true_label():
    labels = [0, 1, 2, 3] * 25
    targets = pick_targets(labels, 4, seed=3)
    assert torch.equal(targets, pick_targets(labels, 4, seed=3))
    assert (targets != torch.tensor(labels)).all()
    assert set(targets.tolist()) == {0, 1, 2, 3}


def test_attack_stays_in_the_ball_and_raises_target_similarity(bpe_path):
    encoder = tiny_clip_encoder(bpe_path)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    text = encoder.embed_texts(PROMPTS)
    targets = text[torch.tensor([1, 2, 0, 1])]
    config = AttackConfig(eps=8 / 255, step_size=2 / 255, steps=15)
    adversarial = illusion_attack(images, cosine_objective(encoder.embed_images, targets), config)
    assert (adversarial - images).abs().max() <= config.eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    with torch.no_grad():
        before = (encoder.embed_images(images) * targets).sum(-1)
        after = (encoder.embed_images(adversarial) * targets).sum(-1)
    assert (after > before).all()


def test_eot_objective_differentiates_through_the_reconstructor(bpe_path):
    encoder = tiny_clip_encoder(bpe_path)
    reconstructor = VAEReconstructor(tiny_vae(), latent_noise=0.5)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = encoder.embed_texts(PROMPTS[:2])
    objective = eot_objective(reconstructor.reconstruct, encoder.embed_images, targets, samples=3)
    x = images.clone().requires_grad_(True)
    objective(x, 0).sum().backward()
    assert x.grad.abs().sum() > 0
    with torch.no_grad():
        assert not torch.equal(objective(images, 0), objective(images, 1))  # fresh noise each step
    adversarial = illusion_attack(images, objective, AttackConfig(steps=3))
    assert (adversarial - images).abs().max() <= 16 / 255 + 1e-6


def test_bpda_passes_gradients_through_jpeg():
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    y = bpda(lambda t: jpeg(t, quality=50))(x)
    torch.testing.assert_close(y.detach(), jpeg(x.detach(), quality=50))
    (y * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))


def test_blur_smooths_and_keeps_constants():
    flat = torch.full((1, 3, 8, 8), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)
    noise = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert gaussian_blur(noise, 1.0).std() < noise.std()
