"""`disillusion evaluate`: the paper-style table on a preset's labelled sample."""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict

import torch

from pipeline.sanitize.outputs import ON_UNCERTAIN
from pipeline.settings import parse_fraction

from .options import add_consensus_settings, add_device_argument

NAME = "evaluate"
HELP = "Evaluate defenses against clean, illusion and adaptive inputs (Top-1/Top-5, ASR, cosines, time)."
log = logging.getLogger(__name__)

ALL_DEFENSES = ("none", "jpeg", "blur", "ae", "ae+consensus", "vae", "vae+consensus", "dm", "dm+consensus")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--limit", type=int, default=1000, help="evaluate the first K images of the sample")
    parser.add_argument("--json", metavar="FILE", help="write {'rows': [...], 'ablations': [...], 'config': {...}}")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown (for EVALUATION.md)")
    parser.add_argument("--defenses", default=",".join(ALL_DEFENSES), help="comma-separated subset of " + ",".join(ALL_DEFENSES))
    add_consensus_settings(parser, ("n",))
    parser.add_argument("--eps", default="16/255", help="L-inf budget, e.g. 16/255 or 0.0627")
    parser.add_argument("--steps", type=int, default=300, help="I-FGSM steps of the illusion attack")
    parser.add_argument("--step-size", default="1/255")
    parser.add_argument("--adaptive-steps", type=int, default=30, help="steps of the adaptive attacks (0 skips them)")
    parser.add_argument("--adaptive-limit", type=int, default=None, help="run the adaptive attacks on the first K images only")
    parser.add_argument("--eot-samples", type=int, default=2, help="reconstructions averaged per EOT step")
    parser.add_argument("--detect-steps", type=int, default=200, help="steps of the detect-adaptive attack on consensus defenses (0 skips it)")
    parser.add_argument("--eot", type=int, default=16, help="reconstruction draws per step of the detect-adaptive attack")
    parser.add_argument("--restarts", type=int, default=1, help="starts of the detect-adaptive attack (after the first: random)")
    parser.add_argument("--detect-limit", type=int, default=None, help="run the detect-adaptive attack on the first K images only (default: --adaptive-limit)")
    parser.add_argument("--dm-attack-steps", type=int,
                        help="dm: attack through a surrogate with this many denoising steps (default: the full chain, as the defense runs it)")
    parser.add_argument("--witness", action=argparse.BooleanOptionalAction, default=True,
                        help="consensus defenses: the preset's robust witness in the verdict, as `sanitize` runs it (the attacks aim under it)")
    parser.add_argument("--on-uncertain", choices=ON_UNCERTAIN, default="drop",
                        help="consensus defenses: what downstream gets of uncertain samples (default: nothing, as `sanitize` does)")
    parser.add_argument("--ablations", action="store_true", help="also sweep N and the sampling scale for vae+consensus")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="seed of the images chosen, the attacks and the defenses' draws (default 0)")
    parser.add_argument("--threads", type=int, default=None)
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from pipeline.presets import get_preset
    from pipeline.research.attacks import AttackConfig, illusion_attack, pick_targets
    from pipeline.research.attacks.adaptive import DetectAdaptiveConfig
    from pipeline.research.attacks.illusion import cosine_objective
    from pipeline.research.data.fashion_mnist import load_sample
    from pipeline.research.evaluation import adaptive_inputs, detect_adaptive_inputs, evaluate_defense, rows_as_dicts

    from .options import describe_device, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    wanted = [d for d in args.defenses.split(",") if d]
    unknown = set(wanted) - set(ALL_DEFENSES)
    if unknown:
        raise ValueError(f"unknown defenses {sorted(unknown)}; choose from {', '.join(ALL_DEFENSES)}")

    device = resolve_device(args.device)
    encoder = preset.load_encoder(device=device)
    witness = preset.load_witness(device=device) if args.witness and preset.witness else None
    verdict = preset.verdict if witness else preset.verdict.without_witness()
    bank = preset.label_bank()
    text = bank.embeddings(encoder)
    sample = load_sample()
    count = min(args.limit, len(sample))
    images, labels = sample.tensors(slice(0, count))
    images = images.to(device)  # labels and targets stay on the CPU, where the rows are scored
    targets = pick_targets(labels.tolist(), len(bank), seed=args.seed)
    attack = AttackConfig(eps=parse_fraction(args.eps), step_size=parse_fraction(args.step_size), steps=args.steps, seed=args.seed)
    adaptive = AttackConfig(eps=attack.eps, step_size=max(attack.step_size, attack.eps / max(1, args.adaptive_steps) * 2.5), steps=args.adaptive_steps, seed=args.seed) if args.adaptive_steps else None

    start = attack_start = time.perf_counter()
    illusions = torch.cat([
        illusion_attack(images[i : i + args.batch_size], cosine_objective(encoder.embed_images, text[targets[i : i + args.batch_size]]), attack)
        for i in range(0, count, args.batch_size)
    ])
    log.info("illusion attack on %d images: %.1f s", count, time.perf_counter() - attack_start)

    detect = DetectAdaptiveConfig(eps=attack.eps, step_size=attack.step_size, steps=args.detect_steps, eot=args.eot,
                                  restarts=args.restarts, seed=args.seed) if args.detect_steps else None
    adaptive_count = min(count, args.adaptive_limit or count)
    detect_count = min(count, args.detect_limit or adaptive_count)
    config = {
        "preset": args.preset, "images": count, "n": args.n, "eps": attack.eps, "steps": attack.steps,
        "step_size": attack.step_size, "adaptive_steps": args.adaptive_steps, "adaptive_images": adaptive_count if adaptive else 0,
        "adaptive_step_size": adaptive.step_size if adaptive else None, "eot_samples": args.eot_samples,
        "dm_attack_steps": args.dm_attack_steps, "reconstructor_options": preset.reconstructor_options,
        "detect_adaptive": {"steps": args.detect_steps, "eot": args.eot, "restarts": args.restarts, "images": detect_count if detect else 0,
                            "step_size": attack.step_size},
        "verdict_policy": asdict(verdict), "witness": preset.witness if witness else None,
        "seed": args.seed, "threads": torch.get_num_threads(), "device": describe_device(device),
    }

    def report(rows, ablations, complete: bool) -> dict:
        # Written after every defense too (complete: false), so that a long run keeps what it measured.
        return {"rows": rows_as_dicts(rows), "ablations": ablations,
                "config": {**config, "seconds": round(time.perf_counter() - start, 1), "complete": complete}}

    rows, adaptive_cache = [], {}
    for name in wanted:
        defense = _defense(name, preset, encoder, bank, text, args, device, verdict, witness)
        inputs = {"clean": images, "illusion": illusions}
        if adaptive is not None:
            if defense.attack_key not in adaptive_cache:
                adaptive_start = time.perf_counter()
                adaptive_cache[defense.attack_key] = adaptive_inputs(defense, text, images[:adaptive_count], targets[:adaptive_count], adaptive, args.batch_size)
                log.info("adaptive attack against %s on %d images: %.1f s", defense.attack_key, adaptive_count, time.perf_counter() - adaptive_start)
            inputs["adaptive"] = adaptive_cache[defense.attack_key]
        if detect is not None and defense.detect_objective is not None:
            detect_start = time.perf_counter()
            inputs["detect-adaptive"] = detect_adaptive_inputs(defense, text, images[:detect_count], targets[:detect_count], detect, args.batch_size)
            log.info("detect-adaptive attack against %s on %d images: %.1f s", defense.name, detect_count, time.perf_counter() - detect_start)
        new = evaluate_defense(defense, text, inputs, labels, targets, args.batch_size)
        _print_rows(new, header=not rows)
        rows += new
        write_report(report(rows, [], complete=False), args.json, args.markdown, markdown_report)

    ablations = _ablations(preset, encoder, bank, text, images, labels, targets, illusions, args, device) if args.ablations else []
    write_report(report(rows, ablations, complete=True), args.json, args.markdown, markdown_report)
    return 0


