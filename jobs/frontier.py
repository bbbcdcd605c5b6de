"""`disillusion frontier`: the robustness frontier over the reconstruction's randomness (EVALUATION.md;
pipeline/research/frontier_run.py and frontier_report.py; the flags come from the settings record)."""

from __future__ import annotations

import argparse

from pipeline.research.frontier_run import FRONTIER_SETTINGS

from .options import add_device_argument, add_table_flags, record_from

NAME = "frontier"
HELP = "Sweep reconstruction randomness: clean cost against a detect-adaptive attacker, thresholds recalibrated per point."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_table_flags(parser, FRONTIER_SETTINGS)
    add_device_argument(parser)
    parser.add_argument("--from", dest="reports", metavar="FILE", nargs="+",
                        help="measure nothing: join the points of saved --json reports (runs on other machines, or of other points) "
                             "into one --json / --markdown / --plot; they must share the attack budget and the calibration")


def run(args: argparse.Namespace) -> int:
    from pipeline.research.frontier_run import run_frontier

    from .options import describe_device, resolve_device

    settings = record_from(FRONTIER_SETTINGS, args)
    if args.reports:
        return join(args.reports, settings)
    device = resolve_device(args.device)
    run_frontier(settings, device, describe_device(device), echo=lambda line: print(line, flush=True))
    return 0


def join(paths: list[str], settings) -> int:
    """`--from`: no models load; the saved reports become one table, JSON and plot."""
    import json
    from pathlib import Path

    from pipeline.research.evaluate import write_tables
    from pipeline.research.frontier_report import join_reports, markdown, plot
    from pipeline.research.frontier_run import COMPARABLE

    joined = join_reports({path: json.loads(Path(path).read_text()) for path in paths}, COMPARABLE)
    write_tables(joined, settings.json, settings.markdown, markdown)
    if settings.plot:
        plot(joined, settings.plot)
    print(markdown(joined), end="")
    return 0
