"""`disillusion benchmark`: throughput and memory, measured the same way on any machine
(pipeline/research/benchmark_run.py; the flags come from its settings record)."""

from __future__ import annotations

import argparse
import json

from pipeline.research.benchmark_run import BENCHMARK_SETTINGS

from .options import add_device_argument, add_table_flags, record_from

NAME = "benchmark"
HELP = "Measure samples/s and memory: stages, working geometry, the Ray pipeline, early exit, full-size models."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_table_flags(parser, BENCHMARK_SETTINGS)
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from pipeline.research.benchmark_run import run_benchmark

    from .options import resolve_device

    settings = record_from(BENCHMARK_SETTINGS, args)
    report = run_benchmark(settings, resolve_device(args.device), args.device, echo=lambda line: print(line, flush=True))
    if settings.json:
        with open(settings.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0
