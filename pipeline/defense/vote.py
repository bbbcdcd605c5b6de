"""Majority vote over reconstruction labels, early-exit rules, and the binomial majority formula.

Tie rule (documented contract): among labels with the most votes, the one with the highest mean
cosine similarity over all reconstructions used wins; if that is tied too, the lowest label index.
"""

from __future__ import annotations

import math

import torch


def rank_labels(counts: torch.Tensor, mean_similarity: torch.Tensor) -> torch.Tensor:
    """Label indices ordered by votes (desc), then mean similarity (desc), then index (asc)."""
    order = torch.argsort(mean_similarity, descending=True, stable=True)  # ties keep index order
    by_votes = torch.argsort(counts[order], descending=True, stable=True)
    return order[by_votes]


def majority_label(counts: torch.Tensor, mean_similarity: torch.Tensor) -> int:
    return int(rank_labels(counts, mean_similarity)[0])


def leader_and_runner_up(counts: torch.Tensor) -> tuple[int, int]:
    top = torch.topk(counts, k=min(2, counts.numel())).values.tolist()
    return int(top[0]), int(top[1]) if len(top) > 1 else 0


def majority_settled(counts: torch.Tensor, remaining: int) -> bool:
    """True when no outcome of the remaining draws can change the N-sample winner.

    The leader must beat the runner-up even if every remaining draw goes to the runner-up; a possible
    final tie counts as unsettled, since the tie rule could then pick the other label.
    """
    leader, runner_up = leader_and_runner_up(counts)
    return leader > runner_up + remaining


def flip_probability(leader: int, runner_up: int, remaining: int) -> float:
    """Posterior predictive probability that the runner-up catches up with the leader (tie included)
    within `remaining` more draws.

    Model: each further draw votes runner-up with probability q, q ~ Beta(1 + runner_up, 1 + leader)
    (a uniform prior updated with the votes so far), so the runner-up's extra votes X are
    beta-binomial. Counting every remaining draw as leader-or-runner-up over-states the runner-up's
    chances, so the value is an upper estimate of the chance that finishing all N draws changes the
    winner relative to these two labels.
    """
    if remaining <= 0:
        return 0.0 if leader > runner_up else 1.0
    a, b = 1 + runner_up, 1 + leader
    needed = math.ceil((leader - runner_up + remaining) / 2)  # runner_up + x >= leader + remaining - x
    log_beta_ab = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    total = 0.0
    for x in range(max(0, needed), remaining + 1):
        log_choose = math.lgamma(remaining + 1) - math.lgamma(x + 1) - math.lgamma(remaining - x + 1)
        log_beta = math.lgamma(x + a) + math.lgamma(remaining - x + b) - math.lgamma(remaining + a + b)
        total += math.exp(log_choose + log_beta - log_beta_ab)
    return min(1.0, total)


def majority_success_probability(eta: float, n: int) -> float:
    """P(a strict majority of n independent reconstructions keeps the attacker's label), when each one
    keeps it with probability eta: sum over k > n/2 of C(n, k) eta^k (1 - eta)^(n - k).

    This is the paper's argument for voting: for eta < 1/2 it falls towards 0 as n grows.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError("eta must lie in [0, 1]")
    if n < 1:
        raise ValueError("n must be at least 1")
    return sum(math.comb(n, k) * eta**k * (1.0 - eta) ** (n - k) for k in range(n // 2 + 1, n + 1))
