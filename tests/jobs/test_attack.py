import io
import json

import numpy as np
from PIL import Image

from jobs.cli import main
from pipeline.io.images import decode_image
from pipeline.io.shards import read_samples, write_samples
from pipeline.research.data.fashion_mnist import CLASSES
from tests.corpora import make_shard


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


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
