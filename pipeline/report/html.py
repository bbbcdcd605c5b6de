"""One self-contained HTML page: inline CSS and SVG, images as data URIs, no script and nothing
fetched from a network, so it opens anywhere a browser does (an air-gapped audit included)."""

from __future__ import annotations

import html
import time
from typing import Any

import numpy as np

from ..defense import VerdictPolicy
from .stats import OUTCOMES, SHARD_ROWS, CorpusStats, Histogram

COLOURS = {"clean": "#4c9a6a", "uncertain": "#d9a441", "illusion": "#c2453d"}
WIDTH, HEIGHT, PAD = 500, 220, 36

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; } td.text, th.text { text-align: left; }
.counts td { font-size: 16px; } .problem { color: #b00020; }
.plots { display: flex; flex-wrap: wrap; gap: 24px; } figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 16px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 10px; }
.card img { width: 88px; height: 88px; image-rendering: pixelated; border: 1px solid #ccc; }
.row { display: flex; gap: 6px; align-items: flex-start; } .cell { text-align: center; font-size: 11px; width: 90px; overflow-wrap: anywhere; }
.legend span { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _x(value: float, low: float, high: float) -> float:
    return PAD + (value - low) / (high - low) * (WIDTH - 2 * PAD)


def histogram_svg(hist: Histogram, thresholds: list[tuple[float, str]], label: str) -> str:
    """Stacked bars per outcome; dashed lines at the thresholds."""
    totals = np.sum([hist.counts.get(o, np.zeros(hist.bins)) for o in OUTCOMES], axis=0)
    top = max(1, int(totals.max()))
    edges, plot_h = hist.edges, HEIGHT - 2 * PAD
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{esc(label)}">',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>']
    for b in range(hist.bins):
        x0, x1, base = _x(edges[b], hist.low, hist.high), _x(edges[b + 1], hist.low, hist.high), 0.0
        for outcome in OUTCOMES:
            count = int(hist.counts.get(outcome, [0] * hist.bins)[b])
            if not count:
                continue
            h = count / top * plot_h
            y = HEIGHT - PAD - base - h
            parts.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(0.5, x1 - x0 - 1):.1f}" height="{h:.1f}" fill="{COLOURS[outcome]}">'
                         f"<title>{esc(outcome)}: {count} in [{edges[b]:.3f}, {edges[b + 1]:.3f})</title></rect>")
            base += h
    for value, name in thresholds:
        x = _x(min(value, hist.high), hist.low, hist.high)
        parts.append(f'<line x1="{x:.1f}" y1="{PAD - 8}" x2="{x:.1f}" y2="{HEIGHT - PAD}" stroke="#222" stroke-dasharray="4 3"/>'
                     f'<text x="{x + 3:.1f}" y="{PAD - 10}" font-size="11">{esc(name)} {value:.3f}</text>')
    for value in (hist.low, (hist.low + hist.high) / 2, hist.high):
        parts.append(f'<text x="{_x(value, hist.low, hist.high):.1f}" y="{HEIGHT - PAD + 14}" font-size="11" text-anchor="middle">{value:.2f}</text>')
    parts.append(f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="11" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 6}" font-size="12" text-anchor="middle">{esc(label)}</text></svg>')
    return "".join(parts)


