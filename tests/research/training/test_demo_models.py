"""Training is seeded: the same command gives the same weights, which is what lets `train-demo`
reproduce the bundled models."""

import torch

from pipeline.research.data.fashion_mnist import load_sample
from pipeline.research.training.demo_models import _augment, caption_merges, demo_tokenizer, train_ae, train_clip


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


def test_augmentation_shifts_each_image_by_its_own_offset_without_wrapping():
    # One bright pixel per image in the middle; after the shift it must sit within 2 px of where it was.
    images = torch.zeros(64, 3, 8, 8)
    images[:, :, 4, 4] = 1.0
    out = _augment(images, torch.Generator().manual_seed(0), shift=2)
    assert out.shape == images.shape and torch.equal(out[:, 0], out[:, 2])  # channels move together
    lit = [torch.nonzero(o[0]) for o in out]
    assert all(len(pixels) == 1 for pixels in lit)  # shifted, not lost or duplicated
    positions = {tuple(pixels[0].tolist()) for pixels in lit}
    assert all(2 <= r <= 6 and 1 <= c <= 6 for r, c in positions)  # flip moves column 4 to 3
    assert len(positions) > 5  # offsets differ between images of one batch
    edge = torch.zeros(1, 1, 4, 4)
    edge[..., 0, :] = 1.0  # a top row shifted up by 1 disappears; it never wraps to the bottom
    shifted = [_augment(edge, torch.Generator().manual_seed(s), shift=1) for s in range(20)]
    assert all(float(s[..., -1, :].sum()) == 0.0 for s in shifted)
