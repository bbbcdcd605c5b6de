"""The label bank: class names turned into prompts and embedded once per encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_TEMPLATE = "a photo of a {}."


class LabelBank:
    def __init__(self, labels: Sequence[str], template: str = DEFAULT_TEMPLATE):
        labels = [str(label).strip() for label in labels]
        if not labels:
            raise ValueError("the label bank needs at least one label")
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        if "{}" not in template:
            raise ValueError("the prompt template needs a '{}' placeholder for the label")
        self.labels = labels
        self.template = template
        self._cached: tuple[object, torch.Tensor] | None = None

    @classmethod
    def from_file(cls, path: str, template: str = DEFAULT_TEMPLATE) -> "LabelBank":
        return cls(read_label_file(path), template)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def prompts(self) -> list[str]:
        return [self.template.format(label) for label in self.labels]

    def index(self, label: str) -> int:
        return self.labels.index(label)

    def embeddings(self, encoder) -> torch.Tensor:
        """L x D, L2-normalised; computed once for the last encoder asked."""
        if self._cached is None or self._cached[0] is not encoder:
            # no_grad rather than inference_mode: attacks use these as constants inside autograd graphs.
            with torch.no_grad():
                self._cached = (encoder, encoder.embed_texts(self.prompts).float())
        return self._cached[1]


def read_label_file(path: str) -> list[str]:
    """One label per line; blank lines and lines starting with '#' are skipped."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
