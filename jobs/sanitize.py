"""`disillusion sanitize`: purified shards, verdict tables and manifests for a corpus."""

from __future__ import annotations

import argparse
import sys

NAME = "sanitize"
HELP = "Sanitise WebDataset shards: verdicts per sample, purified (or dropped) illusions, manifests; resumable."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import add_corpus_arguments

    add_corpus_arguments(parser)


def run_job(args: argparse.Namespace, audit: bool = False) -> int:
    from pipeline.distributed.runner import run_corpus

    from .options import build_config

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
