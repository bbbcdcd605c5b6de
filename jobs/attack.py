"""`disillusion attack`: plant adversarial illusions in a seeded fraction of a WebDataset corpus.

Each output shard keeps the input's sample keys and order. An attacked sample's image is replaced by
the adversarial image as lossless PNG (a lossy format would weaken the perturbation); every sample's
json member gains the ground truth {"label", "illusion", "target"}. Samples whose image cannot be
decoded or whose label is unknown are copied unchanged and counted.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict

import torch

NAME = "attack"
HELP = "Write illusion shards: a seeded fraction of samples carries an adversarial illusion, with ground truth."
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="SPEC", help="shards: directory, S3 prefix, glob, brace range or list file")
    parser.add_argument("--output", required=True, metavar="URI", help="output directory or S3 prefix")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--eps", default="16/255")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--step-size", default="1/255")
    parser.add_argument("--fraction", type=float, default=0.5, help="share of samples to attack (seeded, per key)")
    parser.add_argument("--adaptive", action="store_true", help="EOT through the preset's reconstructor instead of the plain attack")
    parser.add_argument("--eot-samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from pipeline.attacks import AttackConfig, eot_objective, illusion_attack, pick_targets
    from pipeline.attacks.illusion import cosine_objective
    from pipeline.io.images import ImageDecodeError, decode_image, encode_png
    from pipeline.io.shards import Sample, ShardProblem, read_samples, write_samples
    from pipeline.io.storage import Storage, join, shard_name
    from pipeline.models.noise import seed_for_key
    from pipeline.presets import get_preset

    from .evaluate import parse_fraction

    if not 0.0 <= args.fraction <= 1.0:
        raise ValueError("--fraction must lie in [0, 1]")
    preset = get_preset(args.preset)
    encoder = preset.load_encoder()
    bank = preset.label_bank()
    text = bank.embeddings(encoder)
    config = AttackConfig(eps=parse_fraction(args.eps), step_size=parse_fraction(args.step_size), steps=args.steps, seed=args.seed)
    reconstructor = preset.load_reconstructor() if args.adaptive else None
    storage = Storage(args.s3_endpoint)

    problems = 0
    for uri in storage.expand(args.input):
        target_uri = join(args.output, f"{shard_name(uri)}.tar")
        if storage.exists(target_uri) and not args.overwrite:
            log.info("%s exists, skipping (use --overwrite to redo)", target_uri)
            continue
        samples: list[Sample] = []
        for item in read_samples(storage.read_bytes(uri)):
            if isinstance(item, ShardProblem):
                problems += 1
                log.error("%s: %s", uri, item.message)
            else:
                samples.append(item)

        chosen = defaultdict(list)  # image size -> [(sample index, image, label)]
        truth = {}
        for index, sample in enumerate(samples):
            meta = _read_json(sample)
            label = _label_index(meta, sample, bank.labels)
            truth[index] = {**meta, "label": bank.labels[label] if label is not None else meta.get("label"), "illusion": False, "target": None}
            attack_it = label is not None and (seed_for_key(args.seed, sample.key) >> 1) / 2**62 < args.fraction
            ext = sample.image_extension()
            if not attack_it or ext is None:
                continue
            try:
                image = decode_image(sample.members[ext])
            except ImageDecodeError as error:
                log.warning("%s/%s: not attacked: %s", uri, sample.key, error)
                continue
            chosen[tuple(image.shape)].append((index, image, label))

        attacked = 0
        for group in chosen.values():
            for start in range(0, len(group), args.batch_size):
                part = group[start : start + args.batch_size]
                images = torch.stack([image for _, image, _ in part])
                labels = [label for _, _, label in part]
                targets = pick_targets(labels, len(bank), seed=seed_for_key(args.seed, samples[part[0][0]].key))
                goal = text[targets]
                if reconstructor is not None:
                    objective = eot_objective(reconstructor.reconstruct, encoder.embed_images, goal, args.eot_samples, seed=args.seed)
                else:
                    objective = cosine_objective(encoder.embed_images, goal)
                adversarial = illusion_attack(images, objective, config)
                for (index, _, _), image, target in zip(part, adversarial, targets.tolist()):
                    sample = samples[index]
                    ext = sample.image_extension()
                    sample.members = {("png" if name == ext else name): (encode_png(image) if name == ext else data) for name, data in sample.members.items()}
                    truth[index].update(illusion=True, target=bank.labels[target])
                    attacked += 1
        for index, sample in enumerate(samples):
            sample.members["json"] = json.dumps(truth[index]).encode()
        storage.write_bytes(target_uri, write_samples(samples))
        print(f"{shard_name(uri)}: {len(samples)} samples, {attacked} illusions -> {target_uri}", flush=True)
    return 1 if problems else 0


def _read_json(sample) -> dict:
    try:
        meta = json.loads(sample.members.get("json", b"{}") or b"{}")
        return meta if isinstance(meta, dict) else {}
    except (ValueError, UnicodeDecodeError):
        return {}


def _label_index(meta: dict, sample, labels: list[str]) -> int | None:
    """The true label from json `label` (a name) or a `cls` member (an index)."""
    name = meta.get("label")
    if isinstance(name, str) and name in labels:
        return labels.index(name)
    raw = sample.members.get("cls")
    try:
        index = int(raw.decode().strip()) if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        return None
    return index if index is not None and 0 <= index < len(labels) else None
