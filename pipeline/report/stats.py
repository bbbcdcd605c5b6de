"""What a report shows, aggregated shard by shard from a run's outputs (manifests and verdict tables)
in memory that does not grow with the corpus: fixed-bin histograms, per-shard lines, a bounded
sample of flagged samples for the gallery."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..defense import VerdictPolicy
from ..io.storage import Storage
from ..sanitize.outputs import read_manifests, read_verdicts

OUTCOMES = ("clean", "uncertain", "illusion")
COLUMNS = ("key", "key_bytes", "member", "status", "verdict", "label_original", "label_consensus", "agreement", "samples_used",
           "drift", "replacement_accepted", "truth")
ROC_BINS = 4000  # drift lies in [0, 2]: steps of 0.0005
SHARD_ROWS = 200  # per-shard lines shown; shards with problems always come first


@dataclass
class Histogram:
    """Counts per outcome over fixed bins; values past `high` fall in the last bin."""

    low: float
    high: float
    bins: int
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, values: np.ndarray, outcomes: np.ndarray) -> None:
        index = np.clip(((values - self.low) / (self.high - self.low) * self.bins).astype(int), 0, self.bins - 1)
        for outcome in OUTCOMES:
            chosen = index[outcomes == outcome]
            self.counts.setdefault(outcome, np.zeros(self.bins, dtype=np.int64))
            self.counts[outcome] += np.bincount(chosen, minlength=self.bins)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.bins + 1)


def drift_range(policy: VerdictPolicy) -> float:
    """The drift axis: room past the thresholds, so both sides of them show."""
    marks = [t for t in (policy.max_drift, policy.flip_min_drift) if t]
    return min(2.0, max(0.05, 2.5 * max(marks))) if marks else 0.5


@dataclass
class CorpusStats:
    policy: VerdictPolicy
    gallery_size: int = 12
    totals: dict[str, int] = field(default_factory=lambda: {"shards": 0, "samples": 0, "errors": 0, "purified": 0,
                                                             "replacements_rejected": 0, "quarantined": 0, **dict.fromkeys(OUTCOMES, 0)})
    shards: list[dict[str, Any]] = field(default_factory=list)
    gallery: list[dict[str, Any]] = field(default_factory=list)
    roc: dict[bool, np.ndarray] = field(default_factory=lambda: {t: np.zeros(ROC_BINS, dtype=np.int64) for t in (True, False)})
    operating: dict[tuple[bool, bool], int] = field(default_factory=lambda: dict.fromkeys([(t, f) for t in (True, False) for f in (True, False)], 0))

    def __post_init__(self):
        self.agreement = Histogram(0.0, 1.0, 20)
        self.drift = Histogram(0.0, drift_range(self.policy), 40)

    def add_shard(self, manifest: dict[str, Any], table: pa.Table | None) -> None:
        t = self.totals
        t["shards"] += 1
        for name in ("samples", "errors", "purified", "replacements_rejected", "quarantined"):
            t[name] += int(manifest.get(name) or 0)
        for outcome in OUTCOMES:
            t[outcome] += int(manifest["verdicts"].get(outcome, 0))
        self.shards.append({name: manifest.get(name) for name in ("shard", "samples", "errors", "problems", "complete", "seconds")}
                           | {"verdicts": manifest["verdicts"]})
        if table is None or not table.num_rows:
            return
        ok = table.filter(pc.equal(table["status"], "ok"))
        outcomes = np.asarray(ok["verdict"].to_pylist(), dtype=object)
        self.agreement.add(ok["agreement"].to_numpy(zero_copy_only=False), outcomes)
        drift = ok["drift"].to_numpy(zero_copy_only=False)
        self.drift.add(drift, outcomes)
        if "truth" in ok.column_names:
            truth = ok["truth"].to_pylist()
            index = np.clip((drift / 2.0 * ROC_BINS).astype(int), 0, ROC_BINS - 1)
            for known in (True, False):
                chosen = np.asarray([v is known for v in truth], dtype=bool)
                self.roc[known] += np.bincount(index[chosen], minlength=ROC_BINS)
                for flagged in (True, False):
                    self.operating[(known, flagged)] += int(np.sum(chosen & ((outcomes == "illusion") == flagged)))
        self._sample_gallery(manifest, ok)

    def _sample_gallery(self, manifest: dict[str, Any], ok: pa.Table) -> None:
        """Keep a uniform, deterministic sample of flagged samples (illusions before uncertain ones):
        the `gallery_size` smallest hashes of their keys."""
        flagged = ok.filter(pc.is_in(ok["verdict"], pa.array(["illusion", "uncertain"])))
        columns = [c for c in COLUMNS if c in flagged.column_names]
        for row in flagged.select(columns).to_pylist():
            row["rank"] = (row["verdict"] != "illusion", zlib.crc32(row["key_bytes"]))
            row["shard"], row["input"] = manifest["shard"], manifest["input"]
            self.gallery.append(row)
        self.gallery = sorted(self.gallery, key=lambda r: r["rank"])[: self.gallery_size]

    def roc_curve(self) -> list[tuple[float, float]] | None:
        """(false-positive rate, true-positive rate) of 'flag when drift exceeds t', for every t."""
        positives, negatives = self.roc[True].sum(), self.roc[False].sum()
        if not positives or not negatives:
            return None
        tpr = np.concatenate([[0.0], np.cumsum(self.roc[True][::-1]) / positives])
        fpr = np.concatenate([[0.0], np.cumsum(self.roc[False][::-1]) / negatives])
        return list(zip(fpr.tolist(), tpr.tolist()))

    def operating_point(self) -> tuple[float, float] | None:
        o = self.operating
        positives, negatives = o[(True, True)] + o[(True, False)], o[(False, True)] + o[(False, False)]
        if not positives or not negatives:
            return None
        return o[(False, True)] / negatives, o[(True, True)] / positives


def collect(storage: Storage, output: str, policy: VerdictPolicy, gallery_size: int = 12) -> CorpusStats:
    """Every shard of a run's output that has a manifest, in name order."""
    stats = CorpusStats(policy, gallery_size)
    for manifest in read_manifests(storage, output):
        table = read_verdicts(storage, output, manifest["shard"])
        if table is not None:
            table = table.select([c for c in ("shard", *COLUMNS) if c in table.column_names])
        stats.add_shard(manifest, table)
    stats.shards.sort(key=lambda s: (not s["problems"], s["shard"]))
    return stats
