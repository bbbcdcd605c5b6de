"""The relaxed suite against the witness test, on the bundled demo encoder."""

import pytest
import torch

from pipeline.presets import get_preset
from pipeline.research.attacks import pick_targets
from pipeline.research.data.fashion_mnist import load_sample
from pipeline.research.witness_attack import RelaxedPass, SuiteConfig, _checkpoints, apgd, choose_loss, square, strongest


@pytest.fixture(scope="module")
def setting():
    demo = get_preset("demo")
    encoder = demo.load_encoder()
    images, labels = load_sample().tensors(slice(0, 10))
    return encoder, demo.label_bank().embeddings(encoder), images, pick_targets(labels.tolist(), 10, seed=0)


def test_apgd_checkpoints_follow_the_paper():
    assert sorted(_checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_against_no_witness_apgd_passes_the_illusion_and_a_zero_budget_passes_nothing(setting):
    encoder, text, images, targets = setting
    undefended = RelaxedPass(encoder, encoder, text, targets, max_witness_gap=0.05)  # a witness that moves with the encoder
    adversarial = apgd(undefended.loss(10.0, 0.5), images, eps=16 / 255, steps=60, restarts=2)
    assert (adversarial - images).abs().max() <= 16 / 255 + 1e-6 and 0 <= adversarial.min() and adversarial.max() <= 1
    assert undefended.passes(adversarial).float().mean() >= 0.9
    assert not undefended.passes(apgd(undefended.loss(10.0, 0.5), images, eps=0.0, steps=5)).any()


def test_square_lowers_the_loss_without_gradients_and_stays_in_budget(setting):
    encoder, text, images, targets = setting
    loss = RelaxedPass(encoder, encoder, text, targets, 0.05).loss(10.0, 0.5)
    adversarial = square(loss, images, eps=16 / 255, queries=100)
    assert (adversarial - images).abs().max() <= 16 / 255 + 1e-6
    with torch.no_grad():
        assert loss(adversarial).mean() < loss(images).mean()


def test_the_suite_chooses_its_loss_on_one_set_and_counts_an_image_passed_by_either_attack(setting):
    encoder, text, images, targets = setting
    condition = RelaxedPass(encoder, encoder, text, targets, 0.05)
    config = SuiteConfig(steps=30, restarts=1, weights=(1.0, 10.0), limits=(0.5,), queries=20)
    chosen = choose_loss(RelaxedPass(encoder, encoder, text, targets[:5], 0.05), images[:5], config)
    assert set(chosen["passed"]) == {"w=1 limit=0.5", "w=10 limit=0.5"} and chosen["weight"] in (1.0, 10.0)
    result = strongest(condition, images, config, chosen["weight"], chosen["limit"], batch_size=4)
    assert result["images"] == 10 and result["passed"] == int(result["mask"].sum())
    assert max(result["per_attack"].values()) <= result["passed"] <= sum(result["per_attack"].values())
