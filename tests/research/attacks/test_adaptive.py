from dataclasses import replace

import torch

from pipeline.defense import LabelBank
from pipeline.models.reconstructors import VAEReconstructor
from pipeline.research.attacks.adaptive import DetectAdaptiveConfig, detect_adaptive_attack, detect_adaptive_objective
from tests.tiny_models import tiny_clip_encoder, tiny_vae


def test_the_attack_stays_in_budget_and_keeps_the_best_judged_iterate(bpe_path):
    encoder, vae = tiny_clip_encoder(bpe_path), VAEReconstructor(tiny_vae())
    text = LabelBank(["cat", "dog", "hello"]).embeddings(encoder)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1, 2, 0])
    config = DetectAdaptiveConfig(eps=8 / 255, step_size=2 / 255, steps=6, eot=2, restarts=2, check_every=3)
    objective = detect_adaptive_objective(vae.reconstruct, encoder.embed_images, text, targets, config)
    with torch.no_grad():
        before = objective(images, 0)
    judged = []

    def judge(x):  # prefers the second check of the first start for image 0, the last check for the others
        judged.append(x.clone())
        score = torch.full((3,), float(len(judged)))
        score[0] = 10.0 if len(judged) == 2 else 0.0
        return score

    adversarial = detect_adaptive_attack(images, objective, judge, config)
    assert len(judged) == 4  # every 3 steps, 2 starts
    assert (adversarial - images).abs().max() <= config.eps + 1e-6 and adversarial.min() >= 0 and adversarial.max() <= 1
    assert torch.equal(adversarial[0], judged[1][0]) and torch.equal(adversarial[1:], judged[3][1:])
    with torch.no_grad():
        assert objective(judged[1], 0).mean() < before.mean()  # descending the attacker's loss


def test_the_witness_terms_charge_only_a_gap_and_a_margin_beyond_their_limits(bpe_path):
    encoder, vae = tiny_clip_encoder(bpe_path), VAEReconstructor(tiny_vae())
    text = LabelBank(["cat", "dog", "hello"]).embeddings(encoder)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1, 2, 0])
    config = DetectAdaptiveConfig(eot=2, witness_limit=0.0, witness_margin_limit=2.0, witness_weight=5.0)
    plain = detect_adaptive_objective(vae.reconstruct, encoder.embed_images, text, targets, config)
    shifted = lambda x: torch.nn.functional.normalize(encoder.embed_images(x) + 0.3, dim=-1)  # noqa: E731
    with torch.no_grad():
        gap = 1 - (encoder.embed_images(images) * shifted(images)).sum(-1)
        same = detect_adaptive_objective(vae.reconstruct, encoder.embed_images, text, targets, config, witness=encoder.embed_images)
        other = detect_adaptive_objective(vae.reconstruct, encoder.embed_images, text, targets, config, witness=shifted)
        torch.testing.assert_close(same(images, 0), plain(images, 0), atol=1e-5, rtol=0)
        torch.testing.assert_close(other(images, 0), plain(images, 0) + 5.0 * gap, atol=1e-5, rtol=0)
        # The margin: how much better the witness likes its own best label than the target.
        sims = encoder.embed_images(images) @ text.T
        margin = sims.max(-1).values - sims.gather(1, targets[:, None]).squeeze(1)
        assert (margin > 0).any()
        margin_only = replace(config, witness_limit=2.0, witness_margin_limit=0.0)
        plain = detect_adaptive_objective(vae.reconstruct, encoder.embed_images, text, targets, margin_only)
        same = detect_adaptive_objective(vae.reconstruct, encoder.embed_images, text, targets, margin_only, witness=encoder.embed_images)
        torch.testing.assert_close(same(images, 0), plain(images, 0) + 5.0 * margin, atol=1e-5, rtol=0)


def test_a_known_seed_gives_the_attacker_the_same_draws_every_step_and_fresh_ones_otherwise(bpe_path):
    encoder, vae = tiny_clip_encoder(bpe_path), VAEReconstructor(tiny_vae())
    text = LabelBank(["cat", "dog", "hello"]).embeddings(encoder)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1, 2])
    with torch.no_grad():
        fresh = detect_adaptive_objective(vae.reconstruct, encoder.embed_images, text, targets, DetectAdaptiveConfig(eot=2))
        known = detect_adaptive_objective(vae.reconstruct, encoder.embed_images, text, targets, DetectAdaptiveConfig(eot=2, known_seed=7))
        assert not torch.equal(fresh(images, 0), fresh(images, 1))
        assert torch.equal(known(images, 0), known(images, 1))
        # The draws the defense votes on: image i from seed 7 + i, draws 0 and 1.
        recon = vae.reconstruct(images, 2, [7, 8])
        spelled = detect_adaptive_objective(lambda x, k, seeds: recon, encoder.embed_images, text, targets, DetectAdaptiveConfig(eot=2))
        torch.testing.assert_close(known(images, 3), spelled(images, 3))


def test_the_starts_after_the_first_head_for_the_exemplars_as_far_as_the_budget_allows(bpe_path):
    encoder, vae = tiny_clip_encoder(bpe_path), VAEReconstructor(tiny_vae())
    text = LabelBank(["cat", "dog", "hello"]).embeddings(encoder)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    exemplars = torch.rand(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    config = DetectAdaptiveConfig(eps=8 / 255, step_size=0.0, steps=1, eot=1, restarts=4, check_every=1)
    objective = detect_adaptive_objective(vae.reconstruct, encoder.embed_images, text, torch.tensor([1, 2]), config)
    starts = []
    detect_adaptive_attack(images, objective, lambda x: starts.append(x.clone()) or torch.zeros(2), config, exemplars)
    assert torch.equal(starts[0], images)  # step size 0: each judged iterate is its start
    for k in (0, 1):
        assert torch.allclose(starts[1 + k], images + (exemplars[:, k] - images).clamp(-config.eps, config.eps))
    assert not torch.allclose(starts[3], starts[1]) and (starts[3] - images).abs().max() <= config.eps + 1e-6
