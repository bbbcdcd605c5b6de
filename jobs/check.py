"""`disillusion check`: run the consensus defense on image files and print a verdict for each
(pipeline/sanitize/check.py)."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "check"
HELP = "Check image files for adversarial illusions with the consensus defense and print a verdict per file."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.sanitize.check import CORPUS_ONLY

    from .options import add_device_argument
    from .options import add_config_arguments

    parser.add_argument("images", nargs="+", help="image files (any format the corpus reader takes: PNG, JPEG, WebP, ...)")
    add_config_arguments(parser, skip=CORPUS_ONLY)
    add_device_argument(parser)
    parser.add_argument("--json", metavar="FILE", help="also write one JSON object per image to FILE ('-' for stdout)")
    parser.add_argument("--save-purified", metavar="DIR", help="write each image's representative reconstruction as PNG")


def run(args: argparse.Namespace) -> int:
    from pipeline.sanitize.check import check_files, format_table, judged_by

    from .options import resolve_device
    from .options import build_config

    device = resolve_device(args.device)
    config = build_config(args).resolved(device)  # the preset's models and thresholds unless told otherwise
    rows = check_files(config, args.images, device, save_purified=args.save_purified)
    print(judged_by(config))
    print(format_table(rows))
    if args.json:
        lines = "".join(json.dumps(row) + "\n" for row in rows)
        if args.json == "-":
            sys.stdout.write(lines)
        else:
            with open(args.json, "w") as handle:
                handle.write(lines)
    return 1 if any(row["status"] == "error" for row in rows) else 0
