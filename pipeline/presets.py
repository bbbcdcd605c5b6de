"""Named bundles of models, labels and defaults.

`demo` is the embedded default: small models trained by `disillusion train-demo` on Fashion-MNIST and
shipped inside the package. `imagebind` and `clip-l14` are the paper's setting on ImageNet-1k labels
with the Stable Diffusion VAE; their weights are not shipped and are read from the local Hugging Face
cache or, for ImageBind, from the model cache or the checkpoint named by DISILLUSION_IMAGEBIND. Their
verdict thresholds are the uncalibrated defaults until you run `disillusion calibrate` on clean data
of your own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .defense import LabelBank, VerdictPolicy
from .defense.labels import read_label_file

ASSETS_DIR = os.path.join(os.path.dirname(__file__), "assets")
DEMO_DIR = os.path.join(ASSETS_DIR, "demo")
IMAGENET_LABELS = tuple(read_label_file(os.path.join(ASSETS_DIR, "labels", "imagenet1k.txt")))
FASHION_MNIST_LABELS = tuple(read_label_file(os.path.join(ASSETS_DIR, "labels", "fashion-mnist.txt")))  # the demo's
# ImageBind's licence (CC BY-NC-SA 4.0) rules out shipping it: `imagebind:huge` is the checkpoint in
# the model cache (~/.cache/disillusion/imagebind/), or DISILLUSION_IMAGEBIND names a file or directory.
IMAGEBIND_SPEC = f"imagebind:{os.environ.get('DISILLUSION_IMAGEBIND') or 'huge'}"
# The paper's reconstructors. Options are starting points, not measured here: calibrate before use.
SD_RECONSTRUCTORS = {"vae": "vae:stabilityai/sd-vae-ft-mse", "ae": "ae:madebyollin/taesd"}
SD_OPTIONS = {"vae": {"sample_scale": 1.0, "latent_noise": 0.0}, "ae": {"noise_scale": 0.5}}


@dataclass(frozen=True)
class Preset:
    name: str
    encoder: str
    reconstructors: dict[str, str]  # kind -> model spec
    labels: tuple[str, ...]
    template: str = "a photo of a {}."
    reconstructor_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_reconstructor: str = "vae"
    # The working geometry: the encoder's square input. Corpora are decoded straight to it (shorter
    # side to work_size, central crop), so every batch that reaches a model is full.
    work_size: int = 224
    # An adversarially robust copy of the encoder (`disillusion train-demo --models witness`), whose
    # distance from the encoder on each input the verdict thresholds (`max_witness_gap`).
    witness: str | None = None
    # Verdict thresholds for the default reconstructor and encoder at N=10, from `disillusion calibrate`.
    verdict: VerdictPolicy = VerdictPolicy()

    def label_bank(self) -> LabelBank:
        return LabelBank(self.labels, self.template)

    def load_encoder(self, **kwargs):
        from .models import load_encoder

        return load_encoder(self.encoder, **kwargs)

    def load_witness(self, **kwargs):
        from .models import load_encoder

        if self.witness is None:
            raise ValueError(f"preset {self.name!r} has no witness: train one (`disillusion train-demo --models witness`) and pass --witness SPEC")
        return load_encoder(self.witness, **kwargs)

    def load_reconstructor(self, kind: str | None = None, **overrides):
        from .models import load_reconstructor

        kind = kind or self.default_reconstructor
        if kind not in self.reconstructors:
            raise ValueError(f"preset {self.name!r} has no {kind!r} reconstructor; it has {sorted(self.reconstructors)}")
        options = {**self.reconstructor_options.get(kind, {}), **overrides}
        return load_reconstructor(self.reconstructors[kind], **options)


PRESETS = {
    "demo": Preset(
        name="demo",
        encoder=f"clip:{DEMO_DIR}/clip",
        # The VAE is `vae/` aligned with the encoder (`train-demo --models aligned-vae`, research/aligned.py): its
        # reconstructions of perturbed images stay near the clean image's embedding, which the consensus needs
        # against an attacker who aims the reconstructions at the target (EOT and frontier in EVALUATION.md).
        reconstructors={"vae": f"vae:{DEMO_DIR}/aligned-vae", **{kind: f"{kind}:{DEMO_DIR}/{kind}" for kind in ("ae", "dm")}},
        witness=f"clip:{DEMO_DIR}/witness",
        labels=FASHION_MNIST_LABELS,
        work_size=32,
        reconstructor_options={
            "vae": {"sample_scale": 1.0, "latent_noise": 0.0},
            "ae": {"noise_scale": 0.5},
            "dm": {"strength": 0.15, "denoise_steps": 10},
        },
        # `disillusion calibrate --preset demo --limit 1000 --target-fpr 0.03 --encodings png,jpeg,jpeg-any,upscaled,webp`
        # (sequential early exit, alpha 0.02, the witness, the aligned VAE; docs/calibration-aligned.json): 1,000 clean
        # test images outside the bundled sample, each stored by five scraper pipelines; a quarter of the budget to each
        # witness test, and the drift threshold meets 3% on every pipeline with them (PNG 1.2%, the others 1.5-2.9%).
        # On the next 1,000 (`--check --offset 1000`): see docs/calibration-aligned-check.json. The 3% target leaves
        # room under the 5% false-positive budget for sampling noise on a new corpus.
        verdict=VerdictPolicy(min_agreement=0.5, max_drift=0.157, flip_min_drift=0.157, max_witness_gap=0.250, max_witness_margin=0.294),
    ),
    "imagebind": Preset(
        name="imagebind",
        encoder=IMAGEBIND_SPEC,
        reconstructors=SD_RECONSTRUCTORS,
        labels=IMAGENET_LABELS,
        reconstructor_options=SD_OPTIONS,
    ),
    "clip-l14": Preset(
        name="clip-l14",
        encoder="clip:openai/clip-vit-large-patch14",
        reconstructors=SD_RECONSTRUCTORS,
        labels=IMAGENET_LABELS,
        reconstructor_options=SD_OPTIONS,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
