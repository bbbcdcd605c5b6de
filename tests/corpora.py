"""Small labelled corpora from the bundled Fashion-MNIST sample, for the tests that need real images
in WebDataset shards (helpers, not tests: test modules import these, never each other)."""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from PIL import Image

from pipeline.io.images import encode_png
from pipeline.io.shards import Sample, write_samples
from pipeline.io.storage import Storage
from pipeline.research.data.fashion_mnist import CLASSES, load_sample, to_rgb32


def corpus_samples(first: int, count: int, prefix: str = "k") -> list[Sample]:
    """Samples `first`.. of the bundled sample: a PNG, its label in json, a caption in txt."""
    sample = load_sample()
    images = to_rgb32(torch.from_numpy(sample.images[first : first + count]))
    return [
        Sample(f"{prefix}{first + i:04d}", {
            "png": encode_png(images[i]),
            "json": json.dumps({"label": CLASSES[int(sample.labels[first + i])]}).encode(),
            "txt": f"a photo of a {CLASSES[int(sample.labels[first + i])]}.".encode(),
        })
        for i in range(count)
    ]


def write_corpus(write, shards: int, per_shard: int) -> list[list[Sample]]:
    """write(name, bytes) for each shard; returns the samples of each shard."""
    out = []
    for s in range(shards):
        samples = corpus_samples(s * per_shard, per_shard)
        write(f"shard-{s:06d}.tar", write_samples(samples))
        out.append(samples)
    return out


def make_shard(path, count: int = 8) -> list[Sample]:
    """One shard of `count` labelled samples (keys s000..) at `path`, local or S3."""
    sample = load_sample()
    pixels = (to_rgb32(torch.from_numpy(sample.images[:count])).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    samples = [Sample(f"s{i:03d}", {"png": _png(pixels[i]),
                                    "json": json.dumps({"label": CLASSES[int(sample.labels[i])], "source": "test"}).encode(),
                                    "txt": b"caption"})
               for i in range(count)]
    Storage().write_bytes(str(path), write_samples(samples))
    return samples


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
