"""Fashion-MNIST (Zalando Research, MIT licence): reading the IDX files and the bundled sample.

The demo models are trained on it as 32 x 32 RGB: each 28 x 28 grayscale image is padded by 2 pixels
on every side and replicated to three channels.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...presets import DEMO_DIR, FASHION_MNIST_LABELS

CLASSES = FASHION_MNIST_LABELS  # in class-index order
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
SAMPLE_PATH = os.path.join(DEMO_DIR, "fashion_mnist_sample.npz")
TEST_SIZE = 10_000


@dataclass
class LabelledImages:
    images: np.ndarray  # N x 28 x 28 uint8
    labels: np.ndarray  # N int64 in [0, 10)

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N x 3 x 32 x 32 float in [0, 1], N labels)."""
        images = self.images if indices is None else self.images[indices]
        labels = self.labels if indices is None else self.labels[indices]
        return to_rgb32(torch.from_numpy(images)), torch.from_numpy(labels.astype(np.int64))


def to_rgb32(images: torch.Tensor) -> torch.Tensor:
    """N x 28 x 28 uint8 -> N x 3 x 32 x 32 float in [0, 1]."""
    x = images.float().div(255.0).unsqueeze(1)
    return F.pad(x, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[:4], "big")
    dims = magic & 0xFF
    if magic >> 8 != 0x08:  # unsigned byte payloads only
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file")
    return array.reshape(shape).copy()  # writable, so torch can share it


def load_split(split: str, data_dir: str = DEBIAN_DIR) -> LabelledImages:
    """split: 'train' (60,000) or 't10k' (10,000)."""
    prefix = os.path.join(data_dir, split)
    images_path, labels_path = f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"
    if not os.path.exists(images_path):
        raise FileNotFoundError(
            f"Fashion-MNIST not found at {data_dir}: install the Debian package dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist) or pass --data DIR with the four IDX .gz files"
        )
    return LabelledImages(_read_idx(images_path), _read_idx(labels_path).astype(np.int64))


def load_sample(path: str = SAMPLE_PATH) -> LabelledImages:
    """The labelled test-split sample bundled with the package (for the demo, tests and evaluation)."""
    with np.load(path, allow_pickle=False) as data:
        return LabelledImages(data["images"], data["labels"].astype(np.int64))


def write_sample(test: LabelledImages, path: str, per_class: int = 100, seed: int = 0) -> None:
    """A class-balanced, seeded sample of the test split, stored as compressed uint8 arrays."""
    rng = np.random.default_rng(seed)
    picks = np.concatenate([rng.choice(np.flatnonzero(test.labels == c), per_class, replace=False) for c in range(len(CLASSES))])
    picks = np.sort(picks)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, images=test.images[picks], labels=test.labels[picks].astype(np.uint8), test_indices=picks)


def held_out_test_indices(sample_path: str = SAMPLE_PATH) -> np.ndarray:
    """Indices of the test split outside the bundled sample, in order: clean data from the demo
    corpus's distribution that the demo never sees (for calibration)."""
    with np.load(sample_path, allow_pickle=False) as data:
        taken = data["test_indices"]
    return np.setdiff1d(np.arange(TEST_SIZE), taken)
