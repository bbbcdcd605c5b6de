"""`disillusion check`: run the consensus defense on image files and print a verdict for each."""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from pipeline.batching import map_batched
from pipeline.defense import ConsensusPurifier
from pipeline.io.images import ImageDecodeError, decode_image, encode_png
from pipeline.models import load_encoder, load_reconstructor
from pipeline.models.noise import NoiseKey

from .options import (
    add_consensus_arguments,
    add_model_arguments,
    consensus_config,
    label_bank,
    reconstructor_options,
    resolve_device,
)

NAME = "check"
HELP = "Check image files for adversarial illusions with the consensus defense and print a verdict per file."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    add_model_arguments(parser)
    add_consensus_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", metavar="FILE", help="also write one JSON object per image to FILE ('-' for stdout)")
    parser.add_argument("--save-purified", metavar="DIR", help="write each image's representative reconstruction as PNG")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    reconstructor = load_reconstructor(args.reconstructor, device=device, s3_endpoint=args.s3_endpoint, **reconstructor_options(args))
    encoder = load_encoder(args.encoder, device=device, s3_endpoint=args.s3_endpoint)
    purifier = ConsensusPurifier(reconstructor, encoder, label_bank(args), consensus_config(args))
    noise = NoiseKey.fresh() if args.seed is None else NoiseKey.public(args.seed)  # secret unless a public seed is asked for

    rows: dict[str, dict] = {}
    items = []
    for path in args.images:
        try:
            with open(path, "rb") as handle:
                items.append((path, decode_image(handle.read())))
        except (OSError, ImageDecodeError) as error:
            rows[path] = {"path": path, "status": "error", "error": str(error)}

    def purify(chunk):
        images = torch.stack([image for _, image in chunk])
        seeds = [noise.sample_seed(os.path.basename(path), image.numpy().tobytes()) for path, image in chunk]
        results = purifier.purify(images, seeds=seeds, keep_images=bool(args.save_purified))
        for (path, _), result in zip(chunk, results):
            if args.save_purified:
                os.makedirs(args.save_purified, exist_ok=True)
                name = os.path.splitext(os.path.basename(path))[0] + ".purified.png"
                with open(os.path.join(args.save_purified, name), "wb") as handle:
                    handle.write(encode_png(result.image))
        return [_row(path, result) for (path, _), result in zip(chunk, results)]

    def failed(item, error):
        return {"path": item[0], "status": "error", "error": f"purification failed: {type(error).__name__}: {error}"}

    # One tensor size per batch: files keep their own size here.
    outcome = map_batched(items, args.batch_size, purify, key=lambda item: tuple(item[1].shape), on_error=failed)
    rows.update((row["path"], row) for row in outcome)

    ordered = [rows[path] for path in args.images]
    _print_table(ordered)
    if args.json:
        lines = "".join(json.dumps(row) + "\n" for row in ordered)
        if args.json == "-":
            sys.stdout.write(lines)
        else:
            with open(args.json, "w") as handle:
                handle.write(lines)
    return 1 if any(row["status"] == "error" for row in ordered) else 0


def _row(path, result) -> dict:
    return {
        "path": path,
        "status": "ok",
        "error": None,
        "verdict": result.verdict,
        "label_original": result.label_original_name,
        "label_consensus": result.label_consensus_name,
        "agreement": round(result.agreement, 4),
        "samples_used": result.samples_used,
        "drift": round(result.drift, 6),
        "votes": [result.labels[v] for v in result.votes],
    }


def _print_table(rows) -> None:
    print(f"{'verdict':<10} {'original':<16} {'consensus':<16} {'agree':>5} {'n':>3} {'drift':>7}  file")
    for row in rows:
        if row["status"] == "error":
            print(f"{'error':<10} {'':<16} {'':<16} {'':>5} {'':>3} {'':>7}  {row['path']}: {row['error']}")
            continue
        print(
            f"{row['verdict']:<10} {row['label_original'][:16]:<16} {row['label_consensus'][:16]:<16} "
            f"{row['agreement']:>5.2f} {row['samples_used']:>3} {row['drift']:>7.4f}  {row['path']}"
        )

