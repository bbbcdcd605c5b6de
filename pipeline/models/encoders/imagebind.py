"""ImageBind's vision and text towers, written for this project.

Architecture (from the ImageBind paper and its public checkpoint layout): OpenCLIP ViT-H/14 towers.
Vision: the image is repeated into a 2-frame clip, patchified by a bias-free Conv3d (2 x 14 x 14),
a class token and learned position embeddings are added, a LayerNorm precedes 32 pre-norm blocks, and
the class token goes through LayerNorm and a bias-free projection. Text: token and position
embeddings, 24 causal pre-norm blocks, the end-of-text token through LayerNorm and a projection.

The official `imagebind_huge.pth` holds all six modalities; `load_imagebind_state_dict` maps its
vision and text keys onto these modules, ignores the other modalities, and refuses anything missing
or unexpected.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fingerprint import fingerprint_modules
from ..imaging import as_rgb_batch, resize_shorter_and_center_crop
from .bpe import BPE_FILENAME, ClipBpeTokenizer
from .clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


@dataclass(frozen=True)
class ImageBindConfig:
    """Defaults are imagebind_huge."""

    image_size: int = 224
    patch_size: int = 14
    frames: int = 2
    vision_width: int = 1280
    vision_layers: int = 32
    vision_heads: int = 16
    text_width: int = 1024
    text_layers: int = 24
    text_heads: int = 16
    context_length: int = 77
    vocab_size: int = 49408
    embed_dim: int = 1024

    @classmethod
    def from_json(cls, path: str) -> "ImageBindConfig":
        with open(path) as handle:
            return cls(**json.load(handle))

    def to_json(self, path: str) -> None:
        with open(path, "w") as handle:
            json.dump(asdict(self), handle, indent=2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed input projection (the layout of nn.MultiheadAttention)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.heads, w // self.heads).unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class VisionTower(nn.Module):
    def __init__(self, cfg: ImageBindConfig):
        super().__init__()
        grid = cfg.image_size // cfg.patch_size
        self.frames = cfg.frames
        self.patch_embed = nn.Conv3d(
            3, cfg.vision_width, kernel_size=(cfg.frames, cfg.patch_size, cfg.patch_size),
            stride=(cfg.frames, cfg.patch_size, cfg.patch_size), bias=False,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.vision_width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, cfg.vision_width))
        self.ln_pre = nn.LayerNorm(cfg.vision_width, eps=1e-6)
        self.blocks = nn.ModuleList(Block(cfg.vision_width, cfg.vision_heads) for _ in range(cfg.vision_layers))
        self.ln_post = nn.LayerNorm(cfg.vision_width, eps=1e-6)
        self.proj = nn.Linear(cfg.vision_width, cfg.embed_dim, bias=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        clip = pixels.unsqueeze(2).expand(-1, -1, self.frames, -1, -1)  # an image is a clip of repeated frames
        tokens = self.patch_embed(clip).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        x = self.ln_pre(tokens)
        for block in self.blocks:
            x = block(x)
        return self.proj(self.ln_post(x[:, 0]))


class TextTower(nn.Module):
    def __init__(self, cfg: ImageBindConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.context_length, cfg.text_width))
        self.blocks = nn.ModuleList(Block(cfg.text_width, cfg.text_heads) for _ in range(cfg.text_layers))
        self.ln_final = nn.LayerNorm(cfg.text_width, eps=1e-6)
        self.proj = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)
        self.log_logit_scale = nn.Parameter(torch.tensor(2.6592))  # carried for completeness; embeddings are normalised
        causal = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("causal_mask", causal, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids) + self.pos_embed[:, : ids.shape[1]]
        mask = self.causal_mask[: ids.shape[1], : ids.shape[1]].to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        eot = ids.argmax(dim=-1)  # <|endoftext|> has the largest id
        return self.proj(self.ln_final(x[torch.arange(x.shape[0], device=x.device), eot]))


class ImageBindVisionText(nn.Module):
    def __init__(self, cfg: ImageBindConfig):
        super().__init__()
        self.config = cfg
        self.vision = VisionTower(cfg)
        self.text = TextTower(cfg)


# Official checkpoint key -> key of ImageBindVisionText. Block-internal names are mapped by _BLOCK_RULES.
_FIXED_KEYS = {
    "modality_preprocessors.vision.rgbt_stem.proj.1.weight": "vision.patch_embed.weight",
    "modality_preprocessors.vision.cls_token": "vision.cls_token",
    "modality_preprocessors.vision.pos_embedding_helper.pos_embed": "vision.pos_embed",
    "modality_trunks.vision.pre_transformer_layer.0.weight": "vision.ln_pre.weight",
    "modality_trunks.vision.pre_transformer_layer.0.bias": "vision.ln_pre.bias",
    "modality_heads.vision.0.weight": "vision.ln_post.weight",
    "modality_heads.vision.0.bias": "vision.ln_post.bias",
    "modality_heads.vision.2.weight": "vision.proj.weight",
    "modality_preprocessors.text.token_embedding.weight": "text.token_embedding.weight",
    "modality_preprocessors.text.pos_embed": "text.pos_embed",
    "modality_heads.text.proj.0.weight": "text.ln_final.weight",
    "modality_heads.text.proj.0.bias": "text.ln_final.bias",
    "modality_heads.text.proj.1.weight": "text.proj.weight",
    "modality_postprocessors.text.1.log_logit_scale": "text.log_logit_scale",
}
_BLOCK_KEY = re.compile(r"^modality_trunks\.(vision|text)\.blocks\.(\d+)\.(.+)$")
_BLOCK_RULES = {
    "attn.in_proj_weight": "attn.in_proj_weight",
    "attn.in_proj_bias": "attn.in_proj_bias",
    "attn.out_proj.weight": "attn.out_proj.weight",
    "attn.out_proj.bias": "attn.out_proj.bias",
    "norm_1.weight": "ln_1.weight",
    "norm_1.bias": "ln_1.bias",
    "norm_2.weight": "ln_2.weight",
    "norm_2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_IGNORED_KEYS = {"modality_preprocessors.text.mask"}  # the causal mask buffer; rebuilt here
_OTHER_MODALITIES = ("audio", "depth", "thermal", "imu")


class ImageBindCheckpointError(ValueError):
    pass


def official_key_to_local(key: str) -> str | None:
    """Map one official key to ours; None for keys of modalities this project does not use."""
    if key in _FIXED_KEYS:
        return _FIXED_KEYS[key]
    match = _BLOCK_KEY.match(key)
    if match and match.group(3) in _BLOCK_RULES:
        return f"{match.group(1)}.blocks.{match.group(2)}.{_BLOCK_RULES[match.group(3)]}"
    parts = key.split(".")
    if key in _IGNORED_KEYS or (len(parts) > 1 and parts[1] in _OTHER_MODALITIES):
        return None
    raise ImageBindCheckpointError(f"unexpected key in ImageBind checkpoint: {key!r}")


def load_imagebind_state_dict(model: ImageBindVisionText, state: dict[str, torch.Tensor]) -> None:
    """Load an official-layout state dict into `model`; raise on missing, unexpected or mis-shaped keys."""
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in state.items():
        try:
            local = official_key_to_local(key)
        except ImageBindCheckpointError:
            unexpected.append(key)
            continue
        if local is not None:
            mapped[local] = tensor
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected += sorted(set(mapped) - set(expected))
    if missing or unexpected:
        raise ImageBindCheckpointError(
            f"ImageBind checkpoint does not match the model: {len(missing)} missing key(s) {missing[:5]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:5]}"
        )
    wrong = [f"{k}: {tuple(v.shape)} != {tuple(expected[k].shape)}" for k, v in mapped.items() if v.shape != expected[k].shape]
    if wrong:
        raise ImageBindCheckpointError(f"ImageBind checkpoint shapes do not match the config: {wrong[:5]}")
    model.load_state_dict(mapped, strict=True)


def local_state_to_official(model: ImageBindVisionText) -> dict[str, torch.Tensor]:
    """The inverse mapping: our state dict under the official key names (for tests and conversion)."""
    inverse = {v: k for k, v in _FIXED_KEYS.items()}
    out = {}
    for key, tensor in model.state_dict().items():
        if key in inverse:
            out[inverse[key]] = tensor
            continue
        tower, _, index, rest = key.split(".", 3)
        official_rest = next(o for o, local in _BLOCK_RULES.items() if local == rest)
        out[f"modality_trunks.{tower}.blocks.{index}.{official_rest}"] = tensor
    context = model.config.context_length
    out["modality_preprocessors.text.mask"] = torch.full((context, context), float("-inf")).triu_(1)
    return out


class ImageBindEncoder:
    """ImageBind (vision + text) behind the Encoder protocol."""

    kind = "imagebind"

    def __init__(self, model: ImageBindVisionText, tokenizer: ClipBpeTokenizer, *, text_batch_size: int = 256):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.config = model.config
        self.dim = model.config.embed_dim
        self.image_size = model.config.image_size
        self.text_batch_size = text_batch_size
        self.mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
        self._fingerprint: str | None = None
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens, the model only {model.config.vocab_size}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_modules(self.kind, {"model": self.model}, asdict(self.config))
        return self._fingerprint

    def compile(self) -> None:
        """torch.compile the image tower (text is embedded once per run)."""
        self.model.vision = torch.compile(self.model.vision)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        images = resize_shorter_and_center_crop(as_rgb_batch(images).to(self.device), self.image_size)
        return ((images - self.mean.to(images.device)) / self.std.to(images.device)).to(next(self.model.parameters()).dtype)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.vision(self.preprocess(images)).float(), dim=-1)

    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(prompts), self.text_batch_size):
            ids = self.tokenizer(list(prompts[start : start + self.text_batch_size])).to(self.device)
            chunks.append(F.normalize(self.model.text(ids).float(), dim=-1))
        return torch.cat(chunks)

    def save_pretrained(self, directory: str) -> None:
        """Directory layout read by the registry: config.json, model.safetensors (official key names), BPE merges."""
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        self.config.to_json(os.path.join(directory, "config.json"))
        state = {k: v.contiguous() for k, v in local_state_to_official(self.model).items()}
        save_file(state, os.path.join(directory, "model.safetensors"))
        self.tokenizer.save(os.path.join(directory, BPE_FILENAME))
