"""The adversarial illusion attack (Zhang et al., USENIX Security 2024) and its adaptive variants.

Targeted I-FGSM in pixel space: minimise 1 - cos(embed(x + delta), embed_text(target)) under
||delta||_inf <= eps, signed-gradient steps, projection after every step, no random start by default.
Adaptive attacks change only what is embedded: `eot_objective` averages the loss over fresh draws of
a stochastic defense (Expectation over Transformation), and `bpda` passes gradients straight through
a non-differentiable transform (Backward Pass Differentiable Approximation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# An objective maps (images in [0, 1], step index) to one loss per image (lower is better for the attacker).
Objective = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class AttackConfig:
    eps: float = 16 / 255
    step_size: float = 1 / 255
    steps: int = 300
    random_start: bool = False
    seed: int = 0


def pick_targets(labels: Sequence[int], num_classes: int, seed: int = 0) -> torch.Tensor:
    """A seeded random target label per sample, never the true label."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(list(labels), dtype=torch.long)
    offsets = torch.randint(1, num_classes, (len(labels),), generator=generator)
    return (labels + offsets) % num_classes


def cosine_objective(embed: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor) -> Objective:
    """The published loss: 1 - cos(embed(x), target text embedding), per image."""
    return lambda x, step: 1.0 - (embed(x) * targets).sum(-1)


def eot_objective(
    reconstruct: Callable[[torch.Tensor, int, Sequence[int]], torch.Tensor],
    embed: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    samples: int,
    seed: int = 0,
) -> Objective:
    """EOT against consensus purification: at every step draw `samples` fresh reconstructions (new
    seeds each step), embed them, and minimise the mean of 1 - cos over them: the quantity the vote
    sees on average."""

    def objective(x: torch.Tensor, step: int) -> torch.Tensor:
        seeds = [seed + 1_000_003 * step + i for i in range(x.shape[0])]
        recon = reconstruct(x, samples, seeds)  # B x k x 3 x H x W
        emb = embed(recon.flatten(0, 1)).unflatten(0, (x.shape[0], samples))
        return 1.0 - (emb * targets[:, None]).sum(-1).mean(1)

    return objective


def bpda(transform: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Forward: the (non-differentiable) transform. Backward: identity."""
    return lambda x: x + (transform(x) - x).detach()


def illusion_attack(images: torch.Tensor, objective: Objective, config: AttackConfig = AttackConfig()) -> torch.Tensor:
    """Run targeted I-FGSM from `images` (B x 3 x H x W in [0, 1]); returns the adversarial images."""
    original = images.detach()
    x = original.clone()
    if config.random_start:
        generator = torch.Generator().manual_seed(config.seed)
        x = (x + torch.empty(x.shape).uniform_(-config.eps, config.eps, generator=generator).to(x)).clamp(0, 1)
    for step in range(config.steps):
        x.requires_grad_(True)
        loss = objective(x, step).sum()
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = x - config.step_size * grad.sign()
            x = (original + (x - original).clamp(-config.eps, config.eps)).clamp(0, 1)
    return x.detach()
