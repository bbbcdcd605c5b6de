"""`disillusion evaluate`: the paper-style table on a preset's labelled sample
(pipeline/research/evaluate.py; the flags come from its settings record)."""

from __future__ import annotations

import argparse

from pipeline.research.evaluate import EVALUATE_SETTINGS

from .options import add_device_argument, add_table_flags, record_from

NAME = "evaluate"
HELP = "Evaluate defenses against clean, illusion and adaptive inputs (Top-1/Top-5, ASR, cosines, time)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_table_flags(parser, EVALUATE_SETTINGS)
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from pipeline.research.evaluate import run_evaluate

    from .options import describe_device, resolve_device

    device = resolve_device(args.device)
    settings = record_from(EVALUATE_SETTINGS, args)
    run_evaluate(settings, device, describe_device(device), echo=lambda text: print(text, flush=True))
    return 0
