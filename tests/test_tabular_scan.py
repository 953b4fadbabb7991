"""Reading a Delta table back for hashing gives the digests a plain scan and group-by give."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from datamove.tabular.digest import PartitionDigests
from datamove.tabular.scan import digest_table, partition_batches, scan_batches


def grouped(dt: object, by: tuple[str, ...], where: object = None) -> dict:
    """The reference: every batch as the table stores it, grouped by its rows' values."""
    digests = PartitionDigests(by)
    for batch in scan_batches(dt, where):
        digests.update(batch)
    return digests.parts


@pytest.fixture
def table(tmp_path: Path) -> object:
    """Three partition columns (with null partitions) and strings of low, high and null
    cardinality, written in several commits so partitions span several files."""
    from deltalake import DeltaTable, write_deltalake

    for commit in range(3):
        n = 5_000
        ids = pa.array(range(commit * n, (commit + 1) * n), pa.int64())
        write_deltalake(str(tmp_path), pa.table({
            "id": ids,
            "low": pa.array([f"cat-{i % 7}" for i in range(n)]),
            "unique": pa.array([f"row-{commit}-{i}" for i in range(n)]),
            "blob": pa.array([None if i % 5 == 0 else bytes([i % 256]) * (i % 9)
                              for i in range(n)], pa.binary()),
            "region": pa.array([None if i % 13 == 0 else ["eu", "us"][i % 2]
                                for i in range(n)]),
            "day": pa.array([date(2024, 1, 1 + i % 4) for i in range(n)]),
            "shard": pa.array([None if i % 17 == 0 else i % 3 for i in range(n)], pa.int32()),
        }), partition_by=["region", "day", "shard"], mode="append")
    return DeltaTable(str(tmp_path))


def test_keyed_digests_equal_grouped(table: object) -> None:
    for by in (("region", "day", "shard"), ("day",), ("shard", "region")):
        got = digest_table(table, by).parts
        assert got == grouped(table, by)
        assert sum(d.rows for d in got.values()) == 15_000
    nulls = digest_table(table, ("region",)).parts
    assert (None,) in nulls and nulls[(None,)].rows > 0  # a null partition has its own key


def test_keys_and_dictionaries_are_really_used(table: object) -> None:
    seen = 0
    for batch, key in partition_batches(table, ("day", "shard")):
        assert key is not None
        day = batch.column("day").unique().to_pylist()
        assert [d.isoformat() for d in day] == [key[0]]
        # Repeated values come as the file's dictionary (which columns: test_tabular_source).
        kinds = {name: pa.types.is_dictionary(batch.schema.field(name).type)
                 for name in ("low", "blob", "id")}
        assert kinds == {"low": True, "blob": True, "id": False}
        seen += batch.num_rows
    assert seen == 15_000


def test_a_column_that_is_not_a_partition_column_is_grouped(table: object) -> None:
    batches = list(partition_batches(table, ("low",)))
    assert all(key is None for _, key in batches)
    got = digest_table(table, ("low",)).parts
    assert got == grouped(table, ("low",)) and len(got) == 7


def test_a_filter_reads_only_its_rows(table: object) -> None:
    where = pc.field("day") == pa.scalar(date(2024, 1, 2), pa.date32())
    got = digest_table(table, ("day",), where).parts
    assert list(got) == [("2024-01-02",)]
    assert got == grouped(table, ("day",), where)
    assert got[("2024-01-02",)].rows == 3 * 1_250


def test_a_changed_value_changes_its_partition_digest(table: object, tmp_path: Path) -> None:
    before = digest_table(table, ("day",)).parts
    table.update(updates={"low": "'cat-x'"}, predicate="id = 42")  # type: ignore[attr-defined]
    after = digest_table(table, ("day",)).parts
    changed = [k for k in before if before[k] != after[k]]
    assert changed == [(date(2024, 1, 1 + 42 % 4).isoformat(),)]


def test_awkward_paths_and_partition_values_read_back(tmp_path: Path) -> None:
    """Local tables are read with Arrow's filesystem: a space in the table's path and
    partition values that need escaping in directory names must still be found."""
    from deltalake import DeltaTable, write_deltalake

    rows = pa.table({"id": pa.array(range(9), pa.int64()),
                     "p": ["a b", "c/d%e", "é", "a b", "x=y", "é", "%20", "a b", "c/d%e"]})
    root = tmp_path / "a table é"  # ("%20" in a path defeats delta-rs itself)
    write_deltalake(str(root), rows, partition_by=["p"])
    expected = PartitionDigests(("p",))
    expected.update(rows)
    got = digest_table(DeltaTable(str(root)), ("p",)).parts
    assert got == expected.parts and len(got) == 5
