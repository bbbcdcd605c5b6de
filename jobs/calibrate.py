"""`disillusion calibrate`: verdict thresholds from clean data, written as a config for `sanitize
--config` (pipeline/sanitize/calibrate.py); the flags come from its settings record."""

from __future__ import annotations

import argparse
import json

from pipeline.sanitize.calibrate import CALIBRATE_SETTINGS, MODEL_SETTINGS
from pipeline.sanitize.config import CONSENSUS_SETTINGS, SETTINGS

from .options import add_consensus_settings, add_setting, add_table_flags, record_from

NAME = "calibrate"
HELP = "Choose verdict thresholds on clean data for a target false-positive rate; writes a JSON config."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_table_flags(parser, CALIBRATE_SETTINGS, config_file=False)  # its --config is the thresholds --check reads
    add_consensus_settings(parser)  # as the run will use them
    models = parser.add_argument_group("models (default: the preset's; written into --json, so that `sanitize --config` runs the same)")
    for name in MODEL_SETTINGS:
        add_setting(models, SETTINGS.by_name[name])


def run(args: argparse.Namespace) -> int:
    from pipeline.presets import get_preset
    from pipeline.sanitize.calibrate import calibrate, shard_groups

    settings = record_from(CALIBRATE_SETTINGS, args)
    work_size = get_preset(settings.preset).work_size  # the geometry `sanitize` will examine them at
    if settings.input:
        from pipeline.io.storage import Storage

        groups = shard_groups(Storage(settings.s3_endpoint), settings.input, work_size, settings.limit, settings.max_shard_bytes)
        source = settings.input
    elif settings.preset == "demo":
        from pipeline.research.data.encodings import held_out_groups
        from pipeline.research.data.fashion_mnist import DEBIAN_DIR

        groups = held_out_groups(settings.data or DEBIAN_DIR, offset=settings.offset, limit=settings.limit,
                                 encodings=settings.encodings.split(","), work_size=work_size, seed=args.seed or 0)
        source = f"fashion-mnist t10k outside the bundled sample, {settings.limit} from {settings.offset}, stored as {settings.encodings}"
    else:
        raise ValueError("pass --input with clean shards for presets other than demo")
    result = calibrate(settings, {name: getattr(args, name) for name in MODEL_SETTINGS + CONSENSUS_SETTINGS}, groups, source)
    print(json.dumps(result, indent=2))
    if settings.json:
        with open(settings.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0
