"""The hostile corpus through `audit` and `sanitize` on a local Ray cluster, from local disk and from
S3 (SeaweedFS): the run never stops, every readable key has exactly one verdict row, each problem is
named in its manifest and kept in the run's record, and nothing is written outside the output."""

import io
import json
import os

import pyarrow.parquet as pq

from pipeline.distributed.runner import run_corpus
from pipeline.sanitize.config import SanitizeConfig
from tests.hostile import EXPECTED, TINY_CAP, hostile_corpus

INCOMPLETE = sorted(name for name, facts in EXPECTED.items() if not facts["complete"])


def config(policy, **extra):
    return SanitizeConfig.resolve(preset="demo", n=2, batch_size=8, on_illusion=policy, max_shard_bytes=TINY_CAP, **extra)


def check_outputs(read, list_outputs, summary):
    """read(relative path) -> bytes; list_outputs() -> relative paths of every output."""
    assert summary["processed"] == len(EXPECTED)
    assert sorted(summary["problems"]) == sorted(n for n, facts in EXPECTED.items() if facts["problems"])
    for name, facts in EXPECTED.items():
        manifest = json.loads(read(f"manifests/{name}.json"))
        assert manifest["complete"] == facts["complete"]
        assert [any(words in p for p in manifest["problems"]) for words in facts["problems"]] == [True] * len(facts["problems"])
        table = pq.read_table(io.BytesIO(read(f"verdicts/{name}.parquet"))).to_pylist()
        assert [r["key_bytes"] for r in table] == facts["keys"]
        assert {r["key_bytes"] for r in table if r["status"] == "error"} == facts["errors"]
    runs = [p for p in list_outputs() if p.startswith("runs/")]
    assert len(runs) == 1 and json.loads(read(runs[0]))["summary"]["problems"] == summary["problems"]
    allowed = ("manifests/", "verdicts/", "shards/", "quarantine/", "runs/", "run.json")
    assert all(p.startswith(allowed) for p in list_outputs())


def files_under(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def test_local_sanitize_and_audit_and_a_rerun_retries_only_incomplete_shards(tmp_path, ray_cluster):
    for name, data in hostile_corpus().items():
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(data)
    inputs = files_under(tmp_path / "in")
    for policy, output in (("purify", tmp_path / "clean"), (None, tmp_path / "audit")):
        summary = run_corpus(config(policy), str(tmp_path / "in"), str(output), echo=lambda line: None)
        check_outputs(lambda path, o=output: (o / path).read_bytes(), lambda o=output: files_under(o), summary)
    assert not (tmp_path / "audit" / "shards").exists()
    assert files_under(tmp_path / "in") == inputs and sorted(os.listdir(tmp_path)) == ["audit", "clean", "in"]

    odd = os.fsdecode(b"caf\xe9-\xff")  # a shard file name that is not valid UTF-8, added before the rerun
    (tmp_path / "in" / f"{odd}.tar").write_bytes(hostile_corpus()["gz.tar.gz"])
    again = run_corpus(config("purify"), str(tmp_path / "in"), str(tmp_path / "clean"), echo=lambda line: None)
    assert again["skipped"] == len(EXPECTED) - len(INCOMPLETE) and again["processed"] == len(INCOMPLETE) + 1
    assert sorted(again["problems"]) == INCOMPLETE
    table = pq.read_table(io.BytesIO((tmp_path / "clean" / "verdicts" / f"{odd}.parquet").read_bytes())).to_pylist()
    assert [r["key"] for r in table] == ["g-0", "g-1"] and table[0]["shard"] == "caf\\xe9-\\xff"
    records = sorted(os.listdir(tmp_path / "clean" / "runs"))
    assert len(records) == 2  # both runs' problems stay on record
    assert "mixed" in json.loads((tmp_path / "clean" / "runs" / records[0]).read_text())["summary"]["problems"]


def test_s3_sanitize_and_audit(tmp_path, seaweed, ray_cluster):
    client = seaweed.client()
    client.create_bucket(Bucket="hostile")
    for name, data in hostile_corpus().items():
        client.put_object(Bucket="hostile", Key=f"raw/{name}", Body=data)

    def keys(prefix):
        return sorted(item["Key"][len(prefix):] for item in client.list_objects_v2(Bucket="hostile", Prefix=prefix).get("Contents", []))

    for policy, output in (("purify", "clean"), (None, "audit")):
        summary = run_corpus(config(policy, s3_endpoint=seaweed.endpoint), "s3://hostile/raw", f"s3://hostile/{output}", echo=lambda line: None)
        check_outputs(lambda path, o=output: client.get_object(Bucket="hostile", Key=f"{o}/{path}")["Body"].read(),
                      lambda o=output: keys(f"{o}/"), summary)
    assert sorted(set(k.split("/")[0] for k in keys(""))) == ["audit", "clean", "raw"]
    assert not [k for k in keys("audit/") if k.startswith("shards/")]
