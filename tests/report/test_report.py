import json
import os

import pytest

from pipeline.io.shards import write_samples
from pipeline.io.storage import Storage
from pipeline.report import write_report
from pipeline.report.stats import collect
from pipeline.research.attacks import AttackConfig
from pipeline.research.attacks.corpus import plant_illusions
from pipeline.sanitize.config import SanitizeConfig
from pipeline.sanitize.stages import process_shard
from tests.browser import render_in_chromium
from tests.corpora import corpus_samples

PER_SHARD = 30


@pytest.fixture(scope="module")
def run_output(tmp_path_factory):
    """Two shards with planted illusions (ground truth in their json), sanitised in process."""
    root = tmp_path_factory.mktemp("report")
    config = SanitizeConfig.resolve(n=4, on_illusion="purify")
    purifier = config.build_purifier("cpu")
    for shard in range(2):
        clean = corpus_samples(shard * PER_SHARD, PER_SHARD)
        samples = plant_illusions(clean, purifier.encoder, purifier.labels, AttackConfig(steps=40, seed=shard), fraction=0.3, seed=shard)
        uri = str(root / "in" / f"shard-{shard:06d}.tar")
        Storage().write_bytes(uri, write_samples(samples))
        process_shard(Storage(), uri, str(root / "out"), purifier, policy="purify", batch_size=16)
    return config, str(root / "out")


def test_statistics_come_from_the_outputs(run_output):
    config, out = run_output
    stats = collect(Storage(), out, config.consensus.verdict, gallery_size=5)
    assert stats.totals["samples"] == 2 * PER_SHARD and stats.totals["shards"] == 2
    assert sum(stats.drift.counts[o].sum() for o in ("clean", "uncertain", "illusion")) == 2 * PER_SHARD
    assert len(stats.gallery) == 5 and stats.gallery[0]["verdict"] == "illusion"
    fpr, tpr = stats.operating_point()
    assert tpr >= 0.7 and fpr <= 0.2  # planted illusions flagged, clean samples mostly not
    curve = stats.roc_curve()
    assert curve[0] == (0.0, 0.0) and curve[-1] == (1.0, 1.0)


def test_report_is_one_small_self_contained_page_that_renders_in_chromium(run_output, tmp_path):
    config, out = run_output
    uri = write_report(config, out, gallery_size=4)
    page = open(uri, encoding="utf-8").read()
    assert uri.endswith("report.html") and len(page) < 300_000
    for part in ("Summary", "agreement", "drift", "AUC", "Shards", "Flagged samples", "shard-000001"):
        assert part in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page  # nothing to fetch
    assert page.count("<div class='card'>") == 4

    seen = render_in_chromium(uri, str(tmp_path / "report.png"))
    assert seen["errors"] == [], seen["errors"]
    assert all(url.startswith(("file://", "data:")) for url in seen["requests"]), seen["requests"]
    assert seen["images"] == seen["loaded_images"] == 4 * 5  # original, three draws, purified per card
    assert "report" in seen["title"]
    with open(tmp_path / "report.png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(tmp_path / "report.png") > 20_000


def test_a_large_corpus_keeps_the_report_small(run_output, tmp_path):
    """Aggregated plots and a bounded gallery: the page does not grow with the samples."""
    config, out = run_output
    stats = collect(Storage(), out, config.consensus.verdict, gallery_size=3)
    for _ in range(500):  # as if the corpus had 500 more shards like these
        for shard in stats.shards[:2]:
            manifest = {**shard, "input": "", "shard": shard["shard"] + "x"}
            stats.add_shard(manifest, None)
    from pipeline.report.html import render

    page = render(stats, [], policy=config.consensus.verdict, title="t", settings=config.to_json())
    assert len(page) < 200_000 and "more shards" in page
    assert json.dumps(stats.totals)  # plain counts


def test_a_hostile_corpus_gets_its_report(tmp_path):
    """Names that are not UTF-8, unreadable shards, error samples: the report lists the problems and
    shows the flagged samples whatever their names (a drift threshold of 0 flags every image)."""
    from tests.hostile import TINY_CAP, hostile_corpus

    config = SanitizeConfig.resolve(n=2, max_drift=0.0, flip_min_drift=0.0, max_shard_bytes=TINY_CAP)
    purifier, storage = config.build_purifier("cpu"), Storage()
    for name, data in hostile_corpus().items():
        uri = str(tmp_path / "in" / name)
        storage.write_bytes(uri, data)
        process_shard(storage, uri, str(tmp_path / "out"), purifier, policy="purify", batch_size=8, max_shard_bytes=TINY_CAP)
    page = open(write_report(config, str(tmp_path / "out")), encoding="utf-8").read()
    assert "caf\\xe9" in page and "unreadable tar" in page and "decompresses to more than" in page
    assert page.count("<div class='card'>") == 12
    seen = render_in_chromium(str(tmp_path / "out" / "report.html"), str(tmp_path / "report.png"))
    assert seen["errors"] == [] and seen["images"] == seen["loaded_images"] == 12 * 5
