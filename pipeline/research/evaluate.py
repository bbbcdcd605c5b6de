"""`disillusion evaluate`: the paper-style table on a preset's labelled sample: defenses x inputs
(clean, the published illusion attack, the adaptive attacks) x metrics, with its settings record
(the flags) and its JSON and Markdown reports."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

import torch

from ..defense import ConsensusConfig
from ..presets import get_preset
from ..sanitize.outputs import ON_UNCERTAIN
from ..settings import SettingsTable, parse_fraction, setting
from .attacks import AttackConfig, illusion_attack, pick_targets
from .attacks.adaptive import DetectAdaptiveConfig
from .attacks.illusion import cosine_objective
from .data.fashion_mnist import load_sample
from .defense_harness import (adaptive_inputs, blur_defense, detect_adaptive_inputs, evaluate_defense, jpeg_defense, none_defense,
                              reconstruction_defense, rows_as_dicts)
from .models import load_reconstructor, preset_purifier

log = logging.getLogger(__name__)

ALL_DEFENSES = ("none", "jpeg", "blur", "ae", "ae+consensus", "vae", "vae+consensus", "dm", "dm+consensus")


@dataclass(frozen=True)
class EvaluateSettings:
    preset: str = setting("demo", "the preset evaluated")
    limit: int = setting(1000, "evaluate the first K images of the sample")
    json: str | None = setting(None, "write {'rows': [...], 'ablations': [...], 'config': {...}}", metavar="FILE")
    markdown: str | None = setting(None, "also write the tables as Markdown (for EVALUATION.md)", metavar="FILE")
    defenses: str = setting(",".join(ALL_DEFENSES), "comma-separated subset of " + ",".join(ALL_DEFENSES))
    n: int = setting(10, "reconstructions per sample of the consensus defenses")
    eps: str = setting("16/255", "L-inf budget, e.g. 16/255 or 0.0627")
    steps: int = setting(300, "I-FGSM steps of the illusion attack")
    step_size: str = setting("1/255", "step of the illusion attack")
    adaptive_steps: int = setting(30, "steps of the adaptive attacks (0 skips them)")
    adaptive_limit: int | None = setting(None, "run the adaptive attacks on the first K images only")
    eot_samples: int = setting(2, "reconstructions averaged per EOT step")
    detect_steps: int = setting(200, "steps of the detect-adaptive attack on consensus defenses (0 skips it)")
    eot: int = setting(16, "reconstruction draws per step of the detect-adaptive attack")
    restarts: int = setting(1, "starts of the detect-adaptive attack (after the first: random)")
    detect_limit: int | None = setting(None, "run the detect-adaptive attack on the first K images only (default: --adaptive-limit)")
    dm_attack_steps: int | None = setting(None,
        "dm: attack through a surrogate with this many denoising steps (default: the full chain, as the defense runs it)")
    witness: bool = setting(True,
        "consensus defenses: the preset's robust witness in the verdict, as `sanitize` runs it (the attacks aim under it)")
    on_uncertain: str = setting("drop",
        "consensus defenses: what downstream gets of uncertain samples (default: nothing, as `sanitize` does)", choices=ON_UNCERTAIN)
    ablations: bool = setting(False, "also sweep N and the sampling scale for vae+consensus")
    batch_size: int = setting(100, "images per attack and defense call")
    seed: int = setting(0, "seed of the images chosen, the attacks and the defenses' draws")
    threads: int | None = setting(None, "torch threads (default: torch's)")


EVALUATE_SETTINGS = SettingsTable(EvaluateSettings)


def run_evaluate(settings: EvaluateSettings, device: torch.device, device_name: str, echo=print) -> dict:
    """Evaluate every defense asked for; the report is rewritten after each defense (complete: false),
    so that a long run keeps what it measured. Returns the final report."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    preset = get_preset(settings.preset)
    wanted = [d for d in settings.defenses.split(",") if d]
    unknown = set(wanted) - set(ALL_DEFENSES)
    if unknown:
        raise ValueError(f"unknown defenses {sorted(unknown)}; choose from {', '.join(ALL_DEFENSES)}")

    encoder = preset.load_encoder(device=device)
    witness = preset.witness if settings.witness else None  # a model spec, loaded by each consensus defense's purifier
    verdict = preset.verdict if witness else preset.verdict.without_witness()
    bank = preset.label_bank()
    text = bank.embeddings(encoder)
    sample = load_sample()
    count = min(settings.limit, len(sample))
    images, labels = sample.tensors(slice(0, count))
    images = images.to(device)  # labels and targets stay on the CPU, where the rows are scored
    targets = pick_targets(labels.tolist(), len(bank), seed=settings.seed)
    attack, adaptive, detect = _attacks(settings)

    start = time.perf_counter()
    illusions = _timed(f"illusion attack on {count} images", lambda: torch.cat([
        illusion_attack(images[i : i + settings.batch_size], cosine_objective(encoder.embed_images, text[targets[i : i + settings.batch_size]]), attack)
        for i in range(0, count, settings.batch_size)
    ]))

    adaptive_count = min(count, settings.adaptive_limit or count)
    detect_count = min(count, settings.detect_limit or adaptive_count)
    config = {
        **_recorded(settings, attack, adaptive, detect), "images": count, "adaptive_images": adaptive_count if adaptive else 0,
        "reconstructor_options": preset.reconstructor_options, "verdict_policy": asdict(verdict),
        "witness": witness, "threads": torch.get_num_threads(), "device": device_name,
    }
    config["detect_adaptive"]["images"] = detect_count if detect else 0

    def report(rows, ablations, complete: bool) -> dict:
        # Written after every defense too (complete: false), so that a long run keeps what it measured.
        return {"rows": rows_as_dicts(rows), "ablations": ablations,
                "config": {**config, "seconds": round(time.perf_counter() - start, 1), "complete": complete}}

    rows, adaptive_cache = [], {}
    for name in wanted:
        defense = _defense(name, preset, encoder, bank, text, settings, device, verdict, witness)
        inputs = {"clean": images, "illusion": illusions, **_attacked(defense, text, images, targets, (adaptive, adaptive_count),
                                                                      (detect, detect_count), settings.batch_size, adaptive_cache)}
        new = evaluate_defense(defense, text, inputs, labels, targets, settings.batch_size)
        echo(format_rows(new, header=not rows))
        rows += new
        write_tables(report(rows, [], complete=False), settings.json, settings.markdown, markdown_report)

    ablations = _ablations(preset, bank, text, images, labels, targets, illusions, settings, device) if settings.ablations else []
    final = report(rows, ablations, complete=True)
    write_tables(final, settings.json, settings.markdown, markdown_report)
    return final


