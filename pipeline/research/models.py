"""A preset's models as the research jobs use them (evaluate, frontier, benchmark, attack).

Their purifiers come from the product's one factory, `SanitizeConfig.build_purifier`, so that a
research defense is a configuration `sanitize` could run. Two settings differ from `sanitize`'s
defaults: float32 everywhere (bfloat16 on a GPU would change what the attacks see), and on a GPU an
attack batch (images x EOT draws) goes through the reconstructor in as few calls as its memory
allows; `sanitize` sets its own chunk (`--decode-batch-size`).
"""

from __future__ import annotations

from typing import Any

from ..defense import ConsensusConfig, ConsensusPurifier
from ..presets import Preset
from ..sanitize.config import ModelSettings, RuntimeSettings, SanitizeConfig

# 32 px models: per-call overhead, not the GPU, sets the pace of an attack step (an H200 took the
# same 0.15 s per 32-reconstruction chunk of the dm chain alone or beside two other runs), so an
# attack batch goes through in one call. 160: the full-size SD VAE's measured chunk.
GPU_DECODE_BATCH_SIZE = {"demo": 1024}
DEFAULT_GPU_DECODE_BATCH_SIZE = 160


def _decode_batch_size(preset: Preset, device) -> int | None:
    """The research jobs' chunk on a GPU; None (the reconstructor's default) on a CPU."""
    return GPU_DECODE_BATCH_SIZE.get(preset.name, DEFAULT_GPU_DECODE_BATCH_SIZE) if str(device).startswith("cuda") else None


def load_reconstructor(preset: Preset, kind: str | None = None, **overrides):
    """`preset.load_reconstructor`, with the research jobs' chunk size on a GPU unless given: for the
    models an attack differentiates through beside a purifier (the diffusion surrogate)."""
    chunk = _decode_batch_size(preset, overrides.get("device", "cpu"))
    if chunk is not None:
        overrides.setdefault("decode_batch_size", chunk)
    return preset.load_reconstructor(kind, **overrides)


def preset_purifier(preset: Preset, kind: str | None, consensus: ConsensusConfig, *, witness: str | None = None,
                    reconstructor: str | None = None, device: Any = "cpu", **options: Any) -> ConsensusPurifier:
    """The purifier of one research defense, from `SanitizeConfig.build_purifier`: the preset's `kind`
    reconstructor (None: its default; `reconstructor`: another model of that kind, a spec) with
    `options` over the preset's own, its encoder and labels, `witness` (a model spec; None: no
    witness) and `consensus`. `purifier.with_consensus` gives the same models under other consensus
    settings without loading them again."""
    kind = kind or preset.default_reconstructor
    if kind not in preset.reconstructors:
        raise ValueError(f"preset {preset.name!r} has no {kind!r} reconstructor; it has {sorted(preset.reconstructors)}")
    if reconstructor is not None and reconstructor.split(":", 1)[0] != kind:
        raise ValueError(f"{reconstructor!r} is not a model spec of kind {kind} ({kind}:DIR)")
    config = SanitizeConfig(
        models=ModelSettings(preset=preset.name, reconstructor=reconstructor or preset.reconstructors[kind],
                             reconstructor_options={**preset.reconstructor_options.get(kind, {}), **options}, witness=witness or "none"),
        consensus=consensus,
        runtime=RuntimeSettings(precision="float32", decode_batch_size=_decode_batch_size(preset, device)),
    )
    return config.build_purifier(str(device))
