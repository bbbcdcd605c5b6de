"""The embedded default: bundled demo weights and sample load through the ordinary loaders and work."""

import pytest
import torch

from pipeline.presets import get_preset
from pipeline.research.data.fashion_mnist import CLASSES, load_sample
from pipeline.research.training.demo_models import zero_shot_accuracy


@pytest.fixture(scope="module")
def demo():
    return get_preset("demo")


def test_bundled_sample_is_balanced_and_labelled():
    sample = load_sample()
    assert sample.images.shape == (1000, 28, 28)
    assert sorted(set(sample.labels.tolist())) == list(range(10))
    assert all((sample.labels == c).sum() == 100 for c in range(10))


def test_demo_clip_zero_shot_accuracy(demo):
    encoder = demo.load_encoder()
    assert zero_shot_accuracy(encoder, load_sample()) >= 0.8


@pytest.mark.parametrize("kind", ["vae", "ae", "dm"])
def test_demo_reconstructors_load_and_preserve_content(demo, kind):
    reconstructor = demo.load_reconstructor(kind)
    images, _ = load_sample().tensors(slice(0, 16))
    recon = reconstructor.reconstruct(images, 2)[:, 0]
    assert recon.shape == images.shape
    assert torch.nn.functional.mse_loss(recon, images) < 0.02  # close to the input, not a blur of noise


def test_unknown_preset_and_kind(demo):
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")
    with pytest.raises(ValueError, match="no 'gan'"):
        demo.load_reconstructor("gan")
    assert demo.label_bank().labels == list(CLASSES)


@pytest.mark.parametrize("name", ["imagebind", "clip-l14"])
def test_real_presets_use_imagenet_labels_and_explain_missing_weights(name, tmp_path, monkeypatch):
    from pipeline.models import WeightsNotFoundError

    preset = get_preset(name)
    labels = preset.label_bank().labels
    assert len(labels) == len(set(labels)) == 1000
    assert (labels[0], labels[1], labels[999]) == ("tench", "goldfish", "toilet paper")
    assert preset.default_reconstructor == "vae" and preset.reconstructors["vae"] == "vae:stabilityai/sd-vae-ft-mse"
    monkeypatch.delenv("DISILLUSION_ALLOW_DOWNLOAD", raising=False)
    empty = {"cache_dir": str(tmp_path), "hf_cache_dir": str(tmp_path)}  # nothing is found, nothing fetched
    with pytest.raises(WeightsNotFoundError, match="Downloads are off"):
        preset.load_reconstructor(**empty)
    with pytest.raises(WeightsNotFoundError, match="CC BY-NC-SA|Downloads are off"):
        preset.load_encoder(**empty)
