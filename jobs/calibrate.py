"""`disillusion calibrate`: verdict thresholds from clean data, written as a config for `sanitize --config`."""

from __future__ import annotations

import argparse
import json

import torch

from pipeline.data.fashion_mnist import DEBIAN_DIR
from pipeline.defense.calibration import METHODS
from pipeline.defense.consensus import DEFAULT_ALPHA

NAME = "calibrate"
HELP = "Choose verdict thresholds on clean data for a target false-positive rate; writes a JSON config."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="SPEC", help="clean WebDataset shards (default for demo: Fashion-MNIST test images outside the bundled sample)")
    source.add_argument("--data", default=DEBIAN_DIR,
                        help="Fashion-MNIST directory (demo preset): uses test images outside the bundled sample")
    parser.add_argument("--limit", type=int, default=1000, help="clean samples to use")
    parser.add_argument("--target-fpr", type=float, default=0.05)
    parser.add_argument("--method", choices=METHODS, default="drift",
                        help="drift: flag embeddings that move under purification (default); votes: flag any label flip")
    parser.add_argument("--min-agreement", type=float, default=0.5, help="drift method: vote share below which a sample is 'uncertain'")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--early-exit", choices=("off", "certain", "sequential"), default="sequential", help="as the run will use it")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="as the run will use it (sequential early exit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--json", metavar="FILE", help="write {min_agreement, max_drift, n, ...} here")


def clean_images(args) -> tuple[torch.Tensor, list[str]]:
    if args.input:
        from pipeline.io.shards import Sample, read_samples
        from pipeline.io.storage import Storage
        from pipeline.presets import get_preset
        from pipeline.sanitize.records import as_images, to_records

        storage, images, keys = Storage(args.s3_endpoint), [], []
        work_size = get_preset(args.preset).work_size  # the geometry `sanitize` will examine them at
        for uri in storage.expand(args.input):
            for item in read_samples(storage.read_bytes(uri)):
                if isinstance(item, Sample):
                    for record in to_records(item, work_size):
                        if record.pixels is not None:
                            images.append(as_images([record.pixels])[0])
                            keys.append(record.key)
                if len(images) >= args.limit:
                    return images, keys
        return images, keys
    from pipeline.data.fashion_mnist import held_out_test_indices, load_split

    if args.preset != "demo":
        raise ValueError("pass --input with clean shards for presets other than demo")
    # Clean images from the distribution the demo corpus comes from, none of them in that corpus.
    indices = held_out_test_indices()[: args.limit]
    x, _ = load_split("t10k", args.data).tensors(indices)
    return list(x), [f"t10k-{i:05d}" for i in indices]


def run(args: argparse.Namespace) -> int:
    from pipeline.batching import map_batched
    from pipeline.defense import ConsensusConfig, ConsensusPurifier
    from pipeline.defense.calibration import calibrate
    from pipeline.models.noise import seed_for_key
    from pipeline.presets import get_preset

    preset = get_preset(args.preset)
    consensus = ConsensusConfig(n=args.n, early_exit=args.early_exit, alpha=args.alpha, seed=args.seed)
    purifier = ConsensusPurifier(preset.load_reconstructor(), preset.load_encoder(), preset.label_bank(), consensus)
    images, keys = clean_images(args)
    if not images:
        raise ValueError("no decodable clean images found")
    results = map_batched(
        list(range(len(images))), args.batch_size,
        lambda part: purifier.purify(torch.stack([images[i] for i in part]), seeds=[seed_for_key(args.seed, keys[i]) for i in part]),
        key=lambda i: tuple(images[i].shape),
    )
    result = calibrate(results, args.target_fpr, args.method, args.min_agreement)
    policy = result.policy
    config = {
        "preset": args.preset, "n": args.n, "early_exit": args.early_exit, "alpha": args.alpha,
        "min_agreement": policy.min_agreement, "max_drift": policy.max_drift, "flip_min_drift": policy.flip_min_drift,
        "calibration": {"method": args.method, "samples": result.samples, "target_fpr": args.target_fpr,
                        "false_positive_rate": result.false_positive_rate, "uncertain_rate": result.uncertain_rate,
                        "source": args.input or f"fashion-mnist t10k outside the bundled sample, first {result.samples}"},
    }
    print(json.dumps(config, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(config, handle, indent=2)
    return 0
