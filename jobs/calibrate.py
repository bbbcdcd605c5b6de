"""`disillusion calibrate`: verdict thresholds from clean data, written as a config for `sanitize --config`."""

from __future__ import annotations

import argparse
import json

import torch

from pipeline.defense.calibration import METHODS
from pipeline.defense.verdict import THRESHOLDS, WITNESS_THRESHOLDS
from pipeline.research.data.encodings import ENCODINGS
from pipeline.research.data.fashion_mnist import DEBIAN_DIR
from pipeline.sanitize.config import SETTINGS

from .options import CONSENSUS_SETTINGS, add_consensus_settings, add_setting

# The model flags of `sanitize` that calibrate takes too (the reconstructor and its options, as the
# settings table lists them): thresholds belong to the models that ran.
MODEL_SETTINGS = ("reconstructor", "witness") + tuple(s.name for s in SETTINGS if s.optional)

NAME = "calibrate"
HELP = "Choose verdict thresholds on clean data for a target false-positive rate; writes a JSON config."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="SPEC", help="clean WebDataset shards (default for demo: Fashion-MNIST test images outside the bundled sample)")
    source.add_argument("--data", default=DEBIAN_DIR,
                        help="Fashion-MNIST directory (demo preset): uses test images outside the bundled sample")
    parser.add_argument("--limit", type=int, default=1000, help="clean samples to use")
    parser.add_argument("--offset", type=int, default=0, help="demo: skip the first K held-out test images (e.g. to check on images calibration did not see)")
    parser.add_argument("--encodings", default=",".join(ENCODINGS),
                        help="demo: store each clean image as each of these scraper pipelines would (pipeline/research/data/encodings.py: png as is; "
                             "jpeg, jpeg-any, upscaled and webp at random sizes, filters and qualities); --input shards are grouped by "
                             "their image format. Thresholds hold for every group.")
    parser.add_argument("--check", action="store_true",
                        help="report the false-positive rate of the preset's thresholds (or --config's) per group; choose none")
    parser.add_argument("--config", metavar="FILE",
                        help="with --check: the thresholds, models, N and early exit of this JSON (as written by --json); "
                             "model flags given here override its models")
    parser.add_argument("--unlabelled", action="store_true",
                        help="with --input: thresholds from the corpus itself, for audits without a clean reference (see --spread)")
    parser.add_argument("--spread", type=float, default=3.0,
                        help="--unlabelled: the drift threshold sits this many robust standard deviations of log-drift above the median")
    parser.add_argument("--target-fpr", type=float, default=0.05)
    parser.add_argument("--method", choices=METHODS, default="drift",
                        help="drift: flag embeddings that move under purification (default); votes: flag any label flip")
    parser.add_argument("--min-agreement", type=float, default=0.5, help="drift method: vote share below which a sample is 'uncertain'")
    parser.add_argument("--witness-share", type=float, default=0.5,
                        help="drift method with a witness: the share of the false-positive budget the witness tests may spend")
    parser.add_argument("--margin-share", type=float, default=0.5,
                        help="... and the share of that the witness margin test takes (the rest: the gap test; 0: no margin test)")
    add_consensus_settings(parser)  # as the run will use them
    models, table = parser.add_argument_group("models (default: the preset's; written into --json, so that `sanitize --config` runs the same)"), SETTINGS.by_name
    for name in MODEL_SETTINGS:
        add_setting(models, table[name])
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--json", metavar="FILE", help="write {min_agreement, max_drift, n, ...} here")


def clean_images(args) -> dict[str, tuple[list[torch.Tensor], list[str]]]:
    """Clean images at the working size, grouped by how they were stored: {group: (images, keys)}."""
    from pipeline.presets import get_preset

    work_size = get_preset(args.preset).work_size  # the geometry `sanitize` will examine them at
    if args.input:
        from pipeline.io.storage import Storage
        from pipeline.sanitize.records import as_images
        from pipeline.sanitize.shard import decode_shard, read_shard

        storage, groups, total = Storage(args.s3_endpoint), {}, 0
        for uri in storage.expand(args.input):
            if total >= args.limit:
                break
            for record in decode_shard(read_shard(storage, uri), work_size):  # the reader sanitize uses, in its sandbox
                if record.pixels is not None and total < args.limit:
                    images, keys = groups.setdefault(_format_group(record.member), ([], []))
                    images.append(as_images([record.pixels])[0])
                    keys.append(record.key)
                    total += 1
        return groups
    import random

    from pipeline.research.data.encodings import stored_at_working_size
    from pipeline.research.data.fashion_mnist import held_out_test_indices, load_split

    if args.preset != "demo":
        raise ValueError("pass --input with clean shards for presets other than demo")
    # Clean images from the distribution the demo corpus comes from, none of them in that corpus,
    # each stored in every encoding asked for (a seeded random size and quality for JPEG).
    indices = held_out_test_indices()[args.offset : args.offset + args.limit]
    x, _ = load_split("t10k", args.data).tensors(indices)
    rng = random.Random(args.seed or 0)
    keys = [f"t10k-{i:05d}" for i in indices]
    return {encoding: (stored_at_working_size(x, encoding, work_size, rng), keys) for encoding in args.encodings.split(",")}


