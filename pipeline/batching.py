"""Group, batch, and retry one by one on failure: the loop every model-facing job runs.

Models take batches of one tensor shape, so items are grouped by a key (their shape) before they
are cut into batches. A batch that raises (one corrupt or oversized item, an out-of-memory error) is
retried one item at a time, so that only the culprit fails.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def batches(items: Sequence[T], size: int, key: Callable[[T], Hashable] | None = None) -> Iterator[list[T]]:
    """Batches of at most `size` items; with `key`, each batch holds items of one key (groups in order of first appearance)."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item) if key else None, []).append(item)
    for group in groups.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]


def map_batched(
    items: Sequence[T],
    size: int,
    work: Callable[[list[T]], Sequence[R]],
    *,
    key: Callable[[T], Hashable] | None = None,
    on_error: Callable[[T, Exception], R] | None = None,
) -> list[R]:
    """`work(batch)` returns one result per item of the batch; the results come back in item order.

    A failing batch is retried item by item; an item that still fails gets `on_error(item, error)`,
    or the error propagates when `on_error` is None.
    """
    results: list[R | None] = [None] * len(items)

    def run(batch: list[int]) -> None:
        outputs = work([items[i] for i in batch])
        if len(outputs) != len(batch):
            raise RuntimeError(f"batch work returned {len(outputs)} results for {len(batch)} items")
        for i, output in zip(batch, outputs):
            results[i] = output

    for batch in batches(range(len(items)), size, (lambda i: key(items[i])) if key else None):
        try:
            run(batch)
        except Exception:
            if on_error is None and len(batch) == 1:
                raise
            for i in batch:
                try:
                    run([i])
                except Exception as error:
                    if on_error is None:
                        raise
                    results[i] = on_error(items[i], error)
    return results  # type: ignore[return-value]
