from dataclasses import replace

import pytest
import torch

from pipeline.presets import get_preset
from pipeline.research.frontier_report import markdown
from pipeline.research.frontier_run import FrontierSettings, run_frontier, witness_spec


def test_the_witness_in_the_verdict_is_the_presets_or_the_one_named():
    demo = get_preset("demo")
    assert witness_spec(FrontierSettings(), demo) is None
    assert witness_spec(FrontierSettings(witness=True), demo) == demo.witness
    assert witness_spec(FrontierSettings(witness=True, witness_model="clip:/elsewhere"), demo) == "clip:/elsewhere"
    with pytest.raises(ValueError, match="needs --witness"):
        witness_spec(FrontierSettings(witness_model="clip:/elsewhere"), demo)


def test_a_frontier_point_with_a_named_witness_and_a_bpda_attacker_calibrates_and_runs_the_relaxed_suite():
    settings = FrontierSettings(vae="0", ae="", dm="", n="3", offset=500, limit=6, attack_limit=4, witness=True,
                                witness_model=get_preset("demo").witness, calibrate_on="sample", calibration_limit=20, steps=2,
                                detect_steps=2, eot=2, straight_through=True, suite_steps=2, suite_restarts=1, suite_queries=4, select_limit=4)
    report = run_frontier(settings, torch.device("cpu"), "cpu", echo=lambda *_: None)
    (point,) = report["points"]
    assert report["config"]["witness_model"] == settings.witness_model and report["config"]["straight_through"]
    assert report["config"]["complete"]
    assert point["thresholds"]["max_witness_gap"] is not None and point["thresholds"]["max_witness_margin"] is not None
    relaxed = point["metrics"]["witness-relaxed"]
    assert relaxed["images"] == 4 and set(relaxed["per_attack"]) == {"apgd", "square"} and relaxed["chosen"]["images"] == 4


def test_the_vae_points_run_a_named_vae_and_a_suite_of_zero_steps_is_skipped():
    from pipeline.research.frontier_run import points

    vae = get_preset("demo").reconstructors["vae"]
    assert [p.model for p in points(FrontierSettings(vae="0,1", ae="0.5", dm="", vae_model=vae))] == [vae, vae, None]
    settings = FrontierSettings(vae="0", ae="", dm="", n="2", offset=500, limit=4, attack_limit=2, witness=True, vae_model=vae,
                                calibrate_on="sample", calibration_limit=10, steps=1, detect_steps=1, eot=1, suite_steps=0)
    report = run_frontier(settings, torch.device("cpu"), "cpu", echo=lambda *_: None)
    (point,) = report["points"]
    assert point["model"] == vae and report["config"]["vae_model"] == vae
    assert "witness-relaxed" not in point["metrics"] and point["metrics"]["detect-adaptive"]["images"] == 2


def test_a_transfer_attack_against_a_copy_under_a_public_seed_is_scored_on_the_real_reconstructor():
    vae = get_preset("demo").reconstructors["vae"]
    settings = FrontierSettings(vae="0", ae="", dm="", n="2", offset=500, limit=4, attack_limit=2, calibrate_on="sample",
                                calibration_limit=10, steps=1, detect_steps=1, eot=1, public_seed=True, transfer_from="vae:/no/such/copy")
    with pytest.raises(FileNotFoundError):  # the copy is loaded, not ignored
        run_frontier(settings, torch.device("cpu"), "cpu", echo=lambda *_: None)
    report = run_frontier(replace(settings, transfer_from=vae, detect_queries=3, detect_apgd=2), torch.device("cpu"), "cpu",
                          echo=lambda *_: None)
    (point,) = report["points"]
    assert report["config"]["transfer_from"] == vae and report["config"]["public_seed"]
    assert all(point["metrics"][name]["images"] == 2 for name in ("detect-adaptive", "detect-square", "detect-apgd", "strongest"))
    assert "the best per image" in markdown(report) and "APGD (detect-apgd) via drop" in markdown(report)
    with pytest.raises(ValueError, match="not a model spec of kind ae"):
        run_frontier(replace(settings, vae="", ae="0.5", transfer_from=vae), torch.device("cpu"), "cpu", echo=lambda *_: None)


