from types import SimpleNamespace

import pytest

from pipeline.defense.calibration import calibrate


def clean_results():
    # 100 clean samples: 90 keep their label and barely move, 10 flip with agreement 0.5-0.59
    # and drifts 0.10-0.19 (boundary cases).
    results = [SimpleNamespace(label_original=0, label_consensus=0, agreement=0.9, drift=0.001 * i) for i in range(90)]
    results += [SimpleNamespace(label_original=0, label_consensus=1, agreement=0.5 + 0.01 * i, drift=0.1 + 0.01 * i) for i in range(10)]
    return results


def test_votes_method_picks_the_smallest_agreement_that_meets_the_target():
    result = calibrate(clean_results(), target_fpr=0.05, method="votes")
    assert result.false_positive_rate <= 0.05 and result.samples == 100
    assert result.policy.min_agreement == pytest.approx(0.55)
    assert result.policy.max_drift is None
    assert calibrate(clean_results(), target_fpr=0.2, method="votes").policy.min_agreement == 0.0


def test_drift_method_allows_exactly_the_target_share_above_the_threshold():
    result = calibrate(clean_results(), target_fpr=0.05)
    assert result.policy.max_drift == pytest.approx(0.14) and result.policy.flip_min_drift == result.policy.max_drift
    assert result.false_positive_rate == pytest.approx(0.05)  # the five flips with drift 0.15-0.19
    assert result.uncertain_rate == pytest.approx(0.05)  # the five flips that moved less
    strict = calibrate(clean_results(), target_fpr=0.0)
    assert strict.false_positive_rate == 0.0 and strict.policy.max_drift == pytest.approx(0.19)


def test_drift_method_ignores_samples_already_uncertain():
    # Low-agreement samples never reach the drift test, so they do not push the threshold up.
    results = clean_results() + [SimpleNamespace(label_original=0, label_consensus=1, agreement=0.3, drift=1.5)] * 20
    result = calibrate(results, target_fpr=0.05, min_agreement=0.5)
    assert result.policy.max_drift < 0.2 and result.false_positive_rate <= 0.05


def test_bad_arguments():
    with pytest.raises(ValueError):
        calibrate([], 0.05)
    with pytest.raises(ValueError):
        calibrate(clean_results(), 1.0)
    with pytest.raises(ValueError, match="method"):
        calibrate(clean_results(), 0.05, method="guess")
