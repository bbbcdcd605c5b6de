"""From vote statistics to a per-sample verdict."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

CLEAN, ILLUSION, UNCERTAIN = "clean", "illusion", "uncertain"


@dataclass(frozen=True)
class VerdictPolicy:
    """Thresholds behind the verdict, applied in this order:

    1. `illusion` when `max_drift` is set and drift = 1 - cos(original, purified) exceeds it: the
       embedding did not survive reconstruction, whatever the votes say (this also catches targets
       outside the label bank). No vote can excuse it: an attacker who splits the votes still has
       to keep the drift down.
    2. `illusion` when `max_witness_gap` is set and the image's embedding and its robust witness's
       (an adversarially fine-tuned copy of the encoder, `pipeline/research/witness.py`) lie further
       apart than it: a perturbation moved the encoder where the witness would not follow.
       `illusion` when `max_witness_margin` is set and the witness finds its own best label more
       similar than the encoder's label by more than it: the encoder was moved across a class
       boundary the witness stays behind (an attack can do that while keeping the gap small; the
       gap test stays for targets outside the label bank, which the margin cannot see).
    3. `uncertain` when the consensus label holds less than `min_agreement` of the votes: the
       reconstructions disagree, so neither the original label nor the consensus can be trusted.
    4. When the consensus label differs from the original image's label: `illusion` if the drift
       exceeds `flip_min_drift`, else `uncertain`. A clean image near a class boundary can change
       label under reconstruction while its embedding barely moves; an illusion moves it far.
    5. `clean` otherwise.

    What happens to `uncertain` samples downstream is the run's choice (`--on-uncertain`). The
    defaults (majority agreement, any label flip is an illusion, no drift or witness tests) need no
    calibration; `disillusion calibrate` sets the thresholds from clean data.
    """

    min_agreement: float = field(default=0.5, metadata={"help": "below this vote share the verdict is 'uncertain'"})
    max_drift: float | None = field(default=None, metadata={"help": "'illusion' when 1 - cos(original, purified) exceeds this"})
    flip_min_drift: float = field(default=0.0, metadata={"help": "a label flip with less drift is 'uncertain', not 'illusion'"})
    max_witness_gap: float | None = field(default=None, metadata={
        "help": "'illusion' when 1 - cos(encoder, witness) of the image exceeds this (needs a witness)"})
    max_witness_margin: float | None = field(default=None, metadata={
        "help": "'illusion' when the witness prefers its own best label to the encoder's by more than this cosine (needs a witness)"})

    def __post_init__(self):
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError("min_agreement must lie in [0, 1]")
        if self.max_drift is not None and not 0.0 <= self.max_drift <= 2.0:
            raise ValueError("max_drift must lie in [0, 2]")
        if not 0.0 <= self.flip_min_drift <= 2.0:
            raise ValueError("flip_min_drift must lie in [0, 2]")
        for name in WITNESS_THRESHOLDS:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 2.0:
                raise ValueError(f"{name} must lie in [0, 2]")

    def thresholds(self) -> dict[str, float | None]:
        """Every threshold by name (the fields, in order): what reports and saved configs record."""
        return {name: getattr(self, name) for name in THRESHOLDS}

    @property
    def needs_witness(self) -> bool:
        return self.max_witness_gap is not None or self.max_witness_margin is not None

    def without_witness(self) -> "VerdictPolicy":
        """The same thresholds with the witness tests off (for a run without the witness they belong to)."""
        return replace(self, max_witness_gap=None, max_witness_margin=None)

    def replacement_accepted(self, label_original: int, label_consensus: int, image_label: int, image_cos: float) -> bool:
        """Whether a purified image may replace a flagged input: the purification must have changed
        the label (when it did not, the reconstructions carry the suspect label too, so the image
        would deliver whatever the input delivered), and the image as written must re-embed with
        the consensus label, no further from the purified embedding than `max_drift` (0.1 when
        uncalibrated)."""
        max_distance = self.max_drift if self.max_drift is not None else 0.1
        return label_consensus != label_original and image_label == label_consensus and 1.0 - image_cos <= max_distance

    def decide(self, label_original: int, label_consensus: int, agreement: float, drift: float,
               witness_gap: float | None = None, witness_margin: float | None = None) -> str:
        if self.max_drift is not None and drift > self.max_drift:
            return ILLUSION
        for threshold, value in ((self.max_witness_gap, witness_gap), (self.max_witness_margin, witness_margin)):
            if threshold is None:
                continue
            if value is None:
                raise ValueError("the verdict has witness thresholds but the sample has no witness measures: run with a witness")
            if value > threshold:
                return ILLUSION
        if agreement < self.min_agreement:
            return UNCERTAIN
        if label_consensus != label_original:
            return ILLUSION if drift > self.flip_min_drift else UNCERTAIN
        return CLEAN

    def judge(self, result) -> str:
        """The verdict of a `SampleResult` (or anything with its vote fields) under this policy."""
        return self.decide(result.label_original, result.label_consensus, result.agreement, result.drift,
                           getattr(result, "witness_gap", None), getattr(result, "witness_margin", None))


THRESHOLDS = tuple(f.name for f in fields(VerdictPolicy))
WITNESS_THRESHOLDS = ("max_witness_gap", "max_witness_margin")  # set only when a witness runs
