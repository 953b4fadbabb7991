"""Parquet encodings read from footers: a load (and a partition move) writes without a
dictionary exactly the columns the source's writer gave up or never tried one for."""

from __future__ import annotations

import glob
import hashlib
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from datamove.api import run, verify
from datamove.manifest.model import load_manifest
from datamove.tabular.encoding import (
    dictionary_columns,
    distinct_columns,
    plain_columns,
    writer_properties,
)
from datamove.tabular.tiering import tier_partitions
from tests.conftest import write_manifest
from tests.tabular_fixtures import delta_rows, features, ids, manifest, write_csv, write_jsonl
from tests.test_tabular_tiering import NOW


def test_plain_columns_are_those_the_writer_gave_up_or_never_tried(tmp_path: Path) -> None:
    n = 60_000
    table = pa.table({
        "id": pa.array(range(n), pa.int64()),  # never tried: not in use_dictionary
        "bucket": pa.array([i % 64 for i in range(n)], pa.int64()),  # kept
        "digest": pa.array([hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]),
        "flag": pa.array([i % 2 == 0 for i in range(n)]),  # booleans get no dictionary
        "tags": pa.array([[f"t{i % 3}"] for i in range(n)]),  # nested: left to the writer
        "cat": pa.array([f"c{i % 11}" for i in range(n)]),  # kept
        "empty": pa.nulls(n, pa.float64()),  # only nulls: no evidence either way
    })
    path = tmp_path / "f.parquet"
    # digest (3.8 MB of unique strings) outgrows the 1 MiB dictionary: plain pages follow
    pq.write_table(table, path, use_dictionary=["bucket", "digest", "tags", "cat"])
    metadata = pq.ParquetFile(path).metadata
    assert plain_columns(metadata, table.schema) == ["id", "digest", "flag"]
    assert dictionary_columns(metadata, table.schema) == ["cat"]
    empty = pq.ParquetFile(_write(tmp_path / "e.parquet", table.slice(0, 0))).metadata
    assert empty.num_row_groups == 1 and empty.row_group(0).num_rows == 0
    assert plain_columns(empty, table.schema) == [] and plain_columns(None, table.schema) == []


def _write(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def test_distinct_columns_judge_a_first_block_of_text_rows() -> None:
    """Mostly distinct values (ids, measurements) vs repeated ones; a block too small to
    say anything, booleans and nested columns are left to the writer."""
    rows = features(0, 2_000, days=10)
    batch = pa.record_batch({
        **{name: rows.column(name).combine_chunks() for name in rows.column_names},
        "flag": pa.array([i % 2 == 0 for i in range(2_000)]),
        "tags": pa.array([[i] for i in range(2_000)]),
        "half": pa.array([i // 2 if i % 3 else None for i in range(2_000)], pa.int64()),
    })
    # half: 1,333 values, 1,000 distinct (75%); x is id / 7, unique
    assert distinct_columns(batch) == ["id", "x", "half"]
    assert distinct_columns(batch.slice(0, 999)) == []


def test_writer_properties_only_when_some_column_is_plain() -> None:
    assert writer_properties([]) is None
    properties = writer_properties(["x", "id", "x"])
    assert sorted(properties.column_properties) == ["id", "x"]
    assert "dictionary_enabled: False" in str(properties)


def chunk_dictionaries(table: Path) -> dict[str, set[bool]]:
    """Column → whether its chunks have a dictionary page, over every data file."""
    seen: dict[str, set[bool]] = {}
    files = glob.glob(str(table / "**" / "*.parquet"), recursive=True)
    assert files
    for file in files:
        group = pq.ParquetFile(file).metadata.row_group(0)
        for i in range(group.num_columns):
            chunk = group.column(i)
            seen.setdefault(chunk.path_in_schema, set()).add(chunk.has_dictionary_page)
    return seen


def test_load_and_partition_move_keep_the_source_encodings(tmp_path: Path) -> None:
    """id and x were written without a dictionary, cat with one: so are the table's files
    and, after a partition move, the cold table's; both still verify row by row."""
    source = tmp_path / "src"
    source.mkdir()
    rows = features(0, 4_000, days=10)
    pq.write_table(rows, source / "part-0.parquet", use_dictionary=["cat", "day"])
    rule = {"after": "5d", "column": "day", "location": {"url": str(tmp_path / "cold")}}
    path = write_manifest(tmp_path / "m.yaml", [manifest(
        tmp_path, source, {"url": str(tmp_path / "hot"), "partition_by": ["day"]},
        lifecycle=[rule])], ledger=str(tmp_path / "ledger"))
    m = load_manifest(path)
    assert run(m).exit_code == 0
    want = {"id": {False}, "x": {False}, "cat": {True}}
    assert chunk_dictionaries(tmp_path / "hot") == want

    moved = tier_partitions(m, "feat", now=NOW, audit=None, retention=timedelta(0))
    assert (moved.partitions_moved, moved.failures) == (5, [])
    assert chunk_dictionaries(tmp_path / "cold") == want
    hot, cold = delta_rows(str(tmp_path / "hot")), delta_rows(str(tmp_path / "cold"))
    assert sorted(ids(hot) + ids(cold)) == ids(rows)
    assert verify(m).exit_code == 0


def test_text_sources_write_mostly_distinct_columns_without_a_dictionary(
        tmp_path: Path) -> None:
    rows = features(0, 3_000, days=3)
    write_csv(tmp_path / "src" / "a.csv", rows.slice(0, 1_500))
    write_jsonl(tmp_path / "src" / "b.jsonl", rows.slice(1_500))
    path = write_manifest(tmp_path / "m.yaml", [manifest(
        tmp_path, tmp_path / "src", {"url": str(tmp_path / "hot"), "partition_by": ["day"],
                                     "schema_mode": "merge"})],
        ledger=str(tmp_path / "ledger"))
    assert run(load_manifest(path)).exit_code == 0
    assert chunk_dictionaries(tmp_path / "hot") == {"id": {False}, "x": {False},
                                                    "cat": {True}}
    assert ids(delta_rows(str(tmp_path / "hot"))) == ids(rows)
