"""A settings engine: one table of settings read from a (nested) dataclass, from which a job's CLI
flags, its config files (`--config FILE.yaml`), `config show` and its run record all come.

A setting is a field of the record (or of a dataclass nested in it) whose metadata has a `help`
text, plus any extra settings the owner adds (for example the reconstructor options of the model
registry, which live in a dict). Its name is the field's name (unique across sections); flags and
config keys spell it with dashes (`--max-drift`, `max-drift:`), and config keys may use underscores
too (`max_drift:`). The engine knows nothing of any one job: `SanitizeConfig` builds its table in
`pipeline/sanitize/config.py`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str  # with underscores
    path: tuple[str, ...]  # the sections above the field: () for a top-level field
    field: str  # the field's own name (or the key in a dict section)
    type: type  # int, float, str, bool, or tuple for a label list
    help: str
    default: Any = None
    choices: tuple | None = None
    metavar: str | None = None
    optional: bool = False  # an entry of a dict section: present only when set

    @property
    def key(self) -> str:
        return self.name.replace("_", "-")

    def coerce(self, value: Any) -> Any:
        """A value from a flag or a config file, as the record holds it; a clear error otherwise."""
        if value is None:
            return None
        if self.type is tuple:
            return _labels(value, self.key)
        try:
            if self.type is bool:
                if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                    return value.lower() in ("true", "yes", "1")
                if not isinstance(value, bool):
                    raise TypeError
                return value
            if self.type in (int, float) and (isinstance(value, bool) or (self.type is int and isinstance(value, float) and not value.is_integer())):
                raise TypeError
            coerced = self.type(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.key} must be {_type_name(self.type)}, not {value!r}") from None
        if self.choices and coerced not in self.choices:
            raise ValueError(f"{self.key} must be one of {', '.join(str(c) for c in self.choices if c)}, not {coerced!r}")
        return coerced


class SettingsTable:
    """The settings of the dataclass `record`, then `extra`, in the order `config show` prints them.
    `records`: keys a config file may carry that are records, not settings (skipped on reading)."""

    def __init__(self, record: type, extra: Iterable[Setting] = (), records: tuple[str, ...] = ()):
        self.record = record
        self.settings = _walk(record, ()) + list(extra)
        self.by_name = {s.name: s for s in self.settings}
        if len(self.by_name) != len(self.settings):
            raise ValueError("setting names must be unique across sections")
        self.records = records

    def __iter__(self):
        return iter(self.settings)

    def command_words(self, record: Any, skip: tuple[str, ...] = ()) -> list[str]:
        """The flags that give `record` again, every setting spelled out (None and false left out)."""
        words = []
        for setting in self.settings:
            value = getattr(record, setting.field)
            if setting.name in skip or value is None or value is False:
                continue
            words += [f"--{setting.key}"] if value is True else [f"--{setting.key}", str(value)]
        return words

    def normalise(self, flat: dict[str, Any], source: str = "settings") -> dict[str, Any]:
        """Dashed or underscored keys -> setting names, values coerced; unknown keys are an error."""
        out, unknown = {}, []
        for key, value in flat.items():
            name = str(key).replace("-", "_")
            if name not in self.by_name:
                unknown.append(str(key))
                continue
            out[name] = self.by_name[name].coerce(value)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))} (see `disillusion config show`)")
        return out

    def nest(self, flat: dict[str, Any]) -> dict[str, Any]:
        """Flat settings -> keyword arguments per section: {"models": {...}, "consensus": {"verdict": {...}}, top-level...}."""
        root: dict[str, Any] = {}
        for name, value in self.normalise(flat).items():
            setting = self.by_name[name]
            if value is None and setting.optional:
                continue
            section = root
            for part in setting.path:
                section = section.setdefault(part, {})
            section[setting.field] = value
        return root

    def flatten(self, record: Any) -> dict[str, Any]:
        """A record -> its flat settings (dashed keys, table order); optional entries only when set."""
        out = {}
        for setting in self.settings:
            value = record
            for part in (*setting.path, setting.field):
                value = value.get(part) if isinstance(value, dict) else getattr(value, part)
            if value is None and setting.optional:
                continue
            out[setting.key] = list(value) if isinstance(value, tuple) else value
        return out

    def read_file(self, path: str) -> dict[str, Any]:
        """Flat settings from a YAML or JSON file: a settings mapping (as `config show` prints it), or
        a run record (run.json, runs/*.json) whose `config` is taken."""
        import yaml  # YAML is a superset of JSON: one parser reads both

        with open(path) as handle:
            try:
                data = yaml.safe_load(handle)
            except yaml.YAMLError as error:
                raise ValueError(f"{path}: not a YAML or JSON file ({error})") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of settings (key: value), found {type(data).__name__}")
        if isinstance(data.get("config"), dict) and "summary" in data:  # a run record
            data = data["config"]
        return self.normalise({k: v for k, v in data.items() if k not in self.records}, source=path)


def _type_name(kind: type) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text", tuple: "a list of labels or a label file"}[kind]


def _labels(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):  # a label file
        from .defense.labels import read_label_file

        labels = tuple(read_label_file(value))
        if not labels:
            raise ValueError(f"{value} holds no labels (one per line; blank lines and # comments are skipped)")
        return labels
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{key} must be a list of labels or a label file, not {value!r}")


def _leaf_type(hint: Any) -> type:
    """int | None -> int; tuple[str, ...] -> tuple."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return _leaf_type(args[0])
    return typing.get_origin(hint) or hint


def _walk(cls: type, path: tuple[str, ...]) -> list[Setting]:
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        kind = _leaf_type(hints[f.name])
        if dataclasses.is_dataclass(kind):
            found += _walk(kind, (*path, f.name))
        elif "help" in f.metadata:
            default = f.default if f.default is not dataclasses.MISSING else None
            found.append(Setting(f.metadata.get("name", f.name), path, f.name, kind, f.metadata["help"], default,
                                 tuple(f.metadata["choices"]) if "choices" in f.metadata else None, f.metadata.get("metavar")))
    return found


def setting(default: Any, help: str, **metadata: Any):
    """A field of a settings record: its default, its help text (what makes it a setting) and any
    other metadata (`choices`, `metavar`, `name` for a flag spelled otherwise, a job's own marks)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def parse_fraction(text: str) -> float:
    """'16/255' or '0.0627' -> a float (epsilons and step sizes are given in 255ths)."""
    if "/" in text:
        numerator, denominator = text.split("/", 1)
        return float(numerator) / float(denominator)
    return float(text)


def to_yaml(flat: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(flat, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def to_json_text(flat: dict[str, Any]) -> str:
    return json.dumps(flat, indent=2)
