"""Training a FARE witness: a tiny CLIP, a few steps, the properties that matter."""

import numpy as np
import torch

from pipeline.models.registry import load_encoder
from pipeline.research.data.fashion_mnist import LabelledImages
from pipeline.research.witness import train_witness, witness_gaps, worst_case
from tests.tiny_models import tiny_clip_encoder


def test_the_witness_learns_to_stay_at_the_clean_embedding_and_leaves_the_encoder_alone(bpe_path, tmp_path):
    encoder = tiny_clip_encoder(bpe_path)
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    rng = np.random.default_rng(0)
    data = LabelledImages(rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64))
    x, _ = data.tensors()
    eps = 16 / 255

    def worst_distance(model):  # how far PGD can push `model` from the encoder's clean embedding
        anchor = encoder.embed_images(x).detach()
        adversarial = worst_case(model, x, anchor, eps=eps, steps=5, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return float((model.embed_images(adversarial) - anchor).pow(2).sum(-1).mean())

    witness = train_witness(encoder, data, epochs=8, eps=eps, pgd_steps=2, batch_size=32, lr=2e-3, seed=0)
    assert all(torch.equal(v, before[k]) for k, v in encoder.model.state_dict().items())  # the encoder is a copy's teacher only
    assert worst_distance(witness) < 0.5 * worst_distance(encoder)
    assert not any(p.requires_grad for p in witness.model.parameters())
    # Only the image tower moved: the text tower is the encoder's, so the witness loads and embeds text like it.
    text = ["a photo of a cat.", "hello"]
    torch.testing.assert_close(witness.embed_texts(text), encoder.embed_texts(text))
    witness.save_pretrained(str(tmp_path / "witness"))
    loaded = load_encoder(f"clip:{tmp_path / 'witness'}")
    torch.testing.assert_close(witness_gaps(encoder, loaded, x), witness_gaps(encoder, witness, x), atol=1e-5, rtol=0)


def test_witness_training_is_deterministic(bpe_path):
    encoder = tiny_clip_encoder(bpe_path)
    rng = np.random.default_rng(1)
    data = LabelledImages(rng.integers(0, 256, (32, 28, 28), dtype=np.uint8), rng.integers(0, 10, 32))
    first, second = (train_witness(encoder, data, epochs=2, pgd_steps=2, batch_size=16, seed=3).model.state_dict() for _ in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_the_clean_fidelity_term_pulls_the_witness_to_the_encoder_on_clean_images(bpe_path):
    encoder = tiny_clip_encoder(bpe_path)
    rng = np.random.default_rng(2)
    data = LabelledImages(rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64))
    x, _ = data.tensors()
    recipe = dict(epochs=6, eps=32 / 255, pgd_steps=2, batch_size=32, lr=2e-3, seed=0)
    fare, anchored = (train_witness(encoder, data, clean_weight=weight, **recipe) for weight in (0.0, 10.0))
    assert float(witness_gaps(encoder, anchored, x).mean()) < float(witness_gaps(encoder, fare, x).mean())
    # A device given as a string runs the same arithmetic as the default on this machine.
    again = train_witness(encoder, data, clean_weight=10.0, device="cpu", **recipe)
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in anchored.model.state_dict().items())
