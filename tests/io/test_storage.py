import gzip
import os
import stat

import boto3
import pytest

from pipeline.io.s3 import fetch_to_cache
from pipeline.io.storage import OutputWriteError, Storage, StoreUnreachable, is_inside, join, shard_name
from tests.io.faulty_proxy import FaultyProxy


def test_local_specs(tmp_path):
    storage = Storage()
    for i in range(3):
        storage.write_bytes(str(tmp_path / "in" / f"shard-{i:06d}.tar"), b"x")
    (tmp_path / "in" / "notes.txt").write_text("not a shard")
    shards = [str(tmp_path / "in" / f"shard-{i:06d}.tar") for i in range(3)]
    assert storage.expand(str(tmp_path / "in")) == shards
    assert storage.expand(str(tmp_path / "in" / "shard-*.tar")) == shards
    assert storage.expand(str(tmp_path / "in" / "shard-{000001..000002}.tar")) == shards[1:]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(shards[:2]) + "\n")
    assert storage.expand(str(listing)) == shards[:2]
    with pytest.raises(FileNotFoundError):
        storage.expand(str(tmp_path / "empty-dir-that-does-not-exist"))


def test_specs_that_name_no_shard_are_errors(tmp_path):
    storage = Storage()
    (tmp_path / "empty").mkdir()
    for spec in ("empty", "empty/*.tar", "absent.tar", "absent-{0..3}.tar"):
        with pytest.raises(FileNotFoundError, match="no s"):
            storage.expand(str(tmp_path / spec))


def test_gzip_shards_are_shards_and_an_archive_is_not_a_list_file(tmp_path):
    storage = Storage()
    for name in ("a.tar", "b.tar.gz", "c.tgz", "d.tar.bz2", "e.zip"):
        storage.write_bytes(str(tmp_path / "in" / name), gzip.compress(b"x"))
    assert [shard_name(u) for u in storage.expand(str(tmp_path / "in"))] == ["a", "b", "c"]
    assert storage.expand(str(tmp_path / "in" / "b.tar.gz")) == [str(tmp_path / "in" / "b.tar.gz")]
    with pytest.raises(ValueError, match="is an archive, not a list of shards"):
        storage.expand(str(tmp_path / "in" / "d.tar.bz2"))


def test_written_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        from pipeline.io import storage as module

        module._umask.cache_clear()
        Storage().write_bytes(str(tmp_path / "out" / "a.json"), b"{}")
    finally:
        os.umask(previous)
        module._umask.cache_clear()
    assert stat.S_IMODE((tmp_path / "out" / "a.json").stat().st_mode) == 0o640


def test_an_output_that_cannot_be_written_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("a file, not a directory")
    with pytest.raises(OutputWriteError, match="cannot write .*file/out/run.json: Not a directory"):
        Storage().write_bytes(str(tmp_path / "file" / "out" / "run.json"), b"{}")


def test_is_inside(tmp_path):
    assert is_inside(str(tmp_path / "in" / "out"), str(tmp_path / "in"))
    assert is_inside(str(tmp_path / "in"), str(tmp_path / "in" / "."))
    assert not is_inside(str(tmp_path / "in-clean"), str(tmp_path / "in"))
    assert is_inside("s3://b/in/out", "s3://b/in/") and not is_inside("s3://b/in2", "s3://b/in")
    assert not is_inside("s3://b/in", str(tmp_path))


def test_model_cache_fetches_exactly_the_named_object(s3_endpoint, tmp_path):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="models")
    client.put_object(Bucket="models", Key="imagebind/imagebind_huge.pth", Body=b"current")
    client.put_object(Bucket="models", Key="imagebind/imagebind_huge.pth.old", Body=b"old")
    path = fetch_to_cache("s3://models/imagebind/imagebind_huge.pth", str(tmp_path / "cache"), endpoint_url=s3_endpoint)
    assert open(path, "rb").read() == b"current"
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()) == ["imagebind_huge.pth"]


