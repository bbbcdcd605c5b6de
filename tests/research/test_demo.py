import pytest

from pipeline.research.demo import DemoSettings, downstream_label, format_report, score_detection


def row(key, verdict, original, consensus, accepted=None):
    return {"key": key, "verdict": verdict, "label_original": original, "label_consensus": consensus, "replacement_accepted": accepted}


def test_scores_count_what_reaches_downstream_under_each_uncertain_policy():
    truth = {"a": {"illusion": True, "target": "bag", "label": "coat"}, "b": {"illusion": True, "target": "bag", "label": "coat"},
             "c": {"illusion": True, "target": "bag", "label": "coat"}, "d": {"illusion": False, "label": "shirt"}}
    rows = [row("a", "illusion", "bag", "coat", accepted=True), row("b", "uncertain", "bag", "bag"),
            row("c", "clean", "bag", "bag"), row("d", "illusion", "shirt", "dress", accepted=False)]
    dropped, kept = score_detection(rows, truth, "drop"), score_detection(rows, truth, "keep")
    assert dropped["true_positive_rate"] == 1 / 3 and dropped["false_positive_rate"] == 1.0
    assert dropped["asr_before"] == 1.0 and dropped["asr_after"] == 2 / 3
    assert dropped["asr_downstream"] == 1 / 3 and kept["asr_downstream"] == 2 / 3  # b passes only when uncertain is kept
    assert dropped["replacement_rejected_rate"] == 0.5 and dropped["accuracy_after_on_illusions"] == 1 / 3
    assert downstream_label(rows[3], "keep") is None  # a rejected replacement is quarantined
    assert "reaching downstream under purify: 33.3%" in format_report({**dropped, "samples_per_second": 2.0})


def test_the_bundled_sample_bounds_the_corpus():
    with pytest.raises(ValueError, match="1..1000"):
        DemoSettings(samples=1001)
