import bz2
import gzip
import io
import tarfile

import pytest

from pipeline.io.shards import (
    Sample,
    ShardProblem,
    display,
    key_bytes,
    plain_tar,
    read_samples,
    read_shard_bytes,
    safe_key,
    split_member_name,
    write_samples,
)


def tar_of(members: list[tuple[str | bytes, bytes | tarfile.TarInfo]], fmt=tarfile.GNU_FORMAT) -> bytes:
    """A tar of (name, payload) members; a TarInfo instead of a payload adds that special member."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as archive:
        for name, payload in members:
            if isinstance(name, bytes):
                name = name.decode("utf-8", "surrogateescape")
            if isinstance(payload, tarfile.TarInfo):
                payload.name = name
                archive.addfile(payload)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def special(kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo()
    info.type, info.linkname = kind, linkname
    return info


def samples_and_problems(data: bytes) -> tuple[list[Sample], list[ShardProblem]]:
    items = list(read_samples(data))
    return [i for i in items if isinstance(i, Sample)], [i for i in items if isinstance(i, ShardProblem)]


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


def test_names_that_are_not_utf8_survive_byte_for_byte():
    data = tar_of([(b"caf\xe9-\xff\xfe.png", b"1"), (b"caf\xe9-\xff\xfe.txt", b"t")])
    (sample,), problems = samples_and_problems(data)
    assert not problems and key_bytes(sample.key) == b"caf\xe9-\xff\xfe"
    assert display(sample.key) == "caf\\xe9-\\xff\\xfe"
    (again,), _ = samples_and_problems(write_samples([sample]))
    assert key_bytes(again.key) == b"caf\xe9-\xff\xfe" and again.members == sample.members


def test_names_longer_than_ustar_allows_are_written():
    key = "x" * 240 + "-" + "\u00e9" * 3  # no slash: USTAR cannot split it into prefix and name
    (again,), problems = samples_and_problems(write_samples([Sample(key, {"png": b"1"})]))
    assert not problems and again.key == key


def test_a_key_that_reappears_is_one_error_sample_with_nothing_lost():
    data = tar_of([("a.png", b"1"), ("b.png", b"2"), ("a.json", b"{}"), ("a.png", b"3"), ("c.png", b"4")])
    samples, problems = samples_and_problems(data)
    assert [s.key for s in samples] == ["a", "b", "c"] and not problems
    a = samples[0]
    assert a.members == {"png": b"1", "json": b"{}"} and a.extra == [("png", b"3")]
    assert "reappears" in a.errors[0]
    assert sorted(m for s in read_samples(write_samples([a])) for m in s.members) == ["json", "png"]  # written back adjacent


def test_an_adjacent_duplicate_member_is_an_error_not_a_replacement():
    (sample,), _ = samples_and_problems(tar_of([("a.png", b"first"), ("a.png", b"second")]))
    assert sample.members == {"png": b"first"} and sample.extra == [("png", b"second")]
    assert "appears more than once" in sample.errors[0]


@pytest.mark.parametrize("kind, word", [(tarfile.SYMTYPE, "symbolic link"), (tarfile.LNKTYPE, "hard link"),
                                        (tarfile.CHRTYPE, "device"), (tarfile.BLKTYPE, "device"), (tarfile.FIFOTYPE, "fifo")])
def test_special_members_make_their_sample_an_error(kind, word):
    samples, _ = samples_and_problems(tar_of([("a.png", b"1"), ("b.png", special(kind, "a.png")), ("c.png", b"3")]))
    assert [s.key for s in samples] == ["a", "b", "c"]
    assert not samples[1].members and word in samples[1].errors[0]


def test_unsafe_names_are_reported_and_written_safely():
    data = tar_of([("../../etc/x.png", b"1"), ("/abs/y.png", b"2"), ("ok/./z.png", b"3")])
    samples, problems = samples_and_problems(data)
    assert [s.key for s in samples] == ["../../etc/x", "/abs/y", "ok/./z"]
    assert len(problems) == 1 and "3 key(s) unsafe to extract" in problems[0].message and not problems[0].incomplete
    with tarfile.open(fileobj=io.BytesIO(write_samples(samples))) as archive:
        assert archive.getnames() == ["__/__/etc/x.png", "abs/y.png", "ok/z.png"]
    assert safe_key("..") == "__" and safe_key("/") == "_" and safe_key("") == "_"
    assert safe_key("x/") == "x/_" and safe_key("a\0b") == "a_b" and safe_key("./a/./b") == "a/b"


@pytest.mark.parametrize("name", ["", "x/", "a\0b", "/", "d/./", "../.."])
def test_a_sample_stays_one_sample_whatever_its_name(name):
    """Every member of a sample, its verdict member included, is written under one key, which reads
    back as one sample."""
    sample = Sample(name, {"": b"payload", "disillusion.json": b"{}"})
    [back] = read_shard_bytes(write_samples([sample]))[0]
    assert back.key == safe_key(name) and list(back.members.values()) == list(sample.members.values())


def test_gzip_shards_are_read_up_to_a_cap():
    data = tar_of([("a.png", b"x" * 5000)])
    (sample,), problems = samples_and_problems(gzip.compress(data))
    assert sample.members == {"png": b"x" * 5000} and not problems
    assert plain_tar(gzip.compress(data) + gzip.compress(b"\0" * 1024)) == (data + b"\0" * 1024, None)  # multi-member gzip
    samples, problems = samples_and_problems_capped(gzip.compress(data), cap=4096)
    assert not samples and problems[0].incomplete and "more than 4096 bytes" in problems[0].message


def samples_and_problems_capped(data: bytes, cap: int):
    items = list(read_samples(data, cap))
    return [i for i in items if isinstance(i, Sample)], [i for i in items if isinstance(i, ShardProblem)]


def test_a_gzip_bomb_never_decompresses_past_the_cap():
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 KiB
    tar, problem = plain_tar(bomb, 1 << 20)
    assert tar == b"" and problem.incomplete and "cap" in problem.message


@pytest.mark.parametrize("data, words", [
    (b"", "empty shard"),
    (bz2.compress(b"x" * 100), "bzip2-compressed"),
    (b"this is not a tar file at all" * 40, "unreadable tar"),
    (gzip.compress(b"x" * 4000)[:-30], "truncated gzip"),
])
def test_shards_that_cannot_be_read_in_full_are_incomplete(data, words):
    samples, problems = samples_and_problems(data)
    assert not samples and any(words in p.message for p in problems) and all(p.incomplete for p in problems)


def test_truncated_tar_yields_what_was_read_then_an_incomplete_problem():
    data = tar_of([("a.png", b"x" * 2000), ("b.png", b"y" * 2000), ("c.png", b"z" * 2000)])
    items = list(read_samples(data[:3000]))
    assert isinstance(items[-1], ShardProblem) and "unreadable tar" in items[-1].message and items[-1].incomplete
    assert items[0].key == "a"


def test_image_members_are_those_a_webdataset_or_pillow_loader_decodes():
    sample = Sample("k", {"json": b"", "JPG": b"", "jpe": b"", "jfif": b"", "apng": b"", "pnm": b"", "tga": b"", "ico": b"",
                          "eps": b"", "seg.png": b"", "txt": b"", "cls": b""})
    assert sample.image_extensions() == ["JPG", "jpe", "jfif", "apng", "pnm", "tga", "ico", "eps", "seg.png"]
    assert sample.image_extension() == "JPG"
    assert Sample("k", {"json": b""}).image_extension() is None


def test_read_shard_bytes_takes_plain_tars():
    samples, problems = read_shard_bytes(tar_of([("a.png", b"1")]))
    assert [s.key for s in samples] == ["a"] and not problems
