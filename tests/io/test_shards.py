import io
import tarfile

from pipeline.io.shards import Sample, ShardProblem, read_samples, split_member_name, write_samples


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def test_member_names_split_at_the_first_dot_of_the_base_name():
    assert split_member_name("a/b/000001.seg.png") == ("a/b/000001", "seg.png")
    assert split_member_name("x.json") == ("x", "json")
    assert split_member_name("README") == ("README", "")


def test_round_trip_keeps_keys_order_and_bytes():
    samples = [Sample("k1", {"png": b"\x89PNG", "json": b"{}"}), Sample("dir/k2", {"jpg": b"\xff\xd8", "txt": b"caption"})]
    again = list(read_samples(write_samples(samples)))
    assert [s.key for s in again] == ["k1", "dir/k2"]
    assert [s.members for s in again] == [s.members for s in samples]
    assert write_samples(samples) == write_samples(again)  # deterministic headers


def test_duplicate_keys_are_reported_not_merged():
    data = tar_of([("a.png", b"1"), ("b.png", b"2"), ("a.json", b"{}"), ("c.png", b"3")])
    items = list(read_samples(data))
    assert [i.key if isinstance(i, Sample) else "problem" for i in items] == ["a", "b", "problem", "c"]
    assert "duplicate key 'a'" in items[2].message
    assert items[0].members == {"png": b"1"}


def test_truncated_tar_yields_what_was_read_then_a_problem():
    data = tar_of([("a.png", b"x" * 2000), ("b.png", b"y" * 2000), ("c.png", b"z" * 2000)])
    items = list(read_samples(data[:3000]))
    assert isinstance(items[-1], ShardProblem) and "unreadable tar" in items[-1].message
    assert items[0].key == "a"


def test_image_extension_lookup():
    assert Sample("k", {"json": b"", "JPG": b""}).image_extension() == "JPG"
    assert Sample("k", {"json": b""}).image_extension() is None
