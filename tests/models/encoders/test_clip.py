import pytest
import torch

from pipeline.models import load_encoder
from tests.tiny_models import tiny_clip_encoder


def test_embeddings_are_normalised_with_the_projection_dim(bpe_path, images):
    encoder = tiny_clip_encoder(bpe_path)
    image_emb = encoder.embed_images(images)
    text_emb = encoder.embed_texts(["a photo of a cat.", "a photo of a dog.", "hello"])
    assert image_emb.shape == (3, encoder.dim) and text_emb.shape == (3, encoder.dim)
    torch.testing.assert_close(image_emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_emb.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(text_emb[0], text_emb[1])


def test_any_input_size_is_resized_and_cropped(bpe_path):
    encoder = tiny_clip_encoder(bpe_path)
    assert encoder.preprocess(torch.rand(2, 3, 50, 80)).shape == (2, 3, 32, 32)
    assert encoder.embed_images(torch.rand(1, 1, 20, 20)).shape == (1, encoder.dim)


def test_image_embedding_is_differentiable(bpe_path, images):
    encoder = tiny_clip_encoder(bpe_path)
    x = images.clone().requires_grad_(True)
    target = encoder.embed_texts(["a photo of a cat."])
    (1 - encoder.embed_images(x) @ target.T).sum().backward()
    assert x.grad.abs().sum() > 0


def test_save_and_load_round_trip(bpe_path, images, tmp_path):
    encoder = tiny_clip_encoder(bpe_path)
    encoder.save_pretrained(str(tmp_path))
    loaded = load_encoder(f"clip:{tmp_path}")
    assert loaded.fingerprint == encoder.fingerprint
    assert loaded.image_size == 32
    torch.testing.assert_close(loaded.embed_images(images), encoder.embed_images(images))
    prompts = ["a photo of a cat.", "dog"]
    torch.testing.assert_close(loaded.embed_texts(prompts), encoder.embed_texts(prompts))


def test_fingerprint_changes_with_the_weights(bpe_path):
    a = tiny_clip_encoder(bpe_path)
    b = tiny_clip_encoder(bpe_path)
    assert a.fingerprint == b.fingerprint
    with torch.no_grad():
        b.model.visual_projection.weight.add_(0.01)
    b._fingerprint = None
    assert a.fingerprint != b.fingerprint


@pytest.mark.parametrize("spec", ["clip:openai/clip-vit-large-patch14"])
def test_missing_hub_weights_give_one_clear_error(spec, tmp_path):
    from pipeline.models import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError) as info:
        load_encoder(spec, hf_cache_dir=str(tmp_path), allow_download=False)
    message = str(info.value)
    assert str(tmp_path) in message and "DISILLUSION_ALLOW_DOWNLOAD" in message
