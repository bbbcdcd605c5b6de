"""`disillusion frontier`: the robustness frontier over the reconstruction's randomness (EVALUATION.md)."""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import torch

from pipeline.sanitize.outputs import ON_UNCERTAIN

from .options import add_device_argument

NAME = "frontier"
HELP = "Sweep reconstruction randomness: clean cost against a detect-adaptive attacker, thresholds recalibrated per point."
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--vae", default="0,0.5,1,1.5", help="VAE latent_noise values ('' skips the VAE)")
    parser.add_argument("--ae", default="0.5,1.5", help="AE noise_scale values")
    parser.add_argument("--dm", default="0.15,0.3", help="DM strength values")
    parser.add_argument("--n", default="10", help="reconstructions per vote, one or more values")
    parser.add_argument("--limit", type=int, default=200, help="clean evaluation images (K of the bundled sample, from --offset)")
    parser.add_argument("--offset", type=int, default=0,
                        help="skip the bundled sample's first K images: report on images no earlier choice of settings looked at")
    parser.add_argument("--witness", action="store_true",
                        help="put the preset's robust witness in the verdict (gap threshold calibrated per point); the attacker aims under it too")
    parser.add_argument("--on-uncertain", choices=ON_UNCERTAIN, default="drop",
                        help="what downstream gets of uncertain samples (default: nothing, as `sanitize` does)")
    suite = parser.add_argument_group("the relaxed suite against the witness test (with --witness)")
    suite.add_argument("--suite-steps", type=int, default=500, help="APGD steps")
    suite.add_argument("--suite-restarts", type=int, default=3, help="APGD starts (the first at the clean image)")
    suite.add_argument("--suite-queries", type=int, default=2000, help="Square attack queries (0 skips it)")
    suite.add_argument("--select-offset", type=int, default=0, help="the loss weights are chosen on the bundled sample's images from here")
    suite.add_argument("--select-limit", type=int, default=50, help="... this many (keep them apart from --offset/--limit)")
    suite.add_argument("--suite-sanity", action="store_true",
                       help="at the first point, on its first 100 attacked images, the relaxed suite's sanity curves: eps 4-64/255, "
                            "a fifth and twice --suite-steps, 5 restarts")
    parser.add_argument("--attack-limit", type=int, default=40, help="images attacked by the detect-adaptive attacker at each point")
    parser.add_argument("--calibrate-on", choices=("fashion-mnist", "sample"), default="fashion-mnist",
                        help="held-out clean images for the thresholds: Fashion-MNIST test images outside the bundled sample "
                             "(needs the dataset), or the bundled sample's second half")
    parser.add_argument("--calibration-limit", type=int, default=500)
    parser.add_argument("--encodings", default="png",
                        help="store each calibration image as these and meet the target on each (png: as is; jpeg: random size 32-256 px, "
                             "quality 70-95, as `calibrate`); png,jpeg gives the thresholds `calibrate` and `sanitize` use")
    parser.add_argument("--target-fpr", type=float, default=0.03, help="false-positive rate each point is calibrated to")
    parser.add_argument("--eps", default="16/255")
    parser.add_argument("--steps", type=int, default=100, help="steps of the published illusion")
    parser.add_argument("--detect-steps", type=int, default=200)
    parser.add_argument("--eot", type=int, default=16)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--dm-attack-steps", type=int,
                        help="dm points: attack through a surrogate with this many denoising steps (default: the full chain)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100, help="images per attack batch (memory: a dm batch keeps "
                        "batch x eot denoising chains for the gradient)")
    add_device_argument(parser)
    parser.add_argument("--sanity", action="store_true",
                        help="also check the attack at the first point: success as eps, steps and EOT draws grow")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--markdown", metavar="FILE")
    parser.add_argument("--plot", metavar="PNG")
    parser.add_argument("--from", dest="reports", metavar="FILE", nargs="+",
                        help="measure nothing: join the points of saved --json reports (runs on other machines, or of other points) "
                             "into one --json / --markdown / --plot; they must share the attack budget and the calibration")


