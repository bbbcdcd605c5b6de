"""Everything a sanitisation run needs to rebuild its purifier anywhere (a plain, picklable record)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ..defense import ConsensusConfig, ConsensusPurifier, LabelBank, VerdictPolicy
from ..defense.consensus import DEFAULT_ALPHA
from ..io.shards import DEFAULT_MAX_SHARD_BYTES
from .outputs import ON_ERROR, POLICIES

PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class Execution:
    """The settings that `SanitizeConfig` leaves to the device, resolved for one."""

    dtype: torch.dtype
    batch_size: int
    decode_batch_size: int
    compile: bool


@dataclass(frozen=True)
class SanitizeConfig:
    preset: str = "demo"
    reconstructor: str | None = None  # a model spec; None: the preset's default reconstructor
    encoder: str | None = None  # a model spec; None: the preset's encoder
    reconstructor_options: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None  # None: the preset's labels
    template: str | None = None
    n: int = 10
    # Stop drawing once the posterior predictive chance that the remaining draws change the winner is
    # at most alpha (see DEFAULT_ALPHA); the demo thresholds calibrate to the same values under it.
    early_exit: str = "sequential"
    alpha: float = DEFAULT_ALPHA
    seed: int = 0
    # Verdict thresholds; None: the preset's calibrated ones (uncalibrated defaults with other models).
    min_agreement: float | None = None
    max_drift: float | None = None
    flip_min_drift: float | None = None
    policy: str | None = "purify"  # purify | drop | keep; None for audit (verdicts only)
    # Samples that cannot be examined (undecodable, over the pixel limit, links, repeated names, no
    # image): kept byte-identical with an error verdict, or moved to quarantine.
    on_error: str = "keep"
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES  # decompressed size of a gzip shard at most
    work_size: int | None = None  # square working geometry in pixels; None: the preset's (its encoder's input size)
    # How the models run; None and "auto" pick per device (see `execution`).
    batch_size: int | None = None  # images per purifier call
    decode_batch_size: int | None = None  # reconstructions per decoder call
    precision: str = "auto"  # auto (bfloat16 weights on a GPU, float32 on a CPU) | float32 | bfloat16
    compile: bool = False  # torch.compile the image models: faster on a GPU after a one-off compilation per actor
    s3_endpoint: str | None = None

    def __post_init__(self):
        """Every setting checked where it is made, so that a bad one stops the run before any work."""
        choices = {"precision": (self.precision, PRECISIONS), "policy": (self.policy, (*POLICIES, None)),
                   "on_error": (self.on_error, ON_ERROR)}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(str(a) for a in allowed if a)}, not {value!r}")
        for name in ("batch_size", "decode_batch_size", "work_size", "max_shard_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, not {value}")
        if self.labels is not None and not self.labels:
            raise ValueError("the label list is empty")
        self.consensus_config()  # n, early exit, alpha
        self.label_bank()  # the preset exists, labels are unique, the template has its placeholder
        self.verdict_policy()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def working_size(self) -> int:
        from ..presets import get_preset

        return self.work_size or get_preset(self.preset).work_size

    def label_bank(self) -> LabelBank:
        from ..presets import get_preset

        preset = get_preset(self.preset)
        return LabelBank(preset.labels if self.labels is None else self.labels, self.template or preset.template)

    def execution(self, device: str | torch.device = "cpu") -> Execution:
        """On a GPU (measured on an H200 with the full-size models, BENCHMARKS.md): bfloat16 weights,
        32 images per call and 160 reconstructions per decoder call. On a CPU: float32, 16 and 32."""
        gpu = torch.device(device).type == "cuda"
        precision = self.precision if self.precision != "auto" else ("bfloat16" if gpu else "float32")
        return Execution(
            dtype=getattr(torch, precision),
            batch_size=self.batch_size or (32 if gpu else 16),
            decode_batch_size=self.decode_batch_size or (160 if gpu else 32),
            compile=self.compile,
        )

    def build_purifier(self, device: str = "cpu") -> ConsensusPurifier:
        from ..models import load_encoder, load_reconstructor
        from ..presets import get_preset

        preset, run = get_preset(self.preset), self.execution(device)
        place = {"device": device, "dtype": run.dtype}
        if self.reconstructor:
            reconstructor = load_reconstructor(self.reconstructor, **place, s3_endpoint=self.s3_endpoint, **self.reconstructor_options)
        else:
            reconstructor = preset.load_reconstructor(**place, **self.reconstructor_options)
        if self.encoder:
            encoder = load_encoder(self.encoder, **place, s3_endpoint=self.s3_endpoint)
        else:
            encoder = preset.load_encoder(**place)
        reconstructor.decode_batch_size = run.decode_batch_size
        if run.compile:
            _ = reconstructor.fingerprint, encoder.fingerprint  # of the weights as loaded, before compilation wraps them
            reconstructor.compile()
            encoder.compile()
        return ConsensusPurifier(reconstructor, encoder, self.label_bank(), self.consensus_config())

    def consensus_config(self) -> ConsensusConfig:
        return ConsensusConfig(n=self.n, early_exit=self.early_exit, alpha=self.alpha, seed=self.seed, verdict=self.verdict_policy())

    def verdict_policy(self) -> VerdictPolicy:
        from ..presets import get_preset

        # The preset's thresholds were measured on its own models; drift scales differ between models.
        own_models = not (self.reconstructor or self.encoder or self.reconstructor_options)
        base = get_preset(self.preset).verdict if own_models else VerdictPolicy()
        given = {"min_agreement": self.min_agreement, "max_drift": self.max_drift, "flip_min_drift": self.flip_min_drift}
        return replace(base, **{name: value for name, value in given.items() if value is not None})
