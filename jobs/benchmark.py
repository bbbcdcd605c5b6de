"""`disillusion benchmark`: throughput and memory, measured the same way on any machine.

Sections (each prints a Markdown table under the exact command, date and machine; `--json` keeps
the raw numbers):
- models: embedding, N reconstructions and the consensus, per reconstructor (in process);
- geometry: the same images as one fixed size and as a scraped corpus of varied sizes and encodings,
  through the Ray pipeline: samples/s and how full the purifier's batches are;
- pipeline: the Ray pipeline against a bare in-process loop over the same shards, the driver's CPU
  per 1,000 samples, and the whole run's peak memory on 1x and 10x the corpus;
- early-exit: each early-exit rule against drawing all N, on a corpus with planted illusions;
- attack (only when named): seconds per step of the detect-adaptive attack per reconstructor, with
  32 reconstructions per model call against the whole step's batch x EOT draws in one call;
- full-size (`--full-size`, alone): the paper's architectures with random weights (SD VAE with
  ImageBind-huge or CLIP ViT-L/14 at 224 px) under several execution settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
import time

import torch

from .options import add_consensus_settings, add_device_argument

NAME = "benchmark"
HELP = "Measure samples/s and memory: stages, working geometry, the Ray pipeline, early exit, full-size models."
SECTIONS = ("models", "reader", "geometry", "pipeline", "early-exit", "attack")
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "attack")  # the attack section runs when named


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated, from {', '.join(SECTIONS)} (default: all but attack)")
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere: a smoke run, not a measurement")
    parser.add_argument("--reconstructors", help="models section: comma-separated kinds (default: all of the preset's)")
    parser.add_argument("--samples", type=int, default=256, help="models section: images per stage (from the bundled sample)")
    parser.add_argument("--image-size", type=int, help="models section: resize the images to this size (default: the preset's working size)")
    add_consensus_settings(parser, ("n",))
    parser.add_argument("--batch-size", type=int, default=32, help="models and early-exit sections (the pipeline uses its own default, 16)")
    add_device_argument(parser)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--geometry-samples", type=int, default=400, help="geometry section: corpus size")
    parser.add_argument("--pipeline-samples", type=int, default=320, help="pipeline section: the 1x corpus (10x is run too)")
    parser.add_argument("--shard-size", type=int, default=200, help="samples per shard in the corpora of the Ray sections")
    parser.add_argument("--early-exit-samples", type=int, default=500, help="early-exit section: corpus size")
    parser.add_argument("--illusion-fraction", type=float, default=0.1, help="early-exit section: share of planted illusions")
    parser.add_argument("--attack-images", type=int, default=20, help="attack section: images per attack batch")
    parser.add_argument("--eot", type=int, default=16, help="attack section: reconstruction draws per image and step")
    parser.add_argument("--full-size", action="store_true", help="only the full-size section (real architectures, random weights)")
    parser.add_argument("--encoder", choices=("imagebind", "clip-l14"), default="imagebind", help="full-size section: the encoder")
    parser.add_argument("--full-size-samples", type=int, help="full-size section: images per setting (default 128 on CUDA, 2 on CPU)")
    parser.add_argument("--settings", help="full-size section: comma-separated setting keys (default: every one; see pipeline/research/benchmark.py)")
    parser.add_argument("--json", metavar="FILE")


def rerun_command(args: argparse.Namespace) -> str:
    """The command line that repeats this measurement, every setting spelled out."""
    if args.full_size:
        words = ["disillusion", NAME, "--full-size", "--encoder", args.encoder, "--n", str(args.n), "--device", args.device]
        if args.full_size_samples:
            words += ["--full-size-samples", str(args.full_size_samples)]
        if args.settings:
            words += ["--settings", args.settings]
    else:
        words = ["disillusion", NAME, "--preset", args.preset, "--sections", args.sections, "--samples", str(args.samples),
                 "--n", str(args.n), "--batch-size", str(args.batch_size), "--device", args.device,
                 "--geometry-samples", str(args.geometry_samples), "--pipeline-samples", str(args.pipeline_samples),
                 "--shard-size", str(args.shard_size), "--early-exit-samples", str(args.early_exit_samples),
                 "--illusion-fraction", str(args.illusion_fraction)]
        if "attack" in args.sections:
            words += ["--attack-images", str(args.attack_images), "--eot", str(args.eot)]
        for flag, value in (("--reconstructors", args.reconstructors), ("--image-size", args.image_size)):
            if value:
                words += [flag, str(value)]
    if args.threads:
        words += ["--threads", str(args.threads)]
    return shlex.join(words + (["--quick"] if args.quick else []))


def bench_images(count: int, size: int) -> torch.Tensor:
    from pipeline.research.data.fashion_mnist import load_sample, to_rgb32

    sample = load_sample()
    indices = [i % len(sample) for i in range(count)]  # larger corpora repeat the sample (keys differ)
    images = to_rgb32(torch.from_numpy(sample.images[indices]))
    if size != images.shape[-1]:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return images


def _quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.samples, args.geometry_samples, args.pipeline_samples = min(args.samples, 16), min(args.geometry_samples, 24), min(args.pipeline_samples, 8)
        args.early_exit_samples, args.shard_size = min(args.early_exit_samples, 20), min(args.shard_size, 8)
        args.attack_images, args.eot = min(args.attack_images, 2), min(args.eot, 2)
        args.full_size_samples = args.full_size_samples or 1


def run(args: argparse.Namespace) -> int:
    from pipeline.research.benchmark import machine_description

    from .options import resolve_device

    _quick(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    command = rerun_command(args)
    print(f"command: `{command}`")
    print(f"date: {time.strftime('%Y-%m-%d')}; machine: {machine_description(device)}")
    report: dict = {"command": command, "machine": machine_description(device), "date": time.strftime("%Y-%m-%d")}
    if args.full_size:
        report["full_size"] = full_size_section(args, device)
    else:
        sections = [s.strip() for s in args.sections.split(",") if s.strip()]
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown benchmark section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
        if "models" in sections:
            report["rows"] = models_section(args, device)
        if "reader" in sections and args.geometry_samples:
            report["reader"] = reader_section(args)
        if "geometry" in sections and args.geometry_samples:
            report["geometry"] = geometry_section(args)
        if "pipeline" in sections and args.pipeline_samples:
            report["pipeline"] = pipeline_section(args)
        if "early-exit" in sections and args.early_exit_samples:
            report["early_exit"] = early_exit_section(args, device)
        if "attack" in sections:
            report["attack"] = attack_section(args, device)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


# --- sections ---------------------------------------------------------------------------------------

def models_section(args: argparse.Namespace, device: torch.device) -> list[dict]:
    from pipeline.presets import get_preset
    from pipeline.research.benchmark import benchmark_models, markdown_table
    from pipeline.research.models import load_reconstructor

    preset = get_preset(args.preset)
    kinds = args.reconstructors.split(",") if args.reconstructors else list(preset.reconstructors)
    size = args.image_size or preset.work_size
    images = bench_images(args.samples, size)
    encoder = preset.load_encoder(device=device)
    reconstructors = {kind: load_reconstructor(preset, kind, device=device) for kind in kinds}
    rows = benchmark_models(reconstructors, encoder, preset.label_bank(), images, n=args.n, batch_size=args.batch_size, device=device)
    print(f"\n### Stages (in process; images {size}x{size}, batch {args.batch_size})\n")
    print(markdown_table(rows))
    return [r.as_dict() for r in rows]


def attack_section(args: argparse.Namespace, device: torch.device) -> list[dict]:
    from pipeline.presets import get_preset
    from pipeline.research.benchmark import time_attack_steps
    from pipeline.research.models import load_reconstructor

    preset = get_preset(args.preset)
    kinds = args.reconstructors.split(",") if args.reconstructors else list(preset.reconstructors)
    images = bench_images(args.attack_images, args.image_size or preset.work_size)
    encoder, bank = preset.load_encoder(device=device), preset.label_bank()
    chains = len(images) * args.eot
    print(f"\n### Detect-adaptive attack step ({len(images)} images x {args.eot} EOT draws = {chains} reconstructions, "
          "loss forward and backward; median of 3 steps)\n")
    print("| reconstructor | reconstructions per model call | seconds / step | peak GPU MB |")
    print("|---|---|---|---|")
    rows = []
    for kind in kinds:
        reconstructor = load_reconstructor(preset, kind, device=device)
        for size in sorted({min(32, chains), chains}):
            row = time_attack_steps(reconstructor, encoder, bank, images, eot=args.eot, decode_batch_size=size, device=device)
            gpu = "-" if row.peak_gpu_mb is None else f"{row.peak_gpu_mb:.0f}"
            print(f"| {kind} | {size} | {row.seconds:.3f} | {gpu} |", flush=True)
            rows.append(row.as_dict())
    return rows


def _ray():
    """A local Ray cluster with Ray Data's own actors already started: the first run of a session
    would otherwise carry their start-up, and comparisons would depend on the order of the runs."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.from_items([{"x": 0}]).map(lambda row: row).take_all()
    return ray


