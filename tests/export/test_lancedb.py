import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline.export.lancedb import Target, export, parse_exclude
from pipeline.io.shards import Sample, write_samples
from pipeline.io.storage import Storage
from pipeline.sanitize.config import SanitizeConfig
from pipeline.sanitize.stages import process_shard
from tests.corpora import corpus_samples

PER_SHARD = 100


@pytest.fixture(scope="module")
def purifier():
    return SanitizeConfig.resolve(n=2).build_purifier("cpu")


def sanitise(tmp_path, purifier, shard: int, broken: bool = False) -> None:
    samples = corpus_samples(shard * PER_SHARD, PER_SHARD)
    if broken:
        samples[0] = Sample(samples[0].key, {"png": b"not a png", "txt": b"broken"})
    uri = str(tmp_path / "in" / f"shard-{shard:06d}.tar")
    Storage().write_bytes(uri, write_samples(samples))
    process_shard(Storage(), uri, str(tmp_path / "out"), purifier, policy="purify", batch_size=32)


def test_export_round_trips_and_each_sample_finds_its_own_embedding_first(tmp_path, purifier):
    sanitise(tmp_path, purifier, 0, broken=True)
    sanitise(tmp_path, purifier, 1)
    to = f"lancedb://{tmp_path / 'db'}?table=corpus"
    first = export(str(tmp_path / "out"), to, echo=lambda line: None)
    assert (first["exported"], first["rows"], first["skipped"]) == (2, 2 * PER_SHARD - 1, 0)  # the broken sample has no embedding

    import lancedb

    table = lancedb.connect(str(tmp_path / "db")).open_table("corpus")
    schema = table.schema
    assert schema.field("vector").type == pa.list_(pa.float32(), purifier.encoder.dim)
    for column in ("key", "shard", "verdict", "label_original", "label_consensus", "drift", "caption"):
        assert column in schema.names
    rows = table.to_arrow().to_pylist()
    assert all(r["caption"].startswith("a photo of a ") for r in rows)  # the samples' txt members
    for row in rows[::17]:
        [hit] = table.search(np.asarray(row["vector"]), vector_column_name="vector").metric("cosine").limit(1).to_list()
        assert hit["key"] == row["key"] and hit["_distance"] < 1e-5

    # Incremental: a second export adds only the new shard.
    sanitise(tmp_path, purifier, 2)
    again = export(str(tmp_path / "out"), to, echo=lambda line: None)
    assert (again["exported"], again["skipped"], again["total_rows"]) == (1, 2, 3 * PER_SHARD - 1)
    assert export(str(tmp_path / "out"), to, echo=lambda line: None)["exported"] == 0


def test_a_large_table_gets_an_index_that_still_finds_each_sample(tmp_path, purifier):
    for shard in range(3):
        sanitise(tmp_path, purifier, shard)
    summary = export(str(tmp_path / "out"), f"lancedb://{tmp_path / 'db'}", index_min_rows=256, echo=lambda line: None)
    assert summary["indexed"] and summary["total_rows"] == 3 * PER_SHARD

    import lancedb

    table = lancedb.connect(str(tmp_path / "db")).open_table("embeddings")
    assert [i.index_type for i in table.list_indices()] == ["IvfPq"]
    rows = table.to_arrow().to_pylist()
    for row in rows[::23]:
        # The index ranks approximately; re-ranking the best candidates exactly puts the sample itself first.
        hits = table.search(np.asarray(row["vector"])).metric("cosine").nprobes(32).refine_factor(20).limit(1).to_list()
        assert hits[0]["key"] == row["key"]


def test_cli_exclude_and_errors(tmp_path, purifier, capsys):
    sanitise(tmp_path, purifier, 0)
    db = tmp_path / "db"
    assert main(["export", "--input", str(tmp_path / "out"), "--to", f"lancedb://{db}", "--exclude", "clean,illusion,uncertain"]) == 0
    assert "0 rows" in capsys.readouterr().out
    verdicts = pq.read_table(tmp_path / "out" / "verdicts" / "shard-000000.parquet")["verdict"].to_pylist()
    assert main(["export", "--input", str(tmp_path / "out"), "--to", f"lancedb://{db}?table=all", "--exclude", "illusion"]) == 0
    assert f"{PER_SHARD - verdicts.count('illusion')} rows in all" in capsys.readouterr().out
    assert main(["export", "--input", str(tmp_path / "out"), "--to", f"lancedb://{db}?table=all", "--rebuild"]) == 0
    assert f"{PER_SHARD} rows in all" in capsys.readouterr().out
    assert main(["export", "--input", str(tmp_path / "nothing"), "--to", f"lancedb://{db}"]) == 2
    assert main(["export", "--input", str(tmp_path / "out"), "--to", "qdrant://x"]) == 2
    with pytest.raises(ValueError, match="--exclude takes verdicts"):
        parse_exclude("clean,bogus")
    assert Target.parse("lancedb:///data/db?table=t") == Target("/data/db", "t")


