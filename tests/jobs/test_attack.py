import io
import json

import numpy as np
from PIL import Image

from jobs.cli import main
from pipeline.research.data.fashion_mnist import CLASSES, load_sample, to_rgb32
from pipeline.io.images import decode_image
from pipeline.io.shards import Sample, read_samples, write_samples
from pipeline.io.storage import Storage


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_shard(path, count=8):
    sample = load_sample()
    samples = []
    for i in range(count):
        rgb = (to_rgb32(__import__("torch").from_numpy(sample.images[i : i + 1]))[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        meta = {"label": CLASSES[int(sample.labels[i])], "source": "test"}
        samples.append(Sample(f"s{i:03d}", {"png": png(rgb), "json": json.dumps(meta).encode(), "txt": b"caption"}))
    Storage().write_bytes(str(path), write_samples(samples))
    return samples


def test_attack_writes_ground_truth_and_leaves_clean_samples_untouched(tmp_path):
    original = make_shard(tmp_path / "in" / "shard-000000.tar")
    code = main(["attack", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--steps", "10",
                 "--step-size", "4/255", "--fraction", "0.5", "--seed", "1"])
    assert code == 0
    out = list(read_samples((tmp_path / "out" / "shard-000000.tar").read_bytes()))
    assert [s.key for s in out] == [s.key for s in original]
    attacked = 0
    for before, after in zip(original, out):
        truth = json.loads(after.members["json"])
        assert truth["label"] == json.loads(before.members["json"])["label"] and truth["source"] == "test"
        assert after.members["txt"] == before.members["txt"]
        if truth["illusion"]:
            attacked += 1
            assert truth["target"] in CLASSES and truth["target"] != truth["label"]
            delta = decode_image(after.members["png"]) - decode_image(before.members["png"])
            assert 0 < delta.abs().max() <= 16 / 255 + 1 / 255  # within budget (plus PNG rounding)
        else:
            assert truth["target"] is None and after.members["png"] == before.members["png"]
    assert 0 < attacked < len(original)

    # A second run skips the finished shard.
    assert main(["attack", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--steps", "1"]) == 0
    assert (tmp_path / "out" / "shard-000000.tar").read_bytes() == write_samples(out)
