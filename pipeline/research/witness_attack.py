"""The strongest attacker we can field against the witness test, and its sanity curves.

A poisoned sample reaches downstream as its target only if (a) the encoder's label of the image is
the target (downstream sees the image as stored) and (b) the verdict lets it through, which with a
witness needs gap = 1 - cos(encoder(x), witness(x)) <= the verdict's `max_witness_gap` and the
witness's margin (its best label's cosine minus the target's) <= `max_witness_margin`. (a) and (b)
are necessary, not sufficient: the drift and the votes must pass too. This module attacks (a) and
(b) alone, the *relaxed* pass condition: no reconstruction, no randomness, nothing to average
over, so the gradients are exact and the attack can afford what the full pipeline cannot (APGD step
sizes, several restarts, 1,000 steps, a loss-weight sweep, a gradient-free query attack). Whatever
share of images no relaxed attack gets through is a share no attacker gets through the full verdict,
whatever it knows about the noise (the witness is deterministic).

Losses are per image and minimised; images are B x 3 x H x W in [0, 1]; budgets are L-inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..defense.consensus import witness_measures

Loss = Callable[[torch.Tensor], torch.Tensor]  # images -> per-image loss (lower is better for the attacker)


@dataclass(frozen=True)
class RelaxedPass:
    """The relaxed pass condition for images whose targets are `targets` (indices into `text`)."""

    encoder: object
    witness: object
    text: torch.Tensor  # L x D label embeddings
    targets: torch.Tensor
    max_witness_gap: float
    max_witness_margin: float | None = None  # None: the verdict has no margin test

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(margin, gap, witness margin): margin < 0 when the encoder's label is the target; the witness
        margin is how much better the witness likes its own best label than the target."""
        original, witnessed = self.encoder.embed_images(x), self.witness.embed_images(x)
        sims, targets = original @ self.text.T, self.targets.to(self.text.device)
        target = sims.gather(1, targets[:, None]).squeeze(1)
        others = sims.masked_fill(F.one_hot(targets, sims.shape[1]).bool(), -2.0).max(-1).values
        gap, witness_margin = witness_measures(original, witnessed, self.text, targets)
        return others - target, gap, witness_margin

    def loss(self, weight: float, aim: float, kappa: float = 0.02) -> Loss:
        """relu(margin + kappa) + weight * (relu(gap - aim * max gap) + relu(witness margin - aim * max margin)):
        the target label with a margin, the witness measures under `aim` (a share) of their thresholds."""
        def loss(x: torch.Tensor) -> torch.Tensor:
            margin, gap, witness_margin = self.parts(x)
            value = F.relu(margin + kappa) + weight * F.relu(gap - aim * self.max_witness_gap)
            if self.max_witness_margin is not None:
                value = value + weight * F.relu(witness_margin - aim * self.max_witness_margin)
            return value

        return loss

    @torch.no_grad()
    def passes(self, x: torch.Tensor) -> torch.Tensor:
        margin, gap, witness_margin = self.parts(x)
        passed = (margin < 0) & (gap <= self.max_witness_gap)
        return passed if self.max_witness_margin is None else passed & (witness_margin <= self.max_witness_margin)


def _project(x: torch.Tensor, original: torch.Tensor, eps: float) -> torch.Tensor:
    return (original + (x - original).clamp(-eps, eps)).clamp(0, 1)


