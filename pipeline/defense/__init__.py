"""The consensus defense: pure torch, no Ray."""

from .consensus import ConsensusConfig, ConsensusPurifier, SampleResult
from .labels import DEFAULT_TEMPLATE, LabelBank
from .verdict import CLEAN, ILLUSION, UNCERTAIN, VerdictPolicy
from .vote import flip_probability, majority_label, majority_settled, majority_success_probability, rank_labels

__all__ = [
    "CLEAN", "ILLUSION", "UNCERTAIN", "DEFAULT_TEMPLATE", "ConsensusConfig", "ConsensusPurifier", "LabelBank",
    "SampleResult", "VerdictPolicy", "flip_probability", "majority_label", "majority_settled",
    "majority_success_probability", "rank_labels",
]
