"""Parquet dictionary encoding, read from a file's footer: which columns to read as
dictionaries, and which to write without one.

Parquet writers (pyarrow, Spark, delta-rs) try a dictionary for every column and
fall back to plain pages once the dictionary grows past its page limit. What the
writer of a file ended up doing tells what its values are like:

- a column the writer *kept* in its dictionary repeats a few values: reading it as
  a dictionary lets hashing handle each distinct value once (tabular_digest);
- a column the writer *gave up* on (or never tried) holds mostly distinct values:
  writing it with a dictionary again is wasted work. delta-rs builds the
  dictionary for every such column of every file before falling back, which made
  its write of a float-feature table three times slower than without (see
  docs/TABULAR.md, "Parquet encodings").

Both are judged from the first row group's column chunks: a footer read, no data.
CSV and JSON-lines files have no encodings to read; for them the first batch a
commit writes is the evidence: a column whose values are mostly distinct there is
written without a dictionary. Only the choice of encoding follows; a value is
never changed by it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

PAGE_HEADERS = 1024  # bytes a column chunk's page headers may take besides its values
SAMPLE_ROWS = 1_000  # fewer non-null values in a first block say nothing
DISTINCT_SHARE = 0.5  # more distinct values than this share: write without a dictionary


def dictionary_columns(metadata: Any, schema: pa.Schema) -> list[str]:
    """The string and binary columns to read dictionary-encoded, as the file stores them.

    Only columns the writer kept in its dictionary: reading a column of mostly
    unique values as a dictionary would cost more than it saves.
    """
    wanted = {f.name for f in schema if pa.types.is_string(f.type) or
              pa.types.is_large_string(f.type) or pa.types.is_binary(f.type) or
              pa.types.is_large_binary(f.type)}
    return [path for path, kept in _chunks(metadata) if path in wanted and kept]


def plain_columns(metadata: Any, schema: pa.Schema) -> list[str]:
    """The top-level primitive columns the file's writer gave up a dictionary for, or
    never tried one: the columns to write without a dictionary.

    Nested columns are left to the writer's default (delta-rs names column
    properties by top-level name only).
    """
    flat = {f.name for f in schema if not pa.types.is_nested(f.type)}
    return [path for path, kept in _chunks(metadata) if path in flat and not kept]


def distinct_columns(batch: pa.RecordBatch) -> list[str]:
    """The top-level primitive columns whose values in ``batch`` (the first batch of a
    text file) are mostly distinct: plain_columns for files without a footer."""
    import pyarrow.compute as pc

    out = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_nested(field.type) or pa.types.is_boolean(field.type):
            continue
        values = len(column) - column.null_count
        if values >= SAMPLE_ROWS and pc.count_distinct(column).as_py() > DISTINCT_SHARE * values:
            out.append(field.name)
    return out


def writer_properties(plain: Iterable[str]) -> Any:
    """delta-rs writer properties that skip the dictionary for ``plain`` columns
    (None, delta-rs's defaults, when there are none)."""
    from deltalake import ColumnProperties, WriterProperties

    columns = sorted(set(plain))
    if not columns:
        return None
    return WriterProperties(column_properties={
        name: ColumnProperties(dictionary_enabled=False) for name in columns})


def _chunks(metadata: Any) -> Iterable[tuple[str, bool]]:
    """(column path, kept in its dictionary) for each column chunk of the first row group.

    Kept: a dictionary page and data pages that hold no more than indices (at most
    4 bytes a value), i.e. no fallback to plain pages. The dictionary page's
    stored span is subtracted from the uncompressed size; a dictionary that
    compressed well only overstates the data, which errs towards "not kept".
    An empty row group, or a column of nulls only, says nothing and is skipped.
    """
    if metadata is None or metadata.num_row_groups == 0:
        return
    group = metadata.row_group(0)
    if group.num_rows == 0:
        return
    for i in range(group.num_columns):
        chunk = group.column(i)
        stats = chunk.statistics if chunk.is_stats_set else None
        if stats is not None and stats.has_null_count and stats.null_count >= chunk.num_values:
            continue
        kept = False
        if chunk.has_dictionary_page:
            dictionary = chunk.data_page_offset - (chunk.dictionary_page_offset or 0)
            data = chunk.total_uncompressed_size - dictionary
            kept = dictionary >= 0 and data <= 4 * chunk.num_values + PAGE_HEADERS
        yield chunk.path_in_schema, kept
