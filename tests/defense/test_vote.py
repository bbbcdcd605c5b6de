import math
import random

import pytest
import torch

from pipeline.defense import flip_probability, majority_label, majority_settled, majority_success_probability, rank_labels


def test_majority_and_documented_tie_rule():
    assert majority_label(torch.tensor([1, 5, 2]), torch.tensor([0.9, 0.1, 0.5])) == 1
    # 4-4 tie: the label with the higher mean similarity wins ...
    assert majority_label(torch.tensor([4, 4, 2]), torch.tensor([0.2, 0.3, 0.9])) == 1
    assert majority_label(torch.tensor([4, 4, 2]), torch.tensor([0.3, 0.2, 0.9])) == 0
    # ... and on equal similarity the lowest index.
    assert majority_label(torch.tensor([0, 3, 3]), torch.tensor([0.5, 0.5, 0.5])) == 1
    assert rank_labels(torch.tensor([2, 5, 2, 0]), torch.tensor([0.1, 0.0, 0.4, 0.9])).tolist() == [1, 2, 0, 3]


@pytest.mark.parametrize(
    "counts, remaining, settled",
    [([6, 0, 0], 4, True), ([5, 1, 0], 4, False), ([5, 0, 0], 5, False), ([3, 1, 0], 1, True), ([2, 2, 0], 0, False)],
)
def test_majority_settled(counts, remaining, settled):
    assert majority_settled(torch.tensor(counts), remaining) is settled


def test_flip_probability_matches_a_simulation_of_its_model():
    rng = random.Random(0)
    leader, runner_up, remaining = 4, 2, 4
    trials, flips = 40000, 0
    for _ in range(trials):
        q = rng.betavariate(1 + runner_up, 1 + leader)
        x = sum(rng.random() < q for _ in range(remaining))
        flips += runner_up + x >= leader + remaining - x
    assert flip_probability(leader, runner_up, remaining) == pytest.approx(flips / trials, abs=0.01)
    assert flip_probability(9, 0, 1) == 0.0  # cannot catch up
    assert flip_probability(3, 3, 0) == 1.0


@pytest.mark.parametrize("eta, n", [(0.3, 1), (0.3, 10), (0.45, 15), (0.6, 5), (0.5, 4)])
def test_binomial_majority_formula_matches_simulation(eta, n):
    rng = random.Random(1)
    trials = 30000
    wins = sum(sum(rng.random() < eta for _ in range(n)) > n / 2 for _ in range(trials))
    assert majority_success_probability(eta, n) == pytest.approx(wins / trials, abs=0.012)


def test_binomial_majority_shrinks_with_n_below_one_half():
    values = [majority_success_probability(0.3, n) for n in (1, 5, 11, 21)]
    assert values == sorted(values, reverse=True)
    assert majority_success_probability(0.3, 1) == pytest.approx(0.3)
    assert majority_success_probability(0.3, 3) == pytest.approx(3 * 0.3**2 * 0.7 + 0.3**3)
    assert math.isclose(majority_success_probability(1.0, 10), 1.0)
    with pytest.raises(ValueError):
        majority_success_probability(1.5, 3)
