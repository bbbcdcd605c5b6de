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
