"""`disillusion calibrate`: verdict thresholds from clean data, for a target false-positive rate,
written as a config that `sanitize --config` reads; or (`check`) the rate of existing thresholds.

Clean images come grouped by how they were stored ({group: (images at the working size, keys)}):
from shards (`shard_groups`, grouped by image format, through the reader `sanitize` uses), or, for
the demo preset, from held-out Fashion-MNIST stored by each scraper pipeline (the research data,
`pipeline/research/data/encodings.py`). Thresholds hold for every group (`calibrate_groups`).
`unlabelled`: the shards are a corpus nobody vouches for, and its thresholds flag a bounded share of
it (`unvetted_budget`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from ..batching import map_batched
from ..defense import SampleResult, VerdictPolicy
from ..defense.calibration import METHODS, Calibration, calibrate as calibrate_results, calibrate_groups, rates, unvetted_budget
from ..defense.verdict import THRESHOLDS, WITNESS_THRESHOLDS
from ..io.shards import DEFAULT_MAX_SHARD_BYTES
from ..io.storage import Storage
from ..models.noise import seed_for_key
from ..presets import get_preset
from ..settings import SettingsTable, setting
from .config import CONSENSUS_SETTINGS, SETTINGS, SanitizeConfig
from .records import as_images
from .shard import decode_shard, read_shard

Groups = dict[str, tuple[list[torch.Tensor], list[str]]]
# The settings of `sanitize` that calibrate takes too: thresholds belong to the models and consensus that ran.
MODEL_SETTINGS = ("reconstructor", "witness") + tuple(s.name for s in SETTINGS if s.optional)


@dataclass(frozen=True)
class CalibrateSettings:
    """What a calibration run uses besides the models and consensus settings of `sanitize`."""

    preset: str = setting("demo", "the preset whose models are calibrated")
    input: str | None = setting(None,
        "clean WebDataset shards (default for demo: Fashion-MNIST test images outside the bundled sample)", metavar="SPEC")
    data: str | None = setting(None,
        "demo without --input: the Fashion-MNIST directory (default: the Debian package's)", metavar="DIR")
    limit: int = setting(1000, "clean samples to use")
    offset: int = setting(0, "demo: skip the first K held-out test images (e.g. to check on images calibration did not see)")
    encodings: str = setting("png,jpeg,jpeg-any,upscaled,webp",
        "demo: store each clean image as each of these scraper pipelines would (pipeline/research/data/encodings.py: png as is; "
        "jpeg, jpeg-any, upscaled and webp at random sizes, filters and qualities); --input shards are grouped by their image "
        "format. Thresholds hold for every group.")
    check: bool = setting(False, "report the false-positive rate of the preset's thresholds (or --config's) per group; choose none")
    config: str | None = setting(None,
        "with --check: the thresholds, models, N and early exit of this JSON (as written by --json); model flags given here "
        "override its models", metavar="FILE")
    unlabelled: bool = setting(False, "with --input: thresholds from the corpus itself, for audits without a clean reference: "
                                      "they flag --assume-attacked + --target-fpr x the rest of it, all groups pooled")
    assume_attacked: float = setting(0.02, "--unlabelled: the largest share of the corpus taken to be attacked; up to it, at most "
                                           "--target-fpr of the clean samples are flagged (a clean corpus: their sum)")
    target_fpr: float = setting(0.05, "the share of clean images a threshold may flag, on every group")
    method: str = setting("drift", "drift: flag embeddings that move under purification; votes: flag any label flip", choices=METHODS)
    min_agreement: float = setting(0.5, "drift method: vote share below which a sample is 'uncertain'")
    witness_share: float = setting(0.5, "drift method with a witness: the share of the false-positive budget the witness tests may spend")
    margin_share: float = setting(0.5, "... and the share of that the witness margin test takes (the rest: the gap test; 0: no margin test)")
    batch_size: int = setting(50, "images per purifier call")
    max_shard_bytes: int = setting(DEFAULT_MAX_SHARD_BYTES, "--input: the largest shard read (as sanitize's)", metavar="BYTES")
    s3_endpoint: str | None = setting(None, "S3-compatible endpoint URL", metavar="URL")
    json: str | None = setting(None, "write the config (or the check's report) here", metavar="FILE")

    def __post_init__(self):
        if self.unlabelled and not self.input:
            raise ValueError("--unlabelled sets thresholds from a corpus: pass it with --input")
        if not 0.0 <= self.assume_attacked < 1.0:
            raise ValueError("--assume-attacked must lie in [0, 1)")
        if self.config and not self.check:
            raise ValueError("--config names thresholds to check: pass it with --check")
        if self.input and self.data:
            raise ValueError("give clean shards (--input) or the Fashion-MNIST directory (--data), not both")


CALIBRATE_SETTINGS = SettingsTable(CalibrateSettings)


def shard_groups(storage: Storage, spec: str, work_size: int, limit: int, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Groups:
    """Up to `limit` decodable images of the shards `spec` names, at the working size, by image format."""
    groups: Groups = {}
    total = 0
    for uri in storage.expand(spec):
        if total >= limit:
            break
        for record in decode_shard(read_shard(storage, uri, max_shard_bytes), work_size):  # sanitize's reader, in its sandbox
            if record.pixels is not None and total < limit:
                images, keys = groups.setdefault(_format_group(record.member), ([], []))
                images.append(as_images([record.pixels])[0])
                keys.append(record.key)
                total += 1
    return groups


def _format_group(member: str | None) -> str:
    ext = (member or "").lower().rsplit(".", 1)[-1]
    return {"jpg": "jpeg", "jpe": "jpeg", "jfif": "jpeg"}.get(ext, ext)


def read_saved_config(path: str) -> dict[str, Any]:
    """A config written by `calibrate --json`."""
    with open(path) as handle:
        saved = json.load(handle)
    missing = [key for key in THRESHOLDS if key not in saved and key not in WITNESS_THRESHOLDS]
    if missing:
        raise ValueError(f"{path} holds no verdict thresholds ({', '.join(missing)} missing): pass a file written by `calibrate --json`")
    return saved


def judge(purifier, groups: Groups, seed: int, batch_size: int) -> dict[str, list[SampleResult]]:
    """Every image of every group through the purifier, each with its key's draws under `seed`."""
    return {
        name: map_batched(
            list(range(len(images))), batch_size,
            lambda part, images=images, keys=keys: purifier.purify(torch.stack([images[i] for i in part]),
                                                                   seeds=[seed_for_key(seed, keys[i]) for i in part]),
            key=lambda i, images=images: tuple(images[i].shape),
        )
        for name, (images, keys) in groups.items()
    }