def _attacked(defense, text, images, targets, adaptive, detect, batch_size: int, cache: dict) -> dict[str, torch.Tensor]:
    """The attacked inputs a defense faces: the adaptive (EOT) attack against its reconstructor (made
    once per reconstructor kind: `cache`), and the detect-adaptive attacker when it gives verdicts.
    `adaptive`, `detect`: (config or None when skipped, images attacked)."""
    (adaptive, adaptive_count), (detect, detect_count) = adaptive, detect
    inputs = {}
    if adaptive is not None:
        if defense.attack_key not in cache:
            cache[defense.attack_key] = _timed(f"adaptive attack against {defense.attack_key} on {adaptive_count} images", lambda: adaptive_inputs(
                defense, text, images[:adaptive_count], targets[:adaptive_count], adaptive, batch_size))
        inputs["adaptive"] = cache[defense.attack_key]
    if detect is not None and defense.detect_objective is not None:
        inputs["detect-adaptive"] = _timed(f"detect-adaptive attack against {defense.name} on {detect_count} images", lambda: detect_adaptive_inputs(
            defense, text, images[:detect_count], targets[:detect_count], detect, batch_size))
    return inputs


def _attacks(settings: EvaluateSettings) -> tuple[AttackConfig, AttackConfig | None, DetectAdaptiveConfig | None]:
    """The published attack, the adaptive (EOT) attacks' and the detect-adaptive attack's settings (None: skipped)."""
    attack = AttackConfig(eps=parse_fraction(settings.eps), step_size=parse_fraction(settings.step_size), steps=settings.steps, seed=settings.seed)
    adaptive = AttackConfig(eps=attack.eps, step_size=max(attack.step_size, attack.eps / max(1, settings.adaptive_steps) * 2.5),
                            steps=settings.adaptive_steps, seed=settings.seed) if settings.adaptive_steps else None
    detect = DetectAdaptiveConfig(eps=attack.eps, step_size=attack.step_size, steps=settings.detect_steps, eot=settings.eot,
                                  restarts=settings.restarts, seed=settings.seed) if settings.detect_steps else None
    return attack, adaptive, detect


def _recorded(settings: EvaluateSettings, attack: AttackConfig, adaptive: AttackConfig | None,
              detect: DetectAdaptiveConfig | None) -> dict:
    """The settings a report records (the run adds what it found: images, threads, device)."""
    return {
        "preset": settings.preset, "n": settings.n, "eps": attack.eps, "steps": attack.steps, "step_size": attack.step_size,
        "adaptive_steps": settings.adaptive_steps, "adaptive_step_size": adaptive.step_size if adaptive else None,
        "eot_samples": settings.eot_samples, "dm_attack_steps": settings.dm_attack_steps,
        "detect_adaptive": {"steps": settings.detect_steps, "eot": settings.eot, "restarts": settings.restarts, "images": 0,
                            "step_size": attack.step_size},
        "seed": settings.seed,
    }


def _timed(what: str, compute):
    start = time.perf_counter()
    result = compute()
    log.info("%s: %.1f s", what, time.perf_counter() - start)
    return result


def write_tables(report: dict, json_path: str | None, markdown_path: str | None, markdown) -> None:
    """The report as JSON and, rendered by `markdown`, as Markdown, where asked for."""
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(report, handle, indent=2)
    if markdown_path:
        with open(markdown_path, "w") as handle:
            handle.write(markdown(report))


