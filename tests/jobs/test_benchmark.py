import json

from jobs.cli import main


def test_benchmark_measures_every_stage_and_prints_a_rerunnable_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--samples", "8", "--n", "2", "--batch-size", "4", "--reconstructors", "vae,ae",
                 "--pipeline-samples", "0", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    stages = [(r["stage"], r["reconstructor"]) for r in report["rows"]]
    assert stages == [("embed", "-"), ("reconstruct x2", "vae"), ("consensus (off)", "vae"), ("consensus (certain)", "vae"),
                      ("reconstruct x2", "ae"), ("consensus (off)", "ae"), ("consensus (certain)", "ae")]
    for row in report["rows"]:
        assert row["samples"] == 8 and row["seconds"] > 0 and row["samples_per_second"] > 0 and row["peak_rss_mb"] > 0
    assert report["command"].startswith("disillusion benchmark --preset demo --samples 8 --n 2 --batch-size 4")
    printed = capsys.readouterr().out
    assert report["command"] in printed and "| consensus (certain) | ae | 8 |" in printed
