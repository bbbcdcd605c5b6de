"""The consensus purifier (arXiv 2511.21893): reconstruct each input N times with fresh latent noise,
embed every reconstruction, and let the reconstructions' labels vote.

Pure torch, no Ray: the Ray actors, `evaluate`, the attacks and library users all call this.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..models.protocols import Encoder, Reconstructor
from .labels import LabelBank
from .verdict import VerdictPolicy
from .vote import flip_probability, leader_and_runner_up, majority_settled, rank_labels

EARLY_EXIT_MODES = ("off", "certain", "sequential")
# The sequential rule's bound on the (over-estimated) chance that finishing all N draws would change the
# label: unanimous votes stop after 4 of 10 draws. On a demo corpus with 10% illusions every verdict
# matched drawing all N, at 2.5x the speed (BENCHMARKS.md).
DEFAULT_ALPHA = 0.02


@dataclass(frozen=True)
class ConsensusConfig:
    """n: reconstructions per input (the paper uses 10).
    early_exit: `off` draws exactly n; `certain` stops once the n-sample winner can no longer change
        (identical labels to `off`); `sequential` also stops once the posterior predictive probability
        that the remaining draws would change the winner is at most `alpha` (see `vote.flip_probability`).
    round_size: draws per round after the first; the first round is the smallest count at which a
        unanimous vote can stop (n // 2 + 1 in `certain` mode, fewer in `sequential` mode).
    seed: base seed; image i of a batch gets seed + i unless seeds are passed explicitly (None: 0).
        A sanitisation run gives each sample a seed from its `NoiseKey` instead, secret unless this
        public seed is set (pipeline/models/noise.py).
    autocast: run models under torch.autocast with this dtype (e.g. torch.bfloat16), or None.
    """

    # `help` marks the settings a run exposes as flags and config keys (pipeline/sanitize/config.py).
    n: int = field(default=10, metadata={"help": "reconstructions per sample"})
    early_exit: str = field(default="sequential", metadata={"help": "stop drawing once the vote is settled", "choices": EARLY_EXIT_MODES})
    alpha: float = field(default=DEFAULT_ALPHA, metadata={"help": "error bound of the sequential early exit"})
    round_size: int = 2
    top_k: int = 5
    seed: int | None = field(default=None, metadata={
        "help": "a PUBLIC seed for the reconstruction noise: anyone who knows it, an attacker included, can compute every draw "
                "and optimise against exactly those (default: a secret key, fresh each run, or --noise-key-file)"})
    autocast: torch.dtype | None = None
    verdict: VerdictPolicy = field(default_factory=VerdictPolicy)

    def __post_init__(self):
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.early_exit not in EARLY_EXIT_MODES:
            raise ValueError(f"early_exit must be one of {EARLY_EXIT_MODES}")
        if self.round_size < 1:
            raise ValueError("round_size must be at least 1")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must lie in (0, 1)")


def witness_measures(original: torch.Tensor, witnessed: torch.Tensor, text: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the verdict's witness tests bound, per image (B x D normalised embeddings of the encoder
    and of the witness, L x D label embeddings, B label indices): the gap 1 - cos(encoder, witness),
    and the witness margin, how much better the witness likes its own best label than `labels`.
    Differentiable: the attacks aim under the same measures."""
    gaps = 1.0 - (original * witnessed).sum(-1)
    sims = witnessed @ text.T
    return gaps, sims.max(-1).values - sims.gather(1, labels[:, None]).squeeze(1)


@dataclass
class SampleResult:
    """Everything the defense knows about one input. Label fields are indices into the label bank;
    `labels` resolves them to names."""

    labels: list[str]
    label_original: int
    topk_original: list[int]
    votes: list[int]  # one label per reconstruction used, in draw order
    label_consensus: int
    topk_consensus: list[int]  # by votes, then mean similarity: topk_consensus[0] == label_consensus
    agreement: float
    samples_used: int
    embedding_original: torch.Tensor  # D, normalised
    embedding: torch.Tensor  # D, normalised mean of the majority's reconstruction embeddings
    drift: float
    witness_gap: float | None  # 1 - cos(original, the witness's embedding of the input), when a witness runs
    witness_margin: float | None  # the witness's cosine to its own best label minus to `label_original` (>= 0), when a witness runs
    similarity_original: torch.Tensor  # L: cosine of the original embedding to each label prompt
    similarity_purified: torch.Tensor  # L: cosine of the purified embedding to each label prompt
    representative_index: int  # draw index of the reconstruction closest to `embedding`
    verdict: str
    caption_cos_original: float | None = None
    caption_cos_purified: float | None = None
    image: torch.Tensor | None = None  # the representative reconstruction (3 x H x W) when asked for
    image_label: int | None = None  # the label of `image` as written (8-bit), re-embedded
    image_cos: float | None = None  # cosine between that re-embedding and `embedding`
    replacement_accepted: bool | None = None  # whether `image` may replace the input (VerdictPolicy.replacement_accepted)

    @property
    def label_original_name(self) -> str:
        return self.labels[self.label_original]

    @property
    def label_consensus_name(self) -> str:
        return self.labels[self.label_consensus]


@dataclass
class _Draws:
    """What the rounds of reconstructions gave, per image: vote counts by label, the votes in draw
    order, the embeddings of each round, and (when asked for) the reconstructions."""

    counts: torch.Tensor  # images x labels
    votes: list[list[int]]
    embeddings: list[list[torch.Tensor]]
    kept: list[list[torch.Tensor]]


class ConsensusPurifier:
    def __init__(
        self,
        reconstructor: Reconstructor,
        encoder: Encoder,
        labels: LabelBank | Sequence[str],
        config: ConsensusConfig | None = None,
        witness: Encoder | None = None,
    ):
        """`witness`: an adversarially robust copy of `encoder` (same embedding space) whose distance
        from the encoder's embedding of each input the verdict can threshold (`max_witness_gap`)."""
        self.reconstructor = reconstructor
        self.encoder = encoder
        self.witness = witness
        self.labels = labels if isinstance(labels, LabelBank) else LabelBank(labels)
        self.config = config or ConsensusConfig()
        if self.config.verdict.needs_witness and witness is None:
            raise ValueError("the verdict has witness thresholds (max_witness_gap, max_witness_margin) but no witness was given")

    def with_consensus(self, config: ConsensusConfig) -> ConsensusPurifier:
        """The same models and labels under other consensus settings (N, early exit, verdict)."""
        return ConsensusPurifier(self.reconstructor, self.encoder, self.labels, config, witness=self.witness)

    # --- helpers ------------------------------------------------------------------------------
    def _witness_measures(self, images, original, original_sims, text) -> tuple[list, list]:
        """Per image, how far the witness stands from the encoder: the gap between their embeddings,
        and how much better the witness likes its own best label than the encoder's label."""
        if self.witness is None:
            return [None] * len(images), [None] * len(images)
        witnessed = self.witness.embed_images(images).float().to(original.device)
        gaps, margins = witness_measures(original, witnessed, text, original_sims.argmax(-1))
        return gaps.tolist(), margins.tolist()

    def _autocast(self):
        dtype = self.config.autocast
        if dtype is None:
            return contextlib.nullcontext()
        device = getattr(self.encoder, "device", torch.device("cpu"))
        return torch.autocast(device_type=torch.device(device).type, dtype=dtype)

    def label_embeddings(self) -> torch.Tensor:
        return self.labels.embeddings(self.encoder)

    def text_similarity(self, embeddings: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Cosine between each embedding (B x D) and each text: B x len(texts)."""
        with torch.no_grad():
            text = self.encoder.embed_texts(list(texts)).float()
        return embeddings.float().to(text.device) @ text.T

    def _round_sizes(self) -> list[int]:
        n, mode = self.config.n, self.config.early_exit
        if mode == "off":
            return [n]
        # The first round is the fewest draws after which a unanimous vote may stop: smaller rounds
        # before it cost model calls and can never end the loop.
        if mode == "certain":
            first = n // 2 + 1
        else:
            first = next((k for k in range(1, n) if flip_probability(k, 0, n - k) <= self.config.alpha), n)
        first = min(n, first)
        sizes = [first]
        while sum(sizes) < n:
            sizes.append(min(self.config.round_size, n - sum(sizes)))
        return sizes

    def _finished(self, counts: torch.Tensor, remaining: int) -> bool:
        if remaining == 0:
            return True
        mode = self.config.early_exit
        if mode == "off":
            return False
        if majority_settled(counts, remaining):
            return True
        if mode == "sequential":
            leader, runner_up = leader_and_runner_up(counts)
            return flip_probability(leader, runner_up, remaining) <= self.config.alpha
        return False

    # --- main entry ---------------------------------------------------------------------------
    def purify(
        self,
        images: torch.Tensor,
        *,
        seeds: Sequence[int] | None = None,
        captions: Sequence[str | None] | None = None,
        keep_images: bool = False,
    ) -> list[SampleResult]:
        """Purify a batch of images (B x C x H x W in [0, 1], one size per batch).

        seeds: one per image; a given (image, seed) always yields the same reconstructions, whatever
            the batch it is in. Defaults to config.seed + position in the batch.
        captions: optional text per image; fills the caption cosine fields.
        keep_images: return the representative reconstruction of each image as `image`.
        """
        batch = images.shape[0]
        seeds = list(seeds) if seeds is not None else [(self.config.seed or 0) + i for i in range(batch)]
        if len(seeds) != batch:
            raise ValueError(f"got {len(seeds)} seeds for {batch} images")
        if captions is not None and len(captions) != batch:
            raise ValueError(f"got {len(captions)} captions for {batch} images")
        with torch.no_grad(), self._autocast():
            return self._purify(images, seeds, captions, keep_images)

    def _purify(self, images, seeds, captions, keep_images) -> list[SampleResult]:
        text = self.label_embeddings()
        original = self.encoder.embed_images(images).float()
        original_sims = original @ text.T
        gaps, margins = self._witness_measures(images, original, original_sims, text)
        draws = self._draw(images, seeds, text, keep_images)
        caption_emb = self._caption_embeddings(captions, original.device)
        results = []
        for i in range(images.shape[0]):
            caption = caption_emb[i] if caption_emb is not None else None
            result = self._result(draws, i, text, original[i], original_sims[i], gaps[i], margins[i], caption)
            if keep_images:
                result.image = torch.cat(draws.kept[i])[result.representative_index]
            results.append(result)
        if keep_images:
            self._check_images(results, text)
        return results

    def _draw(self, images: torch.Tensor, seeds: Sequence[int], text: torch.Tensor, keep_images: bool) -> _Draws:
        """Reconstructions of every image in rounds (`_round_sizes`), each embedded and voted on, until
        N draws or the early exit settles an image's majority; only unsettled images are decoded again."""
        encoded = self.reconstructor.encode(images)
        batch, num_labels = images.shape[0], text.shape[0]
        draws = _Draws(torch.zeros(batch, num_labels, dtype=torch.long), [[] for _ in range(batch)], [[] for _ in range(batch)],
                       [[] for _ in range(batch)])
        active, drawn = list(range(batch)), 0
        for size in self._round_sizes():
            if not active:
                break
            subset = encoded if len(active) == batch else encoded.select(active)
            recon = self.reconstructor.decode_samples(subset, [seeds[i] for i in active], range(drawn, drawn + size))
            emb = self.encoder.embed_images(recon.flatten(0, 1)).float().unflatten(0, (len(active), size))
            labels = (emb @ text.T).argmax(dim=-1).cpu()
            for row, i in enumerate(active):
                draws.embeddings[i].append(emb[row])
                draws.votes[i].extend(labels[row].tolist())
                draws.counts[i] += torch.bincount(labels[row], minlength=num_labels)
                if keep_images:
                    draws.kept[i].append(recon[row].float().cpu())
            drawn += size
            active = [i for i in active if not self._finished(draws.counts[i], self.config.n - drawn)]
        return draws

    def _result(self, draws: _Draws, i: int, text: torch.Tensor, original: torch.Tensor, original_sims: torch.Tensor,
                gap: float | None, margin: float | None, caption: torch.Tensor | None) -> SampleResult:
        """Image i's consensus: the majority label, the mean embedding of the reconstructions that voted
        for it (the purified embedding), its drift from the original, the verdict, and with a caption
        embedding, its cosine to the original and to the purified embedding."""
        cfg, counts, votes = self.config, draws.counts[i], draws.votes[i]
        emb = torch.cat(draws.embeddings[i])  # used x D
        order = rank_labels(counts, (emb @ text.T).mean(0).cpu())
        consensus = int(order[0])
        majority = torch.tensor([v == consensus for v in votes], device=emb.device)
        purified = F.normalize(emb[majority].mean(0), dim=-1)
        representative = int(torch.where(majority, emb @ purified, torch.tensor(-math.inf, device=emb.device)).argmax())
        agreement = float(counts[consensus]) / len(votes)
        drift = float(1.0 - original @ purified)
        label_original = int(original_sims.argmax())
        result = SampleResult(
            labels=self.labels.labels,
            label_original=label_original,
            topk_original=original_sims.topk(min(cfg.top_k, text.shape[0])).indices.tolist(),
            votes=votes,
            label_consensus=consensus,
            topk_consensus=order[: cfg.top_k].tolist(),
            agreement=agreement,
            samples_used=len(votes),
            embedding_original=original.cpu(),
            embedding=purified.cpu(),
            drift=drift,
            witness_gap=gap,
            witness_margin=margin,
            similarity_original=original_sims.cpu(),
            similarity_purified=(purified @ text.T).cpu(),
            representative_index=representative,
            verdict=cfg.verdict.decide(label_original, consensus, agreement, drift, gap, margin),
        )
        if caption is not None:
            result.caption_cos_original = float(original @ caption)
            result.caption_cos_purified = float(purified @ caption)
        return result

    def _check_images(self, results: list[SampleResult], text: torch.Tensor) -> None:
        """Re-embed each purified image as it will be written (8-bit): an image that would deliver
        a label other than the consensus is never handed downstream."""
        written = torch.stack([r.image for r in results]).clamp(0, 1).mul(255).round().div(255)
        device = getattr(self.encoder, "device", written.device)
        emb = self.encoder.embed_images(written.to(device)).float()
        labels = (emb @ text.T).argmax(dim=-1).tolist()
        for result, embedding, label in zip(results, emb.cpu(), labels):
            result.image_label, result.image_cos = label, float(embedding @ result.embedding)
            result.replacement_accepted = self.config.verdict.replacement_accepted(
                result.label_original, result.label_consensus, label, result.image_cos)

    def _caption_embeddings(self, captions, device) -> list[torch.Tensor | None] | None:
        if captions is None:
            return None
        present = [i for i, c in enumerate(captions) if c]
        out: list[torch.Tensor | None] = [None] * len(captions)
        if present:
            emb = self.encoder.embed_texts([captions[i] for i in present]).float().to(device)
            for row, i in enumerate(present):
                out[i] = emb[row]
        return out
