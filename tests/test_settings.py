from dataclasses import dataclass, field

import pytest

from pipeline.settings import Setting, SettingsTable


@dataclass(frozen=True)
class Inner:
    depth: float = field(default=0.5, metadata={"help": "how deep", "choices": (0.5, 1.0)})
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    name: str = field(default="a", metadata={"help": "a name"})
    inner: Inner = Inner()
    internal: int = 0  # no help: not a setting


TABLE = SettingsTable(Record, [Setting("extra_option", ("inner", "options"), "extra_option", int, "an option", optional=True)],
                      records=("provenance",))


def test_a_table_comes_from_any_record_and_round_trips_it(tmp_path):
    assert [s.key for s in TABLE] == ["name", "depth", "extra-option"]
    nested = TABLE.nest({"name": "b", "depth": "1.0", "extra-option": "3"})
    record = Record(**{**nested, "inner": Inner(**nested["inner"])})
    assert record == Record("b", Inner(1.0, {"extra_option": 3}))
    assert TABLE.flatten(record) == {"name": "b", "depth": 1.0, "extra-option": 3}
    assert TABLE.flatten(Record()) == {"name": "a", "depth": 0.5}  # an optional entry only when set
    (tmp_path / "s.yaml").write_text("name: c\nprovenance: {by: hand}\n")
    assert TABLE.read_file(str(tmp_path / "s.yaml")) == {"name": "c"}


def test_values_are_checked_and_names_are_unique():
    with pytest.raises(ValueError, match="depth must be one of"):
        TABLE.normalise({"depth": 2.0})
    with pytest.raises(ValueError, match="unknown setting"):
        TABLE.normalise({"internal": 1})
    with pytest.raises(ValueError, match="unique"):
        SettingsTable(Record, [Setting("name", (), "name", str, "again")])
