"""`disillusion attack`: plant adversarial illusions in a seeded fraction of a WebDataset corpus.

Each output shard keeps the input's sample keys and order. An attacked sample's image is replaced by
the adversarial image as lossless PNG (a lossy format would weaken the perturbation); every sample's
json member gains the ground truth {"label", "illusion", "target"}. Samples whose image cannot be
decoded or whose label is unknown are copied unchanged and counted.
"""

from __future__ import annotations

import argparse

NAME = "attack"
HELP = "Write illusion shards: a seeded fraction of samples carries an adversarial illusion, with ground truth."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="SPEC", help="shards: directory, S3 prefix, glob, brace range or list file")
    parser.add_argument("--output", required=True, metavar="URI", help="output directory or S3 prefix")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--eps", default="16/255")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--step-size", default="1/255")
    parser.add_argument("--fraction", type=float, default=0.5, help="share of samples to attack (seeded, per key)")
    parser.add_argument("--adaptive", action="store_true", help="EOT through the preset's reconstructor instead of the plain attack")
    parser.add_argument("--eot-samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from pipeline.io.storage import Storage
    from pipeline.presets import get_preset
    from pipeline.research.attacks import AttackConfig
    from pipeline.research.attacks.corpus import attack_corpus
    from pipeline.settings import parse_fraction

    config = AttackConfig(eps=parse_fraction(args.eps), step_size=parse_fraction(args.step_size), steps=args.steps, seed=args.seed)
    problems = attack_corpus(Storage(args.s3_endpoint), args.input, args.output, get_preset(args.preset), config, fraction=args.fraction,
                             seed=args.seed, adaptive=args.adaptive, eot_samples=args.eot_samples, batch_size=args.batch_size,
                             overwrite=args.overwrite, echo=lambda line: print(line, flush=True))
    return 1 if problems else 0
