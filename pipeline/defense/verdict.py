"""From vote statistics to a per-sample verdict."""

from __future__ import annotations

from dataclasses import dataclass

CLEAN, ILLUSION, UNCERTAIN = "clean", "illusion", "uncertain"


@dataclass(frozen=True)
class VerdictPolicy:
    """Thresholds behind the verdict, applied in this order:

    1. `uncertain` when the consensus label holds less than `min_agreement` of the votes: the
       reconstructions disagree, so neither the original label nor the consensus can be trusted.
    2. `illusion` when the consensus label differs from the original image's label: the perturbation
       did not survive reconstruction, which is what an adversarial illusion looks like.
    3. `illusion` when `max_drift` is set and 1 - cos(original, purified) exceeds it: the embedding
       moved although the top label did not (targets outside the label bank).
    4. `clean` otherwise.
    """

    min_agreement: float = 0.5
    max_drift: float | None = None

    def __post_init__(self):
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError("min_agreement must lie in [0, 1]")
        if self.max_drift is not None and not 0.0 <= self.max_drift <= 2.0:
            raise ValueError("max_drift must lie in [0, 2]")

    def decide(self, label_original: int, label_consensus: int, agreement: float, drift: float) -> str:
        if agreement < self.min_agreement:
            return UNCERTAIN
        if label_consensus != label_original:
            return ILLUSION
        if self.max_drift is not None and drift > self.max_drift:
            return ILLUSION
        return CLEAN
