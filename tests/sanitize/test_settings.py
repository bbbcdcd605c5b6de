import json

import pytest

from pipeline.models.registry import RECONSTRUCTORS
from pipeline.sanitize.config import SETTINGS, SanitizeConfig
from pipeline.settings import to_yaml


def test_every_setting_round_trips_through_yaml_and_json(tmp_path):
    config = SanitizeConfig.resolve(n=6, early_exit="certain", max_drift=0.25, precision="float32", compile=True, on_illusion="drop",
                                    labels=["cat", "dog"], template="an image of a {}.", latent_noise=0.5, work_size=48)
    for name, text in (("c.yaml", to_yaml(config.to_json())), ("c.json", json.dumps(config.to_json()))):
        (tmp_path / name).write_text(text)
        assert SanitizeConfig.resolve(SETTINGS.read_file(str(tmp_path / name))) == config


def test_a_run_record_is_a_config(tmp_path):
    config = SanitizeConfig.resolve(n=3, seed=7)
    (tmp_path / "run.json").write_text(json.dumps({"status": "finished", "config": config.to_json(), "summary": {}}))
    assert SanitizeConfig.resolve(SETTINGS.read_file(str(tmp_path / "run.json"))) == config


def test_keys_take_dashes_or_underscores_and_values_are_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_drift: 0.3\nearly-exit: 'off'\nn: '5'\n")
    assert SETTINGS.read_file(str(path)) == {"max_drift": 0.3, "early_exit": "off", "n": 5}
    for text, message in (("n: many\n", "n must be a whole number"), ("n: 2.5\n", "n must be a whole number"),
                          ("early-exit: sometimes\n", "early-exit must be one of"), ("compile: maybe\n", "compile must be true or false"),
                          ("nn: 3\n", "unknown setting"), ("- 1\n", "expected a mapping"), ("a: [\n", "not a YAML")):
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            SETTINGS.read_file(str(path))


def test_labels_come_as_a_list_or_a_file(tmp_path):
    (tmp_path / "labels.txt").write_text("# animals\ncat\ndog\n")
    assert SanitizeConfig.resolve(labels=str(tmp_path / "labels.txt")).label_bank().labels == ["cat", "dog"]
    assert SanitizeConfig.resolve(labels=["cat", "dog"]).models.labels == ("cat", "dog")


def test_each_reconstructor_option_comes_from_the_registry_table():
    options = {s.name for s in SETTINGS if s.optional}
    assert {name for kind in RECONSTRUCTORS.values() for name in kind.options} <= options
    assert SanitizeConfig.resolve(strength=0.2).models.reconstructor_options == {"strength": 0.2}
