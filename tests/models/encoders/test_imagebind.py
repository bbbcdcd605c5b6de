import pytest
import torch
from safetensors.torch import save_file

from pipeline.models import load_encoder
from pipeline.models.encoders import ImageBindVisionText, load_imagebind_state_dict
from pipeline.models.encoders.imagebind import Block, ImageBindCheckpointError, SelfAttention, local_state_to_official
from tests.tiny_models import tiny_imagebind_config, tiny_imagebind_encoder


def official_state_dict(config) -> dict:
    """A state dict under the official ImageBind key names, as imagebind_huge.pth stores them."""
    torch.manual_seed(1)
    return local_state_to_official(ImageBindVisionText(config))


def test_every_official_vision_and_text_key_is_mapped():
    config = tiny_imagebind_config()
    state = official_state_dict(config)
    prefixes = {k.split(".")[0] + "." + k.split(".")[1] for k in state}
    assert prefixes == {
        "modality_preprocessors.vision", "modality_preprocessors.text", "modality_trunks.vision",
        "modality_trunks.text", "modality_heads.vision", "modality_heads.text", "modality_postprocessors.text",
    }
    # Spot-check names and shapes against the published layout.
    assert state["modality_preprocessors.vision.rgbt_stem.proj.1.weight"].shape == (32, 3, 2, 14, 14)
    assert state["modality_preprocessors.vision.pos_embedding_helper.pos_embed"].shape == (1, 5, 32)
    assert state["modality_trunks.vision.blocks.1.attn.in_proj_weight"].shape == (96, 32)
    assert state["modality_heads.vision.2.weight"].shape == (16, 32)
    assert state["modality_heads.text.proj.1.weight"].shape == (16, 32)
    model = ImageBindVisionText(config)
    load_imagebind_state_dict(model, state)
    for key, value in model.state_dict().items():
        assert any(torch.equal(value, v) for v in state.values()), key


def test_other_modalities_are_ignored_but_unknown_and_missing_keys_are_refused():
    config = tiny_imagebind_config()
    state = official_state_dict(config)
    with_audio = {**state, "modality_trunks.audio.blocks.0.attn.bias_k": torch.zeros(1, 1, 8), "modality_heads.imu.3.weight": torch.zeros(2, 2)}
    load_imagebind_state_dict(ImageBindVisionText(config), with_audio)

    missing = dict(state)
    del missing["modality_trunks.text.blocks.0.mlp.fc1.bias"]
    with pytest.raises(ImageBindCheckpointError, match="1 missing"):
        load_imagebind_state_dict(ImageBindVisionText(config), missing)

    unexpected = {**state, "modality_trunks.vision.blocks.0.layer_scale_gamma1": torch.ones(1, 1, 32)}
    with pytest.raises(ImageBindCheckpointError, match="1 unexpected"):
        load_imagebind_state_dict(ImageBindVisionText(config), unexpected)

    extra_block = {**state, **{k.replace("blocks.1.", "blocks.2."): v for k, v in state.items() if "vision.blocks.1." in k}}
    with pytest.raises(ImageBindCheckpointError, match="unexpected"):
        load_imagebind_state_dict(ImageBindVisionText(config), extra_block)

    wrong_shape = {**state, "modality_heads.vision.2.weight": torch.zeros(8, 32)}
    with pytest.raises(ImageBindCheckpointError, match="shapes"):
        load_imagebind_state_dict(ImageBindVisionText(config), wrong_shape)


def test_attention_matches_torch_multihead_attention():
    """The checkpoint's blocks are torch.nn.MultiheadAttention; ours must compute the same function."""
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(32, 4, bias=True, batch_first=True).eval()
    ours = SelfAttention(32, 4)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 7, 32)
    mask = torch.full((7, 7), float("-inf")).triu_(1)
    expected = reference(x, x, x, need_weights=False, attn_mask=mask)[0]
    torch.testing.assert_close(ours(x, mask), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours(x, None), reference(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def test_block_is_pre_norm_residual():
    torch.manual_seed(0)
    block = Block(16, 2)
    x = torch.randn(1, 3, 16)
    h = x + block.attn(block.ln_1(x), None)
    torch.testing.assert_close(block(x), h + block.mlp(block.ln_2(h)))


def test_encoder_outputs_and_causal_text(bpe_path):
    encoder = tiny_imagebind_encoder(bpe_path)
    image_emb = encoder.embed_images(torch.rand(2, 3, 40, 60))
    text_emb = encoder.embed_texts(["a photo of a cat.", "a photo of a dog."])
    assert image_emb.shape == (2, 16) and text_emb.shape == (2, 16)
    torch.testing.assert_close(image_emb.norm(dim=-1), torch.ones(2))
    # Padding after <|endoftext|> cannot change the embedding: the mask is causal and pooling reads the end token.
    ids = encoder.tokenizer(["hello cat"])
    padded = ids.clone()
    padded[0, int(ids.argmax()) + 1 :] = 5
    torch.testing.assert_close(encoder.model.text(ids), encoder.model.text(padded))


def test_load_from_directory_pth_and_safetensors(bpe_path, tmp_path, images):
    encoder = tiny_imagebind_encoder(bpe_path)
    encoder.save_pretrained(str(tmp_path / "dir"))
    from_dir = load_encoder(f"imagebind:{tmp_path / 'dir'}")
    torch.testing.assert_close(from_dir.embed_images(images), encoder.embed_images(images))
    assert from_dir.fingerprint == encoder.fingerprint

    # An official-style .pth (a plain tensor dict) with the config and BPE file beside it.
    pth_dir = tmp_path / "pth"
    pth_dir.mkdir()
    torch.save(local_state_to_official(encoder.model), pth_dir / "imagebind_huge.pth")
    encoder.config.to_json(str(pth_dir / "config.json"))
    encoder.tokenizer.save(str(pth_dir / "bpe_simple_vocab_16e6.txt.gz"))
    from_pth = load_encoder(f"imagebind:{pth_dir}")
    torch.testing.assert_close(from_pth.embed_texts(["hello cat"]), encoder.embed_texts(["hello cat"]))


def test_pth_with_pickled_objects_is_refused(bpe_path, tmp_path):
    import collections

    encoder = tiny_imagebind_encoder(bpe_path)
    state = local_state_to_official(encoder.model)
    path = tmp_path / "imagebind_huge.pth"
    torch.save({"state": state, "evil": collections.Counter(a=1)}, path)  # not loadable with weights_only
    encoder.config.to_json(str(tmp_path / "config.json"))
    encoder.tokenizer.save(str(tmp_path / "bpe_simple_vocab_16e6.txt.gz"))
    with pytest.raises(Exception):
        load_encoder(f"imagebind:{tmp_path}")


def test_missing_checkpoint_and_bpe_errors(bpe_path, tmp_path):
    from pipeline.models import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="imagebind_huge.pth"):
        load_encoder("imagebind:huge", cache_dir=str(tmp_path), allow_download=False)
    config = tiny_imagebind_config()
    save_file({k: v.contiguous() for k, v in official_state_dict(config).items()}, str(tmp_path / "model.safetensors"))
    config.to_json(str(tmp_path / "config.json"))
    with pytest.raises(WeightsNotFoundError, match="bpe_simple_vocab_16e6.txt.gz"):
        load_encoder(f"imagebind:{tmp_path}")
    assert load_encoder(f"imagebind:{tmp_path}", bpe_path=bpe_path).dim == 16
