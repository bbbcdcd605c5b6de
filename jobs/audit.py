"""`disillusion audit`: verdict tables, manifests and a summary; no purified shards are written."""

from __future__ import annotations

import argparse

from .options import add_corpus_arguments
from .sanitize import run_job

NAME = "audit"
HELP = "Audit WebDataset shards: a verdict per sample and a summary, without writing purified shards."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_corpus_arguments(parser, skip=("on_illusion", "on_error", "on_uncertain"), report=True)


def run(args: argparse.Namespace) -> int:
    return run_job(args, audit=True)
