"""`disillusion demo`: the embedded default, end to end, offline.

Builds a WebDataset corpus from the bundled Fashion-MNIST sample, plants illusions in a seeded
fraction with the published attack, sanitises it on a local Ray cluster with the bundled models, and
scores the verdicts against the planted ground truth.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from .options import add_consensus_settings

NAME = "demo"
HELP = "Run the whole pipeline offline on bundled models and data, and score detection against planted illusions."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--samples", type=int, default=200, help="samples in the corpus (at most 1000)")
    parser.add_argument("--illusion-fraction", type=float, default=0.3)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100, help="attack steps (the paper uses a few hundred)")
    add_consensus_settings(parser, ("n",))
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus and the planted illusions (default 0)")
    parser.add_argument("--public-seed", type=int, metavar="SEED",
                        help="a public seed for the defense's noise, to repeat a demo run exactly (default: a secret key, as sanitize)")
    parser.add_argument("--ray-address")


def run(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from pipeline.distributed.runner import run_corpus
    from pipeline.io.images import encode_png
    from pipeline.io.shards import Sample, read_samples, write_samples
    from pipeline.io.storage import Storage
    from pipeline.presets import get_preset
    from pipeline.research.attacks import AttackConfig
    from pipeline.research.attacks.corpus import plant_illusions
    from pipeline.research.data.fashion_mnist import CLASSES, load_sample, to_rgb32
    from pipeline.sanitize.config import SanitizeConfig

    from .sanitize import print_summary

    if not 0 < args.samples <= 1000:
        raise ValueError("--samples must lie in 1..1000 (the bundled sample holds 1000 images)")
    storage, preset = Storage(), get_preset("demo")
    corpus_dir = os.path.join(args.output, "corpus")
    sample = load_sample()
    start = time.perf_counter()
    encoder, bank = preset.load_encoder(), preset.label_bank()
    attack = AttackConfig(steps=args.steps, seed=args.seed)
    planted = 0
    for shard_index, first in enumerate(range(0, args.samples, args.shard_size)):
        indices = range(first, min(args.samples, first + args.shard_size))
        images = to_rgb32(torch.from_numpy(sample.images[list(indices)]))
        clean = [
            Sample(f"fmnist-{i:04d}", {"png": encode_png(images[j]), "json": json.dumps({"label": CLASSES[int(sample.labels[i])]}).encode(),
                                       "txt": f"a photo of a {CLASSES[int(sample.labels[i])]}.".encode()})
            for j, i in enumerate(indices)
        ]
        attacked = plant_illusions(clean, encoder, bank, attack, fraction=args.illusion_fraction, seed=args.seed)
        planted += sum(json.loads(s.members["json"])["illusion"] for s in attacked)
        storage.write_bytes(os.path.join(corpus_dir, f"shard-{shard_index:06d}.tar"), write_samples(attacked))
    print(f"corpus: {args.samples} samples, {planted} illusions planted ({time.perf_counter() - start:.1f} s) -> {corpus_dir}")

    config = SanitizeConfig.resolve(preset="demo", n=args.n, seed=args.public_seed, on_illusion="purify")
    sanitized = os.path.join(args.output, "sanitized")
    summary = run_corpus(config, corpus_dir, sanitized, overwrite=True, ray_address=args.ray_address, report=True)
    print_summary(summary)

    truth = {}
    for name in sorted(os.listdir(corpus_dir)):
        for s in read_samples(storage.read_bytes(os.path.join(corpus_dir, name))):
            truth[s.key] = json.loads(s.members["json"])
    rows = [r for name in sorted(os.listdir(os.path.join(sanitized, "verdicts"))) for r in pq.read_table(os.path.join(sanitized, "verdicts", name)).to_pylist()]
    report = score_detection(rows, truth, config.on_uncertain)
    report["samples_per_second"] = summary.get("samples_per_second")
    with open(os.path.join(args.output, "demo_report.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print_report(report)
    return 0 if summary["errors"] == 0 and not summary["problems"] else 1


def score_detection(rows: list[dict], truth: dict[str, dict], on_uncertain: str = "drop") -> dict:
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


def print_report(report: dict) -> None:
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    print()
    print(f"planted illusions: {report['illusions']} of {report['samples']} samples")
    print(f"detected (true positive rate):   {pct(report['true_positive_rate'])}")
    print(f"clean flagged (false positives): {pct(report['false_positive_rate'])}")
    fate = "quarantined" if report["on_uncertain"] == "drop" else "kept, annotated"
    print(f"uncertain ({fate}):{' ' * (20 - len(fate))}{pct(report['uncertain_rate'])} of all samples")
    print(f"attack success before -> after:  {pct(report['asr_before'])} -> {pct(report['asr_after'])} "
          f"(consensus label; reaching downstream under purify: {pct(report['asr_downstream'])})")
    print(f"purified images rejected:        {pct(report['replacement_rejected_rate'])} of flagged samples (quarantined instead)")
    print(f"accuracy after purification:     {pct(report['accuracy_after_on_clean'])} clean, {pct(report['accuracy_after_on_illusions'])} on illusions")
    print(f"throughput: {report['samples_per_second'] or 0:.1f} samples/s")
