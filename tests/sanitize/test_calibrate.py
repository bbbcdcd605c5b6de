import gzip

import pytest

from pipeline.io.storage import Storage
from pipeline.presets import get_preset
from pipeline.sanitize.calibrate import CALIBRATE_SETTINGS, CalibrateSettings, calibrate, shard_groups
from tests.corpora import make_shard


def test_settings_refuse_what_cannot_run_together():
    with pytest.raises(ValueError, match="with --input"):
        CalibrateSettings(unlabelled=True)
    with pytest.raises(ValueError, match="with --check"):
        CalibrateSettings(config="thresholds.json")
    with pytest.raises(ValueError, match="not both"):
        CalibrateSettings(input="shards/", data="/fashion-mnist")
    assert CALIBRATE_SETTINGS.by_name["method"].choices == ("drift", "votes")


def test_thresholds_come_from_shards_read_as_sanitize_reads_them(tmp_path):
    make_shard(tmp_path / "clean" / "shard-000000.tar", count=12)
    groups = shard_groups(Storage(), str(tmp_path / "clean"), work_size=32, limit=10)
    assert list(groups) == ["png"] and len(groups["png"][0]) == 10 and groups["png"][1][0] == "s000"
    zipped = tmp_path / "zipped" / "shard-000000.tar.gz"
    zipped.parent.mkdir()
    zipped.write_bytes(gzip.compress((tmp_path / "clean" / "shard-000000.tar").read_bytes()))
    assert len(shard_groups(Storage(), str(zipped.parent), work_size=32, limit=10)["png"][0]) == 10
    assert shard_groups(Storage(), str(zipped.parent), work_size=32, limit=10, max_shard_bytes=4096) == {}  # decompresses past the cap: not read
    run = {"n": 3, "early_exit": "off", "alpha": 0.02, "seed": None}
    config = calibrate(CalibrateSettings(input="x", target_fpr=0.1), run, groups, source="x")
    assert config["calibration"]["groups"]["png"]["flagged"] <= 0.1 and config["max_drift"] is not None
    check = calibrate(CalibrateSettings(input="x", check=True), run, groups, source="x")
    assert check["thresholds"] == get_preset("demo").verdict.thresholds() and check["groups"]["png"]["samples"] == 10  # the preset's
