"""The reader's fuzzer: its reproducers as regression tests, and a short seeded campaign."""

import pyarrow.parquet as pq
import pytest

from pipeline.io.sandbox import Budgets
from pipeline.research.fuzz.campaign import POLICY_ROTATION, RecordingSandbox, ShardCheck, run_campaign
from pipeline.research.fuzz.mutations import fuzz_shard, valid_shard
from pipeline.research.fuzz.reproducers import REPRODUCERS
from pipeline.sanitize.config import SanitizeConfig
from pipeline.sanitize.outputs import POLICIES


@pytest.fixture(scope="module")
def purifier():
    return SanitizeConfig.resolve(preset="demo", n=2, early_exit="off").build_purifier()


@pytest.mark.parametrize("name", list(REPRODUCERS))
def test_every_reproducer_passes_the_oracle(name, purifier, tmp_path):
    case = REPRODUCERS[name]
    check = ShardCheck(purifier, RecordingSandbox(Budgets()), str(tmp_path))
    outcome = check(0, case.build(), [name])  # seed 0: the drop policy, so outputs are checked too
    assert outcome.status == "ok", outcome.detail
    rows = pq.read_table(tmp_path / "out" / "verdicts" / "fuzz-000000.parquet").to_pylist()
    assert [r["key_bytes"] for r in rows] == case.keys
    assert {r["key_bytes"] for r in rows if r["status"] == "error"} == case.errors
    if case.problem:
        assert any(case.problem in p for p in outcome.problems), outcome.problems
    import json

    manifest = json.loads((tmp_path / "out" / "manifests" / "fuzz-000000.json").read_text())
    assert manifest["complete"] is case.complete


def test_a_seeded_campaign_finds_no_abort_hang_or_mismatch(purifier, tmp_path):
    summary = run_campaign(150, seed=1000, workdir=str(tmp_path), purifier=purifier, timeout=60)
    assert summary["statuses"] == {"ok": 150, "abort": 0, "hang": 0, "accounting": 0, "memory": 0}, summary["failures"]
    assert summary["shards_with_problems"] > 20 and summary["error_rows"] > 20  # the mutations do reach the reader


def test_the_fuzzer_is_deterministic_and_its_seed_shards_read_back_whole(purifier, tmp_path):
    assert fuzz_shard(7) == fuzz_shard(7) and fuzz_shard(7) != fuzz_shard(8)
    check = ShardCheck(purifier, RecordingSandbox(Budgets()), str(tmp_path))
    outcome = check(4, valid_shard(4), [])
    assert outcome.status == "ok" and outcome.errors == 0 and not outcome.problems and outcome.samples >= 1


def test_the_oracle_catches_a_reader_that_loses_samples(purifier, tmp_path, monkeypatch):
    """The oracle can fail: a reader that drops the last sample is an accounting failure."""
    import pipeline.sanitize.shard as shard_module

    real = shard_module.parse

    def lossy(*args, **kwargs):
        tar, samples, problems = real(*args, **kwargs)
        return tar, samples[:-1], problems

    monkeypatch.setattr(shard_module, "parse", lossy)
    check = ShardCheck(purifier, RecordingSandbox(Budgets()), str(tmp_path))
    assert check(0, valid_shard(3), []).status == "accounting"


def test_fuzzed_shards_through_disillusion_audit_twice(tmp_path):
    """The product's whole path, Ray included: every run ends (exit 0 or 1, no traceback), every
    shard has a manifest matching its verdict table, and the rerun redoes only incomplete shards."""
    from pipeline.research.fuzz.campaign import run_cli_campaign

    summary = run_cli_campaign(12, seed=2000, workdir=str(tmp_path), timeout=600)
    assert summary["failures"] == [] and summary["manifests"] == 12
    first, rerun = summary["runs"]
    assert first["exit_code"] in (0, 1) and rerun["exit_code"] in (0, 1)


def test_the_campaign_rotates_through_every_policy_and_audit():
    assert sorted(p for p in POLICY_ROTATION if p) == sorted(POLICIES) and None in POLICY_ROTATION
