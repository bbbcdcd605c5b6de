"""The demo: a WebDataset corpus from the bundled Fashion-MNIST sample with illusions planted by the
published attack in a seeded fraction, sanitised on a local Ray cluster with the bundled models, and
the verdicts scored against the planted ground truth (`disillusion demo`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..io.images import encode_png
from ..io.shards import Sample, read_samples, write_samples
from ..io.storage import Storage, join
from ..presets import get_preset
from ..sanitize.config import SanitizeConfig
from ..sanitize.outputs import read_manifests, read_verdicts
from .attacks import AttackConfig
from .attacks.corpus import plant_illusions
from .data.fashion_mnist import CLASSES, load_sample, to_rgb32


@dataclass(frozen=True)
class DemoSettings:
    samples: int = 200  # at most the bundled sample's 1,000
    illusion_fraction: float = 0.3
    shard_size: int = 50
    steps: int = 100  # attack steps
    n: int = 10  # reconstructions per sample
    seed: int = 0  # of the corpus and the planted illusions
    public_seed: int | None = None  # of the defense's noise; None: a secret key, as sanitize

    def __post_init__(self):
        if not 0 < self.samples <= 1000:
            raise ValueError("--samples must lie in 1..1000 (the bundled sample holds 1000 images)")


def build_corpus(storage: Storage, corpus_dir: str, settings: DemoSettings) -> int:
    """Write the demo corpus (shards of PNG, label json, caption txt) and return how many illusions it holds."""
    preset, sample = get_preset("demo"), load_sample()
    encoder, bank = preset.load_encoder(), preset.label_bank()
    attack = AttackConfig(steps=settings.steps, seed=settings.seed)
    planted = 0
    for shard_index, first in enumerate(range(0, settings.samples, settings.shard_size)):
        indices = range(first, min(settings.samples, first + settings.shard_size))
        images = to_rgb32(torch.from_numpy(sample.images[list(indices)]))
        clean = [
            Sample(f"fmnist-{i:04d}", {"png": encode_png(images[j]), "json": json.dumps({"label": CLASSES[int(sample.labels[i])]}).encode(),
                                       "txt": f"a photo of a {CLASSES[int(sample.labels[i])]}.".encode()})
            for j, i in enumerate(indices)
        ]
        attacked = plant_illusions(clean, encoder, bank, attack, fraction=settings.illusion_fraction, seed=settings.seed)
        planted += sum(json.loads(s.members["json"])["illusion"] for s in attacked)
        storage.write_bytes(join(corpus_dir, f"shard-{shard_index:06d}.tar"), write_samples(attacked))
    return planted


def run_demo(output: str, settings: DemoSettings, *, ray_address: str | None = None,
             echo: Callable[[str], None] = print) -> tuple[dict, dict]:
    """Build the corpus under OUTPUT/corpus, sanitise it into OUTPUT/sanitized, score it into
    OUTPUT/demo_report.json. Returns (the run's summary, the report)."""
    from ..distributed.runner import run_corpus

    storage, corpus_dir, sanitized = Storage(), join(output, "corpus"), join(output, "sanitized")
    start = time.perf_counter()
    planted = build_corpus(storage, corpus_dir, settings)
    echo(f"corpus: {settings.samples} samples, {planted} illusions planted ({time.perf_counter() - start:.1f} s) -> {corpus_dir}")
    config = SanitizeConfig.resolve(preset="demo", n=settings.n, seed=settings.public_seed, on_illusion="purify")
    summary = run_corpus(config, corpus_dir, sanitized, overwrite=True, ray_address=ray_address, report=True, echo=echo)
    report = score_detection(verdict_rows(storage, sanitized), ground_truth(storage, corpus_dir), config.on_uncertain)
    report["samples_per_second"] = summary.get("samples_per_second")
    storage.write_bytes(join(output, "demo_report.json"), json.dumps(report, indent=2).encode())
    return summary, report


def ground_truth(storage: Storage, corpus_dir: str) -> dict[str, dict]:
    """Each sample's json member (label, illusion, target), by key."""
    return {s.key: json.loads(s.members["json"]) for uri in storage.expand(corpus_dir) for s in read_samples(storage.read_bytes(uri))}


def verdict_rows(storage: Storage, output: str) -> list[dict]:
    """Every verdict row of the run in `output`, shard by shard."""
    tables = (read_verdicts(storage, output, m["shard"]) for m in read_manifests(storage, output))
    return [row for table in tables if table is not None for row in table.to_pylist()]


def score_detection(rows: list[dict], truth: dict[str, dict], on_uncertain: str = "drop") -> dict[str, Any]:
    """Detection (verdict 'illusion') against planted ground truth, and ASR before / after."""
    illusions = [r for r in rows if truth[r["key"]]["illusion"]]
    clean = [r for r in rows if not truth[r["key"]]["illusion"]]
    flagged = lambda r: r["verdict"] == "illusion"  # noqa: E731
    rate = lambda hits, total: hits / total if total else None  # noqa: E731
    return {
        "samples": len(rows),
        "illusions": len(illusions),
        "true_positive_rate": rate(sum(map(flagged, illusions)), len(illusions)),
        "false_positive_rate": rate(sum(map(flagged, clean)), len(clean)),
        "uncertain_rate": rate(sum(r["verdict"] == "uncertain" for r in rows), len(rows)),
        "asr_before": rate(sum(r["label_original"] == truth[r["key"]]["target"] for r in illusions), len(illusions)),
        "asr_after": rate(sum(r["label_consensus"] == truth[r["key"]]["target"] for r in illusions), len(illusions)),
        # what `purify` hands downstream: the original unless flagged (or uncertain, when those are dropped);
        # a flagged sample's purified image (whose label is the consensus, checked on re-embedding) or
        # nothing when that check failed
        "asr_downstream": rate(sum(downstream_label(r, on_uncertain) == truth[r["key"]]["target"] for r in illusions), len(illusions)),
        "on_uncertain": on_uncertain,
        # flagged samples whose purified image failed its re-embedding check: quarantined, not replaced
        "replacement_rejected_rate": rate(sum(flagged(r) and not r["replacement_accepted"] for r in rows), sum(map(flagged, rows))),
        "accuracy_after_on_illusions": rate(sum(r["label_consensus"] == truth[r["key"]]["label"] for r in illusions), len(illusions)),
        "accuracy_after_on_clean": rate(sum(r["label_consensus"] == truth[r["key"]]["label"] for r in clean), len(clean)),
    }


def downstream_label(row: dict, on_uncertain: str) -> str | None:
    if row["verdict"] == "uncertain" and on_uncertain == "drop":
        return None
    if row["verdict"] != "illusion":
        return row["label_original"]
    return row["label_consensus"] if row["replacement_accepted"] else None


def format_report(report: dict) -> str:
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    fate = "quarantined" if report["on_uncertain"] == "drop" else "kept, annotated"
    return "\n".join([
        "",
        f"planted illusions: {report['illusions']} of {report['samples']} samples",
        f"detected (true positive rate):   {pct(report['true_positive_rate'])}",
        f"clean flagged (false positives): {pct(report['false_positive_rate'])}",
        f"uncertain ({fate}):{' ' * (20 - len(fate))}{pct(report['uncertain_rate'])} of all samples",
        f"attack success before -> after:  {pct(report['asr_before'])} -> {pct(report['asr_after'])} "
        f"(consensus label; reaching downstream under purify: {pct(report['asr_downstream'])})",
        f"purified images rejected:        {pct(report['replacement_rejected_rate'])} of flagged samples (quarantined instead)",
        f"accuracy after purification:     {pct(report['accuracy_after_on_clean'])} clean, {pct(report['accuracy_after_on_illusions'])} on illusions",
        f"throughput: {report['samples_per_second'] or 0:.1f} samples/s",
    ])