def points(args: argparse.Namespace):
    from pipeline.research.frontier import Point

    values = {kind: [float(v) for v in getattr(args, kind).split(",") if v.strip()] for kind in ("vae", "ae", "dm")}
    return [Point(kind, value, int(n)) for kind, vs in values.items() for value in vs for n in args.n.split(",")]


def run(args: argparse.Namespace) -> int:
    if args.reports:
        return join(args)
    from pipeline.presets import get_preset
    from pipeline.research.attacks import AttackConfig, illusion_attack, pick_targets
    from pipeline.research.attacks.adaptive import DetectAdaptiveConfig
    from pipeline.research.attacks.illusion import cosine_objective
    from pipeline.research.data.encodings import stored_at_working_size
    from pipeline.research.data.fashion_mnist import held_out_test_indices, load_sample, load_split
    from pipeline.research.frontier import PARAMETERS, meets_target, run_point
    from pipeline.settings import parse_fraction

    from .options import describe_device, resolve_device
    from pipeline.research.evaluate import write_tables

    if args.preset != "demo":
        raise ValueError("the frontier runs on the demo preset's bundled sample")
    if args.calibrate_on == "sample" and args.offset + args.limit + args.calibration_limit > 1000:
        raise ValueError("--offset + --limit + --calibration-limit must not exceed the bundled sample's 1000 images")
    start = time.perf_counter()
    preset = get_preset(args.preset)
    device = resolve_device(args.device)
    encoder, bank = preset.load_encoder(device=device), preset.label_bank()
    witness = preset.load_witness(device=device) if args.witness else None
    relaxed = relaxed_suite_inputs(args, len(bank), device) if witness is not None else None
    text = bank.embeddings(encoder)
    sample = load_sample()
    images, labels = sample.tensors(slice(args.offset, args.offset + args.limit))
    if args.calibrate_on == "sample":
        calibration, _ = sample.tensors(slice(1000 - args.calibration_limit, 1000))
    else:
        calibration, _ = load_split("t10k").tensors(held_out_test_indices()[: args.calibration_limit])
    calibration = {encoding: torch.stack(stored_at_working_size(calibration, encoding, preset.work_size, random.Random(args.seed))).to(device)
                   for encoding in args.encodings.split(",")}
    images = images.to(device)  # labels and targets stay on the CPU
    targets = pick_targets(labels.tolist(), len(bank), seed=args.seed)
    eps = parse_fraction(args.eps)
    illusions = illusion_attack(images, cosine_objective(encoder.embed_images, text[targets]), AttackConfig(eps=eps, steps=args.steps, seed=args.seed))
    with torch.no_grad():
        undefended_top1 = float(((encoder.embed_images(images) @ text.T).argmax(-1).cpu() == labels).float().mean())
    attack = DetectAdaptiveConfig(eps=eps, steps=args.detect_steps, eot=args.eot, restarts=args.restarts, seed=args.seed)

    def report(results, sanity, complete: bool) -> dict:
        # Written after every point too (complete: false): a long sweep keeps what it measured.
        config = {k: v for k, v in vars(args).items() if k != "run"}
        return {
            "config": {**config, "eps": eps, "undefended_top1": undefended_top1, "seconds": round(time.perf_counter() - start, 1),
                       "threads": torch.get_num_threads(), "device_name": describe_device(device), "complete": complete},
            "points": [{"kind": r.point.kind, "parameter": PARAMETERS[r.point.kind],
                        "value": r.point.value, "n": r.point.n, "thresholds": r.thresholds, "calibration_fpr": r.calibration_fpr,
                        "metrics": r.metrics, "meets_target": meets_target(r, undefended_top1), "seconds": round(r.seconds, 1)} for r in results],
            "sanity": sanity,
        }

    results = []
    for point in points(args):
        result = run_point(point, preset, encoder, bank, calibration_images=calibration, images=images, labels=labels, targets=targets,
                           illusions=illusions, attack=attack, attack_images=min(args.attack_limit, args.limit),
                           target_fpr=args.target_fpr, seed=args.seed, dm_attack_steps=args.dm_attack_steps, batch_size=args.batch_size, device=device,
                           witness=witness, on_uncertain=args.on_uncertain, relaxed=relaxed)
        results.append(result)
        log.info("%s: %.0f s", point.label, result.seconds)
        print(summary_line(result, undefended_top1), flush=True)
        write_tables(report(results, [], complete=False), args.json, args.markdown, markdown)
    sanity = []
    if args.sanity:
        from pipeline.defense import VerdictPolicy
        from pipeline.research.frontier import attack_sanity

        first = results[0]
        count = min(args.attack_limit, args.limit)
        grid = attack_sanity(first.point, preset, encoder, bank, images=images[:count], targets=targets[:count], attack=attack,
                             policy=VerdictPolicy(**first.thresholds), eps_values=[4 / 255, 16 / 255, 64 / 255],
                             step_values=[args.detect_steps // 4, args.detect_steps, 2 * args.detect_steps],
                             eot_values=[max(1, args.eot // 4), args.eot, 2 * args.eot], seed=args.seed, batch_size=args.batch_size,
                             device=device, witness=witness, on_uncertain=args.on_uncertain)
        for entry in grid:
            sanity.append(entry)
            print(f"sanity {entry['knob']}={entry['value']:.4g}: purify {entry['target_purify']:.3f} drop {entry['target_drop']:.3f}", flush=True)
            write_tables(report(results, sanity, complete=False), args.json, args.markdown, markdown)
    if args.suite_sanity and relaxed is not None:
        count = min(args.attack_limit, args.limit, SANITY_IMAGES)
        sanity += relaxed_sanity(results[0], encoder, witness, text, relaxed, images[:count], targets[:count], args.batch_size,
                                 lambda: write_tables(report(results, sanity, complete=False), args.json, args.markdown, markdown))
    final = report(results, sanity, complete=True)
    write_tables(final, args.json, args.markdown, markdown)
    if args.plot:
        plot(final, args.plot)
    return 0


# What makes two frontier runs comparable: the same clean images, thresholds calibrated the same way, and the same attacker.
# The number of attacked images, the batch size and the machine may differ (each point reports its own counts).
COMPARABLE = {"preset": "demo", "limit": None, "calibrate_on": "fashion-mnist", "calibration_limit": None, "encodings": "png",
              "target_fpr": None, "eps": None, "steps": None, "detect_steps": None, "eot": None, "restarts": None, "seed": None,
              "dm_attack_steps": None, "offset": 0, "witness": False, "on_uncertain": "keep", "suite_steps": None, "suite_restarts": None,
              "suite_queries": None, "select_offset": None, "select_limit": None}


SANITY_IMAGES = 100  # the relaxed suite's sanity curves run on the first 100 attacked images


def relaxed_sanity(first, encoder, witness, text, relaxed, images, targets, batch_size: int, save) -> list[dict]:
    """The relaxed suite's sanity curves at the first point, with the loss chosen there."""
    from pipeline.research.frontier import relaxed_pass
    from pipeline.research.witness_attack import sanity_curves

    config, chosen = relaxed.config, first.metrics["witness-relaxed"]["chosen"]
    condition = relaxed_pass(encoder, witness, text, first.thresholds, targets)
    entries = []
    for entry in sanity_curves(condition, images, config, chosen["weight"], chosen["limit"], batch_size):
        entries.append({**entry, "knob": f"relaxed {entry['knob']}"})
        print(f"sanity {entries[-1]['knob']}={entry['value']:.4g}: passed {entry['passed']}/{entry['images']}", flush=True)
        save()
    return entries


def relaxed_suite_inputs(args: argparse.Namespace, labels: int, device):
    """The relaxed suite's settings and selection images (`witness_attack.Selection`)."""
    from pipeline.research.attacks import pick_targets
    from pipeline.research.data.fashion_mnist import load_sample
    from pipeline.research.witness_attack import Selection, SuiteConfig
    from pipeline.settings import parse_fraction

    if args.select_offset < args.offset + args.limit and args.offset < args.select_offset + args.select_limit:
        raise ValueError("the selection images (--select-offset/--select-limit) overlap the reported ones (--offset/--limit)")
    images, labels_ = load_sample().tensors(slice(args.select_offset, args.select_offset + args.select_limit))
    config = SuiteConfig(eps=parse_fraction(args.eps), steps=args.suite_steps, restarts=args.suite_restarts, queries=args.suite_queries,
                         seed=args.seed)
    return Selection(config, images.to(device), pick_targets(labels_.tolist(), labels, seed=args.seed + 1))


def join(args: argparse.Namespace) -> int:
    """`--from`: no models load; the saved reports become one table, JSON and plot."""
    from pipeline.research.evaluate import write_tables

    joined = join_reports({path: json.loads(Path(path).read_text()) for path in args.reports})
    write_tables(joined, args.json, args.markdown, markdown)
    if args.plot:
        plot(joined, args.plot)
    print(markdown(joined), end="")
    return 0


def join_reports(reports: dict[str, dict]) -> dict:
    """One frontier report from several (keyed by file name); refuses runs that differ in what makes their points comparable."""
    def setting(report, key):
        value = report["config"].get(key)
        return COMPARABLE[key] if value is None else value

    (first_path, first), *rest = reports.items()
    for path, report in rest:
        differ = [f"{key}: {setting(first, key)!r} in {first_path}, {setting(report, key)!r} in {path}"
                  for key in COMPARABLE if setting(report, key) != setting(first, key)]
        if differ:
            raise ValueError("frontier reports measured under different settings: " + "; ".join(differ))
    points, seen = [], {}
    for path, report in reports.items():
        for point in report["points"]:
            key = (point["kind"], point["value"], point["n"])
            if key in seen:
                raise ValueError(f"point {point['kind']} {point['parameter']}={point['value']:g}, N={point['n']} is in both {seen[key]} and {path}")
            seen[key] = path
            points.append({**point, "source": path})
    sources = [{"file": path, "device_name": report["config"].get("device_name"), "attack_limit": report["config"].get("attack_limit"),
                "seconds": report["config"].get("seconds"), "complete": report["config"].get("complete", True)} for path, report in reports.items()]
    config = {key: setting(first, key) for key in COMPARABLE}
    config.update(undefended_top1=first["config"]["undefended_top1"], sources=sources, complete=all(s["complete"] for s in sources))
    return {"config": config, "points": points, "sanity": []}


def summary_line(result, undefended_top1: float) -> str:
    clean, attacked = result.metrics["clean"], result.metrics["detect-adaptive"]
    return (f"{result.point.label:<32} clean top1 {clean['top1']:.3f} (undefended {undefended_top1:.3f}) flagged {clean['flagged']:.3f} | "
            f"detect-adaptive to target: purify {attacked['target_purify']:.3f} drop {attacked['target_drop']:.3f} keep {attacked['target_keep']:.3f}")


def markdown(report: dict) -> str:
    def pct(value):
        return f"{100 * value:.1f}%"

    def share(entry, policy):
        low, high = entry[f"target_{policy}_ci"]
        return f"{pct(entry[f'target_{policy}'])} [{pct(low)}, {pct(high)}]"

    def threshold(value):
        return "-" if value is None else f"{value:.3f}"

    lines = ["| point | max drift | max witness gap / margin | clean Top-1 | downstream (drop) | clean flagged | clean uncertain | illusion flagged "
             "| attacked | detect-adaptive flagged | target via purify | via drop | via keep | meets target |", "|" + "---|" * 14]
    for p in report["points"]:
        m, limits = p["metrics"], p["thresholds"]
        attacked, clean = m["detect-adaptive"], m["clean"]
        downstream = clean.get("top1_downstream_drop")  # absent from reports before 2026-11-27
        lines.append(f"| {p['kind']} {p['parameter']}={p['value']:g}, N={p['n']} | {threshold(limits['max_drift'])} "
                     f"| {threshold(limits.get('max_witness_gap'))} / {threshold(limits.get('max_witness_margin'))} | {pct(clean['top1'])} | {'-' if downstream is None else pct(downstream)} "
                     f"| {pct(clean['flagged'])} | {pct(clean['uncertain'])} | {pct(m['illusion']['flagged'])} | {attacked['images']} "
                     f"| {pct(attacked['flagged'])} "
                     f"| {share(attacked, 'purify')} | {share(attacked, 'drop')} | {share(attacked, 'keep')} | {'yes' if p['meets_target'] else 'no'} |")
    relaxed = [p for p in report["points"] if "witness-relaxed" in p["metrics"]]
    if relaxed:
        lines += ["", "| point | relaxed suite vs the witness tests: images | passed (any attack) | APGD | Square | loss chosen on |",
                  "|---|---|---|---|---|---|"]
        for p in relaxed:
            r = p["metrics"]["witness-relaxed"]
            low, high = r["passed_ci"]
            lines.append(f"| {p['kind']} {p['parameter']}={p['value']:g}, N={p['n']} | {r['images']} | {pct(r['passed'])} [{pct(low)}, {pct(high)}] "
                         f"| {pct(r['per_attack']['apgd'])} | {pct(r['per_attack']['square'])} "
                         f"| {r['chosen']['images']} other images: w={r['chosen']['weight']:g}, aim {r['chosen']['limit']:g} x threshold |")
    curves = [e for e in report.get("sanity", []) if e["knob"].startswith("relaxed")]
    if curves:
        lines += ["", "| relaxed suite budget (first point) | value | passed |", "|---|---|---|"]
        for entry in curves:
            value = f"{255 * entry['value']:.0f}/255" if entry["knob"] == "relaxed eps" else f"{entry['value']:g}"
            lines.append(f"| {entry['knob']} | {value} | {entry['passed']}/{entry['images']} |")
    pipeline_sanity = [e for e in report.get("sanity", []) if not e["knob"].startswith("relaxed")]
    if pipeline_sanity:
        lines += ["", "| attack budget (first point) | value | target via purify | via drop | flagged |", "|---|---|---|---|---|"]
        for entry in pipeline_sanity:
            value = f"{255 * entry['value']:.0f}/255" if entry["knob"] == "eps" else f"{entry['value']:g}"
            lines.append(f"| {entry['knob']} | {value} | {pct(entry['target_purify'])} | {pct(entry['target_drop'])} | {pct(entry['flagged'])} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    """Clean Top-1 against what the detect-adaptive attacker delivers downstream (purify, drop), per point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 5))
    markers = {"vae": "o", "ae": "s", "dm": "^"}
    for policy, colour in (("purify", "tab:red"), ("drop", "tab:blue")):
        for p in report["points"]:
            entry, top1 = p["metrics"]["detect-adaptive"], p["metrics"]["clean"]["top1"]
            low, high = entry[f"target_{policy}_ci"]
            y = entry[f"target_{policy}"]
            axis.errorbar(100 * top1, 100 * y, yerr=[[100 * (y - low)], [100 * (high - y)]], fmt=markers[p["kind"]], color=colour,
                          capsize=3, label=policy if p is report["points"][0] else None)
            if policy == "purify":
                axis.annotate(f"{p['kind']} {p['value']:g}", (100 * top1, 100 * y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axis.axhline(10, color="grey", linestyle="--", linewidth=1)
    axis.axvline(100 * (report["config"]["undefended_top1"] - 0.05), color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("clean Top-1 with the defense (%)")
    axis.set_ylabel("detect-adaptive illusions reaching downstream as the target (%)")
    config = report["config"]
    axis.set_title(f"Robustness frontier (demo preset; thresholds recalibrated per point;\n"
                   f"detect-adaptive attacker: {config['detect_steps']} steps x {config['eot']} EOT draws)", fontsize=10)
    axis.legend(title="policy")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
