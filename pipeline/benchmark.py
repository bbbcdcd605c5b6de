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

from .defense import ConsensusConfig, ConsensusPurifier


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
) -> Measurement:
    """`work(batch, first_index)` over all images after one warm-up batch."""
    with torch.no_grad():
        work(images[: min(batch_size, 4)].to(device), 0)
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
    reconstructors: dict[str, Any],
    encoder,
    labels,
    images: torch.Tensor,
    *,
    n: int = 10,
    batch_size: int = 32,
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
) -> list[Measurement]:
    """Embedding alone, then per reconstructor: N reconstructions alone, and the whole consensus with
    early exit off (exactly N) and `certain` (stop when the vote is settled)."""
    def seeds(batch: torch.Tensor, first: int) -> list[int]:
        return list(range(seed + first, seed + first + len(batch)))

    rows = [time_stage("embed", "-", images, batch_size, lambda x, _: encoder.embed_images(x), device)]
    for kind, reconstructor in reconstructors.items():
        rows.append(time_stage(f"reconstruct x{n}", kind, images, batch_size,
                               lambda x, first: reconstructor.reconstruct(x, n, seeds(x, first)), device, {"n": n}))
        for early_exit in ("off", "certain"):
            purifier = ConsensusPurifier(reconstructor, encoder, labels, ConsensusConfig(n=n, early_exit=early_exit, seed=seed))
            rows.append(time_stage(f"consensus ({early_exit})", kind, images, batch_size,
                                   lambda x, first: purifier.purify(x, seeds=seeds(x, first)), device,
                                   {"n": n, "early_exit": early_exit}))
    return rows


def markdown_table(rows: list[Measurement]) -> str:
    lines = ["| stage | reconstructor | samples | seconds | samples / s | ms / sample | peak RSS MB | peak GPU MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gpu = "-" if r.peak_gpu_mb is None else f"{r.peak_gpu_mb:.0f}"
        lines.append(f"| {r.stage} | {r.reconstructor} | {r.samples} | {r.seconds:.2f} | {r.samples_per_second:.1f} | "
                     f"{1000 * r.seconds / r.samples:.2f} | {r.peak_rss_mb:.0f} | {gpu} |")
    return "\n".join(lines)
