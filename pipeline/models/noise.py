"""Reproducible noise for stochastic reconstruction, keyed by a secret.

Each reconstruction (image b, draw j) gets its own CPU generator seeded from (seed_b, j). The noise an
image sees therefore depends only on its own seed and the draw index: not on batch composition, device,
or whether draws are taken all at once or in early-exit rounds. That is what makes early exit agree
with full-N runs and lets a re-run on other hardware reproduce the same votes.

Where a sample's seed comes from is what makes the defense's randomness randomness to an attacker:
`NoiseKey` derives it from a secret (an HMAC of the sample's key and a digest of its pixels), so
whoever reads this code and every public setting still cannot compute the draws their image will
get. A public seed stays possible, asked for explicitly: anyone who knows it can.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def draw_seed(seed: int, draw: int) -> int:
    """A well-mixed 63-bit seed for draw `draw` of the image seeded `seed`."""
    return _splitmix64(_splitmix64(seed & _MASK64) ^ draw) >> 1


def draw_generators(seeds: Sequence[int], draws: Sequence[int]) -> list[list[torch.Generator]]:
    """generators[b][k] for image b and the k-th requested draw."""
    return [[torch.Generator().manual_seed(draw_seed(s, j)) for j in draws] for s in seeds]


def randn_per_draw(
    generators: list[list[torch.Generator]],
    shape: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One standard normal tensor of `shape` per (image, draw): returns B x K x *shape.

    Successive calls advance each generator, so a reconstructor may take several noises per draw
    (for instance one per denoising step) in a fixed order.
    """
    rows = [torch.stack([torch.randn(tuple(shape), generator=g) for g in row]) for row in generators]
    return torch.stack(rows).to(device=device, dtype=dtype)


def seed_for_key(seed: int, key: str) -> int:
    """A per-sample seed from the run seed and a stable sample key (a file name, a WebDataset key), so
    a sample's reconstructions do not depend on its position in a batch or a corpus."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()  # names need not be valid UTF-8
    return draw_seed(seed, int.from_bytes(digest[:8], "little"))


KEY_BYTES = 32  # a fresh key; a key file must hold at least MIN_KEY_BYTES
MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class NoiseKey:
    """What keys every sample's noise: a secret, or (only when asked for) a public seed.

    The secret never appears in a repr, a log, run.json or a manifest; `fingerprint` names it
    (a hash that reveals nothing of it), so two runs can be told to share a key or not."""

    secret: bytes | None = field(default=None, repr=False)
    seed: int | None = None
    source: str = "a fresh secret"

    def __post_init__(self):
        if (self.secret is None) == (self.seed is None):
            raise ValueError("a noise key is a secret or a public seed")
        if self.secret is not None and len(self.secret) < MIN_KEY_BYTES:
            raise ValueError(f"a noise key must hold at least {MIN_KEY_BYTES} bytes ({self.source} holds {len(self.secret)})")

    @classmethod
    def fresh(cls) -> NoiseKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_file(cls, path: str) -> NoiseKey:
        """The bytes of a key file (`head -c 32 /dev/urandom > KEY` makes one), surrounding whitespace aside."""
        with open(path, "rb") as handle:
            return cls(handle.read().strip(), source=f"the key file {path}")

    @classmethod
    def public(cls, seed: int) -> NoiseKey:
        return cls(seed=seed, source="a public seed")

    @property
    def public_seed(self) -> bool:
        return self.secret is None

    @property
    def fingerprint(self) -> str:
        if self.secret is None:
            return f"public-seed-{self.seed}"
        return "key-" + hashlib.sha256(b"disillusion noise key fingerprint\0" + self.secret).hexdigest()[:16]

    def describe(self) -> dict[str, str]:
        """What run.json records: where the key came from and its fingerprint, never the key."""
        return {"source": self.source, "fingerprint": self.fingerprint}

    def sample_seed(self, key: str, content: bytes) -> int:
        """The seed of one sample's draws: from its key and content under the secret (the same image
        under the same name gets the same draws within a run: resume, early exit and batching do not
        change them), or, with a public seed, from the seed and the key alone (as before keys existed)."""
        if self.secret is None:
            return seed_for_key(self.seed, key)
        name = key.encode("utf-8", "surrogateescape")
        message = len(name).to_bytes(8, "little") + name + hashlib.sha256(content).digest()
        return int.from_bytes(hmac.new(self.secret, message, hashlib.sha256).digest()[:8], "little") >> 1
