"""`disillusion frontier`: the robustness frontier over the reconstruction's randomness: per point,
thresholds recalibrated on held-out clean images, then clean cost against the detect-adaptive
attacker (and, with the witness, the relaxed suite), with its settings record (the flags, and what
makes two runs comparable) and its reports (frontier_report.py)."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, fields

import torch

from ..defense import VerdictPolicy
from ..models import load_encoder
from ..presets import get_preset
from ..sanitize.outputs import ON_UNCERTAIN
from ..settings import SettingsTable, parse_fraction, setting
from .attacks import AttackConfig, illusion_attack, pick_targets
from .attacks.adaptive import DetectAdaptiveConfig
from .attacks.illusion import cosine_objective
from .data.encodings import stored_at_working_size
from .data.fashion_mnist import held_out_test_indices, load_sample, load_split
from .evaluate import write_tables
from .frontier import PARAMETERS, Point, attack_sanity, meets_target, relaxed_pass, run_point
from .frontier_report import markdown, plot, summary_line
from .witness_attack import Selection, SuiteConfig, sanity_curves

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontierSettings:
    preset: str = setting("demo", "the preset (the frontier runs on the demo's bundled sample)", comparable=True, absent="demo")
    vae: str = setting("0,0.5,1,1.5", "VAE latent_noise values ('' skips the VAE)")
    ae: str = setting("0.5,1.5", "AE noise_scale values")
    dm: str = setting("0.15,0.3", "DM strength values")
    n: str = setting("10", "reconstructions per vote, one or more values")
    limit: int = setting(200, "clean evaluation images (K of the bundled sample, from --offset)", comparable=True)
    offset: int = setting(0, "skip the bundled sample's first K images: report on images no earlier choice of settings looked at",
                           comparable=True, absent=0)
    witness: bool = setting(False, "put the preset's robust witness in the verdict (its thresholds calibrated per point); the attacker "
                                    "aims under it too", comparable=True, absent=False)
    witness_model: str | None = setting(None, "with --witness, this witness (a model spec, e.g. clip:/dir from `train-demo --models "
                                                "witness`) instead of the preset's", comparable=True, absent=None, metavar="SPEC")
    vae_model: str | None = setting(None, "the VAE points run this VAE (a model spec, e.g. vae:DIR/aligned-vae from `train-demo "
                                          "--models aligned-vae`) instead of the preset's", comparable=True, absent=None, metavar="SPEC")
    on_uncertain: str = setting("drop", "what downstream gets of uncertain samples (default: nothing, as `sanitize` does)",
                                 comparable=True, absent="keep", choices=ON_UNCERTAIN)
    suite_steps: int = setting(500, "with --witness, the relaxed suite: APGD steps (0 skips the suite)", comparable=True)
    suite_restarts: int = setting(3, "relaxed suite: APGD starts (the first at the clean image)", comparable=True)
    suite_queries: int = setting(2000, "relaxed suite: Square attack queries (0 skips it)", comparable=True)
    select_offset: int = setting(0, "relaxed suite: the loss weights are chosen on the bundled sample's images from here", comparable=True)
    select_limit: int = setting(50, "... this many (keep them apart from --offset/--limit)", comparable=True)
    suite_sanity: bool = setting(False, "at the first point, on its first 100 attacked images, the relaxed suite's sanity curves: "
                                         "eps 4-64/255, a fifth and twice --suite-steps, 5 restarts")
    attack_limit: int = setting(40, "images attacked by the detect-adaptive attacker at each point")
    calibrate_on: str = setting("fashion-mnist", "held-out clean images for the thresholds: Fashion-MNIST test images outside the bundled "
                                                  "sample (needs the dataset), or the bundled sample's second half",
                                 comparable=True, absent="fashion-mnist", choices=("fashion-mnist", "sample"))
    calibration_limit: int = setting(500, "held-out clean images for the thresholds", comparable=True)
    encodings: str = setting("png", "store each calibration image as these scraper pipelines would and meet the target on each "
                                     "(pipeline/research/data/encodings.py)", comparable=True, absent="png")
    target_fpr: float = setting(0.03, "false-positive rate each point is calibrated to", comparable=True)
    eps: str = setting("16/255", "L-inf budget of the attacks", comparable=True)
    steps: int = setting(100, "steps of the published illusion", comparable=True)
    detect_steps: int = setting(200, "steps of the detect-adaptive attacker", comparable=True)
    detect_step_size: str | None = setting(None, "signed step of the detect-adaptive attacker (default: eps/20, at least 1/255, as "
                                                 "the sanity grid scales it; reports before 2026-11-28 took 1/255 at every eps)",
                                           comparable=True, absent=None, metavar="FRACTION")
    eot: int = setting(16, "reconstruction draws per step of the detect-adaptive attacker", comparable=True)
    restarts: int = setting(1, "starts of the detect-adaptive attacker", comparable=True)
    straight_through: bool = setting(False, "the detect-adaptive attacker differentiates through the reconstructions' output clamps as "
                                             "the identity (BPDA)", comparable=True, absent=False)
    exemplar_start: bool = setting(False, "with --restarts 2 or more, the detect-adaptive attacker's starts after the first move each "
                                          "image as far as the budget allows towards clean images of its target class (bundled-sample "
                                          "images that no figure is reported on; see --exemplar-choice)", comparable=True, absent=False)
    exemplar_choice: str = setting("nearest", "with --exemplar-start: which clean images: `nearest` (every later start heads for "
                                              "another, those the budget brings closest first) or `random` (the second start heads "
                                              "for one drawn at random, the rest start at random points: reports before 2026-11-28)",
                                   comparable=True, absent="random", choices=("nearest", "random"))
    detect_queries: int = setting(0, "also the Square query attack on the detect-adaptive loss through the whole pipeline (a check on "
                                     "masked gradients; 0 skips it); the bar is then judged on the best attack per image",
                                  comparable=True, absent=0)
    detect_apgd: int = setting(0, "also APGD for this many steps on the detect-adaptive loss through the whole pipeline (the step-"
                                  "size schedule: momentum, a step from 2 eps halved where progress stalls; --restarts starts; 0 skips "
                                  "it); the bar is then judged on the best attack per image", comparable=True, absent=0)
    public_seed: bool = setting(False, "known randomness: the defense draws each image's reconstructions from a public seed (as "
                                        "`sanitize --seed` does) and the detect-adaptive attacker aims at exactly those draws",
                                comparable=True, absent=False)
    transfer_from: str | None = setting(None, "a transfer attack: the detect-adaptive attacker builds its images against this "
                                              "reconstructor (a model spec of the points' kind, e.g. an independently trained copy) "
                                              "and the real one scores them", comparable=True, absent=None, metavar="SPEC")
    dm_attack_steps: int | None = setting(None, "dm points: attack through a surrogate with this many denoising steps (default: the full chain)",
                                           comparable=True)
    seed: int = setting(0, "seed of the images, targets, attacks and draws", comparable=True)
    batch_size: int = setting(100, "images per attack batch (memory: a dm batch keeps batch x eot denoising chains for the gradient)")
    sanity: bool = setting(False, "also check the attack at the first point: success as eps, steps, EOT draws and starts (5) grow")
    json: str | None = setting(None, "write the report here (rewritten after every point)", metavar="FILE")
    markdown: str | None = setting(None, "also write its tables as Markdown", metavar="FILE")
    plot: str | None = setting(None, "also plot clean Top-1 against what reaches downstream", metavar="PNG")


FRONTIER_SETTINGS = SettingsTable(FrontierSettings)
# What makes two runs comparable (the same clean images, thresholds calibrated the same way, the same
# attacker): setting -> what a report written before it existed stands for (None: every report has it).
# The number of attacked images, the batch size and the machine may differ (each point reports its own counts).
COMPARABLE = {f.name: f.metadata.get("absent") for f in fields(FrontierSettings) if f.metadata.get("comparable")}


def run_frontier(settings: FrontierSettings, device: torch.device, device_name: str, echo=print) -> dict:
    """Measure every point; the report is rewritten after each (complete: false). Returns the final report."""
    if settings.preset != "demo":
        raise ValueError("the frontier runs on the demo preset's bundled sample")
    if settings.calibrate_on == "sample" and settings.offset + settings.limit + settings.calibration_limit > 1000:
        raise ValueError("--offset + --limit + --calibration-limit must not exceed the bundled sample's 1000 images")
    if settings.exemplar_start and settings.restarts < 2:
        raise ValueError("--exemplar-start sets the starts after the first: it needs --restarts 2 or more")
    start = time.perf_counter()
    preset = get_preset(settings.preset)
    encoder, bank = preset.load_encoder(device=device), preset.label_bank()
    witness = witness_spec(settings, preset)
    relaxed = relaxed_suite_inputs(settings, len(bank), device) if witness is not None and settings.suite_steps else None
    text = bank.embeddings(encoder)
    images, labels = load_sample().tensors(slice(settings.offset, settings.offset + settings.limit))
    calibration = calibration_images(settings, preset.work_size, device)
    targets = pick_targets(labels.tolist(), len(bank), seed=settings.seed)
    exemplars = exemplar_images(settings, images, targets).to(device) if settings.exemplar_start else None
    images = images.to(device)  # labels and targets stay on the CPU
    eps = parse_fraction(settings.eps)
    illusions = illusion_attack(images, cosine_objective(encoder.embed_images, text[targets]), AttackConfig(eps=eps, steps=settings.steps, seed=settings.seed))
    with torch.no_grad():
        undefended_top1 = float(((encoder.embed_images(images) @ text.T).argmax(-1).cpu() == labels).float().mean())
    attack = detect_adaptive_config(settings)

    def report(results, sanity, complete: bool) -> dict:
        # Written after every point too (complete: false): a long sweep keeps what it measured.
        config = {"job": "frontier", **asdict(settings), "device": str(device)}
        return {
            "config": {**config, "eps": eps, "undefended_top1": undefended_top1, "seconds": round(time.perf_counter() - start, 1),
                       "threads": torch.get_num_threads(), "device_name": device_name, "complete": complete},
            "points": [{"kind": r.point.kind, "parameter": PARAMETERS[r.point.kind], "value": r.point.value, "n": r.point.n,
                        **({"model": r.point.model} if r.point.model else {}), "thresholds": r.thresholds, "calibration_fpr": r.calibration_fpr,
                        "metrics": r.metrics, "meets_target": meets_target(r, undefended_top1), "seconds": round(r.seconds, 1)} for r in results],
            "sanity": sanity,
        }

    results = []
    for point in points(settings):
        result = run_point(point, preset, encoder, bank, calibration_images=calibration, images=images, labels=labels, targets=targets,
                           illusions=illusions, attack=attack, attack_images=min(settings.attack_limit, settings.limit),
                           target_fpr=settings.target_fpr, seed=settings.seed, dm_attack_steps=settings.dm_attack_steps, batch_size=settings.batch_size, device=device,
                           witness=witness, on_uncertain=settings.on_uncertain, relaxed=relaxed, public_seed=settings.public_seed,
                           transfer_from=settings.transfer_from, detect_queries=settings.detect_queries, detect_apgd=settings.detect_apgd,
                           exemplars=exemplars)
        results.append(result)
        log.info("%s: %.0f s", point.label, result.seconds)
        echo(summary_line(result, undefended_top1))
        write_tables(report(results, [], complete=False), settings.json, settings.markdown, markdown)
    sanity = []
    if settings.sanity:
        for entry in pipeline_sanity(settings, results[0], preset, encoder, bank, images, targets, attack, device, witness, exemplars):
            sanity.append(entry)
            echo(f"sanity {entry['knob']}={entry['value']:.4g}: purify {entry['target_purify']:.3f} drop {entry['target_drop']:.3f}")
            write_tables(report(results, sanity, complete=False), settings.json, settings.markdown, markdown)
    if settings.suite_sanity and relaxed is not None:
        count = min(settings.attack_limit, settings.limit, SANITY_IMAGES)
        sanity += relaxed_sanity(results[0], encoder, load_encoder(witness, device=device), text, relaxed, images[:count], targets[:count], settings.batch_size,
                                 lambda: write_tables(report(results, sanity, complete=False), settings.json, settings.markdown, markdown), echo)
    final = report(results, sanity, complete=True)
    write_tables(final, settings.json, settings.markdown, markdown)
    if settings.plot:
        plot(final, settings.plot)
    return final


def detect_adaptive_config(settings: FrontierSettings) -> DetectAdaptiveConfig:
    """The detect-adaptive attacker the settings ask for. Its default step grows with the budget:
    at 1/255, 100 steps cannot even cross a 255/255 ball."""
    eps = parse_fraction(settings.eps)
    step_size = parse_fraction(settings.detect_step_size) if settings.detect_step_size else max(1 / 255, eps / 20)
    return DetectAdaptiveConfig(eps=eps, step_size=step_size, steps=settings.detect_steps, eot=settings.eot, restarts=settings.restarts,
                                seed=settings.seed, straight_through=settings.straight_through)


def pipeline_sanity(settings: FrontierSettings, first, preset, encoder, bank, images, targets, attack: DetectAdaptiveConfig, device,
                    witness: str | None, exemplars: torch.Tensor | None):
    """The detect-adaptive attacker's sanity grid at the first point (`frontier.attack_sanity`): eps
    4-64/255, a quarter and twice its steps and EOT draws, and 5 starts; one entry per budget."""
    count = min(settings.attack_limit, settings.limit)
    return attack_sanity(first.point, preset, encoder, bank, images=images[:count], targets=targets[:count], attack=attack,
                         policy=VerdictPolicy(**first.thresholds), eps_values=[4 / 255, 16 / 255, 64 / 255],
                         step_values=[settings.detect_steps // 4, settings.detect_steps, 2 * settings.detect_steps],
                         eot_values=[max(1, settings.eot // 4), settings.eot, 2 * settings.eot],
                         restart_values=[5] if settings.restarts < 5 else [], seed=settings.seed, batch_size=settings.batch_size,
                         device=device, witness=witness, on_uncertain=settings.on_uncertain, public_seed=settings.public_seed,
                         exemplars=None if exemplars is None else exemplars[:count])


def calibration_images(settings: FrontierSettings, work_size: int, device) -> dict[str, torch.Tensor]:
    """Held-out clean images for each point's thresholds, stored by each scraper pipeline asked for."""
    if settings.calibrate_on == "sample":
        calibration, _ = load_sample().tensors(slice(1000 - settings.calibration_limit, 1000))
    else:
        calibration, _ = load_split("t10k").tensors(held_out_test_indices()[: settings.calibration_limit])
    return {encoding: torch.stack(stored_at_working_size(calibration, encoding, work_size, random.Random(settings.seed))).to(device)
            for encoding in settings.encodings.split(",")}


