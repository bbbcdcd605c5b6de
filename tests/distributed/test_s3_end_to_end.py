"""The same corpus through `sanitize` on a real S3 server (SeaweedFS) and on local disk."""

import io
import json

import pyarrow.parquet as pq

from jobs.cli import main
from pipeline.io.shards import read_samples
from tests.corpora import write_corpus


def test_s3_run_matches_the_local_run(tmp_path, seaweed, ray_cluster):
    client = seaweed.client()
    client.create_bucket(Bucket="corpus")
    shards = write_corpus(lambda name, data: client.put_object(Bucket="corpus", Key=f"raw/{name}", Body=data), shards=2, per_shard=6)
    for i, samples in enumerate(shards):
        (tmp_path / "local-in").mkdir(exist_ok=True)
        (tmp_path / "local-in" / f"shard-{i:06d}.tar").write_bytes(client.get_object(Bucket="corpus", Key=f"raw/shard-{i:06d}.tar")["Body"].read())

    (tmp_path / "noise.key").write_bytes(bytes(range(32)))  # one key for both runs: the same draws
    common = ["--n", "4", "--batch-size", "4", "--noise-key-file", str(tmp_path / "noise.key")]
    assert main(["sanitize", "--input", "s3://corpus/raw/shard-{000000..000001}.tar", "--output", "s3://corpus/clean",
                 "--s3-endpoint", seaweed.endpoint, *common]) == 0
    assert main(["sanitize", "--input", str(tmp_path / "local-in"), "--output", str(tmp_path / "local-out"), *common]) == 0

    for i in range(2):
        name = f"shard-{i:06d}"
        remote = pq.read_table(io.BytesIO(client.get_object(Bucket="corpus", Key=f"clean/verdicts/{name}.parquet")["Body"].read()))
        local = pq.read_table(tmp_path / "local-out" / "verdicts" / f"{name}.parquet")
        columns = ["key", "status", "verdict", "label_original", "label_consensus", "samples_used"]
        assert remote.select(columns).to_pylist() == local.select(columns).to_pylist()
        manifest = json.loads(client.get_object(Bucket="corpus", Key=f"clean/manifests/{name}.json")["Body"].read())
        assert manifest["samples"] == 6 and manifest["complete"]
        assert manifest["policy"] == "drop"  # the default: a flagged sample goes to quarantine, not replaced
        keys = [s.key for s in read_samples(client.get_object(Bucket="corpus", Key=f"clean/shards/{name}.tar")["Body"].read())]
        passed = {r["key"] for r in local.to_pylist() if r["verdict"] == "clean" or r["status"] == "error"}  # the rest: quarantine
        assert keys == [s.key for s in shards[i] if s.key in passed]
    run = client.get_object(Bucket="corpus", Key="clean/run.json")["Body"].read().decode()
    assert "disillusion-test-secret" not in run and "disillusion-test-key" not in run  # no credentials written
