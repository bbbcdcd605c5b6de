import json
import os

import pytest

from pipeline.data.fashion_mnist import CLASSES, load_sample
from pipeline.io.images import encode_png
from pipeline.io.shards import Sample, write_samples


@pytest.fixture(scope="session")
def ray_cluster():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def corpus_samples(first: int, count: int, prefix: str = "k") -> list[Sample]:
    import torch

    from pipeline.data.fashion_mnist import to_rgb32

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