SANITY_IMAGES = 100  # the relaxed suite's sanity curves run on the first 100 attacked images


def exemplar_images(settings: FrontierSettings, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per attacked image (`images`, N x C x H x W), clean images of its target class that no figure
    is reported on (the bundled sample's images outside the evaluated ones, and the calibration
    ones when they come from the sample): N x k x C x H x W. `nearest`: k = restarts - 1, those
    an L-inf step of --eps brings closest (the least L2 distance left beyond the budget) first;
    `random`: k = 1, drawn with the seed."""
    sample = load_sample()
    excluded = set(range(settings.offset, settings.offset + settings.limit))
    if settings.calibrate_on == "sample":
        excluded |= set(range(len(sample.labels) - settings.calibration_limit, len(sample.labels)))
    pool = {c: [i for i, label in enumerate(sample.labels.tolist()) if label == c and i not in excluded] for c in set(targets.tolist())}
    if settings.exemplar_choice == "random":
        rng = random.Random(settings.seed)
        chosen, _ = sample.tensors([rng.choice(pool[t]) for t in targets.tolist()])
        return chosen[:, None]
    eps, count = parse_fraction(settings.eps), settings.restarts - 1
    candidates = {c: sample.tensors(indices)[0] for c, indices in pool.items()}  # decoded once per class
    picked = []
    for image, target in zip(images, targets.tolist()):
        beyond = ((candidates[target] - image).abs() - eps).clamp(min=0).flatten(1).norm(dim=1)
        picked.append(candidates[target][beyond.argsort(stable=True)[:count]])
    return torch.stack(picked)


def witness_spec(settings: FrontierSettings, preset) -> str | None:
    """The witness in the verdict (a model spec): none without --witness, else --witness-model or the preset's."""
    if not settings.witness:
        if settings.witness_model:
            raise ValueError("--witness-model needs --witness")
        return None
    spec = settings.witness_model or preset.witness
    if spec is None:
        raise ValueError(f"preset {preset.name!r} has no witness: give one with --witness-model SPEC")
    return spec


def relaxed_sanity(first, encoder, witness, text, relaxed, images, targets, batch_size: int, save, echo=print) -> list[dict]:
    """The relaxed suite's sanity curves at the first point, with the loss chosen there."""
    config, chosen = relaxed.config, first.metrics["witness-relaxed"]["chosen"]
    condition = relaxed_pass(encoder, witness, text, first.thresholds, targets)
    entries = []
    for entry in sanity_curves(condition, images, config, chosen["weight"], chosen["limit"], batch_size):
        entries.append({**entry, "knob": f"relaxed {entry['knob']}"})
        echo(f"sanity {entries[-1]['knob']}={entry['value']:.4g}: passed {entry['passed']}/{entry['images']}")
        save()
    return entries


def relaxed_suite_inputs(settings: FrontierSettings, labels: int, device):
    """The relaxed suite's settings and selection images (`witness_attack.Selection`)."""
    if settings.select_offset < settings.offset + settings.limit and settings.offset < settings.select_offset + settings.select_limit:
        raise ValueError("the selection images (--select-offset/--select-limit) overlap the reported ones (--offset/--limit)")
    images, labels_ = load_sample().tensors(slice(settings.select_offset, settings.select_offset + settings.select_limit))
    config = SuiteConfig(eps=parse_fraction(settings.eps), steps=settings.suite_steps, restarts=settings.suite_restarts, queries=settings.suite_queries,
                         seed=settings.seed)
    return Selection(config, images.to(device), pick_targets(labels_.tolist(), labels, seed=settings.seed + 1))


def points(settings: FrontierSettings) -> list[Point]:
    values = {kind: [float(v) for v in getattr(settings, kind).split(",") if v.strip()] for kind in ("vae", "ae", "dm")}
    models = {"vae": settings.vae_model}
    return [Point(kind, value, int(n), models.get(kind)) for kind, vs in values.items() for value in vs for n in settings.n.split(",")]