def roc_svg(points: list[tuple[float, float]], operating: tuple[float, float] | None) -> str:
    size, inner = 260, 260 - 2 * PAD
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:]))
    path = " ".join(f"{PAD + x * inner:.1f},{size - PAD - y * inner:.1f}" for x, y in points)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img" aria-label="ROC curve">',
             f'<rect x="{PAD}" y="{PAD}" width="{inner}" height="{inner}" fill="none" stroke="#888"/>',
             f'<line x1="{PAD}" y1="{size - PAD}" x2="{size - PAD}" y2="{PAD}" stroke="#ccc" stroke-dasharray="3 3"/>',
             f'<polyline points="{path}" fill="none" stroke="#3465a4" stroke-width="2"/>',
             f'<text x="{size / 2}" y="{size - 8}" font-size="11" text-anchor="middle">false-positive rate (clean flagged)</text>',
             f'<text x="12" y="{size / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {size / 2})">true-positive rate</text>',
             f'<text x="{PAD + 6}" y="{PAD + 14}" font-size="11">AUC {area:.3f} (drift)</text>']
    if operating:
        fpr, tpr = operating
        parts.append(f'<circle cx="{PAD + fpr * inner:.1f}" cy="{size - PAD - tpr * inner:.1f}" r="4" fill="#c2453d">'
                     f"<title>the run's verdicts: {100 * tpr:.1f}% of illusions flagged, {100 * fpr:.1f}% of clean samples</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def render(stats: CorpusStats, gallery: list[dict[str, Any]], *, policy: VerdictPolicy, title: str, settings: dict[str, Any],
           summary: dict[str, Any] | None = None) -> str:
    t, examined = stats.totals, sum(stats.totals[o] for o in OUTCOMES)
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
           f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head><body>",
           f"<h1>{esc(title)}</h1><p>Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the run's manifests and "
           f"verdict tables ({t['shards']} shards).</p>",
           "<h2>Summary</h2><table class='counts'><tr>" + "".join(f"<th>{h}</th>" for h in (
               "samples", "clean", "illusion", "uncertain", "errors", "purified", "replacements rejected", "quarantined")) + "</tr><tr>",
           "".join(f"<td>{v}</td>" for v in (t["samples"], t["clean"], t["illusion"], t["uncertain"], t["errors"], t["purified"],
                                             t["replacements_rejected"], t["quarantined"])),
           "</tr><tr><td></td>" + "".join(f"<td>{_percent(t[o], examined)}</td>" for o in ("clean", "illusion", "uncertain")) +
           f"<td>{_percent(t['errors'], t['samples'])}</td><td></td><td></td><td></td></tr></table>"]
    if summary and summary.get("samples_per_second"):
        out.append(f"<p>This run: {summary['processed']} shards processed, {summary['skipped']} already done; "
                   f"{summary['samples_per_second']:.1f} samples/s over {summary['seconds']:.0f} s.</p>")
    legend = "<p class='legend'>" + "".join(f"<span style='background:{COLOURS[o]}'></span>{o}" for o in OUTCOMES) + "</p>"
    drift_marks = [(v, n) for v, n in ((policy.max_drift, "max drift"), (policy.flip_min_drift, "flip min drift")) if v]
    if len(drift_marks) == 2 and drift_marks[0][0] == drift_marks[1][0]:
        drift_marks = [(policy.max_drift, "max drift = flip min drift")]
    out += ["<h2>Scores</h2>", legend, "<div class='plots'>",
            f"<figure>{histogram_svg(stats.agreement, [(policy.min_agreement, 'min agreement')], 'agreement (share of votes for the consensus)')}"
            "<figcaption>Below min agreement a sample is uncertain.</figcaption></figure>",
            f"<figure>{histogram_svg(stats.drift, drift_marks, 'drift = 1 - cos(original, purified)')}"
            "<figcaption>Past max drift a sample is an illusion; a label flip with drift below flip min drift is uncertain. "
            "The last bin holds everything beyond the axis.</figcaption></figure>"]
    curve = stats.roc_curve()
    if curve:
        operating = stats.operating_point()
        out.append(f"<figure>{roc_svg(curve, operating)}<figcaption>Against the corpus's ground truth (json <code>illusion</code>): "
                   "flagging by drift alone; the dot is the run's verdicts.</figcaption></figure>")
    out.append("</div>")
    out.append(_shard_table(stats))
    out.append(_gallery(gallery, stats, settings.get("on-illusion")))
    out.append("<h2>Settings</h2><table>" + "".join(f"<tr><td class='text'>{esc(k)}</td><td class='text'>{esc(_short(v))}</td></tr>"
                                                   for k, v in settings.items()) + "</table></body></html>")
    return "".join(out)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _shard_table(stats: CorpusStats) -> str:
    rows = ["<h2>Shards</h2><table><tr><th class='text'>shard</th><th>samples</th><th>clean</th><th>illusion</th><th>uncertain</th>"
            "<th>errors</th><th>seconds</th><th class='text'>problems</th></tr>"]
    for shard in stats.shards[:SHARD_ROWS]:
        v = shard["verdicts"]
        problems = "; ".join(shard["problems"] or []) + ("" if shard.get("complete", True) else " (incomplete: retried next run)")
        rows.append(f"<tr><td class='text'>{esc(shard['shard'])}</td><td>{shard['samples']}</td><td>{v.get('clean', 0)}</td>"
                    f"<td>{v.get('illusion', 0)}</td><td>{v.get('uncertain', 0)}</td><td>{shard['errors']}</td>"
                    f"<td>{shard.get('seconds') or 0:.1f}</td><td class='text problem'>{esc(problems)}</td></tr>")
    rows.append("</table>")
    if len(stats.shards) > SHARD_ROWS:
        rows.append(f"<p>{len(stats.shards) - SHARD_ROWS} more shards (those with problems are listed first); every shard's "
                    "manifest is in <code>manifests/</code>.</p>")
    return "".join(rows)


def _gallery(gallery: list[dict[str, Any]], stats: CorpusStats, policy: str | None) -> str:
    flagged = stats.totals["illusion"] + stats.totals["uncertain"]
    if not gallery:
        return "<h2>Flagged samples</h2><p>None.</p>" if not flagged else "<h2>Flagged samples</h2><p>Not shown (no gallery).</p>"
    cards = [f"<h2>Flagged samples</h2><p>{len(gallery)} of {flagged} flagged samples (illusions first, a deterministic sample by key), "
             "as the defense saw them at the working size.</p><div class='gallery'>"]
    for e in gallery:
        if policy == "purify":
            accepted = {True: "replaces the input", False: "failed its check: quarantined", None: "not used"}[e["purified_accepted"]]
        else:
            accepted = {True: "passes its check", False: "fails its check", None: "not used"}[e["purified_accepted"]]
        cells = [f"<div class='cell'><img src='{e['original']}' alt='original'><br>original<br>{esc(e['label_original'])}</div>"]
        cells += [f"<div class='cell'><img src='{uri}' alt='reconstruction {i + 1}'><br>draw {i + 1}<br>{esc(label)}</div>"
                  for i, (uri, label) in enumerate(e["reconstructions"])]
        cells.append(f"<div class='cell'><img src='{e['purified']}' alt='purified'><br>purified<br>{esc(e['label_consensus'])}</div>")
        truth = "" if e.get("truth") is None else f", truth: {'illusion' if e['truth'] else 'clean'}"
        cards.append(f"<div class='card'><b style='color:{COLOURS[e['verdict']]}'>{esc(e['verdict'])}</b> {esc(e['key'])} "
                     f"<small>({esc(e['shard'])}{truth})</small><div class='row'>{''.join(cells)}</div>"
                     f"<small>agreement {e['agreement']:.2f} over {e['samples_used']} draws, drift {e['drift']:.3f}; "
                     f"purified image: {accepted}</small></div>")
    cards.append("</div>")
    return "".join(cards)
