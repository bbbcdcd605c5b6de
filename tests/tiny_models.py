"""Tiny, seeded instances of the real model classes (diffusers, transformers and the project's own),
for tests that need a model but not a trained one."""

from __future__ import annotations

import torch


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=32,
    )


def tiny_ae():
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )


def tiny_unet(channels: int = 3, sample_size: int = 32):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        layers_per_block=1,
    )


def tiny_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=100)


def tiny_clip_encoder(bpe_path: str):
    from transformers import CLIPConfig, CLIPModel

    from pipeline.models.encoders import CLIPEncoder, ClipBpeTokenizer

    bpe = ClipBpeTokenizer.from_file(bpe_path)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=bpe.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=16, bos_token_id=bpe.sot, eos_token_id=bpe.eot,
            pad_token_id=bpe.eot,
        ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    return CLIPEncoder(CLIPModel(config), bpe._tokenizer)


def tiny_imagebind_config():
    from pipeline.models.encoders import ImageBindConfig

    return ImageBindConfig(
        image_size=28, patch_size=14, vision_width=32, vision_layers=2, vision_heads=2,
        text_width=32, text_layers=2, text_heads=2, context_length=16, vocab_size=600, embed_dim=16,
    )


def tiny_imagebind_encoder(bpe_path: str):
    from pipeline.models.encoders import ClipBpeTokenizer, ImageBindEncoder, ImageBindVisionText

    torch.manual_seed(0)
    model = ImageBindVisionText(tiny_imagebind_config())
    return ImageBindEncoder(model, ClipBpeTokenizer.from_file(bpe_path, context_length=16))
