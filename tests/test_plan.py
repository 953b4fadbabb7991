"""The march: pairing sorted listings, deciding actions, batching."""

from __future__ import annotations

import pytest

from datamove.pipeline.march import Action, batches, decide, march
from datamove.stores.core import Entry


def entries(*keys: str) -> list[Entry]:
    return [Entry(k, 1, 100.0) for k in keys]


def test_march_pairs_every_key_once():
    pairs = list(march(entries("a", "b", "d"), entries("b", "c", "d", "e")))
    assert [(s and s.key, d and d.key) for s, d in pairs] == [
        ("a", None), ("b", "b"), (None, "c"), ("d", "d"), (None, "e")]


def test_march_is_lazy_and_constant_memory():
    def endless(prefix: str):
        i = 0
        while True:
            yield Entry(f"{prefix}{i:012d}", 1, 1.0)
            i += 1

    merged = march(endless("k"), iter(()))
    first = [next(merged) for _ in range(5)]
    assert [s.key for s, _ in first] == [f"k{i:012d}" for i in range(5)]


def test_march_refuses_unsorted_listing():
    with pytest.raises(RuntimeError, match="not in key order"):
        list(march(entries("b", "a"), []))


@pytest.mark.parametrize(("src", "dst", "local", "action", "reason"), [
    (Entry("k", 5, 100.0), None, True, Action.copy, "new"),
    (Entry("k", 5, 100.0), Entry("k", 4, 100.0), True, Action.copy, "size differs"),
    (Entry("k", 5, 100.0), Entry("k", 5, 100.0), True, Action.skip, "up to date"),
    (Entry("k", 5, 100.5), Entry("k", 5, 100.0), True, Action.copy, "source is newer"),
    (Entry("k", 5, 100.0), Entry("k", 5, 200.0), True, Action.copy, "source is newer"),
    # object stores stamp the upload time, truncated to the second
    (Entry("k", 5, 100.7), Entry("k", 5, 100.0), False, Action.skip, "up to date"),
    (Entry("k", 5, 101.2), Entry("k", 5, 100.0), False, Action.copy, "source is newer"),
    (Entry("k", 5, None), Entry("k", 5, 100.0), False, Action.copy, "modification time"),
    (None, Entry("k", 5, 100.0), True, Action.extra, "only at the destination"),
])
def test_decide(src, dst, local, action, reason):
    item = decide(src, dst, destination_is_local=local, reverify=False)
    assert item.action == action
    assert reason in item.reason


def test_decide_reverify_and_check():
    up_to_date = (Entry("k", 5, 1.0), Entry("k", 5, 1.0))
    assert decide(*up_to_date, destination_is_local=True, reverify=True).action == Action.verify
    assert decide(*up_to_date, destination_is_local=True, reverify=False,
                  check_only=True).action == Action.check
    missing = decide(Entry("k", 5, 1.0), None, destination_is_local=True, reverify=False,
                     check_only=True)
    assert missing.action == Action.check and "missing" in missing.reason


def test_batches_group_small_objects_and_isolate_large():
    items = [decide(Entry(f"s{i}", 10, 1.0), None, destination_is_local=True, reverify=False)
             for i in range(25)]
    big = decide(Entry("big", 1000, 1.0), None, destination_is_local=True, reverify=False)
    groups = list(batches([*items[:12], big, *items[12:]], max_objects=10, max_bytes=10_000,
                          large=500))
    assert [len(g) for g in groups] == [10, 1, 10, 5]
    assert groups[1] == [big]
    by_bytes = list(batches(items, max_objects=100, max_bytes=50, large=500))
    assert [len(g) for g in by_bytes] == [5, 5, 5, 5, 5]
