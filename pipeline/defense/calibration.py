"""Choosing verdict thresholds from clean data alone.

On clean inputs every `illusion` verdict is a false positive. Given the vote statistics of clean
samples, pick the smallest `min_agreement` (the fewest `uncertain` verdicts) whose false-positive
rate is at most the target; optionally also a `max_drift` at the (1 - target) quantile of clean drift.
No illusion is looked at, so the thresholds are not tuned to any attack or corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .consensus import SampleResult
from .verdict import ILLUSION, VerdictPolicy


@dataclass(frozen=True)
class Calibration:
    policy: VerdictPolicy
    false_positive_rate: float
    uncertain_rate: float
    samples: int


def _rates(results: Sequence[SampleResult], policy: VerdictPolicy) -> tuple[float, float]:
    verdicts = [policy.decide(r.label_original, r.label_consensus, r.agreement, r.drift) for r in results]
    return verdicts.count(ILLUSION) / len(verdicts), verdicts.count("uncertain") / len(verdicts)


def calibrate(results: Sequence[SampleResult], target_fpr: float = 0.05, use_drift: bool = False) -> Calibration:
    if not results:
        raise ValueError("calibration needs at least one clean sample")
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError("target_fpr must lie in [0, 1)")
    max_drift = None
    if use_drift:
        drifts = sorted(r.drift for r in results)
        max_drift = drifts[min(len(drifts) - 1, int((1.0 - target_fpr / 2) * len(drifts)))]
    # Candidate agreement thresholds: the observed values (verdicts only change there), ascending.
    for threshold in sorted({0.0, *(r.agreement for r in results), 1.01}):
        policy = VerdictPolicy(min_agreement=min(1.0, threshold), max_drift=max_drift)
        fpr, uncertain = _rates(results, policy)
        if fpr <= target_fpr:
            return Calibration(policy, fpr, uncertain, len(results))
    policy = VerdictPolicy(min_agreement=1.0, max_drift=max_drift)
    fpr, uncertain = _rates(results, policy)
    return Calibration(policy, fpr, uncertain, len(results))
