"""Choosing verdict thresholds from clean data alone.

On clean inputs every `illusion` verdict is a false positive. Given the consensus results of clean
samples and a target false-positive rate, two methods:

- `drift` (recommended): a sample is an illusion when its embedding moves by more than a threshold
  under purification; the threshold is the smallest one whose clean false-positive rate meets the
  target. Label flips below it become `uncertain`. Works for targets outside the label bank.
- `votes`: any label flip is an illusion; pick the smallest `min_agreement` (the fewest `uncertain`
  verdicts) that meets the target.

With a witness (results carry `witness_gap` and `witness_margin`), `witness_share` of the
false-positive budget goes to the witness tests, `margin_share` of it to the margin test and the
rest to the gap test (the smallest gap threshold that flags at most its part, then the same for the
margin on the samples left; a share of 0 leaves its test off), and the drift threshold
takes what is left, so that the tests together meet the target.

No illusion is looked at, so the thresholds are not tuned to any attack or corpus. They hold for
the reconstructor, N and early-exit setting they were measured with. Without clean data,
`unvetted_budget` says how much of an unvetted corpus the same calibration may flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .consensus import SampleResult
from .verdict import ILLUSION, UNCERTAIN, VerdictPolicy

METHODS = ("drift", "votes")
WITNESS_TESTS = (("max_witness_gap", "witness_gap"), ("max_witness_margin", "witness_margin"))  # (threshold, the measure it bounds)


@dataclass(frozen=True)
class Calibration:
    policy: VerdictPolicy
    false_positive_rate: float
    uncertain_rate: float
    samples: int


def rates(results: Sequence[SampleResult], policy: VerdictPolicy) -> tuple[float, float]:
    """(flagged share, uncertain share) of `results` under `policy`: on clean data, the first is the
    false-positive rate."""
    verdicts = [policy.judge(r) for r in results]
    return verdicts.count(ILLUSION) / len(verdicts), verdicts.count(UNCERTAIN) / len(verdicts)


def _threshold(values: Sequence[float], allowed: int) -> float:
    """The smallest threshold with at most `allowed` values above it: the next-largest value (ties stay below it)."""
    ordered = sorted(values, reverse=True)
    return min(2.0, max(0.0, ordered[allowed] if allowed < len(ordered) else 0.0))


def _drift_policy(results: Sequence[SampleResult], target_fpr: float, min_agreement: float, witness_share: float,
                  margin_share: float) -> VerdictPolicy:
    # The drift and witness tests come before the votes, so every sample can become a false positive:
    # floor(target * n) of them may lie above the thresholds.
    allowed = int(target_fpr * len(results) + 1e-9)  # 8/105 x 105 is 7.999... in floating point: still 8
    witness = {}
    if all(getattr(r, "witness_gap", None) is not None for r in results):
        budget = witness_share * allowed
        shares = {"max_witness_gap": 1.0 - margin_share, "max_witness_margin": margin_share}
        for threshold, measure in WITNESS_TESTS:
            if not shares[threshold]:
                continue
            witness[threshold] = _threshold([getattr(r, measure) for r in results], int(budget * shares[threshold]))
            kept = [r for r in results if getattr(r, measure) <= witness[threshold]]
            allowed -= len(results) - len(kept)
            results = kept
    drift = _threshold([r.drift for r in results], allowed)
    return VerdictPolicy(min_agreement=min_agreement, max_drift=drift, flip_min_drift=drift, **witness)


def _votes_policy(results: Sequence[SampleResult], target_fpr: float) -> VerdictPolicy:
    # Verdicts only change at observed agreement values; try them in ascending order.
    for threshold in sorted({0.0, *(r.agreement for r in results)}):
        policy = VerdictPolicy(min_agreement=threshold)
        if rates(results, policy)[0] <= target_fpr:
            return policy
    return VerdictPolicy(min_agreement=1.0)


def calibrate(
    results: Sequence[SampleResult], target_fpr: float = 0.05, method: str = "drift", min_agreement: float = 0.5,
    witness_share: float = 0.5, margin_share: float = 0.5,
) -> Calibration:
    if not results:
        raise ValueError("calibration needs at least one clean sample")
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError("target_fpr must lie in [0, 1)")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    if not (0.0 <= witness_share <= 1.0 and 0.0 <= margin_share <= 1.0):
        raise ValueError("witness_share and margin_share must lie in [0, 1]")
    policy = _drift_policy(results, target_fpr, min_agreement, witness_share, margin_share) if method == "drift" else _votes_policy(results, target_fpr)
    fpr, uncertain = rates(results, policy)
    return Calibration(policy, fpr, uncertain, len(results))


def calibrate_groups(
    groups: dict[str, Sequence[SampleResult]], target_fpr: float = 0.05, method: str = "drift", min_agreement: float = 0.5,
    witness_share: float = 0.5, margin_share: float = 0.5,
) -> tuple[VerdictPolicy, dict[str, Calibration]]:
    """One policy whose false-positive rate meets the target on every group (e.g. clean PNGs and
    clean JPEGs of other sizes): each group's own thresholds, then the most permissive of them.
    Returns the policy and each group's rates under it."""
    policies = [calibrate(results, target_fpr, method, min_agreement, witness_share, margin_share).policy for results in groups.values()]
    if method == "drift":
        threshold = max(p.max_drift for p in policies)
        witness = {}
        for name, _ in WITNESS_TESTS:
            values = [getattr(p, name) for p in policies]
            witness[name] = None if None in values else max(values)
        policy = VerdictPolicy(min_agreement=min_agreement, max_drift=threshold, flip_min_drift=threshold, **witness)
    else:
        policy = VerdictPolicy(min_agreement=max(p.min_agreement for p in policies))
    return policy, {name: Calibration(policy, *rates(results, policy), len(results)) for name, results in groups.items()}


def unvetted_budget(target_fpr: float, attacked_share: float) -> float:
    """The share b of an unvetted corpus that its own thresholds may flag so that at most
    `target_fpr` (t) of its clean samples are flagged when up to `attacked_share` (a) of it is
    attacked: b = a + t (1 - a). Where the attacked samples lie above the thresholds (the illusions
    the tests see), they take a of the flags and t (1 - a) fall on clean samples: t of them. Where
    they hide below, the clean share flagged grows to b / (1 - a); a clean corpus gets b. No tail
    shape is assumed: the corpus's own quantiles set the thresholds, as `calibrate` does on clean data."""
    if not 0.0 <= attacked_share < 1.0:
        raise ValueError("attacked_share must lie in [0, 1)")
    return attacked_share + target_fpr * (1.0 - attacked_share)
