"""`disillusion config show`: the resolved settings of a run, as YAML (or JSON) that `--config` reads back."""

from __future__ import annotations

import argparse

NAME = "config"
HELP = "Show the resolved configuration of a run (preset defaults, then --config, then flags) as YAML."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import add_device_argument
    from .options import add_config_arguments

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help=HELP, description=HELP + " Every default is written out: the preset's models, "
                              "labels and thresholds, and the batch sizes and precision for --device.")
    add_config_arguments(show)
    add_device_argument(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")


def run(args: argparse.Namespace) -> int:
    from pipeline.settings import to_json_text, to_yaml

    from .options import resolve_device
    from .options import build_config

    device = resolve_device(args.device)
    settings = build_config(args).resolved(device).to_json()
    if args.json:
        print(to_json_text(settings))
    else:
        print(f"# preset {settings['preset']} with every default written out, for {device.type}; `--config` reads it back\n"
              + to_yaml(settings), end="")
    return 0