def calibrate(settings: CalibrateSettings, run: dict[str, Any], groups: Groups, source: str) -> dict[str, Any]:
    """The config (or with `check`, the report) for clean `groups`. `run`: the models and consensus
    settings given (names as `sanitize`'s); with `check` and a saved `config`, its own fill the rest."""
    saved = read_saved_config(settings.config) if settings.config else {}
    # A saved config's thresholds hold only for the models and consensus they were chosen with, so a check runs those.
    models = {name: saved[name] for name in MODEL_SETTINGS if name in saved}
    models.update({name: run[name] for name in MODEL_SETTINGS if run.get(name) is not None})
    consensus = {name: saved.get(name, run.get(name)) for name in CONSENSUS_SETTINGS}
    purifier = SanitizeConfig.resolve(preset=settings.preset, **models, **consensus).build_purifier()
    groups = {name: images for name, images in groups.items() if images[0]}
    if not groups:
        raise ValueError("no decodable clean images found")
    # Reproducible draws (a public seed, 0 unless given): rates of clean images do not depend on the
    # key's secrecy, and a check repeats the calibration's figures. The thresholds written carry no seed.
    results = judge(purifier, groups, consensus["seed"] or 0, settings.batch_size)
    if settings.check:
        policy = VerdictPolicy(**{k: saved[k] for k in THRESHOLDS if k in saved}) if saved else get_preset(settings.preset).verdict
        return {"thresholds": policy.thresholds(), "settings": {**models, **consensus},
                "groups": {name: dict(zip(("samples", "flagged", "uncertain"), (len(rs), *rates(rs, policy)))) for name, rs in results.items()}}
    if settings.unlabelled:
        # Pooled, not per group: an attacker who stores every illusion in one rare format would make
        # that group's own thresholds (and so their maximum) as loose as the illusions themselves.
        budget = unvetted_budget(settings.target_fpr, settings.assume_attacked)
        policy = calibrate_results([r for rs in results.values() for r in rs], budget, settings.method, settings.min_agreement,
                                   settings.witness_share, settings.margin_share).policy
        per_group = {name: Calibration(policy, *rates(rs, policy), len(rs)) for name, rs in results.items()}
        method = (f"unlabelled {settings.method}: the corpus's own thresholds, flagging {budget:.4f} of it (at most {settings.target_fpr} "
                  f"of its clean samples if at most {settings.assume_attacked} of it is attacked)")
    else:
        policy, per_group = calibrate_groups(results, settings.target_fpr, settings.method, settings.min_agreement,
                                             settings.witness_share, settings.margin_share)
        method = settings.method
    return {
        "preset": settings.preset, **models, "n": consensus["n"], "early_exit": consensus["early_exit"], "alpha": consensus["alpha"],
        **policy.thresholds(),
        "calibration": {"method": method, "target_fpr": settings.target_fpr,
                        **({"assume_attacked": settings.assume_attacked} if settings.unlabelled else {}),
                        "groups": {name: {"samples": c.samples, "flagged": c.false_positive_rate, "uncertain": c.uncertain_rate}
                                   for name, c in per_group.items()},
                        "source": source},
    }
