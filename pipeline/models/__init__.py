"""Model layer: reconstructors and encoders behind two protocols, loaded from spec strings."""

from .protocols import Encoder, Reconstructor
from .registry import ModelSpec, WeightsNotFoundError, load_encoder, load_reconstructor

__all__ = ["Encoder", "ModelSpec", "Reconstructor", "WeightsNotFoundError", "load_encoder", "load_reconstructor"]