def write_report(report: dict, json_path: str | None, markdown_path: str | None, markdown) -> None:
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


def _defense(name, preset, encoder, bank, text, args, device, verdict, witness):
    from pipeline.research.evaluation import blur_defense, jpeg_defense, none_defense, reconstruction_defense
    from pipeline.research.models import load_reconstructor

    if name == "none":
        return none_defense(encoder, text)
    if name == "jpeg":
        return jpeg_defense(encoder, text, quality=75)
    if name == "blur":
        return blur_defense(encoder, text, sigma=1.0)
    kind, _, consensus = name.partition("+")
    reconstructor = load_reconstructor(preset, kind, device=device)
    surrogate = None
    if kind == "dm" and args.dm_attack_steps:
        # Backpropagating through the whole reverse chain is slow on CPUs: a shorter DDIM chain of the
        # same model from the same depth t* is the cheaper (and weaker) attack.
        surrogate = load_reconstructor(preset, kind, denoise_steps=args.dm_attack_steps, device=device)
    return reconstruction_defense(
        name, reconstructor, encoder, bank, n=args.n if consensus else 1, eot_samples=args.eot_samples, seed=args.seed,
        attack_reconstructor=surrogate, verdict=verdict, witness=witness, on_uncertain=args.on_uncertain,
    )


def _ablations(preset, encoder, bank, text, images, labels, targets, illusions, args, device) -> list[dict]:
    """vae+consensus on clean and illusion inputs: N sweep, then the posterior sampling scale at N=10."""
    from pipeline.research.evaluation import evaluate_defense, reconstruction_defense
    from pipeline.research.models import load_reconstructor

    out = []
    settings = [("n", n, {}) for n in (1, 3, 5, 10, 15, 20)] + [("sample_scale", s, {"sample_scale": s}) for s in (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)]
    for parameter, value, options in settings:
        n = value if parameter == "n" else args.n
        defense = reconstruction_defense("vae+consensus", load_reconstructor(preset, "vae", **options, device=device), encoder, bank, n=n, eot_samples=args.eot_samples, seed=args.seed)
        for row in evaluate_defense(defense, text, {"clean": images, "illusion": illusions}, labels, targets, args.batch_size):
            out.append({"parameter": parameter, "value": value, **row.__dict__})
        log.info("ablation %s=%s done", parameter, value)
    return out


def _print_rows(rows, header: bool) -> None:
    if header:
        print(f"{'defense':<15} {'input':<15} {'top1':>6} {'top5':>6} {'asr':>6} {'cos_true':>8} {'cos_tgt':>8} {'s/img':>7} {'n':>3}"
              f" {'flagged':>7} {'tgt:purify':>10} {'drop':>6} {'keep':>6}")
    for r in rows:
        sanitised = "" if r.verdict_illusion is None else (
            f" {r.verdict_illusion:>7.3f} {r.target_purify:>10.3f} {r.target_drop:>6.3f} {r.target_keep:>6.3f}")
        print(f"{r.defense:<15} {r.input:<15} {r.top1:>6.3f} {r.top5:>6.3f} {r.asr:>6.3f} {r.cos_true:>8.3f} {r.cos_target:>8.3f} "
              f"{r.sec_per_sample:>7.4f} {r.n:>3}{sanitised}", flush=True)
