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

import os
import shlex
import tempfile
import time
from dataclasses import dataclass, replace

import torch

from ..settings import SettingsTable, setting

SECTIONS = ("models", "reader", "geometry", "pipeline", "early-exit", "attack")
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "attack")  # the attack section runs when named


@dataclass(frozen=True)
class BenchmarkSettings:
    preset: str = setting("demo", "the preset measured")
    sections: str = setting(",".join(DEFAULT_SECTIONS), f"comma-separated, from {', '.join(SECTIONS)} (default: all but attack)")
    samples: int = setting(256, "models section: images per stage (from the bundled sample)")
    n: int = setting(10, "reconstructions per sample")
    batch_size: int = setting(32, "models and early-exit sections (the pipeline uses its own default, 16)")
    geometry_samples: int = setting(400, "geometry section: corpus size")
    pipeline_samples: int = setting(320, "pipeline section: the 1x corpus (10x is run too)")
    shard_size: int = setting(200, "samples per shard in the corpora of the Ray sections")
    early_exit_samples: int = setting(500, "early-exit section: corpus size")
    illusion_fraction: float = setting(0.1, "early-exit section: share of planted illusions")
    attack_images: int = setting(20, "attack section: images per attack batch")
    eot: int = setting(16, "attack section: reconstruction draws per image and step")
    reconstructors: str | None = setting(None, "models section: comma-separated kinds (default: all of the preset's)")
    image_size: int | None = setting(None, "models section: resize the images to this size (default: the preset's working size)")
    threads: int | None = setting(None, "torch CPU threads (default: torch's choice)")
    full_size: bool = setting(False, "only the full-size section (real architectures, random weights)")
    encoder: str = setting("imagebind", "full-size section: the encoder", choices=("imagebind", "clip-l14"))
    full_size_samples: int | None = setting(None, "full-size section: images per setting (default 128 on CUDA, 2 on CPU)")
    variants: str | None = setting(None,
        "full-size section: comma-separated run variants (default: every one; see pipeline/research/benchmark.py)", name="settings")
    quick: bool = setting(False, "small sizes everywhere: a smoke run, not a measurement")
    json: str | None = setting(None, "write the raw numbers here", metavar="FILE")

    def quickened(self) -> BenchmarkSettings:
        """With `quick`: small sizes everywhere."""
        if not self.quick:
            return self
        return replace(self, samples=min(self.samples, 16), geometry_samples=min(self.geometry_samples, 24),
                       pipeline_samples=min(self.pipeline_samples, 8), early_exit_samples=min(self.early_exit_samples, 20),
                       shard_size=min(self.shard_size, 8), attack_images=min(self.attack_images, 2), eot=min(self.eot, 2),
                       full_size_samples=self.full_size_samples or 1)


BENCHMARK_SETTINGS = SettingsTable(BenchmarkSettings)


def rerun_command(settings: BenchmarkSettings, device: str) -> str:
    """The command line that repeats this measurement, every setting spelled out."""
    return shlex.join(["disillusion", "benchmark", *BENCHMARK_SETTINGS.command_words(settings, skip=("json",)), "--device", device])


