"""`disillusion check`: the consensus defense on image files, a verdict for each, judged exactly as
the same file would be inside a shard of a `sanitize` run with the same settings and noise key."""

from __future__ import annotations

import os

from ..batching import map_batched
from ..io.images import ImageDecodeError, decode_working, encode_png
from .config import SanitizeConfig
from .records import as_images

# Settings of corpus runs that mean nothing for single files.
CORPUS_ONLY = ("on_illusion", "on_uncertain", "on_error", "max_shard_bytes", "parse_budget_seconds")


def check_files(config: SanitizeConfig, paths: list[str], device, *, save_purified: str | None = None) -> list[dict]:
    """One row per file, in order. Files are decoded to the run's working size as `sanitize` decodes
    shard members, and each draws its noise from the run's key, its name (as a shard's sample key:
    `photo.png` -> `photo`) and its pixels, so a file gets the verdict it would get inside a shard."""
    purifier, noise, size = config.build_purifier(str(device)), config.noise_key(), config.working_size()
    judged = {"models": {k: getattr(config.models, k) for k in ("reconstructor", "encoder", "witness")},
              "thresholds": dict(vars(config.consensus.verdict))}
    rows: dict[str, dict] = {}
    items = []
    for path in dict.fromkeys(paths):
        try:
            with open(path, "rb") as handle:
                items.append((path, decode_working(handle.read(), size).pixels))
        except (OSError, ImageDecodeError) as error:
            rows[path] = {"path": path, "status": "error", "error": str(error)}

    def purify(chunk):
        seeds = [noise.sample_seed(os.path.splitext(os.path.basename(path))[0], pixels.tobytes()) for path, pixels in chunk]
        results = purifier.purify(as_images([pixels for _, pixels in chunk]), seeds=seeds, keep_images=bool(save_purified))
        if save_purified:
            os.makedirs(save_purified, exist_ok=True)
            for (path, _), result in zip(chunk, results):
                name = os.path.splitext(os.path.basename(path))[0] + ".purified.png"
                with open(os.path.join(save_purified, name), "wb") as handle:
                    handle.write(encode_png(result.image))
        return [{**_row(path, result), **judged} for (path, _), result in zip(chunk, results)]

    def failed(item, error):
        return {"path": item[0], "status": "error", "error": f"purification failed: {type(error).__name__}: {error}"}

    outcome = map_batched(items, config.runtime.batch_size, purify, key=lambda item: item[1].shape, on_error=failed)
    rows.update((row["path"], row) for row in outcome)
    return [rows[path] for path in paths]


def judged_by(config: SanitizeConfig) -> str:
    """The models and thresholds behind the verdicts, in one line."""
    models, verdict = config.models, config.consensus.verdict
    thresholds = ", ".join(f"{name} {value:g}" for name, value in vars(verdict).items() if value is not None)
    noise = f"public seed {config.consensus.seed}" if config.consensus.seed is not None else "secret"
    return (f"judged by preset {models.preset}: reconstructor {models.reconstructor}, encoder {models.encoder}, witness {models.witness}; "
            f"N={config.consensus.n}, {thresholds}; noise {noise}")


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
        "witness_gap": None if result.witness_gap is None else round(result.witness_gap, 6),
        "witness_margin": None if result.witness_margin is None else round(result.witness_margin, 6),
        "votes": [result.labels[v] for v in result.votes],
    }


def format_table(rows: list[dict]) -> str:
    """The rows as the terminal shows them."""
    lines = [f"{'verdict':<10} {'original':<16} {'consensus':<16} {'agree':>5} {'n':>3} {'drift':>7}  file"]
    for row in rows:
        if row["status"] == "error":
            lines.append(f"{'error':<10} {'':<16} {'':<16} {'':>5} {'':>3} {'':>7}  {row['path']}: {row['error']}")
        else:
            lines.append(f"{row['verdict']:<10} {row['label_original'][:16]:<16} {row['label_consensus'][:16]:<16} "
                         f"{row['agreement']:>5.2f} {row['samples_used']:>3} {row['drift']:>7.4f}  {row['path']}")
    return "\n".join(lines)
