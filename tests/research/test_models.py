import pytest
import torch

import pipeline.models
from pipeline.presets import get_preset
from pipeline.research.models import load_reconstructor


def test_on_a_gpu_the_research_jobs_set_how_many_reconstructions_go_through_per_call(monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline.models, "load_reconstructor", lambda spec, **options: calls.append(options))
    demo, imagebind = get_preset("demo"), get_preset("imagebind")
    load_reconstructor(demo, "dm", device="cuda:1")
    load_reconstructor(demo, "dm", device=torch.device("cuda"), decode_batch_size=64)
    load_reconstructor(demo, "dm", device="cpu")
    load_reconstructor(imagebind, device="cuda")
    assert [c.get("decode_batch_size") for c in calls] == [1024, 64, None, 160]  # 160: the full-size SD VAE's measured chunk
    assert calls[0]["strength"] == demo.reconstructor_options["dm"]["strength"]
    demo.load_reconstructor("dm", device="cuda")  # the product's loader leaves the chunk to sanitize's settings
    assert "decode_batch_size" not in calls[-1]


def test_a_research_defense_is_built_by_the_products_purifier_factory(monkeypatch):
    from pipeline.defense import ConsensusConfig
    from pipeline.research.models import preset_purifier
    from pipeline.sanitize.config import SanitizeConfig

    built = []
    factory = SanitizeConfig.build_purifier
    monkeypatch.setattr(SanitizeConfig, "build_purifier", lambda self, device="cpu": built.append(self) or factory(self, device))
    demo = get_preset("demo")
    purifier = preset_purifier(demo, "vae", ConsensusConfig(n=3, early_exit="off", seed=5), witness=demo.witness, latent_noise=0.5)
    (config,) = built
    assert config.models.reconstructor == demo.reconstructors["vae"] and config.runtime.precision == "float32"
    assert config.models.reconstructor_options == {**demo.reconstructor_options["vae"], "latent_noise": 0.5}  # the preset's, then ours
    assert purifier.reconstructor.latent_noise == 0.5 and purifier.witness is not None and purifier.config.n == 3
    assert preset_purifier(demo, "ae", ConsensusConfig(n=2)).witness is None  # no witness unless one is named
    # Other consensus settings over the same models, without loading them again.
    other = purifier.with_consensus(ConsensusConfig(n=7, early_exit="certain"))
    assert other.reconstructor is purifier.reconstructor and other.witness is purifier.witness and other.config.n == 7
    with pytest.raises(ValueError, match="no 'gan' reconstructor"):
        preset_purifier(demo, "gan", ConsensusConfig())
    # Another model of the kind (e.g. an encoder-aligned VAE) in place of the preset's, with the preset's options.
    built.clear()
    preset_purifier(demo, "vae", ConsensusConfig(n=2), reconstructor=demo.reconstructors["vae"])
    assert built[0].models.reconstructor == demo.reconstructors["vae"]
    with pytest.raises(ValueError, match="not a model spec of kind vae"):
        preset_purifier(demo, "vae", ConsensusConfig(), reconstructor=demo.reconstructors["ae"])