def test_model_cache_keys_stay_inside_the_cache_entry(s3_endpoint, tmp_path):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="models")
    client.put_object(Bucket="models", Key="clip/config.json", Body=b"{}")
    client.put_object(Bucket="models", Key="clip/../../../escaped.txt", Body=b"evil")
    listed = [item["Key"] for item in client.list_objects_v2(Bucket="models", Prefix="clip/")["Contents"]]
    assert "clip/../../../escaped.txt" in listed  # the store keeps the key as given
    with pytest.raises(ValueError, match="would not stay inside the cache entry"):
        fetch_to_cache("s3://models/clip", str(tmp_path / "cache"), endpoint_url=s3_endpoint)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written, staging removed


def test_atomic_local_write_leaves_no_temporary_files(tmp_path):
    storage = Storage()
    target = tmp_path / "out" / "a.bin"
    storage.write_bytes(str(target), b"one")
    storage.write_bytes(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.bin"]


def test_s3_specs_and_round_trip(s3_endpoint):
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="corpus")
    storage = Storage(s3_endpoint)
    for i in range(3):
        storage.write_bytes(f"s3://corpus/raw/shard-{i:06d}.tar", bytes([i]))
    storage.write_bytes("s3://corpus/raw/other.parquet", b"p")
    shards = [f"s3://corpus/raw/shard-{i:06d}.tar" for i in range(3)]
    assert storage.expand("s3://corpus/raw") == shards
    assert storage.expand("s3://corpus/raw/shard-00000[12].tar") == shards[1:]
    assert storage.expand("s3://corpus/raw/shard-{000000..000001}.tar") == shards[:2]
    assert storage.read_bytes(shards[2]) == b"\x02"
    assert storage.exists(shards[0]) and not storage.exists("s3://corpus/raw/shard-000009.tar")


def test_transient_s3_errors_are_retried(s3_endpoint):
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="corpus")
    Storage(s3_endpoint).write_bytes("s3://corpus/raw/shard-000000.tar", b"payload")
    reads = lambda method, path: method == "GET" and path.startswith("/corpus/raw/shard")  # noqa: E731
    with FaultyProxy(s3_endpoint, ["503 SlowDown", "500 InternalError", "reset", "truncate"], should_fault=reads) as proxy:
        assert Storage(proxy.url).read_bytes("s3://corpus/raw/shard-000000.tar") == b"payload"
        assert sum(reads(*request) for request in proxy.requests) == 5  # four failures, then the answer
        assert not proxy.faults


def test_a_store_that_answers_only_server_errors_stops_the_run_resumably(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="corpus")
    Storage(s3_endpoint).write_bytes("s3://corpus/raw/shard-000000.tar", b"payload")
    with FaultyProxy(s3_endpoint, ["500 InternalError"] * 20) as proxy:
        with pytest.raises(StoreUnreachable, match="answers with server errors .InternalError.*rerun to resume"):
            Storage(proxy.url).read_bytes("s3://corpus/raw/shard-000000.tar")
        with pytest.raises(StoreUnreachable):
            Storage(proxy.url).list_prefix("s3://corpus/raw")
        proxy.faults.clear()
        assert Storage(proxy.url).read_bytes("s3://corpus/raw/shard-000000.tar") == b"payload"  # the store is back


def test_a_missing_object_is_not_retried(s3_endpoint):
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="corpus")
    with FaultyProxy(s3_endpoint, []) as proxy, pytest.raises(FileNotFoundError):
        Storage(proxy.url).read_bytes("s3://corpus/raw/absent.tar")
    assert len([r for r in proxy.requests if r[0] == "GET"]) == 1


def test_join_and_shard_name():
    assert join("s3://b/out/", "shards", "x.tar") == "s3://b/out/shards/x.tar"
    assert shard_name("s3://b/c/shard-000001.tar") == "shard-000001"
    assert shard_name("/c/shard-000002.tar.gz") == shard_name("shard-000002.tgz") == "shard-000002"
