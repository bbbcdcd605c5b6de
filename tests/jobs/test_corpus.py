import gzip
import json

import numpy as np
import torch

from jobs.cli import main
from pipeline.io.shards import read_samples
from pipeline.research.data.encodings import at_working_size, held_out_groups
from pipeline.research.data.fashion_mnist import CLASSES


def fake_fashion_mnist(directory, count=10_000):
    """A test split of Fashion-MNIST's shape (IDX files, as the Debian package ships them) with seeded pixels."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    directory.mkdir()
    for name, array in (("t10k-images-idx3-ubyte.gz", images), ("t10k-labels-idx1-ubyte.gz", labels)):
        header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(directory / name, "wb", compresslevel=1) as handle:
            handle.write(header + array.tobytes())
    return labels


def test_corpus_writes_every_image_as_each_scraper_would_with_its_label(tmp_path):
    labels = fake_fashion_mnist(tmp_path / "fmnist")
    out = tmp_path / "corpus"
    assert main(["corpus", "--output", str(out), "--data", str(tmp_path / "fmnist"), "--limit", "4", "--offset", "2",
                 "--encodings", "png,jpeg,webp", "--per-shard", "5"]) == 0
    shards = sorted(out.iterdir())
    samples = [s for shard in shards for s in read_samples(shard.read_bytes())]
    assert [len(list(read_samples(s.read_bytes()))) for s in shards] == [5, 5, 2]
    # Each image's copies side by side, in the formats their pipelines write, with the true label.
    assert [s.key.rsplit("-", 1)[1] for s in samples[:3]] == ["png", "jpeg", "webp"]
    assert [next(ext for ext in s.members if ext != "json") for s in samples[:3]] == ["png", "jpg", "webp"]
    held_out = held_out_groups(str(tmp_path / "fmnist"), offset=2, limit=4, encodings=["png", "jpeg", "webp"], work_size=32)
    for sample in samples:
        truth = json.loads(sample.members["json"])
        key = sample.key[: -len(truth["encoding"]) - 1]
        assert truth["label"] == CLASSES[labels[int(key.split("-")[1])]]
        images, keys = held_out[truth["encoding"]]
        index = keys.index(key)
        # The same files calibrate stores for the demo groups: the two paths see the same images.
        image = next(data for ext, data in sample.members.items() if ext != "json")
        assert torch.equal(at_working_size(image, 32), images[index])
