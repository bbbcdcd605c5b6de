import pytest

from pipeline.batching import batches, map_batched


def test_batches_group_by_key_then_cut():
    items = [1, 20, 2, 30, 3, 4, 40]
    assert list(batches(items, 2, key=lambda x: x >= 10)) == [[1, 2], [3, 4], [20, 30], [40]]
    assert list(batches(items, 3)) == [[1, 20, 2], [30, 3, 4], [40]]
    with pytest.raises(ValueError):
        list(batches(items, 0))


def test_a_failing_batch_is_retried_one_by_one_and_only_the_culprit_fails():
    calls = []

    def work(batch):
        calls.append(list(batch))
        if 13 in batch:
            raise RuntimeError("unlucky")
        return [x * 2 for x in batch]

    out = map_batched([1, 13, 2, 13, 5], 4, work, on_error=lambda item, error: f"error: {error}")
    assert out == [2, "error: unlucky", 4, "error: unlucky", 10]  # item order, duplicates included
    assert calls[0] == [1, 13, 2, 13] and [1] in calls and [5] in calls
    with pytest.raises(RuntimeError):
        map_batched([13], 4, work)
