"""The robustness frontier: how much randomness the reconstruction needs before a defense-aware
attacker stops getting through, and what that randomness costs on clean data.

Each point is one reconstructor setting (VAE latent noise, AE noise, DM strength, N). At each point
the verdict thresholds are recalibrated on held-out clean images (the same target false-positive
rate everywhere), then the defense is scored on clean evaluation images, on the published illusion
and on the detect-adaptive illusion built against that very point: clean Top-1, clean flagged share,
and the share of attacked samples whose downstream label is the target under each policy, with 95%
Wilson intervals.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..defense import ConsensusConfig
from ..defense.calibration import calibrate_groups
from .attacks.adaptive import DetectAdaptiveConfig
from .defense_harness import (POLICIES, detect_adaptive_inputs, detect_apgd_inputs, detect_square_inputs, evaluate_defense,
                              reconstruction_defense, strongest_inputs)
from .models import load_reconstructor, preset_purifier

# Per reconstructor kind, the option that sets how much its reconstructions vary: what the frontier sweeps.
PARAMETERS = {"vae": "latent_noise", "ae": "noise_scale", "dm": "strength"}


@dataclass(frozen=True)
class Point:
    kind: str  # vae | ae | dm
    value: float  # of PARAMETERS[kind]
    n: int = ConsensusConfig.n
    model: str | None = None  # a model spec of this kind instead of the preset's (e.g. an encoder-aligned VAE)

    @property
    def label(self) -> str:
        return f"{self.kind} {PARAMETERS[self.kind]}={self.value:g} N={self.n}" + (f" ({self.model})" if self.model else "")


@dataclass
class PointResult:
    point: Point
    thresholds: dict[str, float | None]
    calibration_fpr: float  # the highest of the calibration groups'
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def run_point(
    point: Point,
    preset,
    encoder,
    bank,
    *,
    calibration_images: dict[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    illusions: torch.Tensor,
    attack: DetectAdaptiveConfig,
    attack_images: int,
    target_fpr: float,
    seed: int = 0,
    batch_size: int = 100,
    dm_attack_steps: int | None = None,
    device: str | torch.device = "cpu",
    witness=None,
    on_uncertain: str = "keep",
    relaxed=None,
    public_seed: bool = False,
    transfer_from: str | None = None,
    detect_queries: int = 0,
    detect_apgd: int = 0,
    exemplars: torch.Tensor | None = None,
) -> PointResult:
    """`witness`: the model spec of a robust copy of the encoder in the verdict (its thresholds
    calibrated with the drift's), which the attacker knows and aims under too; `on_uncertain`: what
    downstream gets of `uncertain` samples; `relaxed`: a `research.witness_attack.Selection`, to also
    run the relaxed suite against the witness test (`research/witness_attack.py`): loss weights chosen
    on the selection images, reported on the attacked ones. `public_seed`: the defense draws from a
    seed the attacker knows, and the attacker aims at exactly those draws (`reconstruction_defense`).
    `transfer_from`: a model spec of the point's kind (an independently trained copy of its
    reconstructor): the detect-adaptive attacker builds its images white-box against the same verdict
    with this reconstructor in it, and they are scored on the real one (a transfer attack).
    `detect_queries`, `detect_apgd`: also the Square query attack (`detect-square`) or APGD for
    this many steps (`detect-apgd`) on the same loss, and per image the best of the attacks' images
    (`strongest`, what the bar is judged on). `exemplars`: clean images of each attacked image's
    target class, where the attacker's starts after the first head."""
    start = time.perf_counter()
    options = {PARAMETERS[point.kind]: point.value}
    # Thresholds for this point, from clean images only (all N draws, as the evaluation votes), that
    # meet the target on each group of them (e.g. as PNG and as JPEG of other sizes).
    purifier = preset_purifier(preset, point.kind, ConsensusConfig(n=point.n, early_exit="off", seed=seed + 17), witness=witness,
                               reconstructor=point.model, device=device, **options)
    clean_results = {group: [r for i in range(0, len(x), batch_size) for r in purifier.purify(x[i : i + batch_size])]
                     for group, x in calibration_images.items()}
    verdict, per_group = calibrate_groups(clean_results, target_fpr)
    # The attack differentiates through the whole denoising chain unless given a shorter surrogate.
    surrogate = (load_reconstructor(preset, "dm", **options, denoise_steps=dm_attack_steps, device=device)
                 if point.kind == "dm" and dm_attack_steps else None)
    consensus = ConsensusConfig(n=point.n, early_exit="off", top_k=len(bank), seed=seed, verdict=verdict)
    defended = purifier.with_consensus(consensus)
    defense = reconstruction_defense(f"{point.kind}+consensus", defended, eot_samples=2, seed=seed, attack_reconstructor=surrogate,
                                     on_uncertain=on_uncertain, public_seed=public_seed)
    source = defense
    if transfer_from is not None:
        copy = preset_purifier(preset, point.kind, consensus, witness=witness, reconstructor=transfer_from, device=device, **options)
        source = reconstruction_defense(f"{point.kind}+consensus", copy, eot_samples=2, seed=seed, on_uncertain=on_uncertain,
                                        public_seed=public_seed)
    text = bank.embeddings(encoder)
    attacked_images, attacked_targets = images[:attack_images], targets[:attack_images]
    attacked = {"detect-adaptive": detect_adaptive_inputs(source, text, attacked_images, attacked_targets, attack, batch_size,
                                                         None if exemplars is None else exemplars[:attack_images])}
    if detect_queries:
        attacked["detect-square"] = detect_square_inputs(source, text, attacked_images, attacked_targets, attack, detect_queries, batch_size)
    if detect_apgd:
        attacked["detect-apgd"] = detect_apgd_inputs(source, text, attacked_images, attacked_targets, attack, detect_apgd, batch_size)
    if len(attacked) > 1:
        attacked["strongest"] = strongest_inputs(source, text, list(attacked.values()), attacked_targets, batch_size)
    rows = evaluate_defense(defense, text, {"clean": images, "illusion": illusions, **attacked}, labels, targets, batch_size)
    metrics: dict[str, Any] = {row.input: _row_metrics(row, len(attacked_images) if row.input in attacked else len(images)) for row in rows}
    thresholds = verdict.thresholds()
    if relaxed is not None and witness is not None:
        metrics["witness-relaxed"] = relaxed_suite(encoder, defended.witness, text, thresholds, relaxed,
                                                   images[:attack_images], targets[:attack_images], batch_size)
    return PointResult(point, thresholds,
                       max(c.false_positive_rate for c in per_group.values()), metrics, time.perf_counter() - start)


