from .ae import AEReconstructor
from .base import Encoded, LatentReconstructor
from .diffusion import DiffusionReconstructor
from .vae import VAEReconstructor

__all__ = ["AEReconstructor", "DiffusionReconstructor", "Encoded", "LatentReconstructor", "VAEReconstructor"]
