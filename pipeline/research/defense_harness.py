"""The paper-style evaluation: defenses x inputs (clean, illusion, adaptive illusion) x metrics.

Pure torch. A `Defense` turns images into (label ranking, embedding); the metrics compare them with
the true and target labels. Adaptive inputs are attacks built against each defense: BPDA through
JPEG, straight through the (differentiable) blur, EOT through the stochastic reconstructors; and,
against consensus defenses, the detect-adaptive attack (`attacks/adaptive.py`) that also evades
the verdict. Consensus defenses also report their verdicts and what each sanitisation policy hands
downstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch

from ..defense import ConsensusPurifier, VerdictPolicy
from ..sanitize.outputs import POLICIES
from .attacks.adaptive import DetectAdaptiveConfig, detect_adaptive_attack, detect_adaptive_objective
from .attacks.illusion import AttackConfig, Objective, bpda, cosine_objective, eot_objective, illusion_attack
from .baselines import gaussian_blur, jpeg
from .witness_attack import apgd, square


REMOVED = -1  # a downstream label: the sample was removed (quarantined)


@dataclass
class DefenseOutput:
    ranking: torch.Tensor  # B x L label indices, best first
    embedding: torch.Tensor  # B x D normalised embedding the defense hands downstream
    # Sanitisation (consensus defenses): each sample's verdict, and per policy the label of what
    # reaches downstream (REMOVED when nothing does).
    verdicts: list[str] | None = None
    downstream: dict[str, torch.Tensor] | None = None


@dataclass
class Defense:
    name: str
    apply: Callable[[torch.Tensor], DefenseOutput]
    adaptive_objective: Callable[[torch.Tensor], Objective]  # target embeddings -> attack objective
    n: int = 1
    attack_key: str = ""  # defenses with the same key face the same adaptive attack (e.g. vae and vae+consensus)
    # Consensus defenses: (target label indices, config) -> the detect-adaptive objective against them.
    detect_objective: Callable[[torch.Tensor, DetectAdaptiveConfig], Objective] | None = None
    verdict: VerdictPolicy | None = None  # consensus defenses: the thresholds the detect-adaptive attacker stays under

    def __post_init__(self):
        self.attack_key = self.attack_key or self.name


@dataclass
class Row:
    defense: str
    input: str
    top1: float
    top5: float
    asr: float
    cos_true: float
    cos_target: float
    sec_per_sample: float
    n: int
    # Consensus defenses only: verdict shares, and the share of samples whose downstream label is the
    # target under each policy (on clean inputs: the chance level for the same targets).
    verdict_clean: float | None = None
    verdict_illusion: float | None = None
    verdict_uncertain: float | None = None
    target_purify: float | None = None
    target_drop: float | None = None
    target_keep: float | None = None
    # ... and whose downstream label is the true one (a removed sample counts as lost): Top-1 as seen downstream.
    true_purify: float | None = None
    true_drop: float | None = None
    true_keep: float | None = None
    # The share judged `uncertain` whose original label is the target / the true label: what keeping
    # uncertain samples adds to the attacker's figures and to clean Top-1 downstream (on_uncertain keep).
    uncertain_target: float | None = None
    uncertain_true: float | None = None


def _ranking_from_embedding(embedding: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return torch.argsort(embedding @ text.T, dim=-1, descending=True)


def transform_defense(name: str, encoder, text: torch.Tensor, transform, differentiable: bool) -> Defense:
    def apply(images: torch.Tensor) -> DefenseOutput:
        with torch.no_grad():
            emb = encoder.embed_images(transform(images))
        return DefenseOutput(_ranking_from_embedding(emb, text), emb)

    through = transform if differentiable else bpda(transform)
    return Defense(name, apply, lambda targets: cosine_objective(lambda x: encoder.embed_images(through(x)), targets))


def reconstruction_defense(
    name: str, purifier: ConsensusPurifier, *, eot_samples: int, seed: int, attack_reconstructor=None, on_uncertain: str = "keep",
    public_seed: bool = False,
) -> Defense:
    """The defense of `purifier` (from `research.models.preset_purifier`): its n == 1, a single
    stochastic reconstruction; n > 1, the consensus vote over n reconstructions, with the
    sanitisation verdict of its config (with its witness, if any) and what each policy hands
    downstream when `uncertain` samples are kept or dropped (`on_uncertain`, `downstream_labels`).

    The adaptive attack is EOT through `attack_reconstructor` (default: the defense's own), the same
    for the single and the consensus variant, since both draw from the same reconstruction distribution.

    `public_seed`: the defense draws as the product does under a public `--seed` (the same draws for a
    given sample at every call: here image i of a batch, from seed + i), and the detect-adaptive
    attacker, who can compute them, optimises against exactly those N draws (`known_seed`).
    """
    reconstructor, encoder, witness, n = purifier.reconstructor, purifier.encoder, purifier.witness, purifier.config.n
    text = purifier.labels.embeddings(encoder)
    counter = {"calls": 0}

    def apply(images: torch.Tensor) -> DefenseOutput:
        # Fresh seeds per call so that evaluating an attack never reuses the noise it was built against
        # (secret noise); under a public seed, the same seeds every call.
        counter["calls"] += 1
        seeds = [seed + (0 if public_seed else 7919 * counter["calls"]) + i for i in range(images.shape[0])]
        if n == 1:
            with torch.no_grad():
                emb = encoder.embed_images(reconstructor.reconstruct(images, 1, seeds)[:, 0])
            return DefenseOutput(_ranking_from_embedding(emb, text), emb)
        results = purifier.purify(images, seeds=seeds, keep_images=True)
        ranking = torch.tensor([r.topk_consensus for r in results])
        return DefenseOutput(ranking, torch.stack([r.embedding for r in results]), [r.verdict for r in results],
                             downstream_labels(results, on_uncertain))

    through = attack_reconstructor or reconstructor
    return Defense(
        name,
        apply,
        lambda targets: eot_objective(through.reconstruct, encoder.embed_images, targets, eot_samples, seed=seed + 1),
        n=n,
        attack_key=name.partition("+")[0],
        detect_objective=(lambda targets, cfg: detect_adaptive_objective(
            through.reconstruct, encoder.embed_images, text, targets, replace(cfg, known_seed=seed, eot=n) if public_seed else cfg,
            witness=witness.embed_images if witness else None))
        if n > 1 else None,
        verdict=purifier.config.verdict,
    )


def downstream_labels(results, on_uncertain: str = "keep") -> dict[str, torch.Tensor]:
    """The label of what each policy hands downstream, per sample: unflagged samples pass as they are
    (their original label); a flagged one is replaced by its purified image when that passed its
    check (`purify`), removed otherwise and under `drop`, passed unchanged under `keep`. An
    `uncertain` sample is removed under every policy when `on_uncertain` is drop."""
    out = {policy: [] for policy in POLICIES}
    for r in results:
        if r.verdict == "uncertain" and on_uncertain == "drop":
            for labels in out.values():
                labels.append(REMOVED)
            continue
        flagged = r.verdict == "illusion"
        out["keep"].append(r.label_original)
        out["drop"].append(REMOVED if flagged else r.label_original)
        out["purify"].append((r.image_label if r.replacement_accepted else REMOVED) if flagged else r.label_original)
    return {policy: torch.tensor(labels) for policy, labels in out.items()}


def none_defense(encoder, text: torch.Tensor) -> Defense:
    return transform_defense("none", encoder, text, lambda x: x, differentiable=True)


def jpeg_defense(encoder, text: torch.Tensor, quality: int = 75) -> Defense:
    return transform_defense("jpeg", encoder, text, lambda x: jpeg(x, quality), differentiable=False)


def blur_defense(encoder, text: torch.Tensor, sigma: float = 1.0) -> Defense:
    return transform_defense("blur", encoder, text, lambda x: gaussian_blur(x, sigma), differentiable=True)


def score(defense: Defense, output: DefenseOutput, labels: torch.Tensor, targets: torch.Tensor, text: torch.Tensor, input_name: str, seconds: float) -> Row:
    """On clean inputs, asr and cos_target measure the chance level for the same targets."""
    top1 = output.ranking[:, 0]
    cos = output.embedding @ text.T
    sanitised = {}
    if output.verdicts is not None:
        sanitised = {f"verdict_{v}": sum(x == v for x in output.verdicts) / len(output.verdicts) for v in ("clean", "illusion", "uncertain")}
        sanitised |= {f"target_{p}": float((labels_ == targets).float().mean()) for p, labels_ in output.downstream.items()}
        sanitised |= {f"true_{p}": float((labels_ == labels).float().mean()) for p, labels_ in output.downstream.items()}
        uncertain, original = torch.tensor([v == "uncertain" for v in output.verdicts]), output.downstream["keep"]
        sanitised |= {"uncertain_target": float((uncertain & (original == targets)).float().mean()),
                      "uncertain_true": float((uncertain & (original == labels)).float().mean())}
    return Row(
        defense=defense.name,
        input=input_name,
        top1=float((top1 == labels).float().mean()),
        top5=float((output.ranking[:, :5] == labels[:, None]).any(-1).float().mean()),
        asr=float((top1 == targets).float().mean()),
        cos_true=float(cos.gather(1, labels[:, None]).mean()),
        cos_target=float(cos.gather(1, targets[:, None]).mean()),
        sec_per_sample=seconds / len(labels),
        n=defense.n,
        **sanitised,
    )


def adaptive_inputs(defense: Defense, text: torch.Tensor, images: torch.Tensor, targets: torch.Tensor, config: AttackConfig, batch_size: int = 100) -> torch.Tensor:
    """The adaptive illusion against `defense`, for every image."""
    return torch.cat([
        illusion_attack(images[i : i + batch_size], defense.adaptive_objective(text[targets[i : i + batch_size]]), config)
        for i in range(0, len(images), batch_size)
    ])


def _aimed(defense: Defense, config: DetectAdaptiveConfig) -> DetectAdaptiveConfig:
    """The attacker aims at half of each of the verdict's thresholds (drift, witness gap and margin)."""
    if defense.detect_objective is None:
        raise ValueError(f"{defense.name} gives no verdict: the detect-adaptive attack needs a consensus defense")
    verdict = defense.verdict or VerdictPolicy()
    return replace(config, drift_limit=0.5 * (verdict.max_drift or 0.1), witness_limit=0.5 * (verdict.max_witness_gap or 0.1),
                   witness_margin_limit=0.5 * (verdict.max_witness_margin or 0.05))


def _judge(defense: Defense, text: torch.Tensor, targets: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """How well images do for the attacker on the defense's own (fresh) draws: how many policies (purify,
    drop) hand downstream the target, ties broken by the purified embedding's closeness to the target."""
    def judge(x: torch.Tensor) -> torch.Tensor:
        out = defense.apply(x)
        delivered = sum((out.downstream[p] == targets.cpu()).float() for p in ("purify", "drop"))
        closeness = (out.embedding.float().to(text.device) * text[targets]).sum(-1)
        return delivered + 0.01 * closeness.cpu()

    return judge


def detect_adaptive_inputs(
    defense: Defense, text: torch.Tensor, images: torch.Tensor, targets: torch.Tensor, config: DetectAdaptiveConfig, batch_size: int = 100,
    exemplars: torch.Tensor | None = None,
) -> torch.Tensor:
    """The detect-adaptive illusion against a consensus defense, for every image. The attacker keeps
    its drift under half the verdict's threshold, and keeps the iterate that the defense itself, on
    fresh draws, lets through to downstream as the target most often (`_judge`). `exemplars`: clean
    images of each image's target class, directions of the starts after the first (`detect_adaptive_attack`)."""
    config = _aimed(defense, config)
    return torch.cat([
        detect_adaptive_attack(images[i : i + batch_size], defense.detect_objective(targets[i : i + batch_size], config),
                               _judge(defense, text, targets[i : i + batch_size]), config,
                               None if exemplars is None else exemplars[i : i + batch_size])
        for i in range(0, len(images), batch_size)
    ])


def detect_square_inputs(
    defense: Defense, text: torch.Tensor, images: torch.Tensor, targets: torch.Tensor, config: DetectAdaptiveConfig, queries: int,
    batch_size: int = 100,
) -> torch.Tensor:
    """A gradient-free check on the detect-adaptive attacker: the Square query attack
    (`witness_attack.square`) on the same loss through the whole pipeline, forward passes only, so
    that masked gradients (clamps, a reconstructor trained against PGD) cannot hide a way through."""
    return _on_fixed_draws(defense, images, targets, config, batch_size,
                           lambda loss, x: square(loss, x, eps=config.eps, queries=queries, seed=config.seed))


def detect_apgd_inputs(
    defense: Defense, text: torch.Tensor, images: torch.Tensor, targets: torch.Tensor, config: DetectAdaptiveConfig, steps: int,
    batch_size: int = 100,
) -> torch.Tensor:
    """The detect-adaptive loss minimised by APGD (`witness_attack.apgd`: momentum, a step that
    starts at 2 eps and halves where progress stalls, `config.restarts` starts) instead of fixed
    signed steps: the step-size schedule the fixed-step attacker lacks."""
    return _on_fixed_draws(defense, images, targets, config, batch_size,
                           lambda loss, x: apgd(loss, x, eps=config.eps, steps=steps, restarts=config.restarts, seed=config.seed))


def _on_fixed_draws(defense: Defense, images: torch.Tensor, targets: torch.Tensor, config: DetectAdaptiveConfig, batch_size: int,
                    attack: Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`attack(loss, images)` on the detect-adaptive loss, batch by batch. These attacks compare
    losses between iterates, so each image keeps one set of draws throughout: under a public seed
    the defense's own, otherwise `config.eot` draws the defense will not use."""
    config = _aimed(defense, config)
    adversarial = []
    for i in range(0, len(images), batch_size):
        objective = defense.detect_objective(targets[i : i + batch_size], config)
        adversarial.append(attack(lambda x: objective(x, 0), images[i : i + batch_size]))
    return torch.cat(adversarial)


def strongest_inputs(
    defense: Defense, text: torch.Tensor, candidates: Sequence[torch.Tensor], targets: torch.Tensor, batch_size: int = 100
) -> torch.Tensor:
    """Per image, the candidate (the images of several attacks) that the defense, on fresh draws,
    lets through as the target most (`_judge`; the first candidate on ties): an attacker who runs
    every attack keeps what works."""
    chosen = []
    for i in range(0, len(targets), batch_size):
        judge = _judge(defense, text, targets[i : i + batch_size])
        batch = torch.stack([c[i : i + batch_size] for c in candidates])  # K x B x ...
        scores = torch.stack([judge(x) for x in batch])  # K x B
        best = scores.argmax(0)  # the first maximum: ties keep the earlier attack
        chosen.append(batch[best.to(batch.device), torch.arange(batch.shape[1], device=batch.device)])
    return torch.cat(chosen)


def evaluate_defense(
    defense: Defense,
    text: torch.Tensor,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 100,
) -> list[Row]:
    """One row per named input set (e.g. clean, illusion, adaptive). An input set may cover only the
    first K images (adaptive attacks are costly); it is scored against the first K labels."""
    rows = []
    for name, x in inputs.items():
        count = len(x)
        start = time.perf_counter()
        outputs = [defense.apply(x[i : i + batch_size]) for i in range(0, count, batch_size)]
        seconds = time.perf_counter() - start
        # Scored on the CPU, whatever device the models ran on.
        output = DefenseOutput(torch.cat([o.ranking.cpu() for o in outputs]), torch.cat([o.embedding.float().cpu() for o in outputs]))
        if outputs[0].verdicts is not None:
            output.verdicts = [v for o in outputs for v in o.verdicts]
            output.downstream = {p: torch.cat([o.downstream[p] for o in outputs]) for p in POLICIES}
        rows.append(score(defense, output, labels[:count].cpu(), targets[:count].cpu(), text.float().cpu(), name, seconds))
    return rows


def rows_as_dicts(rows: Sequence[Row]) -> list[dict]:
    return [asdict(r) for r in rows]

