"""Named bundles of models, labels and defaults. `demo` is the embedded default: small models trained
by `disillusion train-demo` on Fashion-MNIST and shipped inside the package."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .data.fashion_mnist import CLASSES
from .defense import LabelBank

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
    # Verdict thresholds for the default reconstructor, from `disillusion calibrate` on clean data.
    min_agreement: float = 0.5
    max_drift: float | None = None

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
        # `disillusion calibrate --preset demo --limit 1000 --target-fpr 0.05` on Fashion-MNIST train[:1000]
        # (never the test split the demo corpus comes from): false-positive rate 0.048 at this threshold.
        min_agreement=0.75,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