def apgd(loss: Loss, images: torch.Tensor, *, eps: float, steps: int, restarts: int = 1, seed: int = 0) -> torch.Tensor:
    """APGD (Croce and Hein 2020), minimising `loss` per image: signed steps with momentum 0.75, a
    step size that starts at 2 eps and halves at checkpoints where progress stalled (then the walk
    resumes from the best point). The first start is the clean image, the others uniform in the
    ball. Returns the best iterate per image over all starts."""
    original = images.detach()
    generator = torch.Generator().manual_seed(seed)
    best = original.clone()
    with torch.no_grad():
        best_loss = loss(best)
    checkpoints = _checkpoints(steps)
    for restart in range(restarts):
        x = original.clone() if restart == 0 else _project(
            original + torch.empty(original.shape).uniform_(-eps, eps, generator=generator).to(original), original, eps)
        step = torch.full((len(x),), 2 * eps, device=x.device)
        x_best, loss_best = x.clone(), torch.full((len(x),), math.inf, device=x.device)
        previous, improved = x.clone(), torch.zeros(len(x), device=x.device)
        last_checkpoint, loss_at_checkpoint, step_at_checkpoint = 0, loss_best.clone(), step.clone()
        for i in range(steps):
            x.requires_grad_(True)
            value = loss(x)
            (grad,) = torch.autograd.grad(value.sum(), x)
            value = value.detach()
            with torch.no_grad():
                better = value < loss_best
                improved += better.float()
                x_best[better], loss_best[better] = x[better].detach(), value[better]
                candidate = _project(x - step.view(-1, 1, 1, 1) * grad.sign(), original, eps)
                moved = _project(x + 0.75 * (candidate - x) + 0.25 * (x - previous), original, eps) if i else candidate
                previous, x = x.detach(), moved
                if i + 1 in checkpoints:
                    span = i + 1 - last_checkpoint
                    stalled = (improved < 0.75 * span) | ((step == step_at_checkpoint) & (loss_best >= loss_at_checkpoint))
                    step_at_checkpoint = step.clone()
                    step = torch.where(stalled, step / 2, step)
                    x = torch.where(stalled.view(-1, 1, 1, 1), x_best, x)
                    improved.zero_()
                    last_checkpoint, loss_at_checkpoint = i + 1, loss_best.clone()
        with torch.no_grad():
            final = loss(x)
            better = final < loss_best
            x_best[better], loss_best[better] = x[better], final[better]
            better = loss_best < best_loss
            best[better], best_loss[better] = x_best[better], loss_best[better]
    return best


