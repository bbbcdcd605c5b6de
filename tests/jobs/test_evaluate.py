import json

from jobs.cli import main


def test_evaluate_writes_the_paper_table(tmp_path):
    out, md = tmp_path / "out.json", tmp_path / "out.md"
    code = main(["evaluate", "--preset", "demo", "--limit", "6", "--steps", "5", "--step-size", "4/255", "--adaptive-steps", "2",
                 "--defenses", "none,jpeg,vae,vae+consensus", "--n", "3", "--json", str(out), "--markdown", str(md)])
    assert code == 0
    report = json.loads(out.read_text())
    assert {(r["defense"], r["input"]) for r in report["rows"]} == {
        (d, i) for d in ("none", "jpeg", "vae", "vae+consensus") for i in ("clean", "illusion", "adaptive")
    }
    for row in report["rows"]:
        assert set(row) == {"defense", "input", "top1", "top5", "asr", "cos_true", "cos_target", "sec_per_sample", "n"}
        assert all(0 <= row[k] <= 1 for k in ("top1", "top5", "asr"))
    assert [r["n"] for r in report["rows"] if r["defense"] == "vae+consensus"] == [3, 3, 3]
    assert "| vae+consensus | adaptive |" in md.read_text()
