"""report.html: what a run found, for people (summary, score histograms with the thresholds, ROC
curve against ground truth, shards and their problems, a gallery of flagged samples)."""

from __future__ import annotations

from typing import Any

REPORT_NAME = "report.html"


def write_report(config, output: str, *, summary: dict[str, Any] | None = None, gallery_size: int = 12, device: str | None = None,
                 noise=None) -> str:
    """Write `output`/report.html from the run's outputs; returns its URI. The gallery shows the draws
    the run made when given the run's noise key (`noise`); without it, draws under the config's key
    (its public seed or key file, else a fresh secret: draws like the run's, not the same)."""
    from ..io.storage import Storage, join
    from .gallery import gallery_images
    from .html import render
    from .stats import collect

    storage = Storage(config.s3_endpoint)
    policy = config.consensus.verdict
    stats = collect(storage, output, policy, gallery_size)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    gallery = gallery_images(config, storage, stats.gallery, device, noise or config.noise_key()) if gallery_size else []
    title = f"Disillusion {'sanitisation' if config.policy else 'audit'} report: {output}"
    page = render(stats, gallery, policy=policy, title=title, settings=config.to_json(), summary=summary)
    uri = join(output, REPORT_NAME)
    storage.write_bytes(uri, page.encode("utf-8"))
    return uri
