from pipeline.models.architectures import sd_vae_reconstructor, stand_in_tokenizer


def test_sd_vae_has_the_real_size_and_the_stand_in_tokenizer_tokenises():
    vae = sd_vae_reconstructor()
    assert round(sum(p.numel() for p in vae.vae.parameters()) / 1e6, 1) == 83.7  # stabilityai/sd-vae-ft-mse
    assert vae.multiple == 8
    ids = stand_in_tokenizer()(["a photo of a cat."])
    assert ids.shape == (1, 77) and ids[0, 0] != ids[0, 1]
