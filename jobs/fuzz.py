"""`disillusion fuzz`: the reader's fuzzer (pipeline/research/fuzz): seeded hostile shards through
read, decode, purify and write in this process, and optionally through `disillusion audit`."""

from __future__ import annotations

import argparse
import json
import tempfile

NAME = "fuzz"
HELP = "Fuzz the shard reader with seeded, structure-aware hostile shards and check every outcome (RELIABILITY.md)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=int, default=1000, help="fuzzed shards through the in-process path (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="first seed; shard i uses seed + i")
    parser.add_argument("--cli-shards", type=int, default=0, help="also run this many through `disillusion audit`, twice")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a shard counts as hung")
    parser.add_argument("--workdir", help="where shards, outputs and failures go (default: a temporary directory)")
    parser.add_argument("--json", metavar="FILE", help="write the summary here")


def run(args: argparse.Namespace) -> int:
    from pipeline.research.fuzz.campaign import run_cli_campaign, run_campaign
    from pipeline.sanitize.config import SanitizeConfig

    workdir = args.workdir or tempfile.mkdtemp(prefix="disillusion-fuzz-")
    purifier = SanitizeConfig.resolve(preset="demo", n=2, early_exit="off").build_purifier()

    def progress(index: int, outcome) -> None:
        if outcome.status != "ok" or (index + 1) % 500 == 0:
            print(f"[{index + 1}/{args.shards}] seed {outcome.seed}: {outcome.status} {outcome.detail[:200]}", flush=True)

    summary = {"in_process": run_campaign(args.shards, seed=args.seed, workdir=workdir, purifier=purifier, timeout=args.timeout,
                                          progress=progress)}
    if args.cli_shards:
        summary["cli"] = run_cli_campaign(args.cli_shards, seed=args.seed, workdir=workdir)
    print(json.dumps({k: {n: v for n, v in part.items() if n != "by_mutation"} for k, part in summary.items()}, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    failed = summary["in_process"]["failures"] or summary.get("cli", {}).get("failures")
    print(f"failing shards saved under {workdir}/failures" if failed else "no failure")
    return 1 if failed else 0
