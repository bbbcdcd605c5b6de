import json

from jobs.cli import main


def test_evaluate_writes_the_paper_table(tmp_path):
    out, md = tmp_path / "out.json", tmp_path / "out.md"
    code = main(["evaluate", "--preset", "demo", "--limit", "6", "--steps", "5", "--step-size", "4/255", "--adaptive-steps", "2",
                 "--detect-steps", "3", "--eot", "2", "--restarts", "2", "--detect-limit", "4",
                 "--defenses", "none,jpeg,vae,vae+consensus", "--n", "3", "--device", "cpu", "--json", str(out), "--markdown", str(md)])
    assert code == 0
    report = json.loads(out.read_text())
    assert {(r["defense"], r["input"]) for r in report["rows"]} == {
        (d, i) for d in ("none", "jpeg", "vae", "vae+consensus") for i in ("clean", "illusion", "adaptive")
    } | {("vae+consensus", "detect-adaptive")}  # only a defense with a verdict faces the attacker that evades it
    sanitised = ("verdict_clean", "verdict_illusion", "verdict_uncertain", "target_purify", "target_drop", "target_keep",
                 "true_purify", "true_drop", "true_keep", "uncertain_target", "uncertain_true")
    for row in report["rows"]:
        assert set(row) == {"defense", "input", "top1", "top5", "asr", "cos_true", "cos_target", "sec_per_sample", "n", *sanitised}
        assert all(0 <= row[k] <= 1 for k in ("top1", "top5", "asr"))
        consensus = row["defense"] == "vae+consensus"  # only a consensus defense gives verdicts
        assert all((row[k] is not None) == consensus for k in sanitised)
        if consensus:
            assert abs(row["verdict_clean"] + row["verdict_illusion"] + row["verdict_uncertain"] - 1) < 1e-6
            assert row["target_drop"] <= row["target_keep"]  # dropping never delivers more
            assert row["true_drop"] <= row["true_keep"] and row["uncertain_true"] <= row["verdict_uncertain"] + 1e-6
    assert [r["n"] for r in report["rows"] if r["defense"] == "vae+consensus"] == [3, 3, 3, 3]
    assert report["config"]["detect_adaptive"] == {"steps": 3, "eot": 2, "restarts": 2, "images": 4, "step_size": 4 / 255}
    assert report["config"]["device"] == "cpu" and report["config"]["complete"]
    # The preset's witness judged with the consensus, as `sanitize` runs it.
    assert report["config"]["witness"].endswith("/witness") and report["config"]["verdict_policy"]["max_witness_gap"] is not None
    assert "| vae+consensus | adaptive |" in md.read_text()
