"""`disillusion demo`: the embedded default, end to end, offline (pipeline/research/demo.py).

Builds a WebDataset corpus from the bundled Fashion-MNIST sample, plants illusions in a seeded
fraction with the published attack, sanitises it on a local Ray cluster with the bundled models, and
scores the verdicts against the planted ground truth.
"""

from __future__ import annotations

import argparse

from .options import add_consensus_settings

NAME = "demo"
HELP = "Run the whole pipeline offline on bundled models and data, and score detection against planted illusions."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--samples", type=int, default=200, help="samples in the corpus (at most 1000)")
    parser.add_argument("--illusion-fraction", type=float, default=0.3)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100, help="attack steps (the paper uses a few hundred)")
    add_consensus_settings(parser, ("n",))
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus and the planted illusions (default 0)")
    parser.add_argument("--public-seed", type=int, metavar="SEED",
                        help="a public seed for the defense's noise, to repeat a demo run exactly (default: a secret key, as sanitize)")
    parser.add_argument("--ray-address")


def run(args: argparse.Namespace) -> int:
    from pipeline.research.demo import DemoSettings, format_report, run_demo

    from .sanitize import print_summary

    settings = DemoSettings(samples=args.samples, illusion_fraction=args.illusion_fraction, shard_size=args.shard_size,
                            steps=args.steps, n=args.n, seed=args.seed, public_seed=args.public_seed)
    summary, report = run_demo(args.output, settings, ray_address=args.ray_address)
    print_summary(summary)
    print(format_report(report))
    return 0 if summary["errors"] == 0 and not summary["problems"] else 1