def markdown_report(report: dict) -> str:
    def pct(value):
        return "" if value is None else f"{100 * value:.1f}%"

    def table(rows, leading):
        head = [*leading, "input", "Top-1", "Top-5", "ASR", "cos true", "cos target", "s / sample", "N",
                "clean / illusion / uncertain", "target downstream: purify", "drop", "keep"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            shares = " / ".join(pct(r.get(f"verdict_{v}")) for v in ("clean", "illusion", "uncertain")) if r.get("verdict_clean") is not None else ""
            cells = [str(r[k]) for k in leading] + [r["input"], pct(r["top1"]), pct(r["top5"]), pct(r["asr"]), f"{r['cos_true']:.3f}",
                                                   f"{r['cos_target']:.3f}", f"{r['sec_per_sample']:.4f}", str(r["n"]), shares,
                                                   pct(r.get("target_purify")), pct(r.get("target_drop")), pct(r.get("target_keep"))]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    config = report["config"]
    detect = config.get("detect_adaptive") or {}
    parts = [f"Images: {config['images']} (adaptive rows: {config['adaptive_images']}, detect-adaptive rows: {detect.get('images', 0)}); "
             f"eps {config['eps']:.4f}; {config['steps']} attack steps of {config['step_size']:.4f}; adaptive: {config['adaptive_steps']} "
             f"steps, EOT over {config['eot_samples']} samples; detect-adaptive: {detect.get('steps', 0)} steps, EOT over "
             f"{detect.get('eot', 0)} draws, {detect.get('restarts', 0)} start(s); {config['threads']} threads; {config.get('seconds')} s in all.",
             "", table(report["rows"], ["defense"])]
    if report["ablations"]:
        parts += ["", "Ablations (vae+consensus):", "", table(report["ablations"], ["parameter", "value"])]
    return "\n".join(parts) + "\n"


def _defense(name, preset, encoder, bank, text, settings, device, verdict, witness):
    if name == "none":
        return none_defense(encoder, text)
    if name == "jpeg":
        return jpeg_defense(encoder, text, quality=75)
    if name == "blur":
        return blur_defense(encoder, text, sigma=1.0)
    kind, _, voted = name.partition("+")
    n = settings.n if voted else 1
    consensus = ConsensusConfig(n=n, early_exit="off", top_k=len(bank), seed=settings.seed, verdict=verdict)
    purifier = preset_purifier(preset, kind, consensus, witness=witness, device=device)
    surrogate = None
    if kind == "dm" and settings.dm_attack_steps:
        # Backpropagating through the whole reverse chain is slow on CPUs: a shorter DDIM chain of the
        # same model from the same depth t* is the cheaper (and weaker) attack.
        surrogate = load_reconstructor(preset, kind, denoise_steps=settings.dm_attack_steps, device=device)
    return reconstruction_defense(name, purifier, eot_samples=settings.eot_samples, seed=settings.seed,
                                  attack_reconstructor=surrogate, on_uncertain=settings.on_uncertain)


def _ablations(preset, bank, text, images, labels, targets, illusions, settings, device) -> list[dict]:
    """vae+consensus on clean and illusion inputs: N sweep, then the posterior sampling scale at N=10."""
    out = []
    grid = [("n", n, {}) for n in (1, 3, 5, 10, 15, 20)] + [("sample_scale", s, {"sample_scale": s}) for s in (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)]
    for parameter, value, options in grid:
        n = value if parameter == "n" else settings.n
        consensus = ConsensusConfig(n=n, early_exit="off", top_k=len(bank), seed=settings.seed)
        purifier = preset_purifier(preset, "vae", consensus, device=device, **options)
        defense = reconstruction_defense("vae+consensus", purifier, eot_samples=settings.eot_samples, seed=settings.seed)
        for row in evaluate_defense(defense, text, {"clean": images, "illusion": illusions}, labels, targets, settings.batch_size):
            out.append({"parameter": parameter, "value": value, **row.__dict__})
        log.info("ablation %s=%s done", parameter, value)
    return out


def format_rows(rows, header: bool) -> str:
    """One defense's rows as the terminal shows them (the header before the first defense's)."""
    lines = []
    if header:
        lines.append(f"{'defense':<15} {'input':<15} {'top1':>6} {'top5':>6} {'asr':>6} {'cos_true':>8} {'cos_tgt':>8} {'s/img':>7} {'n':>3}"
                     f" {'flagged':>7} {'tgt:purify':>10} {'drop':>6} {'keep':>6}")
    for r in rows:
        sanitised = "" if r.verdict_illusion is None else (
            f" {r.verdict_illusion:>7.3f} {r.target_purify:>10.3f} {r.target_drop:>6.3f} {r.target_keep:>6.3f}")
        lines.append(f"{r.defense:<15} {r.input:<15} {r.top1:>6.3f} {r.top5:>6.3f} {r.asr:>6.3f} {r.cos_true:>8.3f} {r.cos_target:>8.3f} "
                     f"{r.sec_per_sample:>7.4f} {r.n:>3}{sanitised}")
    return "\n".join(lines)