def test_export_reads_a_run_written_to_s3(tmp_path, purifier, s3_endpoint):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="corpus")
    storage = Storage(s3_endpoint)
    uri = "s3://corpus/raw/shard-000000.tar"
    storage.write_bytes(uri, write_samples(corpus_samples(0, 20)))
    process_shard(storage, uri, "s3://corpus/clean", purifier, policy="purify", batch_size=32)
    summary = export("s3://corpus/clean", f"lancedb://{tmp_path / 'db'}", s3_endpoint=s3_endpoint, echo=lambda line: None)
    assert (summary["exported"], summary["total_rows"]) == (1, 20)


def test_an_export_that_dies_midway_leaves_every_sample_once_after_the_next(tmp_path, purifier, monkeypatch):
    """Shards are marked pending before their rows are added: the next export takes the rows of an
    export that died out again before adding them, and reads only the ledger, never the table."""
    import pipeline.export.lancedb as module

    for shard in range(3):
        sanitise(tmp_path, purifier, shard)
    to = f"lancedb://{tmp_path / 'db'}"
    real, calls = module.shard_rows, []

    def dies_on_the_third(*args):
        calls.append(args[2])
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args)

    monkeypatch.setattr(module, "shard_rows", dies_on_the_third)
    with pytest.raises(RuntimeError):
        export(str(tmp_path / "out"), to, echo=lambda line: None)
    monkeypatch.setattr(module, "shard_rows", real)
    ledger = json.loads((tmp_path / "db" / "embeddings.exports.json").read_text())
    assert sorted(ledger["pending"]) == ["shard-000000", "shard-000001", "shard-000002"]

    import lancedb

    table = lancedb.connect(str(tmp_path / "db")).open_table("embeddings")
    monkeypatch.setattr(type(table), "search", lambda *a, **k: pytest.fail("the export read the table to learn what it holds"))
    summary = export(str(tmp_path / "out"), to, echo=lambda line: None)
    assert (summary["exported"], summary["total_rows"]) == (3, 3 * PER_SHARD)
    monkeypatch.undo()
    keys = lancedb.connect(str(tmp_path / "db")).open_table("embeddings").to_arrow()["key"].to_pylist()
    assert len(keys) == len(set(keys)) == 3 * PER_SHARD
    assert json.loads((tmp_path / "db" / "embeddings.exports.json").read_text())["pending"] == []


def test_the_index_is_trained_once_then_updated_until_the_table_doubles(tmp_path, purifier):
    import lancedb

    to, out = f"lancedb://{tmp_path / 'db'}", str(tmp_path / "out")
    for shard in range(3):
        sanitise(tmp_path, purifier, shard)
    assert export(out, to, index_min_rows=256, echo=lambda line: None)["indexed"] == "trained"  # 300 rows
    sanitise(tmp_path, purifier, 3)
    assert export(out, to, index_min_rows=256, echo=lambda line: None)["indexed"] == "updated"  # 400 < 2 x 300
    table = lancedb.connect(str(tmp_path / "db")).open_table("embeddings")
    [index] = table.list_indices()
    assert table.index_stats(index.name).num_unindexed_rows == 0  # the new shard's rows are in the index
    new = [r for r in table.to_arrow().to_pylist() if r["shard"] == "shard-000003"][::17]
    for row in new:
        hits = table.search(np.asarray(row["vector"])).metric("cosine").nprobes(32).refine_factor(20).limit(1).to_list()
        assert hits[0]["key"] == row["key"]
    for shard in (4, 5):
        sanitise(tmp_path, purifier, shard)
    assert export(out, to, index_min_rows=256, echo=lambda line: None)["indexed"] == "trained"  # 600 >= 2 x 300


def test_a_database_on_s3_uses_the_given_endpoint(tmp_path, purifier, s3_endpoint):
    import boto3
    import lancedb

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="vectors")
    sanitise(tmp_path, purifier, 0)
    summary = export(str(tmp_path / "out"), "lancedb://s3://vectors/db?table=corpus", s3_endpoint=s3_endpoint, echo=lambda line: None)
    assert summary["total_rows"] == PER_SHARD
    assert Storage(s3_endpoint).exists("s3://vectors/db/corpus.exports.json")
    db = lancedb.connect("s3://vectors/db", storage_options={"aws_endpoint": s3_endpoint, "allow_http": "true", "aws_region": "us-east-1"})
    assert db.open_table("corpus").count_rows() == PER_SHARD
