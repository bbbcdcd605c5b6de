import argparse
import json
import random

import pytest
import torch

from jobs.cli import main
from jobs.options import build_config
from jobs.sanitize import add_arguments
from pipeline.io.shards import Sample, write_samples
from pipeline.io.storage import Storage
from pipeline.research.data.encodings import as_stored, at_working_size
from pipeline.research.data.fashion_mnist import load_sample
from tests.corpora import make_shard


def mixed_shard(path, count=24):
    """Clean bundled images, half stored as PNG, half as JPEG of another size and quality."""
    images, _ = load_sample().tensors(slice(100, 100 + count))
    rng = random.Random(0)
    samples = [Sample(f"m{i:03d}", {("jpg" if i % 2 else "png"): as_stored(image, "jpeg" if i % 2 else "png", rng)})
               for i, image in enumerate(images)]
    Storage().write_bytes(str(path), write_samples(samples))


def test_calibrate_writes_a_config_that_sanitize_reads(tmp_path, capsys):
    make_shard(tmp_path / "clean" / "shard-000000.tar", count=20)
    out = tmp_path / "thresholds.json"
    code = main(["calibrate", "--input", str(tmp_path / "clean"), "--limit", "20", "--n", "3", "--target-fpr", "0.1", "--json", str(out)])
    assert code == 0
    config = json.loads(out.read_text())
    assert config["calibration"]["groups"]["png"]["samples"] == 20 and config["calibration"]["method"] == "drift"
    assert config["calibration"]["groups"]["png"]["flagged"] <= 0.1
    assert config["max_drift"] == config["flip_min_drift"] > 0

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--input", "x", "--output", "y", "--config", str(out), "--min-agreement", "0.7"])
    policy = build_config(args).consensus.verdict
    assert policy.max_drift == config["max_drift"] and policy.min_agreement == 0.7  # flags override the file


def test_thresholds_hold_on_every_encoding_and_check_reports_them(tmp_path):
    mixed_shard(tmp_path / "clean" / "shard-000000.tar")
    out, check = tmp_path / "thresholds.json", tmp_path / "check.json"
    assert main(["calibrate", "--input", str(tmp_path / "clean"), "--n", "3", "--target-fpr", "0.1", "--json", str(out)]) == 0
    groups = json.loads(out.read_text())["calibration"]["groups"]
    assert set(groups) == {"png", "jpeg"} and all(g["samples"] == 12 and g["flagged"] <= 0.1 for g in groups.values())
    assert main(["calibrate", "--check", "--config", str(out), "--input", str(tmp_path / "clean"), "--n", "3", "--json", str(check)]) == 0
    report = json.loads(check.read_text())
    assert {name: g["flagged"] for name, g in report["groups"].items()} == {name: g["flagged"] for name, g in groups.items()}


def test_unlabelled_thresholds_come_from_the_corpus_and_flag_a_bounded_share_of_it(tmp_path):
    mixed_shard(tmp_path / "corpus" / "shard-000000.tar")
    out = tmp_path / "thresholds.json"
    assert main(["calibrate", "--unlabelled", "--input", str(tmp_path / "corpus"), "--n", "3", "--target-fpr", "0.1",
                 "--assume-attacked", "0.1", "--json", str(out)]) == 0
    config = json.loads(out.read_text())
    assert "unlabelled" in config["calibration"]["method"] and config["calibration"]["assume_attacked"] == 0.1
    assert 0 < config["max_drift"] < 2 and config["max_witness_gap"] is not None  # the preset's witness tests too
    # 0.1 + 0.1 x 0.9 = 0.19 of the 24 samples, pooled over both groups: at most 4 flagged.
    assert sum(g["flagged"] * g["samples"] for g in config["calibration"]["groups"].values()) <= 4 + 1e-9
    assert main(["calibrate", "--unlabelled", "--n", "3"]) == 2  # needs a corpus
    assert main(["calibrate", "--unlabelled", "--input", str(tmp_path / "corpus"), "--assume-attacked", "1"]) == 2


def test_stored_encodings_go_through_the_sanitize_decoder():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    rng = random.Random(1)
    assert torch.allclose(at_working_size(as_stored(image, "png", rng), 32), image, atol=1 / 255)
    jpeg = as_stored(image, "jpeg", rng)
    assert jpeg[:2] == b"\xff\xd8" and at_working_size(jpeg, 32).shape == (3, 32, 32)
    # The scraper pipelines: every one decodes to the working size; the formats are what they say.
    for encoding, magic in (("jpeg-any", b"\xff\xd8"), ("upscaled", b"\xff\xd8"), ("webp", b"RIFF")):
        stored = [as_stored(image, encoding, rng) for _ in range(5)]
        assert all(data.startswith(magic) and at_working_size(data, 32).shape == (3, 32, 32) for data in stored)
        assert len(set(stored)) == 5  # each copy drawn afresh (size, filter, quality)
    with pytest.raises(ValueError, match="encoding"):
        as_stored(image, "gif", rng)


def test_calibrating_other_models_writes_them_into_the_config(tmp_path):
    from pipeline.presets import DEMO_DIR

    make_shard(tmp_path / "clean" / "shard-000000.tar", count=12)
    vae, dm = tmp_path / "vae.json", tmp_path / "dm.json"
    common = ["calibrate", "--input", str(tmp_path / "clean"), "--n", "3", "--target-fpr", "0.1"]
    assert main([*common, "--json", str(vae)]) == 0
    assert main([*common, "--reconstructor", f"dm:{DEMO_DIR}/dm", "--strength", "0.1", "--denoise-steps", "2", "--json", str(dm)]) == 0
    vae_config, dm_config = json.loads(vae.read_text()), json.loads(dm.read_text())
    assert "reconstructor" not in vae_config and dm_config["strength"] == 0.1 and dm_config["denoise_steps"] == 2
    assert dm_config["max_drift"] != vae_config["max_drift"]  # thresholds belong to the models that ran
    # A check of the saved config runs the models it was calibrated with, not the preset's: the same images give the same rates.
    check = tmp_path / "check.json"
    assert main(["calibrate", "--check", "--config", str(dm), "--input", str(tmp_path / "clean"), "--json", str(check)]) == 0
    report = json.loads(check.read_text())
    assert report["settings"]["reconstructor"] == f"dm:{DEMO_DIR}/dm" and report["settings"]["n"] == 3
    assert report["groups"]["png"]["flagged"] == dm_config["calibration"]["groups"]["png"]["flagged"]
    assert report["thresholds"]["max_drift"] == dm_config["max_drift"]
    assert main(["calibrate", "--config", str(dm), "--input", str(tmp_path / "clean")]) == 2  # --config is for --check

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = build_config(parser.parse_args(["--input", "x", "--output", "y", "--config", str(dm)]))
    assert config.models.reconstructor == f"dm:{DEMO_DIR}/dm" and config.models.reconstructor_options == {"strength": 0.1, "denoise_steps": 2}
    assert config.consensus.verdict.max_drift == dm_config["max_drift"]
