"""Peak memory of a whole local run: a process and every descendant (a local Ray cluster started by
this process: GCS, raylet with the object store, workers), sampled from a separate process so that
the sampling costs the measured processes nothing. Linux only (/proc)."""

from __future__ import annotations

import multiprocessing
import os


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(parent, []).append(int(entry))
    return tree


def process_tree_pss_mb(root: int, exclude: int | None = None) -> float:
    """Proportional set size of `root` and its descendants: shared pages (the object store, libraries) count once in total."""
    tree, total, stack = _children(), 0, [root]
    while stack:
        pid = stack.pop()
        if pid == exclude:
            continue
        stack.extend(tree.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("Pss:"))
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def _sample(root: int, interval: float, peak, stop) -> None:
    me = os.getpid()
    while True:
        value = process_tree_pss_mb(root, exclude=me)
        with peak.get_lock():
            peak.value = max(peak.value, value)
        if stop.wait(interval):
            return


class PeakMemory:
    """`with PeakMemory() as memory: ...` then `memory.peak_mb`: the largest total PSS seen.

    Every 2 s by default: reading PSS makes the kernel walk each process's page tables, which at 2 Hz
    took a visible share of a 2-core machine away from the run being measured."""

    def __init__(self, interval: float = 2.0):
        context = multiprocessing.get_context("spawn")  # never fork a process that runs threads (Ray's driver does)
        self._peak = context.Value("d", 0.0)
        self._stop = context.Event()
        self._process = context.Process(target=_sample, args=(os.getpid(), interval, self._peak, self._stop), daemon=True)

    @property
    def peak_mb(self) -> float:
        return self._peak.value

    def __enter__(self) -> "PeakMemory":
        self._process.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._process.join(timeout=30)
