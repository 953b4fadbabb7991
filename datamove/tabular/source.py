"""Tabular sources: which files, in which order, read as streams of record batches,
and the schema policy that decides what may go into a Delta table.

A source is a file or a folder of Parquet, CSV or JSON-lines files on any fsspec
URL. Files are taken in the byte order of their keys (stores.list_entries), so
every run reads them in the same order, which is what makes the load's units
(tabular/dataset.py) the same on a rerun. Nothing is read whole: Parquet by row group
batches, CSV and JSON-lines by blocks (pyarrow's streaming readers).

The schema policy (docs/TABULAR.md) is judged for every file before a row is
written: ``strict`` wants each file to carry exactly the table's columns and
types; ``merge`` adds new columns (nullable), fills absent ones with nulls and
casts values only when every value converts exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from datamove.errors import BadInput, LocationUnreachable
from datamove.stores.core import KeyFilter, Location, describe, list_entries
from datamove.tabular.encoding import dictionary_columns, plain_columns

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv",
            ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}
BATCH_ROWS = 131_072  # most rows in a Parquet batch; CSV and JSON blocks are BLOCK_BYTES
BATCH_BYTES = 32 * 1024 * 1024  # decoded size a Parquet batch aims at (wide rows: fewer)
BLOCK_BYTES = 8 * 1024 * 1024
SCAN_BLOCK_BYTES = 1024 * 1024  # a local CSV file's blocks, parsed several at once


class SchemaProblem(BadInput):
    """A source file whose columns the schema policy refuses (nothing of it is written)."""


@dataclass(frozen=True)
class SourceFile:
    """One source file: its key (relative to the source), path in its filesystem, format."""

    key: str
    path: str
    size: int
    mtime: float | None
    etag: str | None
    format: str
    compression: str | None = None

    @property
    def identity(self) -> str:
        """What makes this version of the file (its key, size and mtime or ETag)."""
        return f"{self.key}\0{self.size}\0{self.etag or ''}\0{self.mtime or ''}"


def file_format(key: str, declared: str | None) -> tuple[str | None, str | None]:
    """(format, compression) of a key: the declared format, else its suffix."""
    name = key.rsplit("/", 1)[-1].lower()
    compression = None
    for suffix, codec in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = codec, name[:-len(suffix)]
    fmt = declared
    if fmt is None:
        fmt = next((f for s, f in SUFFIXES.items() if name.endswith(s)), None)
    return fmt, compression


def list_source_files(source: Location, declared: str | None,
                      key_filter: KeyFilter | None = None) -> list[SourceFile]:
    """The source's files in key order; a source URL naming one file is that file.

    Files whose format cannot be told (no ``format:`` and an unknown suffix) are
    refused together, so a stray README is named rather than silently loaded or
    skipped. Held in memory: a few hundred bytes per file.
    """
    single = _single_file(source)
    entries = [single] if single is not None else list(_entries(source, key_filter))
    files, unknown = [], []
    for key, size, mtime, etag in entries:
        fmt, compression = file_format(key, declared)
        if fmt is None:
            unknown.append(key)
            continue
        if key.rsplit("/", 1)[-1].startswith(("_", ".")):
            continue  # _SUCCESS, _delta_log, .crc: markers of the tools that wrote the files
        path = source.root if single is not None else source.path(key)
        files.append(SourceFile(key, path, size, mtime, etag, fmt, compression))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5
                                          else "")
        raise BadInput(f"{source.url}: cannot tell the format of {shown}; name files "
                       ".parquet, .csv or .jsonl (optionally .gz), set source.format, or "
                       "exclude them")
    return files


def _single_file(source: Location) -> tuple[str, int, float | None, str | None] | None:
    try:
        if source.is_local:
            if not os.path.exists(source.root):
                raise LocationUnreachable(f"{source.url}: the source does not exist; check "
                                          "the path")
            if os.path.isdir(source.root):
                return None
            st = os.stat(source.root)
            return os.path.basename(source.root), st.st_size, st.st_mtime, None
        if source.url.endswith("/"):
            return None
        info = source.fs.info(source.root)
    except FileNotFoundError:
        return None
    except LocationUnreachable:
        raise
    except Exception as exc:
        raise LocationUnreachable(f"{source.url}: cannot reach the store: {describe(exc)}") \
            from exc
    if info.get("type") != "file":
        return None
    mtime = info.get("LastModified") or info.get("mtime")
    return (source.root.rsplit("/", 1)[-1], int(info.get("size") or 0),
            mtime.timestamp() if hasattr(mtime, "timestamp") else mtime,
            str(info.get("ETag", "")).strip('"') or None)


def _entries(source: Location, key_filter: KeyFilter | None) -> Iterator[Any]:
    for entry in list_entries(source, key_filter):
        yield entry.key, entry.size, entry.mtime, entry.etag


def _open(source: Location, file: SourceFile) -> Any:
    """A local file as Arrow's own (its reads release the GIL, which the hashing thread
    needs), anything else as an fsspec file with read-ahead."""
    if source.is_local:
        return pa.OSFile(file.path, "rb")
    return source.fs.open(file.path, "rb", block_size=8 * 1024 * 1024, cache_type="readahead")


class FileReader:
    """Record batches of one source file, as read (no schema policy applied)."""

    def __init__(self, source: Location, file: SourceFile):
        self.file = file
        self._raw = _open(source, file)
        stream: Any = self._raw
        try:
            if file.compression:
                if not isinstance(stream, pa.NativeFile):
                    stream = pa.PythonFile(stream, mode="r")
                stream = pa.CompressedInputStream(stream, file.compression)
            local = file.path if source.is_local and not file.compression else None
            self._batches, self.schema, self.metadata = _reader(file, stream, local)
        except Exception:
            self._raw.close()
            raise

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self._batches

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reader(file: SourceFile, stream: Any,
            local: str | None) -> tuple[Iterator[pa.RecordBatch], pa.Schema, Any]:
    """(batches, schema, Parquet footer or None); ``local``: the file's path when it is a
    local uncompressed file."""
    if file.format == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(stream)
        schema, metadata = parquet.schema_arrow, parquet.metadata
        repeated = dictionary_columns(metadata, schema)
        if repeated:  # the same file, its footer already read
            parquet = pq.ParquetFile(stream, metadata=metadata, read_dictionary=repeated)
        return parquet.iter_batches(batch_size=parquet_batch_rows(metadata)), schema, metadata
    if file.format == "csv":
        import pyarrow.csv as pcsv

        delimiter = "\t" if file.key.lower().split(".")[-1] == "tsv" or \
            ".tsv." in file.key.lower() else ","
        parse = pcsv.ParseOptions(delimiter=delimiter)
        reader = pcsv.open_csv(stream, read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES),
                               parse_options=parse)
        if local is None:
            return iter(reader), reader.schema, None
        return _csv_scan(local, reader.schema, parse), reader.schema, None
    import pyarrow.json as pjson

    reader = pjson.open_json(stream, read_options=pjson.ReadOptions(block_size=BLOCK_BYTES))
    return iter(reader), reader.schema, None


def _csv_scan(path: str, schema: pa.Schema, parse: Any) -> Iterator[pa.RecordBatch]:
    """A local CSV file's rows with the types ``schema`` inferred from its first block,
    through pyarrow's dataset scanner.

    Why not the streaming reader that inferred them: it parses one block at a time,
    while the scanner parses several 1 MiB blocks at once; a million-row feature
    table took 0.61 s one way and 0.45 s the other (benchmarks/README.md). The types
    are fixed so that both readers agree: a later value that does not fit its
    column is an error either way.
    """
    import pyarrow.csv as pcsv
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    form = pads.CsvFileFormat(
        parse_options=parse, read_options=pcsv.ReadOptions(block_size=SCAN_BLOCK_BYTES),
        convert_options=pcsv.ConvertOptions(column_types=schema))
    fragment = form.make_fragment(path, filesystem=pafs.LocalFileSystem())
    yield from fragment.to_batches(schema=schema)


def parquet_batch_rows(metadata: Any) -> int:
    """Rows per batch: BATCH_ROWS, fewer when the footer says rows are wide, so that a
    batch stays near BATCH_BYTES (memory is a few batches, whatever the rows).

    The footer gives encoded sizes: a column of large values repeated under a
    dictionary decodes bigger than it says, so this is an estimate, not a cap."""
    rows = metadata.num_rows
    size = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if rows <= 0 or size <= 0:
        return BATCH_ROWS
    return max(1, min(BATCH_ROWS, BATCH_BYTES * rows // size))


@dataclass(frozen=True)
class FileFacts:
    """What a source file tells before its rows are read."""

    schema: pa.Schema
    rows: int | None  # Parquet's footer count; None for CSV and JSON-lines
    plain_columns: tuple[str, ...]  # Parquet's, to write without a dictionary


def read_facts(source: Location, file: SourceFile) -> FileFacts:
    """A file's schema (Parquet's footer, or what CSV/JSON inference makes of the first
    block), and for Parquet its row count and the columns to write without a
    dictionary (tabular_encoding): one open of the file."""
    try:
        with FileReader(source, file) as reader:
            if reader.metadata is None:
                return FileFacts(reader.schema, None, ())
            return FileFacts(reader.schema, reader.metadata.num_rows,
                             tuple(plain_columns(reader.metadata, reader.schema)))
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise SchemaProblem(f"{file.key}: cannot be read as {file.format}: "
                            f"{describe(exc)}") from exc


# --- types Delta can hold -------------------------------------------------------------

def delta_type(t: pa.DataType) -> pa.DataType:
    """The type a column is written as: what Delta can store for the same values.

    Timestamps become microseconds (Delta's unit; a value with nanoseconds is
    refused when cast), with any time zone as UTC (the same instants); large
    and view strings plain; dictionaries their values; unsigned integers the
    next wider signed type; half floats float32; an all-null column string.
    """
    if pa.types.is_dictionary(t):
        return delta_type(t.value_type)
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_unsigned_integer(t):
        return {8: pa.int16(), 16: pa.int32()}.get(t.bit_width, pa.int64())
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, delta_type(f.type)) for f in t])
    if pa.types.is_map(t):
        return pa.map_(delta_type(t.key_type), delta_type(t.item_type))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) \
            or pa.types.is_large_list_view(t) or pa.types.is_fixed_size_list(t):
        return pa.list_(delta_type(t.value_type))
    return t


_INT_RANK = {pa.int8(): 1, pa.int16(): 2, pa.int32(): 3, pa.int64(): 4}
_FLOAT_RANK = {pa.float32(): 1, pa.float64(): 2}


def widens(have: pa.DataType, table: pa.DataType) -> bool:
    """Whether every value of ``have`` is exactly a value of ``table`` (a safe cast)."""
    if have in _INT_RANK and table in _INT_RANK:
        return _INT_RANK[have] <= _INT_RANK[table]
    if have in _FLOAT_RANK and table in _FLOAT_RANK:
        return _FLOAT_RANK[have] <= _FLOAT_RANK[table]
    if have in _INT_RANK and table == pa.float64():
        return _INT_RANK[have] <= 3  # int64 may not fit a double exactly
    return False


def narrows_checked(have: pa.DataType, table: pa.DataType) -> bool:
    """Casts pyarrow checks value by value (merge mode tries them, failing on a loss):
    integers to any number, and timestamps to dates (JSON has no date type, so
    ``"2024-01-31"`` is inferred as a timestamp; only midnights convert)."""
    numeric = (_INT_RANK.keys() | _FLOAT_RANK.keys())
    return (have in _INT_RANK and table in numeric) or \
        (pa.types.is_timestamp(have) and pa.types.is_date32(table))


def reconcile(table: pa.Schema | None, file_schema: pa.Schema, *, mode: str,
              partition_by: list[str], key: str) -> tuple[pa.Schema, list[str]]:
    """The table schema after this file, and what is wrong with the file (if anything).

    ``table`` None: the file makes the table (every column nullable: a source's
    NOT NULL is a writer's detail, and Delta cannot relax it later).
    """
    problems: list[str] = []
    fields = {f.name: pa.field(f.name, delta_type(f.type), nullable=True)
              for f in file_schema}
    for name in partition_by:
        if name not in fields:
            problems.append(f"{key}: has no partition column {name!r} (partition_by needs "
                            "it in every file)")
    if table is None:
        return pa.schema(list(fields.values())), problems
    table_fields = {f.name: f for f in table}
    extra = [name for name in fields if name not in table_fields]
    missing = [name for name in table_fields if name not in fields]
    if mode == "strict":
        if extra:
            problems.append(f"{key}: column{'s' * (len(extra) > 1)} "
                            f"{', '.join(repr(c) for c in extra)} not in the table "
                            f"(schema_mode: strict; use merge to add new columns)")
        if missing:
            problems.append(f"{key}: lacks the table's column{'s' * (len(missing) > 1)} "
                            f"{', '.join(repr(c) for c in missing)} (schema_mode: strict; "
                            "use merge to fill absent columns with nulls)")
    for f in file_schema:
        want = table_fields.get(f.name)
        have = delta_type(f.type)
        if want is None or have == want.type or pa.types.is_null(f.type):
            continue
        if mode == "merge" and (widens(have, want.type) or narrows_checked(have, want.type)):
            continue
        hint = ("merge casts only numbers and timestamps to dates, where every value "
                "converts exactly"
                if mode == "merge" else "schema_mode: strict wants the table's type")
        problems.append(f"{key}: column {f.name!r} is {f.type} but the table has "
                        f"{want.type} ({hint}; Delta cannot change a column's type in place)")
    merged = list(table) + [fields[name] for name in extra] if mode == "merge" else list(table)
    return pa.schema(merged), problems


def conform(batch: pa.RecordBatch, schema: pa.Schema, key: str) -> pa.RecordBatch:
    """``batch`` as ``schema``: columns by name, absent ones null, values cast exactly.

    A dictionary column of the schema's value type stays a dictionary (it hashes
    the same, each distinct value once); ``decoded`` turns it into ``schema``'s
    type for the writer.
    """
    arrays = []
    names = batch.schema.names
    for field in schema:
        if field.name not in names:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(field.name)
        if column.type != field.type and not _encodes(column.type, field.type):
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaProblem(f"{key}: column {field.name!r} ({column.type}) cannot be "
                                    f"written as {field.type} without changing values: "
                                    f"{describe(exc)}") from exc
        if not field.nullable and column.null_count:
            raise SchemaProblem(f"{key}: column {field.name!r} has {column.null_count} null "
                                "values but is NOT NULL in the table")
        arrays.append(column)
    return pa.RecordBatch.from_arrays(
        arrays, schema=pa.schema([f.with_type(a.type) for f, a in zip(schema, arrays,
                                                                        strict=True)]))


def decoded(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A ``conform``-ed batch with its dictionaries decoded: exactly ``schema``."""
    if batch.schema == schema:
        return batch
    return pa.RecordBatch.from_arrays(
        [column if column.type == field.type else column.cast(field.type)
         for column, field in zip(batch.columns, schema, strict=True)], schema=schema)


def _encodes(have: pa.DataType, want: pa.DataType) -> bool:
    return pa.types.is_dictionary(have) and have.value_type == want
