from types import SimpleNamespace

import pytest

from pipeline.defense.calibration import calibrate, unvetted_budget


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


def test_drift_method_counts_low_agreement_samples_too():
    # The drift test comes before the votes: split votes excuse no drift, so clean samples with split
    # votes and a large drift push the threshold up rather than pass as uncertain.
    results = clean_results() + [SimpleNamespace(label_original=0, label_consensus=1, agreement=0.3, drift=1.5)] * 20
    result = calibrate(results, target_fpr=0.05, min_agreement=0.5)
    assert result.policy.max_drift == pytest.approx(1.5) and result.false_positive_rate <= 0.05
    assert result.uncertain_rate == pytest.approx(30 / 120)  # the 20 split votes and the 10 flips


def test_a_witness_takes_its_share_of_the_budget_and_the_three_tests_meet_the_target_together():
    # The largest witness gaps and margins belong to different samples that barely drift, so the three tests flag different samples.
    results = [SimpleNamespace(**vars(r), witness_gap=0.001 * (99 - i), witness_margin=0.001 * ((i + 50) % 100))
               for i, r in enumerate(clean_results())]
    result = calibrate(results, target_fpr=0.08, witness_share=0.5)
    assert result.policy.max_witness_gap == pytest.approx(0.097)  # 2 of the 8 allowed above it (gaps 0.098, 0.099)
    assert result.policy.max_witness_margin == pytest.approx(0.097)  # 2 above it (margins 0.098, 0.099)
    assert result.policy.max_drift == pytest.approx(0.15)  # and 4 by drift (0.16-0.19)
    assert result.false_positive_rate == pytest.approx(0.08)
    drift_only = calibrate(results, target_fpr=0.08, witness_share=0.0)
    assert drift_only.policy.max_witness_gap == drift_only.policy.max_witness_margin == pytest.approx(0.099)
    assert drift_only.policy.max_drift == pytest.approx(0.11)
    gap_only = calibrate(results, target_fpr=0.08, witness_share=0.5, margin_share=0.0).policy
    assert gap_only.max_witness_gap == pytest.approx(0.095) and gap_only.max_witness_margin is None  # all 4 to the gap
    margin_only = calibrate(results, target_fpr=0.08, witness_share=0.5, margin_share=1.0).policy
    assert margin_only.max_witness_gap is None and margin_only.max_witness_margin == pytest.approx(0.095)
    bare = calibrate(clean_results(), target_fpr=0.06).policy
    assert bare.max_witness_gap is None and bare.max_witness_margin is None


def test_an_unvetted_corpus_keeps_the_clean_share_flagged_under_the_target_while_its_attacks_stay_under_the_bound():
    assert unvetted_budget(0.03, 0.0) == pytest.approx(0.03) and unvetted_budget(0.03, 0.02) == pytest.approx(0.0494)
    # 100 clean samples (drifts 0.001-0.1) and 5 illusions that moved far: with the bound at 5 of
    # 105, the corpus's own threshold flags every illusion and 3 clean samples (the target's 3%).
    clean = [SimpleNamespace(label_original=0, label_consensus=0, agreement=1.0, drift=0.001 * (i + 1)) for i in range(100)]
    illusions = [SimpleNamespace(label_original=1, label_consensus=1, agreement=1.0, drift=0.5)] * 5
    policy = calibrate(clean + illusions, unvetted_budget(0.03, 5 / 105)).policy
    assert all(policy.judge(r) == "illusion" for r in illusions)
    assert sum(policy.judge(r) == "illusion" for r in clean) == 3
    # Illusions that hide below every threshold: clean samples take all the flags, b / (1 - a) of them.
    hidden = [SimpleNamespace(label_original=1, label_consensus=1, agreement=1.0, drift=0.0)] * 5
    policy = calibrate(clean + hidden, unvetted_budget(0.03, 5 / 105)).policy
    assert sum(policy.judge(r) == "illusion" for r in clean) == 8  # 8% of them: b / (1 - a) = (8 / 105) / (100 / 105)
    with pytest.raises(ValueError, match="attacked_share"):
        unvetted_budget(0.03, 1.0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        calibrate([], 0.05)
    with pytest.raises(ValueError):
        calibrate(clean_results(), 1.0)
    with pytest.raises(ValueError, match="margin_share"):
        calibrate(clean_results(), 0.05, margin_share=1.5)
    with pytest.raises(ValueError, match="method"):
        calibrate(clean_results(), 0.05, method="guess")