def _pipeline(config, corpus: str, output: str) -> dict:
    """One Ray run with its wall clock, the driver's CPU (from the run's summary) and the peak memory
    of every process of the run."""
    from pipeline.distributed.runner import run_corpus
    from pipeline.process_memory import PeakMemory

    start = time.perf_counter()
    with PeakMemory() as memory:
        summary = run_corpus(config, corpus, output, overwrite=True, echo=lambda line: None)
    summary.update(wall_seconds=round(time.perf_counter() - start, 2), peak_memory_mb=round(memory.peak_mb))
    return summary


def _steady(summary: dict) -> str:
    rate = summary.get("steady_samples_per_second")  # none for runs of fewer than 3 shards
    return "-" if not rate else f"{rate:.1f}"


def _fill(summary: dict) -> str:
    fill = (summary.get("batches") or {}).get("fill")
    return "n/a" if fill is None else f"{100 * fill:.1f}%"


def reader_section(args: argparse.Namespace) -> dict:
    """What the sandbox that parses corpus bytes costs: read + decode in process and sandboxed, on
    the demo's 28 px PNGs and on the varied corpus of the geometry section (sides 64-768 px, 70% JPEG)."""
    from pipeline.io.images import encode_png
    from pipeline.io.sandbox import Sandbox
    from pipeline.io.shards import Sample, write_samples
    from pipeline.research.benchmark import time_reader, varied_encodings

    images = bench_images(args.geometry_samples, 28)
    corpora = {"fixed": [("png", encode_png(image)) for image in images], "varied": varied_encodings(images, seed=0)}
    sandbox, out = Sandbox(), {}
    for name, encodings in corpora.items():
        shards = [write_samples([Sample(f"r{i:06d}", {fmt: data}) for i, (fmt, data) in enumerate(encodings[first : first + args.shard_size], first)])
                  for first in range(0, len(encodings), args.shard_size)]
        out[name] = {"in_process": time_reader(shards, 32), "sandboxed": time_reader(shards, 32, sandbox)}
        out[name]["overhead_ms_per_image"] = round(1000 * (out[name]["sandboxed"]["seconds"] - out[name]["in_process"]["seconds"])
                                                   / out[name]["sandboxed"]["images"], 3)
    sandbox.close()
    print(f"\n### Reader: read + decode to 32 px, in process and sandboxed ({args.geometry_samples} images, shards of {args.shard_size})\n")
    print("| corpus | in process, images / s | sandboxed, images / s | sandbox cost per image |")
    print("|---|---|---|---|")
    for name, label in (("fixed", "one size: 28x28 PNG"), ("varied", "varied: sides 64-768 px, 70% JPEG q90, 30% PNG")):
        r = out[name]
        print(f"| {label} | {r['in_process']['images_per_second']:.0f} | {r['sandboxed']['images_per_second']:.0f} | "
              f"{r['overhead_ms_per_image']:.2f} ms |")
    return out


