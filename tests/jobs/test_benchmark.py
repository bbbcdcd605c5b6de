import json

import pytest

from jobs.cli import main


def test_benchmark_measures_every_stage_and_prints_a_rerunnable_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--sections", "models", "--samples", "8", "--n", "2", "--batch-size", "4", "--reconstructors", "vae,ae",
                 "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    stages = [(r["stage"], r["reconstructor"]) for r in report["rows"]]
    assert stages == [("embed", "-"), ("reconstruct x2", "vae"), ("consensus (off)", "vae"), ("consensus (certain)", "vae"),
                      ("reconstruct x2", "ae"), ("consensus (off)", "ae"), ("consensus (certain)", "ae")]
    for row in report["rows"]:
        assert row["samples"] == 8 and row["seconds"] > 0 and row["samples_per_second"] > 0 and row["peak_rss_mb"] > 0
    assert report["command"].startswith("disillusion benchmark --preset demo --sections models --samples 8 --n 2 --batch-size 4")
    printed = capsys.readouterr().out
    assert report["command"] in printed and "| consensus (certain) | ae | 8 |" in printed


def test_attack_section_times_a_step_chunked_and_whole_for_each_reconstructor(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--sections", "attack", "--attack-images", "3", "--eot", "12", "--reconstructors", "vae,ae",
                 "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = [(r["stage"], r["reconstructor"], r["settings"]["decode_batch_size"], r["samples"]) for r in report["attack"]]
    assert rows == [("attack step", "vae", 32, 3), ("attack step", "vae", 36, 3), ("attack step", "ae", 32, 3), ("attack step", "ae", 36, 3)]
    assert all(r["seconds"] > 0 for r in report["attack"])
    assert "--sections attack" in report["command"] and "--attack-images 3 --eot 12" in report["command"]
    assert "| ae | 36 |" in capsys.readouterr().out


@pytest.mark.slow
def test_ray_and_early_exit_sections_report_what_the_issue_asks_for(tmp_path, ray_cluster):
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--quick", "--sections", "geometry,pipeline,early-exit", "--n", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    geometry = report["geometry"]
    assert geometry["fixed"]["samples"] == geometry["varied"]["samples"] == 24
    assert geometry["varied"]["input_mb"] > geometry["fixed"]["input_mb"]  # the same images, stored larger
    assert 0 < geometry["varied"]["batches"]["fill"] <= 1 and geometry["varied_over_fixed"] > 0
    pipeline = report["pipeline"]
    assert pipeline["10x"]["samples"] == 10 * pipeline["1x"]["samples"] == pipeline["bare"]["samples"]
    assert pipeline["10x, small shards"]["shard_count"] > pipeline["10x"]["shard_count"]
    assert pipeline["1x"]["peak_memory_mb"] > 100 and pipeline["memory_10x_over_1x"] > 0  # every Ray process counted
    assert set(pipeline["driver"]) == {"steady_cpu_seconds_per_1000_samples", "cpu_seconds_per_1000_samples_10x_minus_1x",
                                       "startup_cpu_seconds", "core_share_while_running", "cpu_seconds_per_shard"}
    assert pipeline["driver"]["steady_cpu_seconds_per_1000_samples"] > 0  # measured once the first of ten shards is out
    rules = [(r["mode"], r["alpha"]) for r in report["early_exit"]]
    assert rules[0] == ("off", None) and ("certain", None) in rules
    for row in report["early_exit"]:
        assert row["mean_draws"] <= 4 and 0 <= row["identical_verdicts"] <= 1
