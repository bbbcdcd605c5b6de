"""`disillusion calibrate`: verdict thresholds from clean data, written as a config for `sanitize --config`."""

from __future__ import annotations

import argparse
import json

import torch

NAME = "calibrate"
HELP = "Choose verdict thresholds on clean data for a target false-positive rate; writes a JSON config."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="SPEC", help="clean WebDataset shards (default for demo: the Fashion-MNIST training split)")
    source.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST directory (demo preset)")
    parser.add_argument("--limit", type=int, default=1000, help="clean samples to use")
    parser.add_argument("--target-fpr", type=float, default=0.05)
    parser.add_argument("--use-drift", action="store_true", help="also set max_drift from the clean drift distribution")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--json", metavar="FILE", help="write {min_agreement, max_drift, n, ...} here")


def clean_images(args) -> tuple[torch.Tensor, list[str]]:
    if args.input:
        from pipeline.io.shards import Sample, read_samples
        from pipeline.io.storage import Storage
        from pipeline.sanitize.records import to_record

        storage, images, keys = Storage(args.s3_endpoint), [], []
        for uri in storage.expand(args.input):
            for item in read_samples(storage.read_bytes(uri)):
                if isinstance(item, Sample):
                    record = to_record(item)
                    if record.image is not None:
                        images.append(record.image)
                        keys.append(record.key)
                if len(images) >= args.limit:
                    return images, keys
        return images, keys
    from pipeline.data.fashion_mnist import load_split

    if args.preset != "demo":
        raise ValueError("pass --input with clean shards for presets other than demo")
    train = load_split("train", args.data)
    x, _ = train.tensors(slice(0, args.limit))
    return list(x), [f"train-{i:05d}" for i in range(len(x))]


def run(args: argparse.Namespace) -> int:
    from pipeline.defense import ConsensusConfig, ConsensusPurifier
    from pipeline.defense.calibration import calibrate
    from pipeline.models.noise import seed_for_key
    from pipeline.presets import get_preset

    preset = get_preset(args.preset)
    purifier = ConsensusPurifier(preset.load_reconstructor(), preset.load_encoder(), preset.label_bank(), ConsensusConfig(n=args.n, seed=args.seed))
    images, keys = clean_images(args)
    if not images:
        raise ValueError("no decodable clean images found")
    results = []
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    for indices in groups.values():
        for start in range(0, len(indices), args.batch_size):
            part = indices[start : start + args.batch_size]
            results += purifier.purify(torch.stack([images[i] for i in part]), seeds=[seed_for_key(args.seed, keys[i]) for i in part])
    result = calibrate(results, args.target_fpr, args.use_drift)
    config = {
        "preset": args.preset, "n": args.n, "min_agreement": result.policy.min_agreement, "max_drift": result.policy.max_drift,
        "calibration": {"samples": result.samples, "target_fpr": args.target_fpr, "false_positive_rate": result.false_positive_rate,
                        "uncertain_rate": result.uncertain_rate, "source": args.input or f"fashion-mnist train[:{args.limit}]"},
    }
    print(json.dumps(config, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(config, handle, indent=2)
    return 0
