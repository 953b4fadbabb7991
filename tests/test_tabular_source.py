"""Reading tabular source files: Parquet batches sized by bytes as well as rows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamove.stores.core import KeyFilter, Location
from datamove.tabular import source as tabular_source
from datamove.tabular.encoding import dictionary_columns
from datamove.tabular.source import (
    FileReader,
    list_source_files,
    parquet_batch_rows,
)


def batches(folder: Path) -> list[pa.RecordBatch]:
    location = Location.of(str(folder))
    [file] = list_source_files(location, None, KeyFilter((), ()))
    with FileReader(location, file) as reader:
        return list(reader)


def test_wide_rows_come_in_smaller_batches(tmp_path: Path) -> None:
    """300 rows of 256 KiB: a batch of BATCH_ROWS rows would be the whole 75 MiB file."""
    row = 256 * 1024
    blobs = pa.array([i.to_bytes(4, "little") * (row // 4) for i in range(300)], pa.binary())
    table = pa.table({"id": pa.array(range(300), pa.int64()), "blob": blobs})
    pq.write_table(table, tmp_path / "wide.parquet", compression="none", use_dictionary=False)
    want = tabular_source.BATCH_BYTES // row
    assert parquet_batch_rows(pq.ParquetFile(tmp_path / "wide.parquet").metadata) in \
        range(want - 2, want + 1)
    got = batches(tmp_path)
    assert max(b.num_rows for b in got) <= want and len(got) >= 300 // want
    assert pa.Table.from_batches(got).equals(table)  # every row, in order, unchanged


def test_narrow_rows_come_in_full_batches(tmp_path: Path) -> None:
    table = pa.table({"id": pa.array(range(300_000), pa.int64())})
    pq.write_table(table, tmp_path / "narrow.parquet")
    got = batches(tmp_path)
    assert got[0].num_rows == tabular_source.BATCH_ROWS
    assert pa.Table.from_batches(got).equals(table)


def test_dictionary_columns_are_those_the_writer_kept_in_its_dictionary(
        tmp_path: Path) -> None:
    """Repeated strings are read as the file's dictionary; strings that outgrew the
    writer's 1 MiB dictionary (plain pages follow) and numbers are read plain."""
    n = 60_000
    table = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "category": pa.array([f"cat-{i % 37}" for i in range(n)]),
        "digest": pa.array([hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]),
        "tag": pa.array([None if i % 3 else b"t%d" % (i % 5) for i in range(n)], pa.binary()),
    })
    for compression in ("none", "snappy", "zstd"):
        path = tmp_path / compression / "f.parquet"
        path.parent.mkdir()
        pq.write_table(table, path, compression=compression)
        metadata = pq.ParquetFile(path).metadata
        assert dictionary_columns(metadata, table.schema) == ["category", "tag"]
        got = batches(path.parent)
        types = {name: got[0].schema.field(name).type for name in table.schema.names}
        assert types == {"id": pa.int64(), "category": pa.dictionary(pa.int32(), pa.string()),
                         "digest": pa.string(),
                         "tag": pa.dictionary(pa.int32(), pa.binary())}
        assert pa.Table.from_batches(got).cast(table.schema).equals(table)


def test_a_file_read_as_dictionaries_loads_and_verifies(tmp_path: Path) -> None:
    """The writer gets decoded columns and the digests still match the table's."""
    from datamove.tabular.dataset import Table, TableJob, compare, load, stored_digests
    from tests.tabular_fixtures import delta_rows, write_parquet_files

    rows = write_parquet_files(tmp_path / "src", files=2, rows=30_000)
    job = TableJob(name="t", source=Location.of(str(tmp_path / "src")), source_format=None,
                   key_filter=KeyFilter((), ()), table=Table(Location.of(str(tmp_path / "t"))),
                   partition_by=("day",), schema_mode="strict")
    assert [f.name for f in batches_schema(tmp_path / "src")] == rows.schema.names
    loaded = load(job, run_id="r")
    stored, _ = stored_digests(job)
    assert [o.status for o in compare(loaded.source, stored)] == ["ok"] * 5
    table = delta_rows(str(tmp_path / "t"))
    assert table.schema.field("cat").type == pa.string()  # written decoded
    assert table.select(rows.schema.names).equals(rows.sort_by("id").cast(table.select(
        rows.schema.names).schema))


def batches_schema(folder: Path) -> pa.Schema:
    location = Location.of(str(folder))
    file = list_source_files(location, None, KeyFilter((), ()))[0]
    with FileReader(location, file) as reader:
        first = next(iter(reader))
    assert pa.types.is_dictionary(first.schema.field("cat").type)  # read as a dictionary
    return first.schema


def text_rows(n: int, start: int = 0) -> pa.Table:
    ids = range(start, start + n)
    return pa.table({"id": pa.array(ids, pa.int64()),
                     "x": pa.array([i / 7 for i in ids]),
                     "name": pa.array([f"row {i}, \"quoted\"" for i in ids])})


def test_csv_and_tsv_read_alike_whichever_reader(tmp_path: Path) -> None:
    """A local plain file goes through the dataset scanner, a compressed one through the
    streaming reader: the same rows and types (those of the first block) either way."""
    import gzip

    import pyarrow.csv as pcsv

    rows = text_rows(120_000)  # ~4 MiB: several of the scanner's 1 MiB blocks
    for name, delimiter in (("plain.csv", ","), ("tabs.tsv", "\t")):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        pcsv.write_csv(rows, folder / name, pcsv.WriteOptions(delimiter=delimiter))
        with open(folder / name, "rb") as raw, gzip.open(folder / f"{name}.gz", "wb") as out:
            out.write(raw.read())
        location = Location.of(str(folder))
        files = list_source_files(location, None, KeyFilter((), ()))
        assert [(f.key, f.compression) for f in files] == [(name, None), (f"{name}.gz", "gzip")]
        for file in files:
            with FileReader(location, file) as reader:
                got = pa.Table.from_batches(list(reader))
            assert got.equals(rows), (name, file.key)


def test_a_csv_value_that_does_not_fit_its_column_later_is_an_error(tmp_path: Path) -> None:
    """Types come from the first 8 MiB; a later value of another type fails the read
    (with the file named by the load), it is never turned into a null."""
    import pyarrow.csv as pcsv

    path = tmp_path / "src" / "late.csv"
    path.parent.mkdir()
    pcsv.write_csv(text_rows(300_000), path)  # ~12 MiB: past the first block
    with open(path, "a") as f:
        f.write("oops,1.5,late\n")
    location = Location.of(str(path.parent))
    [file] = list_source_files(location, None, KeyFilter((), ()))
    with FileReader(location, file) as reader, pytest.raises(pa.ArrowInvalid, match="oops"):
        for _ in reader:
            pass

    from datamove.tabular.dataset import Table, TableJob, load

    job = TableJob(name="t", source=location, source_format=None,
                   key_filter=KeyFilter((), ()), table=Table(Location.of(str(tmp_path / "t"))),
                   partition_by=(), schema_mode="strict")
    with pytest.raises(tabular_source.SchemaProblem,
                       match=r"late\.csv: cannot be read.*'oops'.*first 8 MiB"):
        load(job, run_id="r")
    assert job.table.open() is None  # no commit: the files delta-rs wrote are invisible