def _format_group(member: str | None) -> str:
    ext = (member or "").lower().rsplit(".", 1)[-1]
    return {"jpg": "jpeg", "jpe": "jpeg", "jfif": "jpeg"}.get(ext, ext)


def run(args: argparse.Namespace) -> int:
    from pipeline.batching import map_batched
    from pipeline.defense.calibration import Calibration, calibrate_groups, rates, unlabelled_policy
    from pipeline.models.noise import seed_for_key
    from pipeline.presets import get_preset
    from pipeline.sanitize.config import SanitizeConfig

    if args.unlabelled and not args.input:
        raise ValueError("--unlabelled sets thresholds from a corpus: pass it with --input")
    if args.config and not args.check:
        raise ValueError("--config names thresholds to check: pass it with --check")
    preset = get_preset(args.preset)
    # A saved config's thresholds hold only for the models and consensus they were chosen with, so a check runs those.
    saved = _read_config(args.config) if args.config else {}
    models = {name: saved[name] for name in MODEL_SETTINGS if name in saved}
    models.update({name: getattr(args, name) for name in MODEL_SETTINGS if getattr(args, name) is not None})
    consensus = {name: saved.get(name, getattr(args, name)) for name in CONSENSUS_SETTINGS}
    purifier = SanitizeConfig.resolve(preset=args.preset, **models, **consensus).build_purifier()
    groups = {name: images for name, images in clean_images(args).items() if images[0]}
    # Reproducible draws (a public seed, 0 unless given): rates of clean images do not depend on the
    # key's secrecy, and a check repeats the calibration's figures. The thresholds written carry no seed.
    seed = args.seed or 0
    if not groups:
        raise ValueError("no decodable clean images found")
    results = {
        name: map_batched(
            list(range(len(images))), args.batch_size,
            lambda part, images=images, keys=keys: purifier.purify(torch.stack([images[i] for i in part]),
                                                                   seeds=[seed_for_key(seed, keys[i]) for i in part]),
            key=lambda i, images=images: tuple(images[i].shape),
        )
        for name, (images, keys) in groups.items()
    }
    if args.check:
        return report_check(args, preset, saved, {**models, **consensus}, results)
    if args.unlabelled:
        policy = unlabelled_policy([r for rs in results.values() for r in rs], args.spread, args.min_agreement)
        per_group = {name: Calibration(policy, *rates(rs, policy), len(rs)) for name, rs in results.items()}
        method = f"unlabelled: median + {args.spread} robust sd of log-drift (assumes under half the corpus is attacked)"
    else:
        policy, per_group = calibrate_groups(results, args.target_fpr, args.method, args.min_agreement, args.witness_share,
                                             args.margin_share)
        method = args.method
    config = {
        "preset": args.preset, **models, "n": args.n, "early_exit": args.early_exit, "alpha": args.alpha,
        **policy.thresholds(),
        "calibration": {"method": method, "target_fpr": None if args.unlabelled else args.target_fpr,
                        "groups": {name: {"samples": c.samples, "flagged": c.false_positive_rate, "uncertain": c.uncertain_rate}
                                   for name, c in per_group.items()},
                        "source": args.input or f"fashion-mnist t10k outside the bundled sample, {args.limit} from {args.offset}, "
                                                f"stored as {args.encodings}"},
    }
    print(json.dumps(config, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(config, handle, indent=2)
    return 0


def _read_config(path: str) -> dict:
    with open(path) as handle:
        saved = json.load(handle)
    missing = [key for key in THRESHOLDS if key not in saved and key not in WITNESS_THRESHOLDS]
    if missing:
        raise ValueError(f"{path} holds no verdict thresholds ({', '.join(missing)} missing): pass a file written by `calibrate --json`")
    return saved


def report_check(args: argparse.Namespace, preset, saved: dict, settings: dict, results: dict) -> int:
    """The false-positive rate of existing thresholds (the preset's, or a saved config's) on each group of clean images."""
    from pipeline.defense import VerdictPolicy
    from pipeline.defense.calibration import rates

    policy = VerdictPolicy(**{k: saved[k] for k in THRESHOLDS if k in saved}) if saved else preset.verdict
    report = {"thresholds": policy.thresholds(), "settings": settings, "groups": {}}
    for name, rs in results.items():
        flagged, uncertain = rates(rs, policy)
        report["groups"][name] = {"samples": len(rs), "flagged": flagged, "uncertain": uncertain}
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0
