"""`disillusion demo`, the README's main job, end to end on a small corpus."""

import json

from jobs.cli import main
from tests.browser import render_in_chromium


def test_demo_detects_planted_illusions_and_reports_what_reaches_downstream(tmp_path, ray_cluster, capsys):
    assert main(["demo", "--output", str(tmp_path), "--samples", "40", "--shard-size", "20", "--steps", "40", "--n", "4"]) == 0
    report = json.loads((tmp_path / "demo_report.json").read_text())
    assert report["samples"] == 40 and 8 <= report["illusions"] <= 16  # a seeded 30%
    assert report["true_positive_rate"] >= 0.75 and report["asr_before"] >= 0.75
    assert report["asr_downstream"] <= report["asr_before"] - 0.5  # most planted illusions never reach downstream
    out = capsys.readouterr().out
    assert "reaching downstream under purify" in out
    assert "shards, " in out and "left]" in out  # progress: shards done of total, samples/s, time left

    # The run's report.html: one page that a headless browser renders without an error or a request out.
    page = tmp_path / "sanitized" / "report.html"
    assert f"report: {page}" in out
    seen = render_in_chromium(str(page), str(tmp_path / "report.png"))
    assert seen["errors"] == [] and all(url.startswith(("file://", "data:")) for url in seen["requests"])
    assert seen["images"] == seen["loaded_images"] > 0
