"""`disillusion attack`: plant adversarial illusions in a seeded fraction of a WebDataset corpus.

Each output shard keeps the input's sample keys and order. An attacked sample's image is replaced by
the adversarial image as lossless PNG (a lossy format would weaken the perturbation); every sample's
json member gains the ground truth {"label", "illusion", "target"}. Samples whose image cannot be
decoded or whose label is unknown are copied unchanged and counted.
"""

from __future__ import annotations

import argparse
import json
import logging

NAME = "attack"
HELP = "Write illusion shards: a seeded fraction of samples carries an adversarial illusion, with ground truth."
log = logging.getLogger(__name__)


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
    from pipeline.io.shards import ShardProblem, read_samples, write_samples
    from pipeline.io.storage import Storage, join, shard_name
    from pipeline.presets import get_preset
    from pipeline.research.attacks import AttackConfig
    from pipeline.research.attacks.corpus import plant_illusions
    from pipeline.research.models import load_reconstructor

    from .evaluate import parse_fraction

    if not 0.0 <= args.fraction <= 1.0:
        raise ValueError("--fraction must lie in [0, 1]")
    preset = get_preset(args.preset)
    encoder = preset.load_encoder()
    config = AttackConfig(eps=parse_fraction(args.eps), step_size=parse_fraction(args.step_size), steps=args.steps, seed=args.seed)
    reconstructor = load_reconstructor(preset) if args.adaptive else None
    storage = Storage(args.s3_endpoint)

    problems = 0
    for uri in storage.expand(args.input):
        target_uri = join(args.output, f"{shard_name(uri)}.tar")
        if storage.exists(target_uri) and not args.overwrite:
            log.info("%s exists, skipping (use --overwrite to redo)", target_uri)
            continue
        samples = []
        for item in read_samples(storage.read_bytes(uri)):
            if isinstance(item, ShardProblem):
                problems += 1
                log.error("%s: %s", uri, item.message)
            else:
                samples.append(item)
        attacked = plant_illusions(
            samples, encoder, preset.label_bank(), config, fraction=args.fraction, seed=args.seed,
            reconstructor=reconstructor, eot_samples=args.eot_samples, batch_size=args.batch_size,
        )
        storage.write_bytes(target_uri, write_samples(attacked))
        count = sum(json.loads(s.members["json"])["illusion"] for s in attacked)
        print(f"{shard_name(uri)}: {len(attacked)} samples, {count} illusions -> {target_uri}", flush=True)
    return 1 if problems else 0
