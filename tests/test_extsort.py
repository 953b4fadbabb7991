"""datamove/extsort.py: the external sort under the ledger's latest rows (and listings).

The order must be the UTF-8 byte order listings use (pipeline/march.py refuses
anything else), stable, the same whether the input fits in memory or spills, and
the spill files must never outlive the iterator.
"""

from __future__ import annotations

import os
import random

import pyarrow as pa
import pytest

from datamove import extsort
from datamove.extsort import sorted_batches
from datamove.pipeline.march import march
from datamove.stores.base import Entry

TRICKY = ["a", "a/b", "a.b", "a-b", "a/", "a0", "A", "é", "e\u0301", "\u00ff", "\u0100",
          "\u0800", "\uffff", "\U00010000", "\U0010ffff", "日本/x", "a b", "~", "", "z/é/1",
          "a/b/c", "a/b.c", "a/b-c", "ab"]


def utf8(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def table_of(keys: list[str], then: list[int | None] | None = None) -> pa.Table:
    raw = pa.array([utf8(k) for k in keys], pa.binary())
    columns = {"key": raw.view(pa.string()), "i": pa.array(range(len(keys)), pa.int64())}
    if then is not None:
        columns["t"] = pa.array(then, pa.int64())
    return pa.table(columns)


def run(table: pa.Table, *, chunk: int = 7, **kwargs: object) -> pa.Table:
    batches = list(sorted_batches(table.to_batches(max_chunksize=chunk), "key", **kwargs))
    assert all(b.schema == table.schema for b in batches)
    return pa.Table.from_batches(batches, table.schema)


def random_keys(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = ["a", "b", "/", ".", "-", "é", "\uffff", "\U00010000", "\u0800", "\udcff",
                "\udc80", "0"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(n)]


@pytest.mark.parametrize("memory_rows", [3, 10, 1_000])
def test_order_is_utf8_byte_order_and_stable(memory_rows, tmp_path):
    keys = TRICKY * 3
    random.Random(1).shuffle(keys)
    out = run(table_of(keys), memory_rows=memory_rows, spill_dir=str(tmp_path))
    expected = sorted(range(len(keys)), key=lambda i: (utf8(keys[i]), i))
    assert out["i"].to_pylist() == expected
    # ' ' (0x20) < '-' < '.' < '/' (0x2f) < '0': "a/b" sorts after "a.b", as S3 lists
    assert [k for k in out["key"].to_pylist() if k.startswith("a")][:9] == [
        "a"] * 3 + ["a b"] * 3 + ["a-b"] * 3


def test_surrogate_escaped_keys_sort_by_their_raw_bytes_as_listings_do(tmp_path):
    """Keys that are not valid UTF-8 (a local file name in Latin-1) reach datamove as
    surrogate escapes; their raw bytes decide, where code point order would not:
    '\\udcff' (byte 0xff) comes after 'é' (0xc3 0xa9) and '\\u0800' (0xe0 …)."""
    keys = ["\udcff", "é", "\u0800", "\udc80x", "a", "\U00010000"]
    assert sorted(keys) != sorted(keys, key=utf8)  # the two orders differ here
    out = run(table_of(keys * 40), memory_rows=13, spill_dir=str(tmp_path))
    got = [bytes(b) for b in out["key"].cast(pa.binary()).to_pylist()]
    assert got == sorted(utf8(k) for k in keys * 40)
    # and march (which refuses a stream out of order) accepts it as a listing
    entries = [Entry(b.decode("utf-8", "surrogateescape"), 0) for b in got[::40]]
    assert [e.key for (e,) in march(entries)] == [e.key for e in entries]


def test_random_keys_then_column_with_nulls_last_spilled_equals_in_memory(tmp_path):
    n = 3_000
    keys = random_keys(n, seed=2)
    rng = random.Random(3)
    then = [rng.choice([None, 1, 2, 3]) for _ in range(n)]
    table = table_of(keys, then)
    expected = sorted(range(n), key=lambda i: (utf8(keys[i]), then[i] is None, then[i] or 0, i))
    for memory_rows in (50, 999, n, 10 * n):
        out = run(table, chunk=111, then="t", memory_rows=memory_rows, spill_dir=str(tmp_path))
        assert out["i"].to_pylist() == expected, memory_rows
        assert os.listdir(tmp_path) == []


def test_more_runs_than_the_fan_in_are_merged_in_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(extsort, "FAN_IN", 3)
    monkeypatch.setattr(extsort, "MIN_READ_ROWS", 4)
    keys = random_keys(500, seed=4)
    then = [i % 3 for i in range(500)]
    out = run(table_of(keys, then), then="t", memory_rows=9, spill_dir=str(tmp_path))
    expected = sorted(range(500), key=lambda i: (utf8(keys[i]), then[i], i))
    assert out["i"].to_pylist() == expected
    assert os.listdir(tmp_path) == []


def test_a_single_chunk_never_touches_disk(tmp_path):
    table = table_of(random_keys(100, seed=5))
    stream = sorted_batches(table.to_batches(max_chunksize=10), "key", memory_rows=100,
                            spill_dir=str(tmp_path))
    next(stream)
    assert os.listdir(tmp_path) == []
    stream.close()


def test_spill_files_exist_while_merging_and_are_removed_when_closed(tmp_path):
    table = table_of(random_keys(5_000, seed=6))
    stream = sorted_batches(table.to_batches(max_chunksize=100), "key", memory_rows=1_000,
                            spill_dir=str(tmp_path))
    next(stream)
    (spill,) = os.listdir(tmp_path)
    assert len(os.listdir(tmp_path / spill)) == 5  # five sorted runs
    stream.close()
    assert os.listdir(tmp_path) == []


def test_spill_files_are_removed_when_the_input_fails(tmp_path):
    def failing():
        yield from table_of(random_keys(3_000, seed=7)).to_batches(max_chunksize=100)
        raise OSError("the scan broke")

    stream = sorted_batches(failing(), "key", memory_rows=500, spill_dir=str(tmp_path))
    with pytest.raises(OSError, match="the scan broke"):
        next(stream)
    assert os.listdir(tmp_path) == []


def test_empty_input_and_bad_arguments(tmp_path):
    assert list(sorted_batches([], "key")) == []
    empty = table_of([]).to_batches()
    assert list(sorted_batches(empty, "key", spill_dir=str(tmp_path))) == []
    with pytest.raises(ValueError, match="nulls"):
        list(sorted_batches(pa.table({"key": ["a", None]}).to_batches(), "key"))
    with pytest.raises(TypeError, match="not a string column"):
        list(sorted_batches(pa.table({"key": [2, 1]}).to_batches(), "key"))
    with pytest.raises(ValueError, match="memory_rows"):
        list(sorted_batches(table_of(["a"]).to_batches(), "key", memory_rows=0))
