"""`disillusion sanitize`: purified shards, verdict tables and manifests for a corpus."""

from __future__ import annotations

import argparse
import sys

NAME = "sanitize"
HELP = "Sanitise WebDataset shards: verdicts per sample, purified (or dropped) illusions, manifests; resumable."


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
    from .options import add_setting_flags

    parser.add_argument("--config", metavar="FILE",
                        help="YAML or JSON settings with the flags' names (as `disillusion config show` prints them), or a "
                             "run's run.json to repeat it; flags override it")
    add_setting_flags(parser, skip=skip)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_corpus_arguments(parser)


def build_config(args: argparse.Namespace, policy_fixed: bool = False):
    """The run's SanitizeConfig: the preset's defaults, then --config, then flags. A bad value is a
    ValueError here, before any work starts."""
    from pipeline.sanitize.config import SETTINGS, SanitizeConfig

    from .options import given_settings

    settings = SETTINGS.read_file(args.config) if args.config else {}
    settings.update(given_settings(args))
    if policy_fixed:  # an audit writes verdicts only, whatever a config file says
        settings["on_illusion"] = None
    elif settings.get("on_illusion") is None:  # e.g. repeating an audit's run.json as a sanitisation
        settings.pop("on_illusion", None)
    return SanitizeConfig.resolve(settings)


def run_job(args: argparse.Namespace, audit: bool = False) -> int:
    from pipeline.distributed.runner import run_corpus

    config = build_config(args, policy_fixed=audit)
    summary = run_corpus(config, args.input, args.output, overwrite=args.overwrite, ray_address=args.ray_address, actors=args.actors,
                         report=args.report, stall_seconds=args.stall_timeout)
    print_summary(summary)
    return 1 if summary["problems"] else 0


def print_summary(summary: dict) -> None:
    from pipeline.io.shards import display

    v = summary["verdicts"]
    print()
    print(f"{'shards':>8} {'skipped':>8} {'samples':>8} {'clean':>7} {'illusion':>9} {'uncertain':>10} {'errors':>7} {'samples/s':>10}")
    print(f"{summary['shards']:>8} {summary['skipped']:>8} {summary['samples']:>8} {v['clean']:>7} {v['illusion']:>9} "
          f"{v['uncertain']:>10} {summary['errors']:>7} {summary.get('samples_per_second') or 0:>10.2f}")
    for shard, problems in summary["problems"].items():
        print(f"problem in {display(shard)}: {'; '.join(problems)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    return run_job(args)
