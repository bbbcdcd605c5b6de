"""A preset's reconstructor as the research jobs load it (evaluate, frontier, benchmark, attack).

On a GPU they push an attack batch (images x EOT draws) through the reconstructor in as few calls
as its memory allows; `sanitize` sets its own chunk (`--decode-batch-size`).
"""

from __future__ import annotations

from ..presets import Preset

# 32 px models: per-call overhead, not the GPU, sets the pace of an attack step (an H200 took the
# same 0.15 s per 32-reconstruction chunk of the dm chain alone or beside two other runs), so an
# attack batch goes through in one call. 160: the full-size SD VAE's measured chunk.
GPU_DECODE_BATCH_SIZE = {"demo": 1024}
DEFAULT_GPU_DECODE_BATCH_SIZE = 160


def load_reconstructor(preset: Preset, kind: str | None = None, **overrides):
    """`preset.load_reconstructor`, with the research jobs' chunk size on a GPU unless given."""
    if str(overrides.get("device", "cpu")).startswith("cuda"):
        overrides.setdefault("decode_batch_size", GPU_DECODE_BATCH_SIZE.get(preset.name, DEFAULT_GPU_DECODE_BATCH_SIZE))
    return preset.load_reconstructor(kind, **overrides)
