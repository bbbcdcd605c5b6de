import json

from PIL import Image

from jobs.cli import main
from pipeline.frontier import wilson


def test_wilson_interval():
    low, high = wilson(0, 40)
    assert low == 0.0 and 0.08 < high < 0.09
    low, high = wilson(20, 40)
    assert low < 0.5 < high and abs((low + high) / 2 - 0.5) < 1e-9


def test_frontier_recalibrates_each_point_and_reports_what_reaches_downstream(tmp_path):
    out, md, png = tmp_path / "f.json", tmp_path / "f.md", tmp_path / "f.png"
    code = main(["frontier", "--vae", "0,1.5", "--ae", "", "--dm", "", "--n", "3", "--limit", "8", "--attack-limit", "4",
                 "--calibrate-on", "sample", "--calibration-limit", "20", "--encodings", "png,jpeg", "--steps", "3", "--detect-steps", "4", "--eot", "2", "--sanity",
                 "--device", "cpu", "--json", str(out), "--markdown", str(md), "--plot", str(png)])
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
        ("eps", 4 / 255), ("eps", 16 / 255), ("eps", 64 / 255), ("steps", 1), ("steps", 4), ("steps", 8), ("eot", 1), ("eot", 2), ("eot", 4)]
    assert "| eps | 64/255 |" in md.read_text()
