import torch

from pipeline.research.evaluate import EvaluateSettings, run_evaluate


def test_the_ablations_sweep_n_and_the_sampling_scale_of_vae_consensus():
    settings = EvaluateSettings(limit=4, defenses="none", steps=2, adaptive_steps=0, detect_steps=0, ablations=True, batch_size=4)
    report = run_evaluate(settings, torch.device("cpu"), "cpu", echo=lambda *_: None)
    sweep = [(a["parameter"], a["value"], a["input"]) for a in report["ablations"]]
    assert sweep == [(p, v, i) for p, values in (("n", (1, 3, 5, 10, 15, 20)), ("sample_scale", (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)))
                     for v in values for i in ("clean", "illusion")]
    assert [a["n"] for a in report["ablations"] if a["parameter"] == "n"] == [1, 1, 3, 3, 5, 5, 10, 10, 15, 15, 20, 20]
    assert {a["n"] for a in report["ablations"] if a["parameter"] == "sample_scale"} == {settings.n}
    assert all(0 <= a["top1"] <= 1 for a in report["ablations"])
