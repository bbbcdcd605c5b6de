"""CLIP-family encoders through transformers' CLIPModel."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import CLIPModel

from ..fingerprint import fingerprint_modules
from ..imaging import as_rgb_batch, resize_shorter_and_center_crop

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _projected(output) -> torch.Tensor:
    # transformers 5 returns an output object whose pooler_output is the projected embedding.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class CLIPEncoder:
    """Image and text towers of a CLIPModel; preprocessing (resize, crop, normalise) done in torch so
    that gradients reach the pixels."""

    kind = "clip"

    def __init__(
        self,
        model: CLIPModel,
        tokenizer,
        *,
        image_size: int | None = None,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        text_batch_size: int = 256,
    ):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = int(image_size or model.config.vision_config.image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.dim = int(model.config.projection_dim)
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.text_batch_size = text_batch_size
        self._fingerprint: str | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            settings = {"image_size": self.image_size, "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}
            self._fingerprint = fingerprint_modules(self.kind, {"model": self.model}, settings)
        return self._fingerprint

    def compile(self) -> None:
        """torch.compile the image tower (text is embedded once per run)."""
        self.model.vision_model = torch.compile(self.model.vision_model)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        images = resize_shorter_and_center_crop(as_rgb_batch(images).to(self.device), self.image_size)
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return ((images - mean) / std).to(self.model.dtype)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        features = _projected(self.model.get_image_features(pixel_values=self.preprocess(images)))
        return F.normalize(features.float(), dim=-1)

    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(prompts), self.text_batch_size):
            tokens = self.tokenizer(
                list(prompts[start : start + self.text_batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            output = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            chunks.append(F.normalize(_projected(output).float(), dim=-1))
        return torch.cat(chunks)

    def save_pretrained(self, directory: str) -> None:
        """Model, tokenizer and a matching CLIPImageProcessorPil config, loadable by `load_encoder`."""
        from transformers import CLIPImageProcessorPil

        os.makedirs(directory, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        CLIPImageProcessorPil(
            size={"shortest_edge": self.image_size},
            crop_size={"height": self.image_size, "width": self.image_size},
            image_mean=self.mean.flatten().tolist(),
            image_std=self.std.flatten().tolist(),
        ).save_pretrained(directory)