def run_benchmark(settings: BenchmarkSettings, device: torch.device, device_flag: str, echo=print) -> dict:
    """Every section asked for (or the full-size one alone); each prints its table. Returns the raw numbers."""
    from .benchmark import machine_description

    command = rerun_command(settings, device_flag)  # as given: --quick and the sizes it shrinks
    settings = settings.quickened()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    echo(f"command: `{command}`")
    echo(f"date: {time.strftime('%Y-%m-%d')}; machine: {machine_description(device)}")
    report: dict = {"command": command, "machine": machine_description(device), "date": time.strftime("%Y-%m-%d")}
    if settings.full_size:
        report["full_size"] = full_size_section(settings, device, echo)
        return report
    sections = [s.strip() for s in settings.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    runs = (("models", "rows", lambda: models_section(settings, device, echo), True),
            ("reader", "reader", lambda: reader_section(settings, echo), settings.geometry_samples),
            ("geometry", "geometry", lambda: geometry_section(settings, echo), settings.geometry_samples),
            ("pipeline", "pipeline", lambda: pipeline_section(settings, echo), settings.pipeline_samples),
            ("early-exit", "early_exit", lambda: early_exit_section(settings, device, echo), settings.early_exit_samples),
            ("attack", "attack", lambda: attack_section(settings, device, echo), True))
    for section, key, measure, wanted in runs:
        if section in sections and wanted:
            report[key] = measure()
    return report


def bench_images(count: int, size: int) -> torch.Tensor:
    from .data.fashion_mnist import load_sample, to_rgb32

    sample = load_sample()
    indices = [i % len(sample) for i in range(count)]  # larger corpora repeat the sample (keys differ)
    images = to_rgb32(torch.from_numpy(sample.images[indices]))
    if size != images.shape[-1]:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return images


# --- sections ---------------------------------------------------------------------------------------

def models_section(settings: BenchmarkSettings, device: torch.device, echo=print) -> list[dict]:
    from ..defense import ConsensusConfig
    from ..presets import get_preset
    from .benchmark import benchmark_models, markdown_table
    from .models import preset_purifier

    preset = get_preset(settings.preset)
    kinds = settings.reconstructors.split(",") if settings.reconstructors else list(preset.reconstructors)
    size = settings.image_size or preset.work_size
    images = bench_images(settings.samples, size)
    purifiers = {kind: preset_purifier(preset, kind, ConsensusConfig(n=settings.n), device=device) for kind in kinds}
    rows = benchmark_models(purifiers, images, n=settings.n, batch_size=settings.batch_size, device=device)
    echo(f"\n### Stages (in process; images {size}x{size}, batch {settings.batch_size})\n")
    echo(markdown_table(rows))
    return [r.as_dict() for r in rows]


def attack_section(settings: BenchmarkSettings, device: torch.device, echo=print) -> list[dict]:
    from ..presets import get_preset
    from .benchmark import time_attack_steps
    from .models import load_reconstructor

    preset = get_preset(settings.preset)
    kinds = settings.reconstructors.split(",") if settings.reconstructors else list(preset.reconstructors)
    images = bench_images(settings.attack_images, settings.image_size or preset.work_size)
    encoder, bank = preset.load_encoder(device=device), preset.label_bank()
    chains = len(images) * settings.eot
    echo(f"\n### Detect-adaptive attack step ({len(images)} images x {settings.eot} EOT draws = {chains} reconstructions, "
          "loss forward and backward; median of 3 steps)\n")
    echo("| reconstructor | reconstructions per model call | seconds / step | peak GPU MB |")
    echo("|---|---|---|---|")
    rows = []
    for kind in kinds:
        reconstructor = load_reconstructor(preset, kind, device=device)
        for size in sorted({min(32, chains), chains}):
            row = time_attack_steps(reconstructor, encoder, bank, images, eot=settings.eot, decode_batch_size=size, device=device)
            gpu = "-" if row.peak_gpu_mb is None else f"{row.peak_gpu_mb:.0f}"
            echo(f"| {kind} | {size} | {row.seconds:.3f} | {gpu} |")
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
    from ..distributed.runner import run_corpus
    from ..process_memory import PeakMemory

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


def reader_section(settings: BenchmarkSettings, echo=print) -> dict:
    """What the sandbox that parses corpus bytes costs: read + decode in process and sandboxed, on
    the demo's 28 px PNGs and on the varied corpus of the geometry section (sides 64-768 px, 70% JPEG)."""
    from ..io.images import encode_png
    from ..io.sandbox import Sandbox
    from ..io.shards import Sample, write_samples
    from .benchmark import time_reader, varied_encodings

    images = bench_images(settings.geometry_samples, 28)
    corpora = {"fixed": [("png", encode_png(image)) for image in images], "varied": varied_encodings(images, seed=0)}
    sandbox, out = Sandbox(), {}
    for name, encodings in corpora.items():
        shards = [write_samples([Sample(f"r{i:06d}", {fmt: data}) for i, (fmt, data) in enumerate(encodings[first : first + settings.shard_size], first)])
                  for first in range(0, len(encodings), settings.shard_size)]
        out[name] = {"in_process": time_reader(shards, 32), "sandboxed": time_reader(shards, 32, sandbox)}
        out[name]["overhead_ms_per_image"] = round(1000 * (out[name]["sandboxed"]["seconds"] - out[name]["in_process"]["seconds"])
                                                   / out[name]["sandboxed"]["images"], 3)
    sandbox.close()
    echo(f"\n### Reader: read + decode to 32 px, in process and sandboxed ({settings.geometry_samples} images, shards of {settings.shard_size})\n")
    echo("| corpus | in process, images / s | sandboxed, images / s | sandbox cost per image |")
    echo("|---|---|---|---|")
    for name, label in (("fixed", "one size: 28x28 PNG"), ("varied", "varied: sides 64-768 px, 70% JPEG q90, 30% PNG")):
        r = out[name]
        echo(f"| {label} | {r['in_process']['images_per_second']:.0f} | {r['sandboxed']['images_per_second']:.0f} | "
              f"{r['overhead_ms_per_image']:.2f} ms |")
    return out


def geometry_section(settings: BenchmarkSettings, echo=print) -> dict:
    from ..io.images import encode_png
    from ..sanitize.config import SanitizeConfig
    from .benchmark import varied_encodings, write_corpus

    _ray()
    images = bench_images(settings.geometry_samples, 32)
    corpora = {"fixed": [("png", encode_png(image)) for image in images], "varied": varied_encodings(images, seed=0)}
    config = SanitizeConfig.resolve(preset=settings.preset, n=settings.n)
    out = {}
    with tempfile.TemporaryDirectory(prefix="disillusion-bench-") as root:
        for name, encodings in corpora.items():
            write_corpus(os.path.join(root, name), encodings, settings.shard_size)
            out[name] = _pipeline(config, os.path.join(root, name), os.path.join(root, f"{name}-out"))
            out[name]["input_mb"] = round(sum(len(data) for _, data in encodings) / 2**20, 1)
    ratio = out["varied"]["samples_per_second"] / out["fixed"]["samples_per_second"]
    out["varied_over_fixed"] = round(ratio, 3)
    echo(f"\n### Working geometry (Ray pipeline, {settings.geometry_samples} samples, shards of {settings.shard_size}, N={settings.n})\n")
    echo("| corpus | input MB | samples / s | steady samples / s | batch fill | seconds |")
    echo("|---|---|---|---|---|---|")
    for name, label in (("fixed", "one size: 32x32 PNG"), ("varied", "varied: sides 64-768 px, 1:2-2:1, 70% JPEG q90, 30% PNG")):
        s = out[name]
        echo(f"| {label} | {s['input_mb']} | {s['samples_per_second']:.1f} | {_steady(s)} | {_fill(s)} | {s['seconds']} |")
    echo(f"\nvaried / fixed: {ratio:.2f}x")
    return out


def pipeline_section(settings: BenchmarkSettings, echo=print) -> dict:
    import numpy as np

    from ..io.images import encode_png
    from ..sanitize.config import SanitizeConfig
    from .benchmark import bare_loop, write_corpus

    ray = _ray()
    config = SanitizeConfig.resolve(preset=settings.preset, n=settings.n)
    small, large, fine = settings.pipeline_samples, 10 * settings.pipeline_samples, max(1, settings.shard_size // 4)
    out: dict = {"threads": torch.get_num_threads(), "cluster": ray.cluster_resources()}
    runs = (("1x", small, settings.shard_size), ("10x", large, settings.shard_size), ("10x, small shards", large, fine))
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
    echo(f"\n### Ray pipeline (demo corpus of 32x32 PNG, N={settings.n}, torch threads {out['threads']})\n")
    echo("| run | samples | shards | samples / s | steady samples / s | seconds | driver CPU s | driver CPU s per 1,000 samples, steady "
          "| peak memory MB (all processes) | batch fill |")
    echo("|---|---|---|---|---|---|---|---|---|---|")
    for name, _, _ in runs:
        s = out[name]
        echo(f"| Ray pipeline, {name} | {s['samples']} | {s['shard_count']} x {s['shard_size']} | {s['samples_per_second']:.1f} | "
              f"{_steady(s)} | {s['seconds']} | {s['driver_cpu_seconds']} | {s['steady_driver_cpu_per_1000_samples'] or '-'} | "
              f"{s['peak_memory_mb']} | {_fill(s)} |")
    b = out["bare"]
    echo(f"| bare loop in process (10x corpus, models loaded in the time) | {b['samples']} | {ten['shard_count']} x {ten['shard_size']} | "
          f"{b['samples_per_second']:.1f} | - | {b['seconds']} | - | - | - | - |")
    d = out["driver"]
    echo(f"\npipeline / bare loop: {out['pipeline_over_bare']:.2f}x over the whole run, {out['steady_pipeline_over_bare'] or 0:.2f}x once "
          f"the first shard is out; peak memory 10x / 1x: {out['memory_10x_over_1x']:.2f}")
    # Where the gap goes: time the actor spent purifying against the bare loop's whole time, and the rest
    # of the run (start-up, hand-overs, the last shard's writing).
    echo(f"purification actor (10x run): {ten['purifying_seconds']:.1f} s purifying = {100 * out['actor_busy_share']:.0f}% of the run; "
          f"{out['purifying_over_bare']:.2f}x the bare loop's whole time (10x run)")
    echo(f"driver CPU per 1,000 samples: {d['steady_cpu_seconds_per_1000_samples']} s once the first shard is out (10x run), "
          f"{per_1000:.3f} s as 10x - 1x; fitted over the three runs: {d['startup_cpu_seconds']} s at start-up, "
          f"{100 * d['core_share_while_running']:.1f}% of a core while a run lasts (Ray Data's scheduling loop), "
          f"{1000 * d['cpu_seconds_per_shard']:.0f} ms per shard")
    return out


def early_exit_section(settings: BenchmarkSettings, device: torch.device, echo=print) -> list[dict]:
    from ..defense import ConsensusConfig
    from ..presets import get_preset
    from .attacks import AttackConfig, illusion_attack, pick_targets
    from .attacks.illusion import cosine_objective
    from .benchmark import early_exit_comparison
    from .data.fashion_mnist import load_sample
    from .models import preset_purifier

    preset = get_preset(settings.preset)
    purifier = preset_purifier(preset, None, ConsensusConfig(n=settings.n), device=device)
    encoder, bank = purifier.encoder, purifier.labels
    sample = load_sample()
    count = settings.early_exit_samples
    images = bench_images(count, preset.work_size)
    labels = torch.as_tensor(sample.labels[[i % len(sample) for i in range(count)]])
    planted = torch.Generator().manual_seed(0)
    chosen = torch.randperm(count, generator=planted)[: round(settings.illusion_fraction * count)]
    targets = pick_targets(labels[chosen].tolist(), len(bank), seed=0)
    objective = cosine_objective(encoder.embed_images, bank.embeddings(encoder)[targets])
    images[chosen] = illusion_attack(images[chosen].to(device), objective, AttackConfig(steps=100)).cpu()
    modes = [("certain", 0.01), ("sequential", 0.01), ("sequential", 0.02), ("sequential", 0.05)]
    rows = early_exit_comparison(purifier, images.to(device), n=settings.n, batch_size=settings.batch_size,
                                 modes=modes, verdict=preset.verdict.without_witness())  # the draws, not the witness
    echo(f"\n### Early exit ({count} samples, {len(chosen)} planted illusions, N={settings.n}, batch {settings.batch_size}, "
          f"preset {preset.name} with its verdict thresholds)\n")
    echo("| rule | samples / s | mean draws | speedup vs all N | identical verdicts | identical labels |")
    echo("|---|---|---|---|---|---|")
    for r in rows:
        rule = r["mode"] + (f" (alpha {r['alpha']})" if r["alpha"] else "")
        echo(f"| {rule} | {r['samples_per_second']:.1f} | {r['mean_draws']:.2f} | {r['speedup']:.2f}x | "
              f"{100 * r['identical_verdicts']:.1f}% | {100 * r['identical_labels']:.1f}% |")
    return rows


def full_size_section(settings: BenchmarkSettings, device: torch.device, echo=print) -> list[dict]:
    from .benchmark import full_size_settings, run_full_size

    count = settings.full_size_samples or (128 if device.type == "cuda" else 2)
    variants = full_size_settings(device)
    if settings.variants:
        wanted = settings.variants.split(",")
        unknown = set(wanted) - {v.key for v in variants}
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; choose from {', '.join(v.key for v in variants)}")
        variants = [v for v in variants if v.key in wanted]
    rows = run_full_size(settings.encoder, device, count=count, n=settings.n, settings=settings, echo=print)
    return rows
