"""Named bundles of models, labels and defaults. `demo` is the embedded default: small models trained
by `disillusion train-demo` on Fashion-MNIST and shipped inside the package."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .data.fashion_mnist import CLASSES
from .defense import LabelBank, VerdictPolicy

DEMO_DIR = os.path.join(os.path.dirname(__file__), "assets", "demo")


@dataclass(frozen=True)
class Preset:
    name: str
    encoder: str
    reconstructors: dict[str, str]  # kind -> model spec
    labels: tuple[str, ...]
    template: str = "a photo of a {}."
    reconstructor_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_reconstructor: str = "vae"
    # Verdict thresholds for the default reconstructor and encoder at N=10, from `disillusion calibrate`.
    verdict: VerdictPolicy = VerdictPolicy()

    def label_bank(self) -> LabelBank:
        return LabelBank(self.labels, self.template)

    def load_encoder(self, **kwargs):
        from .models import load_encoder

        return load_encoder(self.encoder, **kwargs)

    def load_reconstructor(self, kind: str | None = None, **overrides):
        from .models import load_reconstructor

        kind = kind or self.default_reconstructor
        if kind not in self.reconstructors:
            raise ValueError(f"preset {self.name!r} has no {kind!r} reconstructor; it has {sorted(self.reconstructors)}")
        device = overrides.pop("device", "cpu")
        options = {**self.reconstructor_options.get(kind, {}), **overrides}
        return load_reconstructor(self.reconstructors[kind], device=device, **options)


PRESETS = {
    "demo": Preset(
        name="demo",
        encoder=f"clip:{DEMO_DIR}/clip",
        reconstructors={kind: f"{kind}:{DEMO_DIR}/{kind}" for kind in ("vae", "ae", "dm")},
        labels=CLASSES,
        reconstructor_options={
            "vae": {"sample_scale": 5.0, "latent_noise": 0.0},
            "ae": {"noise_scale": 0.5},
            "dm": {"strength": 0.15, "denoise_steps": 10},
        },
        # `disillusion calibrate --preset demo --limit 1000 --target-fpr 0.03`: 1,000 clean test images
        # outside the bundled sample; 3.0% flagged, 7.9% uncertain. The 3% target leaves room under
        # the 5% false-positive budget for sampling noise on a new corpus.
        verdict=VerdictPolicy(min_agreement=0.5, max_drift=0.114, flip_min_drift=0.114),
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
