import torch

from pipeline.research.frontier import Point, PointResult, meets_target


def point_result(target_drop: float, flagged: float, top1_drop: float) -> PointResult:
    as_float32 = lambda v: float(torch.tensor(v, dtype=torch.float32))  # noqa: E731  (how the shares are measured)
    clean = {"flagged": as_float32(flagged), "top1_downstream_drop": as_float32(top1_drop), "top1_downstream_purify": 0.0}
    attacked = {"target_drop": as_float32(target_drop), "target_purify": 1.0}
    return PointResult(Point("vae", 0.0), {}, 0.03, {"clean": clean, "detect-adaptive": attacked})


def test_the_bar_is_met_at_its_edges_and_missed_past_them():
    assert meets_target(point_result(20 / 200, 0.05, 0.855), clean_top1=0.905)  # 10.0% through, 5% flagged, 5.0 points lost
    assert not meets_target(point_result(21 / 200, 0.005, 0.865), clean_top1=0.905)
    assert not meets_target(point_result(0.05, 0.055, 0.865), clean_top1=0.905)
    assert not meets_target(point_result(0.05, 0.005, 0.85), clean_top1=0.905)