def geometry_section(args: argparse.Namespace) -> dict:
    from pipeline.io.images import encode_png
    from pipeline.research.benchmark import varied_encodings, write_corpus
    from pipeline.sanitize.config import SanitizeConfig

    _ray()
    images = bench_images(args.geometry_samples, 32)
    corpora = {"fixed": [("png", encode_png(image)) for image in images], "varied": varied_encodings(images, seed=0)}
    config = SanitizeConfig.resolve(preset=args.preset, n=args.n)
    out = {}
    with tempfile.TemporaryDirectory(prefix="disillusion-bench-") as root:
        for name, encodings in corpora.items():
            write_corpus(os.path.join(root, name), encodings, args.shard_size)
            out[name] = _pipeline(config, os.path.join(root, name), os.path.join(root, f"{name}-out"))
            out[name]["input_mb"] = round(sum(len(data) for _, data in encodings) / 2**20, 1)
    ratio = out["varied"]["samples_per_second"] / out["fixed"]["samples_per_second"]
    out["varied_over_fixed"] = round(ratio, 3)
    print(f"\n### Working geometry (Ray pipeline, {args.geometry_samples} samples, shards of {args.shard_size}, N={args.n})\n")
    print("| corpus | input MB | samples / s | steady samples / s | batch fill | seconds |")
    print("|---|---|---|---|---|---|")
    for name, label in (("fixed", "one size: 32x32 PNG"), ("varied", "varied: sides 64-768 px, 1:2-2:1, 70% JPEG q90, 30% PNG")):
        s = out[name]
        print(f"| {label} | {s['input_mb']} | {s['samples_per_second']:.1f} | {_steady(s)} | {_fill(s)} | {s['seconds']} |")
    print(f"\nvaried / fixed: {ratio:.2f}x")
    return out