def _row_metrics(row, count: int) -> dict[str, Any]:
    """A point's figures for one input (of `count` images): verdict shares, and per policy the clean
    Top-1 and the target's share downstream (with its Wilson interval)."""
    entry = {"images": count, "top1": row.top1, "flagged": row.verdict_illusion, "uncertain": row.verdict_uncertain,
             "uncertain_target": row.uncertain_target, "uncertain_true": row.uncertain_true}
    for policy in POLICIES:
        share = getattr(row, f"target_{policy}")
        entry.update({f"top1_downstream_{policy}": getattr(row, f"true_{policy}"), f"target_{policy}": share,
                      f"target_{policy}_ci": wilson(round(share * count), count)})
    return entry


def relaxed_pass(encoder, witness, text, thresholds: dict[str, Any], targets):
    """The relaxed pass condition (`research.witness_attack.RelaxedPass`) under a point's witness thresholds."""
    from .witness_attack import RelaxedPass

    return RelaxedPass(encoder, witness, text, targets, thresholds["max_witness_gap"], thresholds.get("max_witness_margin"))


def relaxed_suite(encoder, witness, text, thresholds: dict[str, Any], relaxed, images, targets, batch_size: int) -> dict[str, Any]:
    from .witness_attack import choose_loss, strongest

    config, select_images, select_targets = relaxed
    chosen = choose_loss(relaxed_pass(encoder, witness, text, thresholds, select_targets), select_images, config, batch_size)
    result = strongest(relaxed_pass(encoder, witness, text, thresholds, targets), images, config, chosen["weight"], chosen["limit"], batch_size)
    share = result["passed"] / result["images"]
    return {"images": result["images"], "passed": share, "passed_ci": wilson(result["passed"], result["images"]),
            "per_attack": {name: count / result["images"] for name, count in result["per_attack"].items()}, "chosen": chosen}


