import json
import re

import pytest
from PIL import Image

from jobs.cli import main
from pipeline.research.frontier import wilson


def test_wilson_interval():
    low, high = wilson(0, 40)
    assert low == 0.0 and 0.08 < high < 0.09
    low, high = wilson(20, 40)
    assert low < 0.5 < high and abs((low + high) / 2 - 0.5) < 1e-9


@pytest.fixture(scope="module")
def frontier_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("frontier")
    out, md, png = tmp_path / "f.json", tmp_path / "f.md", tmp_path / "f.png"
    code = main(["frontier", "--vae", "0,1.5", "--ae", "", "--dm", "", "--n", "3", "--limit", "8", "--attack-limit", "4",
                 "--calibrate-on", "sample", "--calibration-limit", "20", "--encodings", "png,jpeg", "--steps", "3", "--detect-steps", "4", "--eot", "2", "--sanity",
                 "--device", "cpu", "--json", str(out), "--markdown", str(md), "--plot", str(png)])
    return code, out, md, png


def test_frontier_recalibrates_each_point_and_reports_what_reaches_downstream(frontier_run):
    code, out, md, png = frontier_run
    assert code == 0
    report = json.loads(out.read_text())
    assert [(p["kind"], p["value"], p["n"]) for p in report["points"]] == [("vae", 0.0, 3), ("vae", 1.5, 3)]
    assert report["config"]["complete"] and report["config"]["device_name"] == "cpu"
    for point in report["points"]:
        assert set(point["metrics"]) == {"clean", "illusion", "detect-adaptive"}
        attacked = point["metrics"]["detect-adaptive"]
        assert attacked["images"] == 4 and attacked["target_drop"] <= attacked["target_keep"]
        low, high = attacked["target_purify_ci"]
        assert low <= attacked["target_purify"] <= high
        assert point["calibration_fpr"] <= 0.03 + 1e-9 and point["thresholds"]["max_drift"] is not None  # on PNG and on JPEG
    assert report["points"][0]["thresholds"] != report["points"][1]["thresholds"]  # recalibrated per point
    assert md.read_text().count("| vae latent_noise=") == 2
    assert Image.open(png).size[0] > 0
    assert [(e["knob"], e["value"]) for e in report["sanity"]] == [
        ("eps", 4 / 255), ("eps", 16 / 255), ("eps", 64 / 255), ("steps", 1), ("steps", 4), ("steps", 8), ("eot", 1), ("eot", 2), ("eot", 4),
        ("restarts", 5)]
    assert "| eps | 64/255 |" in md.read_text()


def test_frontier_joins_saved_runs_that_share_the_attacker(frontier_run, tmp_path, capsys):
    _, out, _, _ = frontier_run
    report = json.loads(out.read_text())
    # As if each point had been measured on its own machine, with a different number of attacked images.
    parts = []
    for index, point in enumerate(report["points"]):
        config = {**report["config"], "attack_limit": 4 + index, "device_name": f"machine {index}"}
        parts.append(tmp_path / f"part{index}.json")
        parts[-1].write_text(json.dumps({"config": config, "points": [point], "sanity": []}))
    joined, md, png = tmp_path / "joined.json", tmp_path / "joined.md", tmp_path / "joined.png"
    assert main(["frontier", "--from", *map(str, parts), "--json", str(joined), "--markdown", str(md), "--plot", str(png)]) == 0
    result = json.loads(joined.read_text())
    assert [{k: v for k, v in p.items() if k != "source"} for p in result["points"]] == report["points"]
    assert [p["source"] for p in result["points"]] == list(map(str, parts))
    assert [s["device_name"] for s in result["config"]["sources"]] == ["machine 0", "machine 1"]
    assert result["config"]["detect_steps"] == 4 and result["config"]["complete"]
    assert md.read_text().count("| vae latent_noise=") == 2 and Image.open(png).size[0] > 0

    stronger = json.loads(parts[1].read_text())
    stronger["config"]["eot"] = 16
    parts[1].write_text(json.dumps(stronger))
    capsys.readouterr()
    assert main(["frontier", "--from", *map(str, parts)]) == 2
    assert re.search(r"eot: 2 in \S*part0.json, 16 in \S*part1.json", capsys.readouterr().err)
    again = tmp_path / "again.json"
    again.write_text(parts[0].read_text())
    assert main(["frontier", "--from", str(parts[0]), str(again)]) == 2
    assert "vae latent_noise=0, N=3 is in both" in capsys.readouterr().err


def test_frontier_with_the_witness_runs_the_relaxed_suite_on_other_images_than_it_chose_its_loss_on(tmp_path):
    out, md = tmp_path / "w.json", tmp_path / "w.md"
    common = ["frontier", "--vae", "0", "--ae", "", "--dm", "", "--n", "3", "--witness", "--calibrate-on", "sample", "--calibration-limit", "20",
              "--steps", "3", "--detect-steps", "3", "--eot", "2", "--suite-steps", "6", "--suite-restarts", "2", "--suite-queries", "5",
              "--device", "cpu"]
    # The selection images may not overlap the reported ones.
    assert main([*common, "--offset", "0", "--limit", "6", "--select-offset", "4", "--select-limit", "4"]) == 2
    assert main([*common, "--offset", "10", "--limit", "6", "--attack-limit", "4", "--select-offset", "0", "--select-limit", "4",
                 "--on-uncertain", "drop", "--suite-sanity", "--json", str(out), "--markdown", str(md)]) == 0
    report = json.loads(out.read_text())
    (point,) = report["points"]
    assert point["thresholds"]["max_witness_gap"] is not None  # calibrated with the drift
    relaxed = point["metrics"]["witness-relaxed"]
    assert relaxed["images"] == 4 and relaxed["chosen"]["images"] == 4 and set(relaxed["per_attack"]) == {"apgd", "square"}
    assert max(relaxed["per_attack"].values()) <= relaxed["passed"] <= 1
    clean = point["metrics"]["clean"]
    assert clean["uncertain_target"] == clean["uncertain_true"] == 0  # dropped: uncertain samples deliver nothing
    knobs = [(e["knob"], e["value"]) for e in report["sanity"]]
    assert knobs == [("relaxed eps", v) for v in sorted({4 / 255, 8 / 255, 16 / 255, 32 / 255, 64 / 255})] + [
        ("relaxed steps", 1), ("relaxed steps", 12), ("relaxed restarts", 5)]
    assert "| relaxed eps | 64/255 |" in md.read_text() and "relaxed suite vs the witness test" in md.read_text()
