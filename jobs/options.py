"""Argument groups shared by several jobs, and turning them into library objects."""

from __future__ import annotations

import argparse

import torch

from pipeline.defense import DEFAULT_TEMPLATE, ConsensusConfig, LabelBank, VerdictPolicy
from pipeline.defense.consensus import DEFAULT_ALPHA


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--reconstructor", required=True, metavar="SPEC", help="e.g. vae:stabilityai/sd-vae-ft-mse or vae:/dir")
    group.add_argument("--encoder", required=True, metavar="SPEC", help="e.g. clip:openai/clip-vit-large-patch14, imagebind:/path/imagebind_huge.pth")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (default)")
    group.add_argument("--sample-scale", type=float, help="vae: scale on the posterior std (1 = sample, 0 = mode)")
    group.add_argument("--latent-noise", type=float, help="vae: extra Gaussian latent noise")
    group.add_argument("--noise-scale", type=float, help="ae: Gaussian latent noise scale")
    group.add_argument("--strength", type=float, help="dm: diffusion depth t*/T")
    group.add_argument("--resolution", type=int, help="working resolution of the reconstructor (default: the model's own)")
    group.add_argument("--s3-endpoint", help="S3-compatible endpoint URL for s3:// model locations")


def add_consensus_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("consensus")
    labels = group.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", metavar="FILE", help="label file, one label per line")
    labels.add_argument("--label", action="append", metavar="NAME", help="a label (repeat for several)")
    group.add_argument("--template", default=DEFAULT_TEMPLATE, help=f"prompt template (default {DEFAULT_TEMPLATE!r})")
    group.add_argument("--n", type=int, default=10, help="reconstructions per input (default 10)")
    group.add_argument("--early-exit", choices=("off", "certain", "sequential"), default="sequential")
    group.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help=f"error bound of the sequential early exit (default {DEFAULT_ALPHA})")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--min-agreement", type=float, default=0.5, help="below this vote share the verdict is 'uncertain'")
    group.add_argument("--max-drift", type=float, help="flag embeddings that move more than this even when labels agree")
    group.add_argument("--flip-min-drift", type=float, default=0.0, help="a label flip with less drift is 'uncertain', not 'illusion'")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def reconstructor_options(args: argparse.Namespace) -> dict:
    kind = args.reconstructor.partition(":")[0]
    wanted = {"vae": ("sample_scale", "latent_noise"), "ae": ("noise_scale",), "dm": ("strength",)}.get(kind, ())
    options = {name: getattr(args, name) for name in (*wanted, "resolution") if getattr(args, name) is not None}
    return options


def label_bank(args: argparse.Namespace) -> LabelBank:
    if args.labels:
        return LabelBank.from_file(args.labels, args.template)
    return LabelBank(args.label, args.template)


def consensus_config(args: argparse.Namespace) -> ConsensusConfig:
    return ConsensusConfig(
        n=args.n,
        early_exit=args.early_exit,
        alpha=args.alpha,
        seed=args.seed,
        verdict=VerdictPolicy(min_agreement=args.min_agreement, max_drift=args.max_drift, flip_min_drift=args.flip_min_drift),
    )
