"""The small demo models: architectures (standard diffusers/transformers classes, small configs) and
their training loops on Fashion-MNIST at 32 x 32 RGB. Pure torch, CPU-friendly, seeded."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ...models.encoders import CLIPEncoder, ClipBpeTokenizer
from ..data.fashion_mnist import CLASSES, LabelledImages

log = logging.getLogger(__name__)

TRAIN_TEMPLATES = (
    "a photo of a {}.", "a picture of the {}.", "a {}.", "an image of a {}.", "a photo of the {}.",
    "a grayscale photo of a {}.", "a product photo of a {}.", "a small picture of a {}.", "this is a {}.",
    "a low resolution photo of the {}.",
)
EVAL_TEMPLATE = "a photo of a {}."


# --- tokenizer -------------------------------------------------------------------------------------
def caption_merges() -> list[tuple[str, str]]:
    """BPE merges that spell every word of the demo captions as one token (left to right), so the
    tokenizer is a real CLIP BPE whose vocabulary covers the captions; other words fall back to pieces."""
    words = sorted({w for t in TRAIN_TEMPLATES for w in t.replace("{}", "").replace(".", " .").split()} | {w for c in CLASSES for w in c.split()})
    merges, seen = [], set()
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        current = symbols[0]
        for symbol in symbols[1:]:
            pair = (current, symbol)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            current = current + symbol
    return merges


def demo_tokenizer() -> ClipBpeTokenizer:
    return ClipBpeTokenizer(caption_merges(), context_length=16)


# --- architectures --------------------------------------------------------------------------------
def build_clip(tokenizer: ClipBpeTokenizer):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(
            vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=16, bos_token_id=tokenizer.sot,
            eos_token_id=tokenizer.eot, pad_token_id=tokenizer.eot,
        ),
        vision_config=dict(hidden_size=96, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4, image_size=32, patch_size=4),
        projection_dim=64,
    )
    return CLIPModel(config)


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=32,
    )


def build_ae():
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(
        encoder_block_out_channels=(32, 32, 32), decoder_block_out_channels=(32, 32, 32),
        num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 1), latent_channels=4,
    )


def build_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=32, block_out_channels=(16, 32, 32), down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3, layers_per_block=1, norm_num_groups=8,
    )


# --- training loops -------------------------------------------------------------------------------
def endless_batches(count: int, batch_size: int, generator: torch.Generator):
    """Index batches for as many steps as a training loop takes: each epoch a fresh permutation
    drawn from `generator` when its first batch is needed; a last partial batch is skipped."""
    if count < batch_size:
        raise ValueError(f"{count} training images make no batch of {batch_size}")
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def seeded(seed: int) -> torch.Generator:
    """Seed torch's global generator (model initialisation) and return one for the data order and augmentation."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def fit(name: str, parameters, batch_loss: Callable[[torch.Tensor], torch.Tensor], *, images: int, batch_size: int,
        epochs: int, lr: float, generator: torch.Generator) -> float:
    """AdamW on `parameters` for `epochs` passes over `images` training images: each step takes the
    loss of one batch of indices (`endless_batches`). Returns the smoothed final loss."""
    batches = endless_batches(images, batch_size, generator)
    steps_per_epoch = images // batch_size
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-4)
    total = epochs * steps_per_epoch
    warmup = max(1, total // 20)
    # Linear warm-up, then cosine decay to zero.
    schedule = lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, i / total)))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start, running = time.time(), 0.0
    for i in range(total):
        loss = batch_loss(next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running = 0.98 * running + 0.02 * loss.item() if i else loss.item()
        if (i + 1) % steps_per_epoch == 0:
            log.info("%s: epoch %d/%d loss %.4f (%.0f s)", name, (i + 1) // steps_per_epoch, epochs, running, time.time() - start)
    return running


def train_clip(data: LabelledImages, tokenizer: ClipBpeTokenizer, *, epochs: int, batch_size: int = 128, seed: int = 0):
    generator = seeded(seed)
    model = build_clip(tokenizer).train()
    images, labels = data.tensors()
    prompts = [[t.format(c) for t in TRAIN_TEMPLATES] for c in CLASSES]
    ids = torch.stack([tokenizer(p) for p in prompts])  # classes x templates x context

    def step(index: torch.Tensor) -> torch.Tensor:
        x = _augment(images[index], generator)
        y = labels[index]
        template = torch.randint(len(TRAIN_TEMPLATES), (batch_size,), generator=generator)
        text_ids = ids[y, template]
        image_emb = F.normalize(model.get_image_features(pixel_values=_normalise(x)).pooler_output, dim=-1)
        text_emb = F.normalize(model.get_text_features(input_ids=text_ids, attention_mask=(text_ids > 0) | (torch.arange(text_ids.shape[1]) == 0)).pooler_output, dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image_emb @ text_emb.T
        # Several captions in a batch share a class: every caption of the image's class is a positive.
        same = (y[:, None] == y[None, :]).float()
        targets = same / same.sum(1, keepdim=True)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))

    fit("clip", model.parameters(), step, images=len(data), batch_size=batch_size, epochs=epochs, lr=2e-3, generator=generator)
    return model.eval()


def _normalise(x: torch.Tensor) -> torch.Tensor:
    from ...models.encoders.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _augment(x: torch.Tensor, generator: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random horizontal flips and random shifts of up to `shift` pixels, drawn per image (the
    vacated border is background, i.e. zeros, as in the padded Fashion-MNIST images)."""
    count, channels, height, width = x.shape
    flip = torch.rand(count, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x, (shift, shift, shift, shift))
    dy, dx = torch.randint(0, 2 * shift + 1, (2, count), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, None, :]
    return padded[torch.arange(count)[:, None, None, None], torch.arange(channels)[None, :, None, None], rows, cols]


def train_vae(data: LabelledImages, *, epochs: int, batch_size: int = 128, kl_weight: float = 1e-3, seed: int = 0):
    generator = seeded(seed)
    model = build_vae().train()
    images, _ = data.tensors()

    def step(index: torch.Tensor) -> torch.Tensor:
        x = images[index] * 2 - 1
        posterior = model.encode(x).latent_dist
        recon = model.decode(posterior.sample(generator=None)).sample
        return F.mse_loss(recon, x) + kl_weight * posterior.kl().mean() / x[0].numel()

    fit("vae", model.parameters(), step, images=len(data), batch_size=batch_size, epochs=epochs, lr=2e-3, generator=generator)
    return model.eval()


def train_ae(data: LabelledImages, *, epochs: int, batch_size: int = 128, latent_noise: float = 0.1, seed: int = 0):
    generator = seeded(seed)
    model = build_ae().train()
    images, _ = data.tensors()

    def step(index: torch.Tensor) -> torch.Tensor:
        x = images[index] * 2 - 1
        z = model.encode(x).latents
        z = z + latent_noise * torch.randn_like(z)  # a decoder that tolerates latent noise
        return F.mse_loss(model.decode(z).sample, x)

    fit("ae", model.parameters(), step, images=len(data), batch_size=batch_size, epochs=epochs, lr=2e-3, generator=generator)
    return model.eval()


def train_dm(data: LabelledImages, *, epochs: int, batch_size: int = 128, max_timestep: int = 400, seed: int = 0):
    """An epsilon-prediction DDPM on pixels, trained on timesteps up to `max_timestep`: purification
    only ever starts from t* well below that, so model capacity is spent where it is used."""
    from diffusers import DDPMScheduler

    generator = seeded(seed)
    model = build_unet().train()
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    images, _ = data.tensors()

    def step(index: torch.Tensor) -> torch.Tensor:
        x = images[index] * 2 - 1
        t = torch.randint(0, max_timestep, (x.shape[0],), generator=generator)
        noise = torch.randn(x.shape, generator=generator)
        return F.mse_loss(model(scheduler.add_noise(x, noise, t), t).sample, noise)

    fit("dm", model.parameters(), step, images=len(data), batch_size=batch_size, epochs=epochs, lr=2e-3, generator=generator)
    return model.eval(), scheduler


# --- metrics --------------------------------------------------------------------------------------
@torch.no_grad()
def zero_shot_accuracy(encoder: CLIPEncoder, data: LabelledImages, template: str = EVAL_TEMPLATE, batch_size: int = 500) -> float:
    text = encoder.embed_texts([template.format(c) for c in CLASSES])
    correct = 0
    for start in range(0, len(data), batch_size):
        x, y = data.tensors(slice(start, start + batch_size))
        correct += int(((encoder.embed_images(x) @ text.T).argmax(-1).cpu() == y).sum())
    return correct / len(data)


@torch.no_grad()
def reconstruction_psnr(reconstruct: Callable[[torch.Tensor], torch.Tensor], data: LabelledImages, count: int = 1000) -> float:
    x, _ = data.tensors(slice(0, count))
    mse = F.mse_loss(reconstruct(x), x).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))
