"""The frontier's reports: joining saved runs into one report (`disillusion frontier --from`), the
summary line, the Markdown tables and the plot (EVALUATION.md)."""

from __future__ import annotations


def join_reports(reports: dict[str, dict], comparable: dict[str, object]) -> dict:
    """One frontier report from several (keyed by file name); refuses runs that differ in a setting of
    `comparable` (setting -> what a report without it stands for; frontier_run.COMPARABLE)."""
    def setting(report, key):
        value = report["config"].get(key)
        return comparable[key] if value is None else value

    (first_path, first), *rest = reports.items()
    for path, report in rest:
        differ = [f"{key}: {setting(first, key)!r} in {first_path}, {setting(report, key)!r} in {path}"
                  for key in comparable if setting(report, key) != setting(first, key)]
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
    config = {key: setting(first, key) for key in comparable}
    config.update(undefended_top1=first["config"]["undefended_top1"], sources=sources, complete=all(s["complete"] for s in sources))
    return {"config": config, "points": points, "sanity": []}


def summary_line(result, undefended_top1: float) -> str:
    clean, attacked = result.metrics["clean"], result.metrics["detect-adaptive"]
    line = (f"{result.point.label:<32} clean top1 {clean['top1']:.3f} (undefended {undefended_top1:.3f}) flagged {clean['flagged']:.3f} | "
            f"detect-adaptive to target: purify {attacked['target_purify']:.3f} drop {attacked['target_drop']:.3f} keep {attacked['target_keep']:.3f}")
    for name in ("detect-square", "detect-apgd", "strongest"):
        if name in result.metrics:
            line += f" | {name}: purify {result.metrics[name]['target_purify']:.3f} drop {result.metrics[name]['target_drop']:.3f}"
    return line


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
    queried = [p for p in report["points"] if "strongest" in p["metrics"]]
    if queried:
        others = [(name, title) for name, title in (("detect-square", "queries (detect-square)"), ("detect-apgd", "APGD (detect-apgd)"))
                  if any(name in p["metrics"] for p in queried)]
        lines += ["", "| point | attacked | gradient (detect-adaptive) via drop | " + " | ".join(f"{title} via drop" for _, title in others)
                  + " | the best per image: via purify | via drop |", "|---|---|---|" + "---|" * len(others) + "---|---|"]
        for p in queried:
            m = p["metrics"]
            lines.append(f"| {p['kind']} {p['parameter']}={p['value']:g}, N={p['n']} | {m['strongest']['images']} "
                         f"| {share(m['detect-adaptive'], 'drop')} | "
                         + " | ".join(share(m[name], "drop") if name in m else "-" for name, _ in others)
                         + f" | {share(m['strongest'], 'purify')} | {share(m['strongest'], 'drop')} |")
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
