"""Throughput and memory of the defense's stages, measured the same way on any machine.

Each stage runs once on a small batch to warm up (lazy allocations, kernel selection), then over
every image in batches; the time covers only the timed pass. On CUDA the device is synchronised
before the clock stops, and peak memory is reset per stage. Host memory is the process's peak
resident set so far (the kernel cannot reset it), so it only grows down the table.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..defense import ConsensusConfig, ConsensusPurifier


@dataclass(frozen=True)
class Measurement:
    stage: str
    reconstructor: str
    samples: int
    seconds: float
    peak_rss_mb: float
    peak_gpu_mb: float | None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "samples_per_second": round(self.samples_per_second, 2)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def machine_description(device: torch.device = torch.device("cpu")) -> str:
    text = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_stage(
    stage: str,
    reconstructor: str,
    images: torch.Tensor,
    batch_size: int,
    work: Callable[[torch.Tensor, int], Any],
    device: torch.device,
    settings: dict[str, Any] | None = None,
    warmup: int = 4,
) -> Measurement:
    """`work(batch, first_index)` over all images after one warm-up batch of `warmup` images."""
    with torch.no_grad():
        work(images[: min(batch_size, warmup)].to(device), 0)
        _synchronise(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for first in range(0, len(images), batch_size):
            work(images[first : first + batch_size].to(device), first)
        _synchronise(device)
        seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Measurement(stage, reconstructor, len(images), seconds, peak_rss_mb(), gpu, settings or {})


def benchmark_models(
    purifiers: dict[str, ConsensusPurifier],
    images: torch.Tensor,
    *,
    n: int = ConsensusConfig.n,
    batch_size: int = 32,
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
) -> list[Measurement]:
    """Embedding alone (the first purifier's encoder), then per reconstructor (a purifier of each kind,
    sharing one encoder): N reconstructions alone, and the whole consensus with early exit off
    (exactly N) and `certain` (stop when the vote is settled)."""
    def seeds(batch: torch.Tensor, first: int) -> list[int]:
        return list(range(seed + first, seed + first + len(batch)))

    encoder = next(iter(purifiers.values())).encoder
    rows = [time_stage("embed", "-", images, batch_size, lambda x, _: encoder.embed_images(x), device)]
    for kind, base in purifiers.items():
        reconstructor = base.reconstructor
        rows.append(time_stage(f"reconstruct x{n}", kind, images, batch_size,
                               lambda x, first: reconstructor.reconstruct(x, n, seeds(x, first)), device, {"n": n}))
        for early_exit in ("off", "certain"):
            purifier = base.with_consensus(ConsensusConfig(n=n, early_exit=early_exit, seed=seed))
            rows.append(time_stage(f"consensus ({early_exit})", kind, images, batch_size,
                                   lambda x, first: purifier.purify(x, seeds=seeds(x, first)), device,
                                   {"n": n, "early_exit": early_exit}))
    return rows


def time_attack_steps(
    reconstructor,
    encoder,
    labels,
    images: torch.Tensor,
    *,
    eot: int,
    decode_batch_size: int,
    steps: int = 3,
    device: torch.device = torch.device("cpu"),
) -> Measurement:
    """Seconds per step of the detect-adaptive attack (its loss forward and backward through `eot`
    reconstructions of every image) with `decode_batch_size` reconstructions per model call; the
    median of `steps` timed steps after one warm-up step."""
    from .attacks.adaptive import DetectAdaptiveConfig, detect_adaptive_objective

    reconstructor.decode_batch_size = decode_batch_size
    text = labels.embeddings(encoder)
    images = images.to(device)
    targets = torch.arange(len(images), device=text.device) % len(text)
    objective = detect_adaptive_objective(reconstructor.reconstruct, encoder.embed_images, text, targets, DetectAdaptiveConfig(eot=eot))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(steps + 1):
        x = images.clone().requires_grad_(True)
        start = time.perf_counter()
        torch.autograd.grad(objective(x, step).sum(), x)
        _synchronise(device)
        times.append(time.perf_counter() - start)
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    median = sorted(times[1:])[steps // 2]
    return Measurement("attack step", reconstructor.kind, len(images), median, peak_rss_mb(), gpu,
                       {"eot": eot, "decode_batch_size": decode_batch_size})


def markdown_table(rows: list[Measurement]) -> str:
    lines = ["| stage | reconstructor | samples | seconds | samples / s | ms / sample | peak RSS MB | peak GPU MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gpu = "-" if r.peak_gpu_mb is None else f"{r.peak_gpu_mb:.0f}"
        lines.append(f"| {r.stage} | {r.reconstructor} | {r.samples} | {r.seconds:.2f} | {r.samples_per_second:.1f} | "
                     f"{1000 * r.seconds / r.samples:.2f} | {r.peak_rss_mb:.0f} | {gpu} |")
    return "\n".join(lines)


# --- corpora ----------------------------------------------------------------------------------------

def varied_encodings(images: torch.Tensor, seed: int = 0, sizes: tuple[int, int] = (64, 768), jpeg_share: float = 0.7) -> list[tuple[str, bytes]]:
    """The same images as a scraped corpus would hold them: each resized to its own size (sides
    log-uniform in `sizes`, aspect ratios 1:2 to 2:1) and stored as JPEG (quality 90) or PNG."""
    import io

    import numpy as np
    from PIL import Image

    from ..io.images import encode_png

    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        side = float(np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1]))))
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        width, height = max(8, round(side * aspect**0.5)), max(8, round(side / aspect**0.5))
        # From the PNG that the fixed-size corpus stores: the same pixels, enlarged.
        picture = Image.open(io.BytesIO(encode_png(image))).resize((width, height), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        fmt = "jpg" if rng.random() < jpeg_share else "png"
        picture.save(buffer, format="JPEG" if fmt == "jpg" else "PNG", **({"quality": 90} if fmt == "jpg" else {}))
        out.append((fmt, buffer.getvalue()))
    return out


def write_corpus(directory: str, encodings: list[tuple[str, bytes]], per_shard: int, prefix: str = "b") -> list[str]:
    """WebDataset shards of `per_shard` samples (keys prefix + index) under `directory`; their paths."""
    from ..io.shards import Sample, write_samples
    from ..io.storage import Storage

    storage, paths = Storage(), []
    for shard, first in enumerate(range(0, len(encodings), per_shard)):
        samples = [Sample(f"{prefix}{i:06d}", {fmt: data}) for i, (fmt, data) in enumerate(encodings[first : first + per_shard], start=first)]
        paths.append(os.path.join(directory, f"shard-{shard:06d}.tar"))
        storage.write_bytes(paths[-1], write_samples(samples))
    return paths


def bare_loop(config, shards: list[str], output: str) -> dict[str, Any]:
    """The baseline for the Ray pipeline: the same shards through the same stage objects, run by the
    in-process executor, model loading included (the pipeline's actors load theirs inside its time too)."""
    from ..sanitize.stages import run_in_process, shard_stages

    start = time.perf_counter()
    samples = sum(manifest["samples"] for manifest in run_in_process(shard_stages(config, output, config.noise_key()), shards))
    seconds = time.perf_counter() - start
    return {"samples": samples, "seconds": round(seconds, 2), "samples_per_second": round(samples / seconds, 3)}


def time_reader(shards: list[bytes], work_size: int, sandbox=None, repeats: int = 3) -> dict[str, Any]:
    """Reading and decoding shards (tar bytes) to the working size: in this process (`sandbox` None)
    or through a sandbox (`pipeline.io.sandbox`); the best of `repeats` passes (the first also pays
    for starting the sandbox's process)."""
    from ..io.images import decode_working
    from ..io.shards import read_shard_bytes, walk_tar
    from ..sanitize.records import to_records

    walk, decode = (sandbox.walk, sandbox.decode) if sandbox else (walk_tar, decode_working)
    best = float("inf")
    for _ in range(repeats):
        start, images = time.perf_counter(), 0
        for tar in shards:
            samples, _ = read_shard_bytes(tar, walk)
            for sample in samples:
                records = to_records(sample, work_size, decode=decode)
                images += sum(r.pixels is not None for r in records)
        best = min(best, time.perf_counter() - start)
    return {"images": images, "seconds": round(best, 3), "images_per_second": round(images / best, 1)}


# --- early exit -------------------------------------------------------------------------------------

def early_exit_comparison(
    purifier: ConsensusPurifier, images: torch.Tensor, *, n: int, batch_size: int, modes: list[tuple[str, float]], seed: int = 0,
    verdict=None,
) -> list[dict[str, Any]]:
    """Each early-exit mode against drawing all n, with the models of `purifier`: samples/s, mean draws,
    and the share of verdicts and consensus labels identical to the full-N run (same seeds, same images)."""
    from ..defense import VerdictPolicy

    def run(mode: str, alpha: float):
        configured = purifier.with_consensus(ConsensusConfig(n=n, early_exit=mode, alpha=alpha, seed=seed, verdict=verdict or VerdictPolicy()))
        configured.purify(images[:2], seeds=[0, 1])  # warm-up
        start, results = time.perf_counter(), []
        for first in range(0, len(images), batch_size):
            batch = images[first : first + batch_size]
            results += configured.purify(batch, seeds=list(range(seed + first, seed + first + len(batch))))
        return time.perf_counter() - start, results

    base_seconds, base = run("off", 0.01)
    rows = [{"mode": "off", "alpha": None, "seconds": base_seconds, "samples_per_second": len(images) / base_seconds,
             "mean_draws": float(n), "speedup": 1.0, "identical_verdicts": 1.0, "identical_labels": 1.0}]
    for mode, alpha in modes:
        seconds, results = run(mode, alpha)
        rows.append({
            "mode": mode, "alpha": alpha if mode == "sequential" else None, "seconds": seconds,
            "samples_per_second": len(images) / seconds,
            "mean_draws": sum(r.samples_used for r in results) / len(results),
            "speedup": base_seconds / seconds,
            "identical_verdicts": sum(a.verdict == b.verdict for a, b in zip(results, base)) / len(results),
            "identical_labels": sum(a.label_consensus == b.label_consensus for a, b in zip(results, base)) / len(results),
        })
    return rows


# --- full-size models -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunVariant:
    """One way to run the full-size purifier, as the benchmark tries it: weight dtype, autocast, batch sizes, memory format, compilation."""

    key: str
    name: str
    dtype: torch.dtype = torch.float32  # weights
    autocast: torch.dtype | None = None
    batch_size: int = 16  # images per purifier call
    decode_batch_size: int = 32  # reconstructions per decoder call
    channels_last: bool = False
    compile: bool = False
    early_exit: str = "off"


def full_size_settings(device: torch.device) -> list[RunVariant]:
    """Every setting tried, in the order tried; `sanitize` runs with `defaults` (SanitizeConfig.execution)."""
    from ..sanitize.config import SanitizeConfig

    if device.type != "cuda":  # correctness and memory on a few samples; a CPU is far too slow for more
        return [RunVariant("fp32", "fp32", batch_size=1, decode_batch_size=10)]
    bf16, run = torch.bfloat16, SanitizeConfig().execution(device)
    defaults = {"dtype": run.dtype, "batch_size": run.batch_size, "decode_batch_size": run.decode_batch_size}
    return [
        RunVariant("fp32", "fp32 (TF32 off)"),
        RunVariant("autocast", "bf16 autocast", autocast=bf16),
        RunVariant("bf16", "bf16 weights", dtype=bf16),
        RunVariant("bf16-b16-d160", "bf16 weights, batch 16, decode 160", dtype=bf16, decode_batch_size=160),
        RunVariant("bf16-b32-d32", "bf16 weights, batch 32, decode 32", dtype=bf16, batch_size=32),
        RunVariant("bf16-b32", "bf16 weights, batch 32, decode 160", dtype=bf16, batch_size=32, decode_batch_size=160),
        RunVariant("bf16-b64", "bf16 weights, batch 64, decode 320", dtype=bf16, batch_size=64, decode_batch_size=320),
        RunVariant("bf16-b32-cl", "bf16 weights, batch 32, decode 160, channels_last", dtype=bf16, batch_size=32, decode_batch_size=160,
                channels_last=True),
        RunVariant("bf16-b32-certain", "bf16 weights, batch 32, decode 160, early exit certain", dtype=bf16, batch_size=32,
                decode_batch_size=160, early_exit="certain"),
        RunVariant("bf16-b32-compile", "bf16 weights, batch 32, decode 160, torch.compile", dtype=bf16, batch_size=32, decode_batch_size=160,
                compile=True),
        RunVariant("defaults", "sanitize defaults (bf16, batch 32, decode 160, early exit sequential)", **defaults, early_exit="sequential"),
        RunVariant("defaults-compile", "sanitize defaults + --compile", **defaults, compile=True, early_exit="sequential"),
    ]


def matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 10) -> float | None:
    """The device's bf16 matrix-product rate on random data: the ceiling the FLOP floor is taken against."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def full_size_purifier(encoder_name: str, setting: RunVariant, device: torch.device, labels, n: int) -> ConsensusPurifier:
    """The full-size models with random weights, run one way (`setting`). The one purifier the research
    code assembles itself: no spec names these models, so the factory (`SanitizeConfig.build_purifier`)
    cannot load them, and the variants tried (autocast, memory format) are not settings of a run."""
    from ..models.architectures import full_size_encoder, sd_vae_reconstructor

    torch.manual_seed(0)
    reconstructor = sd_vae_reconstructor(device, setting.dtype, decode_batch_size=setting.decode_batch_size)
    encoder = full_size_encoder(encoder_name, device, setting.dtype)
    if setting.channels_last:
        reconstructor.vae.to(memory_format=torch.channels_last)
    if setting.compile:
        reconstructor.compile()
        encoder.compile()
    config = ConsensusConfig(n=n, early_exit=setting.early_exit, autocast=setting.autocast)
    return ConsensusPurifier(reconstructor, encoder, labels, config)


def flops_per_sample(purifier: ConsensusPurifier, image: torch.Tensor) -> float:
    """Counted, not estimated: one image through the whole consensus with every draw."""
    from torch.utils.flop_counter import FlopCounterMode

    full = purifier.with_consensus(ConsensusConfig(n=purifier.config.n, early_exit="off"))
    full.label_embeddings()  # prompts are embedded once per run, not per sample
    with FlopCounterMode(display=False) as counter:
        full.purify(image[None])
    return float(counter.get_total_flops())


def run_full_size(encoder_name: str, device: torch.device, *, count: int, n: int, settings: list[RunVariant], echo=print) -> list[dict[str, Any]]:
    """Samples/s per setting on random 224 x 224 images, against the FLOP floor of this device."""
    from ..presets import IMAGENET_LABELS

    labels = IMAGENET_LABELS if device.type == "cuda" else IMAGENET_LABELS[:10]  # a CPU spends minutes on 1,000 prompts
    images = torch.rand(count, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    peak = matmul_tflops(device)
    flops = None
    echo(f"\n### Full-size purifier: SD VAE + {encoder_name}, 224 x 224, N={n}, {len(labels)} labels, random weights, {count} images per setting")
    if peak:
        echo(f"measured bf16 matrix-product rate: {peak:.0f} TFLOP/s")
    echo("\n| setting | samples / s | ms / sample | TFLOP/s achieved | share of FLOP floor | peak GPU MB | peak RSS MB |")
    echo("|---|---|---|---|---|---|---|")
    rows = []
    for setting in settings:
        try:
            purifier = full_size_purifier(encoder_name, setting, device, labels, n)
            if flops is None:
                flops = flops_per_sample(purifier, images[0].to(device))
                echo(f"(counted {flops / 1e12:.2f} TFLOP per sample at N={n}; floor {peak * 1e12 / flops:.1f} samples/s)" if peak else
                     f"(counted {flops / 1e12:.2f} TFLOP per sample at N={n})")
            # A full warm-up batch: compiled settings then meet every shape before the clock starts.
            measurement = time_stage(setting.name, "vae", images, setting.batch_size,
                                     lambda x, first: purifier.purify(x, seeds=list(range(first, first + len(x)))), device,
                                     warmup=setting.batch_size)
        except Exception as error:  # one setting failing (e.g. a compiler error) must not lose the others
            echo(f"| {setting.name} | failed: {type(error).__name__}: {str(error)[:200]} | | | | | |")
            rows.append({"setting": setting.name, "error": f"{type(error).__name__}: {error}"})
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rate = measurement.samples_per_second
        achieved = rate * flops / 1e12
        share = achieved / peak if peak else None
        gpu = "-" if measurement.peak_gpu_mb is None else f"{measurement.peak_gpu_mb:.0f}"
        echo(f"| {setting.name} | {rate:.2f} | {1000 / rate:.1f} | {achieved:.1f} | {'-' if share is None else f'{100 * share:.1f}%'} | "
             f"{gpu} | {measurement.peak_rss_mb:.0f} |")
        rows.append({"setting": setting.name, **asdict(setting), "dtype": str(setting.dtype), "autocast": str(setting.autocast),
                     **measurement.as_dict(), "tflop_per_sample": flops / 1e12, "achieved_tflops": achieved,
                     "device_tflops": peak, "share_of_floor": share})
    return rows
