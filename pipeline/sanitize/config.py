"""Everything a sanitisation run needs to rebuild its purifier anywhere (a plain, picklable record)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..defense import ConsensusConfig, ConsensusPurifier, LabelBank, VerdictPolicy


@dataclass(frozen=True)
class SanitizeConfig:
    preset: str = "demo"
    reconstructor: str | None = None  # a model spec; None: the preset's default reconstructor
    encoder: str | None = None  # a model spec; None: the preset's encoder
    reconstructor_options: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None  # None: the preset's labels
    template: str | None = None
    n: int = 10
    early_exit: str = "certain"
    alpha: float = 0.01
    seed: int = 0
    # Verdict thresholds; None: the preset's calibrated ones (uncalibrated defaults with other models).
    min_agreement: float | None = None
    max_drift: float | None = None
    flip_min_drift: float | None = None
    policy: str | None = "purify"  # purify | drop | keep; None for audit (verdicts only)
    batch_size: int = 16
    work_size: int | None = None  # square working geometry in pixels; None: the preset's (its encoder's input size)
    s3_endpoint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def working_size(self) -> int:
        from ..presets import get_preset

        return self.work_size or get_preset(self.preset).work_size

    def label_bank(self) -> LabelBank:
        from ..presets import get_preset

        preset = get_preset(self.preset)
        return LabelBank(self.labels or preset.labels, self.template or preset.template)

    def build_purifier(self, device: str = "cpu") -> ConsensusPurifier:
        from ..models import load_encoder, load_reconstructor
        from ..presets import get_preset

        preset = get_preset(self.preset)
        if self.reconstructor:
            reconstructor = load_reconstructor(self.reconstructor, device=device, s3_endpoint=self.s3_endpoint, **self.reconstructor_options)
        else:
            reconstructor = preset.load_reconstructor(device=device, **self.reconstructor_options)
        if self.encoder:
            encoder = load_encoder(self.encoder, device=device, s3_endpoint=self.s3_endpoint)
        else:
            encoder = preset.load_encoder(device=device)
        consensus = ConsensusConfig(n=self.n, early_exit=self.early_exit, alpha=self.alpha, seed=self.seed, verdict=self.verdict_policy())
        return ConsensusPurifier(reconstructor, encoder, self.label_bank(), consensus)

    def verdict_policy(self) -> VerdictPolicy:
        from ..presets import get_preset

        # The preset's thresholds were measured on its own models; drift scales differ between models.
        own_models = not (self.reconstructor or self.encoder or self.reconstructor_options)
        base = get_preset(self.preset).verdict if own_models else VerdictPolicy()
        given = {"min_agreement": self.min_agreement, "max_drift": self.max_drift, "flip_min_drift": self.flip_min_drift}
        return replace(base, **{name: value for name, value in given.items() if value is not None})
