import torch

from pipeline.defense import ConsensusConfig
from pipeline.presets import get_preset
from pipeline.research.benchmark import benchmark_models, early_exit_comparison
from pipeline.research.models import preset_purifier


def test_the_stage_table_times_each_reconstructor_and_both_consensus_modes():
    demo = get_preset("demo")
    purifiers = {kind: preset_purifier(demo, kind, ConsensusConfig(n=3)) for kind in ("vae", "ae")}
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = benchmark_models(purifiers, images, n=3, batch_size=2)
    assert [(r.stage, r.reconstructor) for r in rows] == [("embed", "-")] + [
        (stage, kind) for kind in ("vae", "ae") for stage in ("reconstruct x3", "consensus (off)", "consensus (certain)")]
    assert all(r.samples == 4 and r.seconds > 0 for r in rows)


def test_early_exit_is_compared_with_drawing_every_reconstruction_on_the_same_seeds():
    purifier = preset_purifier(get_preset("demo"), "vae", ConsensusConfig(n=4))
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rows = early_exit_comparison(purifier, images, n=4, batch_size=3, modes=[("certain", 0.01), ("sequential", 0.05)])
    assert [r["mode"] for r in rows] == ["off", "certain", "sequential"]
    assert rows[0]["mean_draws"] == 4 and all(1 <= r["mean_draws"] <= 4 for r in rows)
    assert rows[0]["identical_verdicts"] == 1.0 and all(0 <= r["identical_labels"] <= 1 for r in rows)
