"""The row format between stages carries everything a shard's outputs need, exactly."""

import numpy as np

from pipeline.sanitize.row_codec import decoded_row, judgement_of, judgement_row, row_records, shard_of
from pipeline.io.shards import Sample
from pipeline.sanitize.records import Record
from pipeline.sanitize.shard import Judgement, ShardInput


def test_rows_round_trip():
    samples = [Sample("a", {"png": b"x", "txt": b"hi"}), Sample("b", {"json": b"{}"}), Sample("c", {"jpg": b"y"})]
    samples.append(Sample("caf\udce9/\x00", {"j\udcffpg": b"z"}, extra=[("j\udcffpg", b"w")], errors=["repeated"]))
    shard = ShardInput("/in/shard-7.tar", "shard-7", samples, ["a problem"])
    pixels = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    records = [Record("a", "png", pixels[0], None, "hi", (640, 480)), Record("b", None, None, "no image member", None),
               Record("c", "jpg", pixels[1], None, None, (5, 9))]
    row = decoded_row(shard, records, 4)

    again = shard_of(row)
    assert again.samples == samples and again.problems == ["a problem"] and again.name == "shard-7"
    assert not again.incomplete
    for before, after in zip(records, row_records(row)):
        fields = ("key", "member", "error", "caption", "original_size")
        assert [getattr(before, f) for f in fields] == [getattr(after, f) for f in fields]
        assert (before.pixels is None and after.pixels is None) or np.array_equal(before.pixels, after.pixels)

    verdicts = {"a": {"key": "a", "status": "ok", "embedding": [0.5, -0.5]}, "b": {"key": "b", "status": "error", "embedding": None},
                "c": {"key": "c", "status": "ok", "embedding": [1.0, 0.0]}}
    members = {"a": {"png": "clean"}, "c": {"jpg": "illusion"}}
    purified = Judgement(verdicts, {("c", "jpg"): pixels[1]}, batch_size=16, batches=1, batched_images=2, members=members)
    back = judgement_of(judgement_row(row, purified, seconds=1.5, models={"encoder": "e"}, dim=2))
    assert back.rows == verdicts and back.batches == 1 and back.batched_images == 2 and back.members == members
    assert list(back.images) == [("c", "jpg")] and np.array_equal(back.images[("c", "jpg")], pixels[1])
