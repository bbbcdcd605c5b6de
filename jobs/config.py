"""`disillusion config show`: the resolved settings of a run, as YAML (or JSON) that `--config` reads back."""

from __future__ import annotations

import argparse

NAME = "config"
HELP = "Show the resolved configuration of a run (preset defaults, then --config, then flags) as YAML."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .sanitize import add_config_arguments

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help=HELP, description=HELP)
    add_config_arguments(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")


def run(args: argparse.Namespace) -> int:
    from pipeline.sanitize.settings import to_json_text, to_yaml

    from .sanitize import build_config

    settings = build_config(args).to_json()
    print(to_json_text(settings) if args.json else to_yaml(settings), end="" if not args.json else "\n")
    return 0
