"""`disillusion train-demo`: train the bundled demo models on Fashion-MNIST and write a demo
directory (pipeline/research/training/bundle.py; the flags come from its settings record)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from pipeline.research.training.bundle import TRAIN_DEMO_SETTINGS

from .options import add_table_flags, record_from

NAME = "train-demo"
HELP = "Train the small demo models (CLIP, VAE, AE, diffusion) on Fashion-MNIST and save them with metrics."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_table_flags(parser, TRAIN_DEMO_SETTINGS)


def run(args: argparse.Namespace) -> int:
    from pipeline.research.training.bundle import train_demo

    settings = record_from(TRAIN_DEMO_SETTINGS, args)
    metrics = train_demo(settings, command="disillusion " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(json.dumps(metrics, indent=2))
    return 0
