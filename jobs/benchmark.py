"""`disillusion benchmark`: throughput and memory of each stage, and of the Ray pipeline end to end.

Results go to stdout as a Markdown table with the exact command, date and machine, ready for
BENCHMARKS.md; `--json` keeps the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
import time

import torch

NAME = "benchmark"
HELP = "Measure samples/s and peak memory of embedding, reconstruction, consensus and the Ray pipeline."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--reconstructors", help="comma-separated kinds (default: all of the preset's)")
    parser.add_argument("--samples", type=int, default=256, help="images per stage (from the bundled sample)")
    parser.add_argument("--image-size", type=int, help="resize the images to this size (default: 32 for demo, else 224)")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--pipeline-samples", type=int, default=1000, help="corpus size for the Ray run; 0 skips it")
    parser.add_argument("--json", metavar="FILE")


def bench_images(count: int, size: int) -> torch.Tensor:
    from pipeline.data.fashion_mnist import load_sample, to_rgb32

    sample = load_sample()
    if not 0 < count <= len(sample):
        raise ValueError(f"--samples must lie in 1..{len(sample)}")
    images = to_rgb32(torch.from_numpy(sample.images[:count]))
    if size != images.shape[-1]:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return images


def pipeline_run(preset: str, n: int, count: int) -> dict:
    """Sanitise a clean corpus of `count` bundled images on a local Ray cluster; the run's summary."""
    from pipeline.distributed.runner import run_corpus
    from pipeline.io.images import encode_png
    from pipeline.io.shards import Sample, write_samples
    from pipeline.io.storage import Storage
    from pipeline.sanitize.config import SanitizeConfig

    images, storage = bench_images(count, 32), Storage()
    with tempfile.TemporaryDirectory(prefix="disillusion-bench-") as root:
        for shard, first in enumerate(range(0, count, 50)):
            samples = [Sample(f"b{i:05d}", {"png": encode_png(images[i])}) for i in range(first, min(count, first + 50))]
            storage.write_bytes(os.path.join(root, "in", f"shard-{shard:06d}.tar"), write_samples(samples))
        start = time.perf_counter()
        summary = run_corpus(SanitizeConfig(preset=preset, n=n), os.path.join(root, "in"), os.path.join(root, "out"),
                             overwrite=True, echo=lambda line: None)
        summary["wall_seconds"] = round(time.perf_counter() - start, 2)
    return summary


def rerun_command(args: argparse.Namespace) -> str:
    """The command line that repeats this measurement, every setting spelled out."""
    words = ["disillusion", NAME, "--preset", args.preset, "--samples", str(args.samples), "--n", str(args.n),
             "--batch-size", str(args.batch_size), "--device", args.device, "--pipeline-samples", str(args.pipeline_samples)]
    for flag, value in (("--reconstructors", args.reconstructors), ("--image-size", args.image_size), ("--threads", args.threads)):
        if value:
            words += [flag, str(value)]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from pipeline.benchmark import benchmark_models, machine_description, markdown_table, peak_rss_mb
    from pipeline.presets import get_preset

    from .options import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    preset = get_preset(args.preset)
    kinds = args.reconstructors.split(",") if args.reconstructors else list(preset.reconstructors)
    size = args.image_size or (32 if preset.name == "demo" else 224)
    images = bench_images(args.samples, size)
    encoder = preset.load_encoder(device=device)
    reconstructors = {kind: preset.load_reconstructor(kind, device=device) for kind in kinds}
    rows = benchmark_models(reconstructors, encoder, preset.label_bank(), images, n=args.n, batch_size=args.batch_size, device=device)

    command = rerun_command(args)
    print(f"command: `{command}`")
    print(f"date: {time.strftime('%Y-%m-%d')}; machine: {machine_description(device)}; images {size}x{size}, batch {args.batch_size}")
    print()
    print(markdown_table(rows))
    report = {"command": command, "machine": machine_description(device), "rows": [r.as_dict() for r in rows]}
    if args.pipeline_samples:
        summary = pipeline_run(preset.name, args.n, args.pipeline_samples)
        report["pipeline"] = summary
        print()
        print(f"Ray pipeline (sanitize, {summary['samples']} clean 32x32 samples, N={args.n}, early exit `certain`, "
              f"preset {preset.name}): {summary['samples_per_second']} samples/s over {summary['seconds']} s of processing, "
              f"{summary['wall_seconds']} s wall clock including Ray start-up; driver peak RSS {peak_rss_mb():.0f} MB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0
