"""Training is seeded: the same command gives the same weights, which is what lets `train-demo`
reproduce the bundled models."""

import torch

from pipeline.data.fashion_mnist import load_sample
from pipeline.training.demo_models import caption_merges, demo_tokenizer, train_ae, train_clip


def small_data():
    sample = load_sample()
    return type(sample)(sample.images[:128], sample.labels[:128])


def test_training_is_deterministic():
    a, b = train_ae(small_data(), epochs=1, batch_size=32), train_ae(small_data(), epochs=1, batch_size=32)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_clip_training_runs_and_tokenizer_covers_the_captions():
    tokenizer = demo_tokenizer()
    ids = tokenizer(["a photo of a ankle boot."])[0]
    words = (ids > 0).sum() - 2
    assert words == 7  # 'a photo of a ankle boot .': one token per word
    assert len(caption_merges()) == len(set(caption_merges()))
    model = train_clip(small_data(), tokenizer, epochs=1, batch_size=32)
    assert model.config.vision_config.image_size == 32
