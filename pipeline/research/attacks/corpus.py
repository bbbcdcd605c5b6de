"""Planting illusions in WebDataset samples (used by `disillusion attack` and `disillusion demo`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import torch

from ...batching import map_batched
from ...io.images import ImageDecodeError, decode_image, encode_png
from ...io.shards import Sample
from ...models.noise import seed_for_key
from .illusion import AttackConfig, cosine_objective, eot_objective, illusion_attack, pick_targets

log = logging.getLogger(__name__)


def chosen_for_attack(key: str, fraction: float, seed: int) -> bool:
    """A seeded, per-key coin: the same samples are chosen whatever the shard layout."""
    return (seed_for_key(seed, key) >> 1) / 2**62 < fraction


def label_index(sample: Sample, meta: dict, labels: Sequence[str]) -> int | None:
    """The true label from json `label` (a name) or a `cls` member (an index)."""
    name = meta.get("label")
    if isinstance(name, str) and name in labels:
        return list(labels).index(name)
    raw = sample.members.get("cls")
    try:
        index = int(raw.decode().strip()) if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        return None
    return index if index is not None and 0 <= index < len(labels) else None


def read_meta(sample: Sample) -> dict:
    try:
        meta = json.loads(sample.members.get("json", b"{}") or b"{}")
        return meta if isinstance(meta, dict) else {}
    except (ValueError, UnicodeDecodeError):
        return {}


def plant_illusions(
    samples: list[Sample],
    encoder,
    bank,
    config: AttackConfig,
    *,
    fraction: float,
    seed: int = 0,
    reconstructor=None,
    eot_samples: int = 4,
    batch_size: int = 64,
) -> list[Sample]:
    """Return new samples: a seeded fraction attacked (image -> adversarial PNG), every json member
    carrying the ground truth {"label", "illusion", "target"}. With a reconstructor the attack is
    adaptive (EOT through it). Samples without a usable image or label are copied unchanged.
    `bank` is the LabelBank whose prompts define the targets."""
    labels, text = bank.labels, bank.embeddings(encoder)
    out = [Sample(s.key, dict(s.members)) for s in samples]
    truth, candidates = {}, []
    for index, sample in enumerate(out):
        meta = read_meta(sample)
        label = label_index(sample, meta, labels)
        truth[index] = {**meta, "label": labels[label] if label is not None else meta.get("label"), "illusion": False, "target": None}
        ext = sample.image_extension()
        if label is None or ext is None or not chosen_for_attack(sample.key, fraction, seed):
            continue
        try:
            image = decode_image(sample.members[ext])
        except ImageDecodeError as error:
            log.warning("%s: not attacked: %s", sample.key, error)
            continue
        candidates.append((index, image, label))

    def attack(part: list[tuple[int, torch.Tensor, int]]) -> list[tuple[torch.Tensor, int]]:
        images = torch.stack([image for _, image, _ in part])
        targets = pick_targets([label for _, _, label in part], len(labels), seed=seed_for_key(seed, out[part[0][0]].key))
        goal = text[targets]
        if reconstructor is not None:
            objective = eot_objective(reconstructor.reconstruct, encoder.embed_images, goal, eot_samples, seed=seed)
        else:
            objective = cosine_objective(encoder.embed_images, goal)
        return list(zip(illusion_attack(images, objective, config), targets.tolist()))

    for (index, _, _), (image, target) in zip(candidates, map_batched(candidates, batch_size, attack, key=lambda c: tuple(c[1].shape))):
        sample = out[index]
        ext = sample.image_extension()
        sample.members = {("png" if name == ext else name): (encode_png(image) if name == ext else data) for name, data in sample.members.items()}
        truth[index].update(illusion=True, target=labels[target])
    for index, sample in enumerate(out):
        sample.members["json"] = json.dumps(truth[index]).encode()
    return out


def attack_corpus(storage, input_spec: str, output: str, preset, config: AttackConfig, *, fraction: float, seed: int,
                  adaptive: bool = False, eot_samples: int = 4, batch_size: int = 64, overwrite: bool = False,
                  echo=print) -> int:
    """Each shard of `input_spec` with illusions planted (`plant_illusions`) under `output`, keys and
    order kept; shards already there are skipped unless `overwrite`. With `adaptive`, EOT through the
    preset's reconstructor. Returns how many unreadable parts of shards were skipped (and logged)."""
    from ...io.shards import ShardProblem, read_samples, write_samples
    from ...io.storage import join, shard_name
    from ..models import load_reconstructor

    if not 0.0 <= fraction <= 1.0:
        raise ValueError("--fraction must lie in [0, 1]")
    encoder, bank = preset.load_encoder(), preset.label_bank()
    reconstructor = load_reconstructor(preset) if adaptive else None
    problems = 0
    for uri in storage.expand(input_spec):
        target_uri = join(output, f"{shard_name(uri)}.tar")
        if storage.exists(target_uri) and not overwrite:
            log.info("%s exists, skipping (use --overwrite to redo)", target_uri)
            continue
        samples = []
        for item in read_samples(storage.read_bytes(uri)):
            if isinstance(item, ShardProblem):
                problems += 1
                log.error("%s: %s", uri, item.message)
            else:
                samples.append(item)
        attacked = plant_illusions(samples, encoder, bank, config, fraction=fraction, seed=seed, reconstructor=reconstructor,
                                   eot_samples=eot_samples, batch_size=batch_size)
        storage.write_bytes(target_uri, write_samples(attacked))
        count = sum(json.loads(s.members["json"])["illusion"] for s in attacked)
        echo(f"{shard_name(uri)}: {len(attacked)} samples, {count} illusions -> {target_uri}")
    return problems