def pipeline_section(args: argparse.Namespace) -> dict:
    import numpy as np

    from pipeline.io.images import encode_png
    from pipeline.research.benchmark import bare_loop, write_corpus
    from pipeline.sanitize.config import SanitizeConfig

    ray = _ray()
    config = SanitizeConfig.resolve(preset=args.preset, n=args.n)
    small, large, fine = args.pipeline_samples, 10 * args.pipeline_samples, max(1, args.shard_size // 4)
    out: dict = {"threads": torch.get_num_threads(), "cluster": ray.cluster_resources()}
    runs = (("1x", small, args.shard_size), ("10x", large, args.shard_size), ("10x, small shards", large, fine))
    with tempfile.TemporaryDirectory(prefix="disillusion-bench-") as root:
        for name, count, per_shard in runs:
            corpus = os.path.join(root, name.replace(", ", "-").replace(" ", "-"))
            shards = write_corpus(corpus, [("png", encode_png(i)) for i in bench_images(count, 32)], per_shard)
            out[name] = {**_pipeline(config, corpus, corpus + "-out"), "shard_size": per_shard, "shard_count": len(shards)}
            if name == "10x":
                out["bare"] = bare_loop(config, shards, os.path.join(root, "bare-out"))
    one, ten = out["1x"], out["10x"]
    per_1000 = 1000 * (ten["driver_cpu_seconds"] - one["driver_cpu_seconds"]) / (ten["samples"] - one["samples"])
    # driver CPU = start-up + a share of a core for as long as the run lasts + a cost per shard:
    # three runs that differ in length and in shard count separate the three.
    runs_ = [out[name] for name, _, _ in runs]
    fit = np.linalg.lstsq(np.array([[1.0, r["wall_seconds"], r["shard_count"]] for r in runs_]),
                          np.array([r["driver_cpu_seconds"] for r in runs_]), rcond=None)[0]
    out["driver"] = {"steady_cpu_seconds_per_1000_samples": ten["steady_driver_cpu_per_1000_samples"],
                     "cpu_seconds_per_1000_samples_10x_minus_1x": round(per_1000, 3), "startup_cpu_seconds": round(float(fit[0]), 2),
                     "core_share_while_running": round(float(fit[1]), 4), "cpu_seconds_per_shard": round(float(fit[2]), 4)}
    out["pipeline_over_bare"] = round(ten["samples_per_second"] / out["bare"]["samples_per_second"], 3)
    steady = ten["steady_samples_per_second"]
    out["steady_pipeline_over_bare"] = round(steady / out["bare"]["samples_per_second"], 3) if steady else None
    out["memory_10x_over_1x"] = round(ten["peak_memory_mb"] / one["peak_memory_mb"], 3)
    out["actor_busy_share"] = round(ten["purifying_seconds"] / (ten["seconds"] * ten["actors"]), 3)
    out["purifying_over_bare"] = round(ten["purifying_seconds"] / out["bare"]["seconds"], 3)
    print(f"\n### Ray pipeline (demo corpus of 32x32 PNG, N={args.n}, torch threads {out['threads']})\n")
    print("| run | samples | shards | samples / s | steady samples / s | seconds | driver CPU s | driver CPU s per 1,000 samples, steady "
          "| peak memory MB (all processes) | batch fill |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, _, _ in runs:
        s = out[name]
        print(f"| Ray pipeline, {name} | {s['samples']} | {s['shard_count']} x {s['shard_size']} | {s['samples_per_second']:.1f} | "
              f"{_steady(s)} | {s['seconds']} | {s['driver_cpu_seconds']} | {s['steady_driver_cpu_per_1000_samples'] or '-'} | "
              f"{s['peak_memory_mb']} | {_fill(s)} |")
    b = out["bare"]
    print(f"| bare loop in process (10x corpus, models loaded in the time) | {b['samples']} | {ten['shard_count']} x {ten['shard_size']} | "
          f"{b['samples_per_second']:.1f} | - | {b['seconds']} | - | - | - | - |")
    d = out["driver"]
    print(f"\npipeline / bare loop: {out['pipeline_over_bare']:.2f}x over the whole run, {out['steady_pipeline_over_bare'] or 0:.2f}x once "
          f"the first shard is out; peak memory 10x / 1x: {out['memory_10x_over_1x']:.2f}")
    # Where the gap goes: time the actor spent purifying against the bare loop's whole time, and the rest
    # of the run (start-up, hand-overs, the last shard's writing).
    print(f"purification actor (10x run): {ten['purifying_seconds']:.1f} s purifying = {100 * out['actor_busy_share']:.0f}% of the run; "
          f"{out['purifying_over_bare']:.2f}x the bare loop's whole time (10x run)")
    print(f"driver CPU per 1,000 samples: {d['steady_cpu_seconds_per_1000_samples']} s once the first shard is out (10x run), "
          f"{per_1000:.3f} s as 10x - 1x; fitted over the three runs: {d['startup_cpu_seconds']} s at start-up, "
          f"{100 * d['core_share_while_running']:.1f}% of a core while a run lasts (Ray Data's scheduling loop), "
          f"{1000 * d['cpu_seconds_per_shard']:.0f} ms per shard")
    return out


def early_exit_section(args: argparse.Namespace, device: torch.device) -> list[dict]:
    from pipeline.presets import get_preset
    from pipeline.research.attacks import AttackConfig, illusion_attack, pick_targets
    from pipeline.research.attacks.illusion import cosine_objective
    from pipeline.research.benchmark import early_exit_comparison
    from pipeline.research.data.fashion_mnist import load_sample
    from pipeline.research.models import load_reconstructor

    preset = get_preset(args.preset)
    encoder, reconstructor, bank = preset.load_encoder(device=device), load_reconstructor(preset, device=device), preset.label_bank()
    sample = load_sample()
    count = args.early_exit_samples
    images = bench_images(count, preset.work_size)
    labels = torch.as_tensor(sample.labels[[i % len(sample) for i in range(count)]])
    planted = torch.Generator().manual_seed(0)
    chosen = torch.randperm(count, generator=planted)[: round(args.illusion_fraction * count)]
    targets = pick_targets(labels[chosen].tolist(), len(bank), seed=0)
    objective = cosine_objective(encoder.embed_images, bank.embeddings(encoder)[targets])
    images[chosen] = illusion_attack(images[chosen].to(device), objective, AttackConfig(steps=100)).cpu()
    modes = [("certain", 0.01), ("sequential", 0.01), ("sequential", 0.02), ("sequential", 0.05)]
    rows = early_exit_comparison(reconstructor, encoder, bank, images.to(device), n=args.n, batch_size=args.batch_size,
                                 modes=modes, verdict=preset.verdict.without_witness())  # the draws, not the witness
    print(f"\n### Early exit ({count} samples, {len(chosen)} planted illusions, N={args.n}, batch {args.batch_size}, "
          f"preset {preset.name} with its verdict thresholds)\n")
    print("| rule | samples / s | mean draws | speedup vs all N | identical verdicts | identical labels |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        rule = r["mode"] + (f" (alpha {r['alpha']})" if r["alpha"] else "")
        print(f"| {rule} | {r['samples_per_second']:.1f} | {r['mean_draws']:.2f} | {r['speedup']:.2f}x | "
              f"{100 * r['identical_verdicts']:.1f}% | {100 * r['identical_labels']:.1f}% |")
    return rows


def full_size_section(args: argparse.Namespace, device: torch.device) -> list[dict]:
    from pipeline.research.benchmark import full_size_settings, run_full_size

    count = args.full_size_samples or (128 if device.type == "cuda" else 2)
    settings = full_size_settings(device)
    if args.settings:
        wanted = args.settings.split(",")
        unknown = set(wanted) - {s.key for s in settings}
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; choose from {', '.join(s.key for s in settings)}")
        settings = [s for s in settings if s.key in wanted]
    rows = run_full_size(args.encoder, device, count=count, n=args.n, settings=settings, echo=print)
    return rows