def _checkpoints(steps: int) -> set[int]:
    """APGD's checkpoints: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    points, previous, current = set(), 0.0, 0.22
    while current <= 1.0:
        points.add(max(1, math.ceil(current * steps - 1e-9)))
        previous, current = current, current + max(current - previous - 0.03, 0.06)
    return points


@torch.no_grad()
def square(loss: Loss, images: torch.Tensor, *, eps: float, queries: int, p_init: float = 0.1, seed: int = 0) -> torch.Tensor:
    """The L-inf Square attack (Andriushchenko et al. 2020), gradient-free: from vertical stripes of
    +-eps, repeatedly set a random square (side shrinking on the paper's schedule) of each image to
    +-eps per channel and keep the change when the loss drops. One loss evaluation per query."""
    generator = torch.Generator().manual_seed(seed)
    original = images.detach()
    count, channels, height, width = original.shape
    signs = torch.randint(0, 2, (count, channels, 1, width), generator=generator).float() * 2 - 1
    x = _project(original + eps * signs.to(original), original, eps)
    current = loss(x)
    for query in range(1, queries):
        side = max(1, int(round(math.sqrt(_square_share(p_init, query, queries) * height * width))))
        side = min(side, height, width)
        top = torch.randint(0, height - side + 1, (count,), generator=generator)
        left = torch.randint(0, width - side + 1, (count,), generator=generator)
        change = torch.randint(0, 2, (count, channels), generator=generator).float() * 2 - 1
        rows = torch.arange(height)[None, :] - top[:, None]
        cols = torch.arange(width)[None, :] - left[:, None]
        inside = ((rows >= 0) & (rows < side))[:, :, None] & ((cols >= 0) & (cols < side))[:, None, :]  # B x H x W
        inside = inside[:, None].to(original.device)
        proposal = torch.where(inside, original + eps * change.to(original)[:, :, None, None], x)
        proposal = _project(proposal, original, eps)
        value = loss(proposal)
        better = value < current
        x[better], current[better] = proposal[better], value[better]
    return x


def _square_share(p_init: float, query: int, queries: int) -> float:
    """The share of pixels a square covers: halved at the paper's query milestones (scaled to 10,000 queries)."""
    fraction = query * 10_000 / max(queries, 1)
    halvings = sum(fraction > m for m in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2**halvings


@dataclass(frozen=True)
class SuiteConfig:
    eps: float = 16 / 255
    steps: int = 500
    restarts: int = 3
    weights: Sequence[float] = (1.0, 10.0, 100.0)  # the witness terms' weight, swept
    limits: Sequence[float] = (0.5, 0.9)  # the witness measures aimed at, as a share of their thresholds
    queries: int = 2000  # Square; 0 skips it
    seed: int = 0


class Selection(NamedTuple):
    """The suite's settings and the images (with their targets) its loss weights are chosen on."""

    config: SuiteConfig
    images: torch.Tensor
    targets: torch.Tensor


def _parts(condition: RelaxedPass, images: torch.Tensor, batch_size: int):
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        yield part, replace(condition, targets=condition.targets[part])


def choose_loss(condition: RelaxedPass, images: torch.Tensor, config: SuiteConfig, batch_size: int = 100) -> dict:
    """The loss weights, chosen on these images (not the ones reported): APGD (one start) with each
    weight and gap aim; the pair that passes most images wins (ties: the larger weight, then aim)."""
    table = {}
    for weight in config.weights:
        for limit in config.limits:
            passed = 0
            for part, local in _parts(condition, images, batch_size):
                adversarial = apgd(local.loss(weight, limit), images[part], eps=config.eps,
                                   steps=config.steps, seed=config.seed)
                passed += int(local.passes(adversarial).sum())
            table[f"w={weight:g} limit={limit:g}"] = passed
    weight, limit = max(((w, lim) for w in config.weights for lim in config.limits),
                        key=lambda pair: (table[f"w={pair[0]:g} limit={pair[1]:g}"], pair))
    return {"weight": weight, "limit": limit, "images": len(images), "passed": table}


def strongest(condition: RelaxedPass, images: torch.Tensor, config: SuiteConfig, weight: float, limit: float,
              batch_size: int = 100) -> dict:
    """APGD with `config.restarts` starts and the Square query attack, with the chosen loss; an image
    counts as passed when either attack passes it. Returns the counts per attack and overall, and the
    pass mask."""
    passed = torch.zeros(len(images), dtype=torch.bool)
    per_attack = {"apgd": 0, "square": 0}
    for part, local in _parts(condition, images, batch_size):
        loss = local.loss(weight, limit)
        found = {"apgd": apgd(loss, images[part], eps=config.eps, steps=config.steps, restarts=config.restarts, seed=config.seed)}
        if config.queries:
            found["square"] = square(loss, images[part], eps=config.eps, queries=config.queries, seed=config.seed)
        for name, adversarial in found.items():
            ok = local.passes(adversarial).cpu()
            per_attack[name] += int(ok.sum())
            passed[part] |= ok
    return {"images": len(images), "passed": int(passed.sum()), "per_attack": per_attack, "mask": passed}


def sanity_curves(condition: RelaxedPass, images: torch.Tensor, config: SuiteConfig, weight: float, limit: float,
                  batch_size: int = 100) -> Iterator[dict]:
    """APGD's pass share as the budget grows (it must approach 100% by 64/255, or the loss is masked),
    as steps go from a fifth to twice `config.steps` (100 and 1,000 for 500), and with 5 starts; the
    base (`config.steps` steps, one start) is the eps entry at `config.eps`. Flat curves mean the
    budget does not set the figure.
    Yields one entry per setting, as each is measured."""
    grid = ([("eps", e, dict(eps=e)) for e in sorted({4 / 255, 8 / 255, config.eps, 32 / 255, 64 / 255})]
            + [("steps", s, dict(steps=s)) for s in (max(1, config.steps // 5), 2 * config.steps)]
            + [("restarts", 5, dict(restarts=5))])
    for knob, value, change in grid:
        settings = {"eps": config.eps, "steps": config.steps, "restarts": 1, **change}
        passed = 0
        for part, local in _parts(condition, images, batch_size):
            adversarial = apgd(local.loss(weight, limit), images[part], seed=config.seed, **settings)
            passed += int(local.passes(adversarial).sum())
        yield {"knob": knob, "value": value, "passed": passed, "images": len(images)}
