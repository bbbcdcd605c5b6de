"""Argument groups shared by several jobs, and turning them into library objects."""

from __future__ import annotations

import argparse

import torch

from pipeline.sanitize.config import CONSENSUS_SETTINGS, SETTINGS
from pipeline.settings import Setting


def add_setting(parser, setting: Setting, *, with_default: bool = False) -> None:
    """One flag of the settings table. Without a default the flag is None unless given, so that it
    overrides a config file only when a user typed it."""
    default = setting.default if with_default else None
    shown = f" (default {setting.default})" if setting.default not in (None, False) and "default" not in setting.help else ""
    kwargs = {"help": setting.help + shown, "default": default, "dest": setting.name}
    if setting.type is bool:
        parser.add_argument(f"--{setting.key}", action=argparse.BooleanOptionalAction, **kwargs)
        return
    if setting.choices:
        kwargs["choices"] = [c for c in setting.choices if c is not None]
    parser.add_argument(f"--{setting.key}", type=str if setting.type is tuple else setting.type, metavar=setting.metavar, **kwargs)


def add_table_flags(parser, table, *, config_file: bool = True) -> None:
    """Every setting of a job's own record (a `SettingsTable`) as a flag, and `--config FILE` for the
    same settings as YAML or JSON. Flags are None unless given: a flag overrides the file, the file
    the record's defaults (`record_from`)."""
    if config_file:
        parser.add_argument("--config", metavar="FILE",
                            help="YAML or JSON settings with the flags' names (dashes or underscores); flags override it")
    for setting in table:
        add_setting(parser, setting)


def record_from(table, args: argparse.Namespace):
    """The job's record: its defaults, then --config (when the job takes one), then the flags given."""
    values = table.read_file(args.config) if table.by_name.get("config") is None and getattr(args, "config", None) else {}
    values.update({s.name: getattr(args, s.name) for s in table if getattr(args, s.name, None) is not None})
    return table.record(**{table.by_name[name].field: value for name, value in values.items()})


def add_setting_flags(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """Every setting of a run as a flag (sanitize, audit, config show), grouped by section."""
    groups: dict[tuple, argparse._ArgumentGroup] = {}
    titles = {(): None, ("models",): "models", ("consensus",): "consensus", ("consensus", "verdict"):
              "verdict thresholds (default: the preset's calibrated ones; see `disillusion calibrate`)",
              ("runtime",): "runtime (defaults per device: see BENCHMARKS.md)", ("models", "reconstructor_options"):
              "reconstructor options (for the kind in use; default: the preset's)"}
    for setting in SETTINGS:
        if setting.name in skip:
            continue
        title = titles[setting.path]
        group = parser if title is None else groups.setdefault(setting.path, parser.add_argument_group(title))
        add_setting(group, setting)


def given_settings(args: argparse.Namespace) -> dict:
    """The settings a user gave as flags."""
    return {name: getattr(args, name) for name in SETTINGS.by_name if getattr(args, name, None) is not None}


def add_consensus_settings(parser, names: tuple[str, ...] = CONSENSUS_SETTINGS) -> None:
    """The consensus flags of the jobs that build a purifier themselves, with the library's defaults."""
    for name in names:
        add_setting(parser, SETTINGS.by_name[name], with_default=True)


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default="auto", help="where the models run: cpu, cuda, cuda:1, or auto (default)")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """The GPU's name, or the device type."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def add_corpus_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = (), report: bool = False) -> None:
    parser.add_argument("--input", required=True, metavar="SPEC", help="directory, S3 prefix, glob, brace range or list file of .tar shards")
    parser.add_argument("--output", required=True, metavar="URI", help="output directory or S3 prefix")
    add_config_arguments(parser, skip=skip)
    parser.add_argument("--actors", type=actor_count, metavar="N|MIN-MAX",
                        help="purification actors: N, or MIN-MAX for a pool that grows with the cluster (default: sized from the cluster)")
    parser.add_argument("--stall-timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="stop, resumably (exit 3), when no shard finishes for this long: lost capacity that never comes "
                             "back (default 1800; must exceed the slowest shard, the models' start-up included)")
    parser.add_argument("--ray-address", help="an existing Ray cluster, or auto (default: RAY_ADDRESS, as inside a Ray job; else a new local one)")
    parser.add_argument("--overwrite", action="store_true", help="redo shards that already have a manifest")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=report,
                        help=f"write report.html into the output: counts, score histograms, shards, flagged samples (default: {'on' if report else 'off'})")


def actor_count(text: str) -> int | tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        counts = (int(low), int(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, not {text!r}") from None
    if not 1 <= counts[0] <= counts[1]:
        raise argparse.ArgumentTypeError(f"expected 1 <= MIN <= MAX, not {text!r}")
    return counts if high else counts[0]


def add_config_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """--config and one flag per setting (generated from the table `SETTINGS` in pipeline/sanitize/config.py)."""
    parser.add_argument("--config", metavar="FILE",
                        help="YAML or JSON settings with the flags' names (as `disillusion config show` prints them), or a "
                             "run's run.json to repeat it; flags override it")
    add_setting_flags(parser, skip=skip)


def build_config(args: argparse.Namespace, policy_fixed: bool = False):
    """The run's SanitizeConfig: the preset's defaults, then --config, then flags. A bad value is a
    ValueError here, before any work starts."""
    from pipeline.sanitize.config import SanitizeConfig

    settings = SETTINGS.read_file(args.config) if args.config else {}
    settings.update(given_settings(args))
    if policy_fixed:  # an audit writes verdicts only, whatever a config file says
        settings["on_illusion"] = None
    elif settings.get("on_illusion") is None:  # e.g. repeating an audit's run.json as a sanitisation
        settings.pop("on_illusion", None)
    return SanitizeConfig.resolve(settings)