def test_exemplars_are_clean_images_of_each_target_class_that_no_figure_is_reported_on():
    from pipeline.research.data.fashion_mnist import load_sample
    from pipeline.research.frontier_run import exemplar_images

    sample = load_sample()
    images, labels = sample.tensors()
    reported = set(range(500, 700)) | set(range(700, 1000))
    targets = torch.tensor([0, 3, 3, 9])
    attacked = images[500:504]
    for choice, restarts in (("random", 2), ("nearest", 4)):
        settings = FrontierSettings(offset=500, limit=200, calibrate_on="sample", calibration_limit=300, restarts=restarts,
                                    exemplar_start=True, exemplar_choice=choice)
        exemplars = exemplar_images(settings, attacked, targets)
        assert exemplars.shape == (4, 1 if choice == "random" else 3, *images.shape[1:])
        for per_image, target in zip(exemplars, targets.tolist()):
            for exemplar in per_image:
                (index,) = [i for i in range(len(images)) if torch.equal(images[i], exemplar)][:1]
                assert labels[index] == target and index not in reported
    with pytest.raises(ValueError, match="needs --restarts 2"):
        run_frontier(replace(settings, restarts=1), torch.device("cpu"), "cpu", echo=lambda *_: None)


def test_the_nearest_exemplars_are_those_the_budget_brings_closest_first():
    from pipeline.research.data.fashion_mnist import load_sample
    from pipeline.research.frontier_run import exemplar_images

    settings = FrontierSettings(offset=500, limit=200, calibrate_on="sample", calibration_limit=300, restarts=3,
                                exemplar_start=True, eps="16/255")
    images, labels = load_sample().tensors()
    pool = [i for i in range(700) if labels[i] == 7 and not 500 <= i < 700]
    attacked = images[pool[4]][None]  # a pool image itself: the budget reaches it exactly
    exemplars = exemplar_images(settings, attacked, torch.tensor([7]))[0]
    assert torch.equal(exemplars[0], images[pool[4]])

    def left(exemplar):
        return float(((exemplar - attacked[0]).abs() - 16 / 255).clamp(min=0).norm())

    assert left(exemplars[0]) == 0 < left(exemplars[1])
    assert left(exemplars[1]) == min(left(images[i]) for i in pool if i != pool[4])


def test_the_attackers_step_grows_with_the_budget_unless_given():
    from pipeline.research.frontier_run import detect_adaptive_config

    assert detect_adaptive_config(FrontierSettings(eps="16/255")).step_size == 1 / 255
    assert detect_adaptive_config(FrontierSettings(eps="64/255")).step_size == 64 / 255 / 20
    assert detect_adaptive_config(FrontierSettings(eps="64/255", detect_step_size="1/255")).step_size == 1 / 255


def test_the_sanity_grid_runs_with_the_points_attacker():
    settings = FrontierSettings(vae="0", ae="", dm="", n="2", offset=500, limit=4, attack_limit=2, calibrate_on="sample",
                                calibration_limit=10, steps=1, detect_steps=4, eot=2, restarts=2, exemplar_start=True, public_seed=True,
                                sanity=True)
    report = run_frontier(settings, torch.device("cpu"), "cpu", echo=lambda *_: None)
    grid = [(entry["knob"], entry["value"]) for entry in report["sanity"]]
    assert grid == [("eps", 4 / 255), ("eps", 16 / 255), ("eps", 64 / 255), ("steps", 1), ("steps", 4), ("steps", 8),
                    ("eot", 1), ("eot", 2), ("eot", 4), ("restarts", 5)]
    assert all(entry["images"] == 2 and 0 <= entry["target_drop"] <= 1 for entry in report["sanity"])