def meets_target(result: PointResult, clean_top1: float, max_target: float = 0.10, max_flagged: float = 0.05, max_top1_loss: float = 0.05) -> bool:
    """The issue's bar at demo scale, under the policy (purify or drop) that lets the attacker through
    least: at most 10% of attacked samples reach downstream as the target, at most 5% of clean samples
    are flagged, and clean Top-1 as seen downstream (a removed sample counts as lost) is at most 5
    points below the undefended model's."""
    clean, attacked = result.metrics["clean"], result.metrics.get("strongest", result.metrics["detect-adaptive"])
    policy = min(("purify", "drop"), key=lambda p: attacked[f"target_{p}"])
    slack = 1e-6  # the shares are float32 means: 20 of 200 reads 0.100000001
    return (attacked[f"target_{policy}"] <= max_target + slack and clean["flagged"] <= max_flagged + slack
            and clean_top1 - clean[f"top1_downstream_{policy}"] <= max_top1_loss + slack)


def attack_sanity(
    point: Point, preset, encoder, bank, *, images: torch.Tensor, targets: torch.Tensor, attack: DetectAdaptiveConfig,
    policy, eps_values, step_values, eot_values, restart_values=(), seed: int = 0, batch_size: int = 100,
    device: str | torch.device = "cpu", witness: str | None = None, on_uncertain: str = "keep", public_seed: bool = False,
    exemplars: torch.Tensor | None = None,
) -> Iterator[dict[str, Any]]:
    """Checks that the attack, not its budget, sets the frontier: downstream target success (purify)
    of the detect-adaptive attack as the budget epsilon grows (it should approach 100%), and as its
    steps, EOT draws and starts grow (it should level off). Yields one entry per budget, as each is
    measured. `witness`, `public_seed`, `exemplars`: as `run_point`'s."""
    consensus = ConsensusConfig(n=point.n, early_exit="off", top_k=len(bank), seed=seed, verdict=policy)
    purifier = preset_purifier(preset, point.kind, consensus, witness=witness, reconstructor=point.model, device=device,
                               **{PARAMETERS[point.kind]: point.value})
    defense = reconstruction_defense(f"{point.kind}+consensus", purifier, eot_samples=2, seed=seed, on_uncertain=on_uncertain,
                                     public_seed=public_seed)
    text = bank.embeddings(encoder)
    labels = torch.zeros_like(targets)  # unused by the downstream shares
    grid = ([("eps", e, replace(attack, eps=e, step_size=max(attack.step_size, e / 20))) for e in eps_values]
            + [("steps", s, replace(attack, steps=s)) for s in step_values]
            + [("eot", k, replace(attack, eot=k)) for k in eot_values]
            + [("restarts", r, replace(attack, restarts=r)) for r in restart_values])
    for knob, value, config in grid:
        adversarial = detect_adaptive_inputs(defense, text, images, targets, config, batch_size, exemplars)
        (row,) = evaluate_defense(defense, text, {"detect-adaptive": adversarial}, labels, targets, batch_size)
        yield {"knob": knob, "value": value, "target_purify": row.target_purify, "target_drop": row.target_drop,
               "flagged": row.verdict_illusion, "images": len(images)}
