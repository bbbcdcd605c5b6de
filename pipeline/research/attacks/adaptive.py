"""The detect-adaptive illusion: an attacker who runs the open-source sanitiser in the loop.

The published illusion only moves the image's own embedding onto the target text, so reconstruction
undoes it and the label flip gives it away. This attacker wants the poisoned sample to pass the
sanitiser as `clean` while still embedding as the target, and so minimises, per image:

    1 - cos(embed(x), t)                             the original embeds as the target
  + mean over EOT draws of 1 - cos(embed(R(x)), t)   so do its reconstructions (no label flip)
  + w_drift * max(0, drift - drift_limit)            the purified embedding stays near the original
  + w_margin * mean over draws of max(0, best other label - target label + margin)   (the vote)
  + w_witness * max(0, gap - witness_limit)         against a verdict with a robust witness:
                                                    gap = 1 - cos(embed(x), witness(x)) stays small
  + w_witness * max(0, witness margin - limit)      and the witness likes the target label nearly as
                                                    well as its own best label

with fresh reconstruction draws every step (EOT; or, against a defense whose seed is public, the very
draws it will vote on: `known_seed`), signed-gradient steps under an L-inf budget,
random restarts, and the best iterate per image kept as judged by the real defense on fresh draws
(`judge`), as in the literature on adaptive evaluation of purification defenses.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...defense.consensus import witness_measures
from ...models.imaging import straight_through_clamps
from .illusion import Objective

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectAdaptiveConfig:
    eps: float = 16 / 255
    step_size: float = 1 / 255
    steps: int = 200
    eot: int = 16  # reconstruction draws per step
    # The first starts at the clean image; given k exemplars per image, the next k each as far
    # towards one exemplar (a clean image of its target class) as the budget allows; the rest at random points.
    restarts: int = 1
    drift_limit: float = 0.05  # aim below the verdict's drift threshold (set from it by the caller)
    drift_weight: float = 10.0
    margin: float = 0.05  # cosine margin of the target over every other label, in each draw
    margin_weight: float = 1.0
    witness_limit: float = 0.05  # aim below the verdict's witness-gap threshold (set from it by the caller)
    witness_margin_limit: float = 0.025  # aim below the verdict's witness-margin threshold (set from it by the caller)
    witness_weight: float = 10.0
    check_every: int = 25  # steps between judgements of the iterate on fresh draws
    straight_through: bool = False  # BPDA: gradients through the reconstructions' output clamps as the identity
    seed: int = 0
    # Known randomness: the defense's public seed. Image i of a batch is reconstructed from seed + i,
    # draws 0..eot-1, at every step: exactly the draws the defense will vote on, so no EOT is needed.
    known_seed: int | None = None


def detect_adaptive_objective(
    reconstruct: Callable[[torch.Tensor, int, Sequence[int]], torch.Tensor],
    embed: Callable[[torch.Tensor], torch.Tensor],
    text: torch.Tensor,
    targets: torch.Tensor,
    config: DetectAdaptiveConfig,
    witness: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Objective:
    """The loss above for images whose target labels are `targets` (indices into `text`, L x D);
    `witness` embeds images as the verdict's robust witness does (None: no witness term)."""
    targets = targets.to(text.device)
    target_text = text[targets]
    others = F.one_hot(targets, text.shape[0]).bool()

    def objective(x: torch.Tensor, step: int) -> torch.Tensor:
        batch = x.shape[0]
        original = embed(x)
        if config.known_seed is None:
            seeds = [config.seed + 1_000_003 * step + i for i in range(batch)]
        else:
            seeds = [config.known_seed + i for i in range(batch)]
        recon = embed(reconstruct(x, config.eot, seeds).flatten(0, 1)).unflatten(0, (batch, config.eot))
        purified = F.normalize(recon.mean(1), dim=-1)
        drift = 1.0 - (original * purified).sum(-1)
        sims = recon @ text.T  # B x k x L
        target_sim = (recon * target_text[:, None]).sum(-1)
        best_other = sims.masked_fill(others[:, None], -2.0).max(-1).values
        loss = (
            (1.0 - (original * target_text).sum(-1))
            + (1.0 - target_sim).mean(1)
            + config.drift_weight * F.relu(drift - config.drift_limit)
            + config.margin_weight * F.relu(best_other - target_sim + config.margin).mean(1)
        )
        if witness is not None:
            gap, margin = witness_measures(original, witness(x), text, targets)
            loss = loss + config.witness_weight * (F.relu(gap - config.witness_limit) + F.relu(margin - config.witness_margin_limit))
        return loss

    return objective


def detect_adaptive_attack(
    images: torch.Tensor,
    objective: Objective,
    judge: Callable[[torch.Tensor], torch.Tensor],
    config: DetectAdaptiveConfig,
    exemplars: torch.Tensor | None = None,
) -> torch.Tensor:
    """Signed-gradient descent on `objective` from each start; returns, per image, the iterate that
    `judge` (higher is better for the attacker, on fresh defense draws) scored best. `exemplars`
    (N x k x C x H x W): k clean images of each image's target class, the directions of starts
    2..k+1: a defense that holds the target's own images to the true label has no gradient to
    follow from the clean image (the aligned reconstructor and the robust witness), but a start
    that already looks a little like the target may not need one."""
    original = images.detach()
    best, best_score = original.clone(), torch.full((len(original),), -torch.inf, device=original.device)
    generator = torch.Generator().manual_seed(config.seed)
    start = time.perf_counter()
    for restart in range(config.restarts):
        x = original.clone()
        if exemplars is not None and 1 <= restart <= exemplars.shape[1]:
            x = (x + (exemplars[:, restart - 1].to(x) - x).clamp(-config.eps, config.eps)).clamp(0, 1)
        elif restart:
            x = (x + torch.empty(x.shape).uniform_(-config.eps, config.eps, generator=generator).to(x)).clamp(0, 1)
        for step in range(config.steps):
            x.requires_grad_(True)
            with straight_through_clamps() if config.straight_through else contextlib.nullcontext():
                (grad,) = torch.autograd.grad(objective(x, restart * config.steps + step).sum(), x)
            with torch.no_grad():
                x = x - config.step_size * grad.sign()
                x = (original + (x - original).clamp(-config.eps, config.eps)).clamp(0, 1)
            if (step + 1) % config.check_every == 0 or step + 1 == config.steps:
                score = judge(x).float().to(best_score.device)
                better = score > best_score
                best[better], best_score[better] = x[better], score[better]
                log.debug("detect-adaptive: start %d, step %d/%d, best judge score %.3f on average, %.1f s",
                          restart + 1, step + 1, config.steps, float(best_score.mean()), time.perf_counter() - start)
    return best
