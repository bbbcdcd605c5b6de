"""`disillusion sanitize`: purified shards, verdict tables and manifests for a corpus."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "sanitize"
HELP = "Sanitise WebDataset shards: verdicts per sample, purified (or dropped) illusions, manifests; resumable."


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="SPEC", help="directory, S3 prefix, glob, brace range or list file of .tar shards")
    parser.add_argument("--output", required=True, metavar="URI", help="output directory or S3 prefix")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--config", metavar="FILE", help="JSON file with SanitizeConfig fields (flags override it)")
    parser.add_argument("--reconstructor", metavar="SPEC", help="override the preset's reconstructor")
    parser.add_argument("--encoder", metavar="SPEC", help="override the preset's encoder")
    parser.add_argument("--labels", metavar="FILE", help="label file, one per line (default: the preset's labels)")
    parser.add_argument("--template", help="prompt template with {} (default: the preset's)")
    parser.add_argument("--n", type=int, help="reconstructions per sample (default 10)")
    parser.add_argument("--early-exit", choices=("off", "certain", "sequential"), help="default: sequential")
    parser.add_argument("--alpha", type=float, help="error bound of the sequential early exit (default 0.02)")
    parser.add_argument("--seed", type=int)
    thresholds = parser.add_argument_group("verdict thresholds (default: the preset's calibrated ones; see `disillusion calibrate`)")
    thresholds.add_argument("--min-agreement", type=float, help="below this vote share the verdict is 'uncertain'")
    thresholds.add_argument("--max-drift", type=float, help="'illusion' when 1 - cos(original, purified) exceeds this")
    thresholds.add_argument("--flip-min-drift", type=float, help="a label flip with less drift is 'uncertain', not 'illusion'")
    execution = parser.add_argument_group("execution (defaults per device: see BENCHMARKS.md)")
    execution.add_argument("--batch-size", type=int, help="images per purifier call (default 32 on a GPU, 16 on a CPU)")
    execution.add_argument("--decode-batch-size", type=int, help="reconstructions per decoder call (default 160 on a GPU, 32 on a CPU)")
    execution.add_argument("--precision", choices=("auto", "float32", "bfloat16"), help="model weights (auto: bfloat16 on a GPU, float32 on a CPU)")
    execution.add_argument("--compile", action="store_true", default=None, help="torch.compile the image models (faster on a GPU after a one-off compilation per actor)")
    parser.add_argument("--work-size", type=int, metavar="PIXELS",
                        help="working geometry: images are decoded to PIXELS x PIXELS (shorter side, centre crop); default: the preset's encoder input")
    parser.add_argument("--actors", type=int, help="purification actors (default: sized from the cluster)")
    parser.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    parser.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (default: the AWS variables and config)")
    parser.add_argument("--overwrite", action="store_true", help="redo shards that already have a manifest")
    parser.add_argument("--max-shard-bytes", type=int, metavar="BYTES",
                        help="a gzip-compressed shard may decompress to this much at most (default 2 GiB); larger ones are reported")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_corpus_arguments(parser)
    parser.add_argument("--on-illusion", choices=("purify", "drop", "keep"), default="purify")
    parser.add_argument("--on-error", choices=("keep", "drop"), default="keep",
                        help="samples that cannot be examined (undecodable, over the size limit, no image, links, repeated names): "
                             "keep them byte-identical with an error verdict (default), or drop them to quarantine")


def build_config(args: argparse.Namespace, policy: str | None):
    """The run's SanitizeConfig from the preset, --config and flags; a bad value is a ValueError here,
    before any work starts."""
    from dataclasses import fields as dataclass_fields

    from pipeline.sanitize.config import SanitizeConfig

    fields = {}
    if args.config:
        with open(args.config) as handle:
            fields.update(json.load(handle))
        fields.pop("calibration", None)  # provenance written by `disillusion calibrate`
        unknown = set(fields) - {f.name for f in dataclass_fields(SanitizeConfig)}
        if unknown:
            raise ValueError(f"{args.config}: unknown setting(s) {', '.join(sorted(unknown))}")
    if args.labels:
        from pipeline.defense.labels import read_label_file

        fields["labels"] = tuple(read_label_file(args.labels))
        if not fields["labels"]:
            raise ValueError(f"{args.labels} holds no labels (one per line; blank lines and # comments are skipped)")
    flags = {"reconstructor": args.reconstructor, "encoder": args.encoder, "template": args.template, "n": args.n,
             "early_exit": args.early_exit, "alpha": args.alpha, "seed": args.seed, "min_agreement": args.min_agreement,
             "max_drift": args.max_drift, "flip_min_drift": args.flip_min_drift, "batch_size": args.batch_size, "decode_batch_size": args.decode_batch_size,
             "precision": args.precision, "compile": args.compile, "work_size": args.work_size, "s3_endpoint": args.s3_endpoint,
             "on_error": getattr(args, "on_error", None), "max_shard_bytes": args.max_shard_bytes}
    fields.update({k: v for k, v in flags.items() if v is not None})
    fields["preset"] = args.preset
    fields["policy"] = policy
    if "labels" in fields and fields["labels"] is not None:
        fields["labels"] = tuple(fields["labels"])
    return SanitizeConfig(**fields)


def run_job(args: argparse.Namespace, policy: str | None) -> int:
    from pipeline.distributed.runner import run_corpus

    config = build_config(args, policy)
    summary = run_corpus(config, args.input, args.output, overwrite=args.overwrite, ray_address=args.ray_address, actors=args.actors)
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
    return run_job(args, args.on_illusion)
