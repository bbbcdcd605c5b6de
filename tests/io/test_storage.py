import boto3
import pytest
from moto.server import ThreadedMotoServer

from pipeline.io.storage import Storage, join, shard_name
from tests.io.faulty_proxy import FaultyProxy


@pytest.fixture
def s3_endpoint(monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


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


def test_a_missing_object_is_not_retried(s3_endpoint):
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="corpus")
    with FaultyProxy(s3_endpoint, []) as proxy, pytest.raises(FileNotFoundError):
        Storage(proxy.url).read_bytes("s3://corpus/raw/absent.tar")
    assert len([r for r in proxy.requests if r[0] == "GET"]) == 1


def test_join_and_shard_name():
    assert join("s3://b/out/", "shards", "x.tar") == "s3://b/out/shards/x.tar"
    assert shard_name("s3://b/c/shard-000001.tar") == "shard-000001"
