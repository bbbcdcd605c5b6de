import argparse
import json

from jobs.cli import main
from jobs.sanitize import add_arguments, build_config
from tests.jobs.test_attack import make_shard


def test_calibrate_writes_a_config_that_sanitize_reads(tmp_path, capsys):
    make_shard(tmp_path / "clean" / "shard-000000.tar", count=20)
    out = tmp_path / "thresholds.json"
    code = main(["calibrate", "--input", str(tmp_path / "clean"), "--limit", "20", "--n", "3", "--target-fpr", "0.1", "--json", str(out)])
    assert code == 0
    config = json.loads(out.read_text())
    assert config["calibration"]["samples"] == 20 and config["calibration"]["method"] == "drift"
    assert config["calibration"]["false_positive_rate"] <= 0.1
    assert config["max_drift"] == config["flip_min_drift"] > 0

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--input", "x", "--output", "y", "--config", str(out), "--min-agreement", "0.7"])
    policy = build_config(args, "purify").verdict_policy()
    assert policy.max_drift == config["max_drift"] and policy.min_agreement == 0.7  # flags override the file
