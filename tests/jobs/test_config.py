import json

import yaml

from jobs.cli import build_parser, main
from pipeline.distributed.runner import RunRecord
from pipeline.io.storage import Storage
from pipeline.presets import get_preset
from pipeline.sanitize.config import SanitizeConfig
from pipeline.sanitize.config import SETTINGS


def show(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(["config", "show", *argv]) == 0
    return capsys.readouterr().out


def test_every_setting_is_a_flag_of_sanitize_and_config_show():
    parser = build_parser()
    for job in (["sanitize", "--input", "i", "--output", "o"], ["config", "show"]):
        args = parser.parse_args(job)
        for setting in SETTINGS:
            assert hasattr(args, setting.name), setting.key
            assert getattr(args, setting.name) is None  # unset flags never override a config file
    audit = parser.parse_args(["audit", "--input", "i", "--output", "o"])
    assert not hasattr(audit, "on_illusion")


def test_config_show_round_trips_through_yaml_and_flags_override_the_file(tmp_path, capsys):
    first = show(capsys, "--n", "4", "--max-drift", "0.3", "--latent-noise", "0.5", "--compile")
    settings = yaml.safe_load(first)
    assert settings["n"] == 4 and settings["max-drift"] == 0.3 and settings["latent-noise"] == 0.5 and settings["compile"] is True
    assert settings["flip-min-drift"] == 0.0  # changed model options: the uncalibrated default, stated
    shown = yaml.safe_load(show(capsys))  # the preset's own models: its calibrated thresholds
    assert shown["flip-min-drift"] == get_preset("demo").verdict.flip_min_drift and shown["on-uncertain"] == "drop"
    (tmp_path / "run.yaml").write_text(first)
    assert show(capsys, "--config", str(tmp_path / "run.yaml")) == first
    changed = yaml.safe_load(show(capsys, "--config", str(tmp_path / "run.yaml"), "--n", "6", "--no-compile"))
    assert changed == {**settings, "n": 6, "compile": False}
    as_json = json.loads(show(capsys, "--config", str(tmp_path / "run.yaml"), "--json"))
    assert as_json == settings


def test_a_run_is_repeated_from_its_own_record(tmp_path, capsys):
    config = SanitizeConfig.resolve(n=3, seed=5, early_exit="certain", on_illusion="drop")
    RunRecord(Storage(), str(tmp_path), config, config.noise_key()).write({"samples": 0}, status="finished")
    record = json.loads((tmp_path / "run.json").read_text())
    assert SanitizeConfig.resolve(record["config"]) == config
    shown = yaml.safe_load(show(capsys, "--config", str(tmp_path / "run.json")))
    assert SanitizeConfig.resolve(shown) == config.resolved()


def test_config_show_writes_out_what_the_preset_resolves_to_and_reads_back_to_the_same_run(tmp_path, capsys):
    demo = get_preset("demo")
    text = show(capsys, "--device", "cpu")
    assert text.startswith("# preset demo") and "null" not in "".join(
        line for line in text.splitlines() if line.split(":")[0] in ("reconstructor", "encoder", "witness", "labels", "work-size", "batch-size"))
    shown = yaml.safe_load(text)
    assert shown["reconstructor"] == demo.reconstructors["vae"] and shown["encoder"] == demo.encoder and shown["witness"] == demo.witness
    assert shown["labels"] == list(demo.labels) and shown["work-size"] == demo.work_size
    assert shown["batch-size"] == 16 and shown["decode-batch-size"] == 32 and shown["precision"] == "float32"
    assert shown["latent-noise"] == demo.reconstructor_options["vae"]["latent_noise"]
    assert shown["max-witness-gap"] == demo.verdict.max_witness_gap and shown["max-drift"] == demo.verdict.max_drift
    (tmp_path / "shown.yaml").write_text(text)
    again = SanitizeConfig.resolve(SETTINGS.read_file(str(tmp_path / "shown.yaml")))
    assert again == SanitizeConfig.resolve().resolved("cpu")
    # The same models judge: the record names the preset's own weights.
    first, second = SanitizeConfig.resolve().build_purifier(), again.build_purifier()
    for part in ("reconstructor", "encoder", "witness"):
        assert getattr(first, part).fingerprint == getattr(second, part).fingerprint
    for preset in ("imagebind", "clip-l14"):  # nothing is loaded to resolve them
        resolved = SanitizeConfig.resolve(preset=preset).resolved("cuda")
        assert SanitizeConfig.resolve(resolved.to_json()) == resolved and resolved.runtime.precision == "bfloat16"


def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("n: 3\nnumber-of-draws: 10\n")
    assert main(["config", "show", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown setting(s) number-of-draws" in capsys.readouterr().err
