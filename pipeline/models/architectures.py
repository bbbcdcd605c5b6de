"""The paper's full-size architectures, built from their configurations with random weights.

For measuring speed and memory where the real weights are absent (they cannot be downloaded here,
and ImageBind's licence rules out shipping them): a matrix product costs the same whatever the
values in it. Never use these models for verdicts.
"""

from __future__ import annotations

import torch

# stabilityai/sd-vae-ft-mse (the Stable Diffusion 1.x VAE): 83.7 M parameters.
SD_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "act_fn": "silu", "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": (128, 256, 512, 512), "sample_size": 256,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}
# openai/clip-vit-large-patch14.
CLIP_L14_CONFIG = {
    "text_config": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu"},
    "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                      "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu"},
    "projection_dim": 768,
}
FULL_SIZE_ENCODERS = ("imagebind", "clip-l14")


def stand_in_tokenizer():
    """A byte-level CLIP BPE tokenizer with a handful of merges. Token ids differ from CLIP's, which
    only matters for the meaning of text embeddings, not for their cost (prompts are embedded once)."""
    from .encoders import ClipBpeTokenizer

    return ClipBpeTokenizer([("h", "e"), ("p", "h"), ("o", "t"), ("ot", "o</w>")])


def sd_vae_reconstructor(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, **options):
    from diffusers import AutoencoderKL

    from .reconstructors import VAEReconstructor

    with torch.device(device):  # initialise on the device: a GPU fills 84 M random weights in milliseconds
        vae = AutoencoderKL(**SD_VAE_CONFIG)
    return VAEReconstructor(vae if dtype == torch.float32 else vae.to(dtype), **options)


def full_size_encoder(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """`imagebind`: ImageBind-huge vision and text towers (1 B parameters); `clip-l14`: CLIP ViT-L/14."""
    tokenizer = stand_in_tokenizer()
    if name == "imagebind":
        from .encoders import ImageBindConfig, ImageBindEncoder, ImageBindVisionText

        with torch.device(device):
            model = ImageBindVisionText(ImageBindConfig())
        return ImageBindEncoder(model.to(dtype), tokenizer)
    if name == "clip-l14":
        from transformers import CLIPConfig, CLIPModel

        from .encoders import CLIPEncoder

        config = CLIPConfig(**CLIP_L14_CONFIG)
        config.text_config.bos_token_id, config.text_config.eos_token_id = tokenizer.sot, tokenizer.eot
        config.text_config.pad_token_id = tokenizer.eot
        with torch.device(device):
            model = CLIPModel(config)
        return CLIPEncoder(model.to(dtype), tokenizer._tokenizer)
    raise ValueError(f"unknown full-size encoder {name!r}; choose from {FULL_SIZE_ENCODERS}")
