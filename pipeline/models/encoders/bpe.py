"""The CLIP byte-level BPE tokenizer (used by ImageBind's text tower), built from the standard
`bpe_simple_vocab_16e6.txt.gz` merges file that ships with CLIP, OpenCLIP and ImageBind.

The vocabulary is derived from the merges exactly as CLIP does: 256 byte symbols, the same with an
end-of-word marker, one token per merge, then <|startoftext|> and <|endoftext|>. The BPE itself runs
in transformers' CLIPTokenizer (lower-casing and whitespace clean-up included).
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from functools import lru_cache

import torch
from transformers import CLIPTokenizer

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
CLIP_MERGES = 49152 - 256 - 2  # the number of merges CLIP uses from that file


@lru_cache
def _byte_symbols() -> list[str]:
    # GPT-2/CLIP mapping of the 256 byte values to printable unicode characters.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    by_byte = dict(zip(keep, codes))
    return [chr(by_byte[b]) for b in range(256)]


def read_merges(path: str, max_merges: int = CLIP_MERGES) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : max_merges + 1] if line.strip()]
    if any(len(m) != 2 for m in merges):
        raise ValueError(f"{path} is not a BPE merges file (every line after the header must hold two symbols)")
    return merges


class ClipBpeTokenizer:
    """Tokenise prompts to fixed-length id tensors: <sot> tokens <eot>, zero-padded, truncated."""

    def __init__(self, merges: Sequence[tuple[str, str]], context_length: int = 77):
        symbols = _byte_symbols()
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.merges = [tuple(m) for m in merges]
        self.vocab = {token: i for i, token in enumerate(vocab)}
        self.sot, self.eot = self.vocab["<|startoftext|>"], self.vocab["<|endoftext|>"]
        self.context_length = context_length
        self._tokenizer = CLIPTokenizer(vocab=dict(self.vocab), merges=self.merges)

    @classmethod
    def from_file(cls, path: str, context_length: int = 77) -> "ClipBpeTokenizer":
        return cls(read_merges(path), context_length)

    def save(self, path: str) -> None:
        """Write the merges in the standard gzip format (header line, one merge per line)."""
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = torch.zeros(len(prompts), self.context_length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            body = self._tokenizer.encode(prompt, add_special_tokens=False)[: self.context_length - 2]
            tokens = [self.sot, *body, self.eot]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids
