"""The row digest: a pinned known answer, order independence, canonical values, detection."""

from __future__ import annotations

import random
from datetime import date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from datamove.tabular import digest as td
from datamove.tabular.digest import Digest, PartitionDigests, row_hashes


def digest(table: pa.Table, by: tuple[str, ...] = (), chunk: int = 3) -> dict:
    d = PartitionDigests(by)
    for batch in table.to_batches(max_chunksize=chunk):
        d.update(batch)
    return d.parts


SAMPLE = pa.table({
    "id": pa.array([1, 2, 3], pa.int64()),
    "x": [0.5, None, float("nan")],
    "s": ["a", "", None],
    "d": [date(2024, 1, 1), date(1969, 12, 31), None],
    "ok": [True, False, None],
})


def test_known_answer() -> None:
    """Pinned: changing any constant or encoding breaks every recorded digest."""
    whole = digest(SAMPLE)[()]
    assert (whole.rows, whole.hex) == (3, "59047c128c09c0da93c0c0ceb6eb8dca")
    assert row_hashes(SAMPLE.slice(0, 1)).to_pylist() == [17744432303092233305]


def reference_row(row: dict) -> int:
    """docs/FORMAT.md's definition, written out in plain Python (no pyarrow)."""
    import struct

    mask = (1 << 64) - 1

    def fmix(x: int) -> int:
        x ^= x >> 33
        x = (x * td.M1) & mask
        x ^= x >> 33
        x = (x * td.M2) & mask
        return x ^ (x >> 33)

    def value(v: object) -> int:
        if isinstance(v, bool | int):
            return int(v) & mask
        if isinstance(v, float):
            return struct.unpack("<Q", struct.pack("<d", v))[0]
        if isinstance(v, date):
            return (v - date(1970, 1, 1)).days & mask
        data = v.encode() if isinstance(v, str) else bytes(v)  # type: ignore[arg-type]
        total = sum((b + 1) * pow(td.P, j, 1 << 64) for j, b in enumerate(data))
        return (total + len(data) * td.K_LEN) & mask

    total = sum(value(v) * td.multiplier(k) + td.seed(k) for k, v in row.items()
                if v is not None)
    return fmix((total + td.ROW_C) & mask)


def test_vectorised_digest_equals_the_written_definition() -> None:
    mask = (1 << 64) - 1
    rows = SAMPLE.to_pylist()
    hashes = [reference_row(r) for r in rows]
    assert row_hashes(SAMPLE).to_pylist() == hashes
    whole = digest(SAMPLE)[()]
    assert whole.sum == sum(hashes) & mask
    assert whole.square == sum(h * h for h in hashes) & mask


def test_order_batches_and_column_order_do_not_matter() -> None:
    table = pa.table({"id": list(range(500)), "v": [f"v{i % 13}" for i in range(500)],
                      "p": [i % 4 for i in range(500)]})
    shuffled = table.take(random.Random(7).sample(range(500), 500))
    assert digest(table, ("p",), 7) == digest(shuffled, ("p",), 64)
    assert digest(table, ("p",)) == digest(shuffled.select(["p", "v", "id"]), ("p",), 500)


@pytest.mark.parametrize("a, b", [
    (pa.array([1, -2], pa.int32()), pa.array([1, -2], pa.int64())),
    (pa.array([1.5, -0.25], pa.float32()), pa.array([1.5, -0.25], pa.float64())),
    (pa.array([1, 2], pa.timestamp("s")), pa.array([1_000_000, 2_000_000], pa.timestamp("us"))),
    (pa.array([1000, 2000], pa.timestamp("ns")), pa.array([1, 2], pa.timestamp("us"))),
    (pa.array(["x", "yz"]), pa.array(["x", "yz"], pa.large_string())),
    (pa.array(["x", "yz"]).dictionary_encode(), pa.array(["x", "yz"])),
    (pa.array([1, 2], pa.uint8()), pa.array([1, 2], pa.int16())),
    (pa.array([date(2024, 1, 1)], pa.date64()), pa.array([date(2024, 1, 1)], pa.date32())),
])
def test_lossless_type_changes_keep_the_digest(a: pa.Array, b: pa.Array) -> None:
    assert digest(pa.table({"c": a})) == digest(pa.table({"c": b}))


def test_a_null_column_equals_a_missing_one() -> None:
    """schema_mode merge fills a new column with nulls for old rows: same digest."""
    base = pa.table({"id": [1, 2]})
    assert digest(base) == digest(base.append_column("new", pa.nulls(2, pa.int64())))
    assert digest(base) == digest(base.append_column("new", pa.nulls(2)))


@pytest.mark.parametrize("change", ["value", "duplicate", "drop", "swap", "null", "rename",
                                    "string", "nan-payload-free"])
def test_changes_are_detected(change: str) -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"], "f": [0.0, 1.0, 2.0]})
    rows = table.to_pylist()
    if change == "value":
        rows[1]["a"] = 5
    elif change == "duplicate":
        rows.append(rows[0])
    elif change == "drop":
        rows.pop()
    elif change == "swap":  # one column's values swapped between two rows
        rows[0]["b"], rows[1]["b"] = rows[1]["b"], rows[0]["b"]
    elif change == "null":
        rows[0]["a"] = None
    elif change == "string":
        rows[2]["b"] = "zz"
    elif change == "nan-payload-free":
        rows[0]["f"] = -0.0
    altered = pa.Table.from_pylist(rows, schema=table.schema)
    if change == "rename":
        altered = table.rename_columns(["a", "B", "f"])
    assert digest(altered) != digest(table)


def test_zero_and_null_and_empty_differ() -> None:
    assert digest(pa.table({"a": pa.array([0], pa.int64())})) != \
        digest(pa.table({"a": pa.array([None], pa.int64())}))
    assert digest(pa.table({"s": [""]})) != digest(pa.table({"s": pa.array([None], pa.string())}))


def test_partitions_add_up() -> None:
    table = pa.table({"p": ["a", "b", "a", None], "v": [1, 2, 3, 4]})
    parts = digest(table, ("p",))
    assert set(parts) == {("a",), ("b",), (None,)}
    total = Digest()
    for d in parts.values():
        total.merge(d)
    assert total == digest(table)[()]


def test_long_values_and_slices_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte strings longer than a slice, and many rows across slices, hash the same."""
    rng = random.Random(3)
    values = ["".join(rng.choice("abc") for _ in range(rng.randint(0, 300))) for _ in range(300)]
    values[5] = "q" * 5000
    arr = pa.array(values)
    whole = td._bytes_hash(arr).to_pylist()
    monkeypatch.setattr(td, "SLICE_BYTES", 1000)
    td._cache.clear()
    assert td._bytes_hash(arr).to_pylist() == whole
    assert td._bytes_hash(arr.slice(3, 50)).to_pylist() == whole[3:53]


def test_dictionary_shortcut_matches_direct_hashing() -> None:
    arr = pa.array([f"cat-{i % 9}" for i in range(20_000)])
    assert td._strings_hash(arr).to_pylist() == td._bytes_hash(arr).to_pylist()


def test_nested_values() -> None:
    lists = pa.table({"l": pa.array([[1, 2], [2, 1], [], None])})
    hashes = td.value_hash(lists.column("l").combine_chunks()).to_pylist()
    assert len(set(hashes[:3])) == 3 and hashes[3] is None  # order inside a list matters
    struct = pa.array([{"a": 1, "b": "x"}, {"a": 1, "b": "y"}])
    assert len(set(td.value_hash(struct).to_pylist())) == 2
    m = pa.array([[("k", 1)], [("k", 2)]], pa.map_(pa.string(), pa.int64()))
    assert len(set(td.value_hash(m).to_pylist())) == 2
    assert digest(pa.table({"l": pa.array([[1, 2]], pa.list_(pa.int32()))})) == \
        digest(pa.table({"l": pa.array([[1, 2]], pa.large_list(pa.int64()))}))


def test_timestamps_and_partition_text() -> None:
    assert td.partition_text(date(2024, 1, 2)) == "2024-01-02"
    assert td.partition_text(datetime(2024, 1, 2, 3)) == "2024-01-02T03:00:00"
    assert td.partition_text(True) == "true" and td.partition_text(None) is None
    assert td.partition_json(("day", "n"), ("2024-01-02", "3")) == '{"day":"2024-01-02","n":"3"}'


def test_a_million_rows_hash_quickly() -> None:
    n = 1_000_000
    table = pa.table({"id": pa.array(range(n), pa.int64()), "x": pc.random(n),
                      "cat": pa.array([f"c{i % 50}" for i in range(n)])})
    import time

    started = time.process_time()
    d = PartitionDigests(())
    for batch in table.to_batches(max_chunksize=65_536):
        d.update(batch)
    assert d.total.rows == n
    assert time.process_time() - started < 5  # ~0.1 s here; generous for busy CI hosts
