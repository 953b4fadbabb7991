"""Reading a Delta table back: as written (to copy rows) or keyed by partition (to hash them).

Both read single-threaded in pyarrow: a process that exits right after a
threaded pyarrow scan of a deltalake dataset can abort (ledger.scan says more).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from datamove.tabular.digest import BackgroundDigests, Key, PartitionDigests, partition_text
from datamove.tabular.encoding import dictionary_columns, plain_columns

BATCH_ROWS = 131_072


def scanner(dt: Any, where: Any = None, *, dictionaries: bool = False) -> pads.Scanner:
    """A single-threaded scan of the table; a local table is read with Arrow's own
    filesystem and without pre-buffering.

    (deltalake's default filesystem is a Python handler over its Rust object
    store, so every read of a local file crosses the GIL; that and pre-buffering,
    which pays off only against a store's latency, cost a third of a local
    verification's read time. Remote tables keep both, with their storage options.)

    ``dictionaries``: read string and binary columns that the first data file
    keeps dictionary-encoded as dictionaries (tabular_encoding.dictionary_columns).
    """
    dataset, local = _dataset(dt)
    if dictionaries:
        dataset = _with_dictionaries(dataset)
    return dataset.scanner(filter=where, use_threads=False, batch_size=BATCH_ROWS,
                           fragment_scan_options=pads.ParquetFragmentScanOptions(
                               pre_buffer=not local))


def _dataset(dt: Any) -> tuple[pads.FileSystemDataset, bool]:
    """The table's current files as a pyarrow dataset, and whether they are local."""
    url = urlparse(dt.table_uri)
    local = url.scheme == "file"
    filesystem = pafs.SubTreeFileSystem(unquote(url.path), pafs.LocalFileSystem()) \
        if local else None
    return dt.to_pyarrow_dataset(filesystem=filesystem), local


def table_plain_columns(dt: Any) -> list[str]:
    """The columns the table's first data file holds without a dictionary
    (tabular_encoding): what a copy of its rows should write the same way."""
    dataset, _ = _dataset(dt)
    first = next(iter(dataset.get_fragments()), None)
    return plain_columns(first.metadata, dataset.schema) if first is not None else []


def _with_dictionaries(dataset: pads.FileSystemDataset) -> pads.FileSystemDataset:
    """The same files and partitions, with the repeated string columns as dictionaries."""
    fragments = list(dataset.get_fragments())  # the table's file list, already in memory
    if not fragments:
        return dataset
    columns = dictionary_columns(fragments[0].metadata, dataset.schema)
    if not columns:
        return dataset
    form = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(
        dictionary_columns=columns))
    schema = pa.schema([f.with_type(pa.dictionary(pa.int32(), f.type))
                        if f.name in columns else f for f in dataset.schema])
    return pads.FileSystemDataset(
        [form.make_fragment(f.path, filesystem=f.filesystem,
                            partition_expression=f.partition_expression) for f in fragments],
        schema, form, dataset.filesystem)


def scan_batches(dt: Any, where: Any = None) -> Iterator[pa.RecordBatch]:
    """The table's rows as record batches, with the table's own column types."""
    yield from scanner(dt, where).to_batches()


def partition_batches(dt: Any, partition_by: Sequence[str],
                      where: Any = None) -> Iterator[tuple[pa.RecordBatch, Key | None]]:
    """The table's rows for hashing, each batch with its partition key when known.

    Why not ``scan_batches``: hashing is most of a verification's cost, and two
    things make it cheaper without changing a single row hash. A Delta data file
    holds one partition, so a batch's key comes from its file's partition values
    instead of a group-by over its rows; and string columns Parquet keeps in a
    dictionary are read as one, so each distinct value is decoded and hashed
    once per batch (tabular_digest hashes a dictionary array exactly like the
    plain one). The key is None when a requested column is not a partition
    column of the table; the rows are then grouped as usual.
    """
    partition_columns = list(dt.metadata().partition_columns)
    keyed = all(column in partition_columns for column in partition_by)
    path, key = None, None
    for tagged in scanner(dt, where, dictionaries=True).scan_batches():  # file by file
        if tagged.fragment.path != path:
            path = tagged.fragment.path
            key = _fragment_key(tagged.fragment, partition_by) if keyed else None
        yield tagged.record_batch, key


def _fragment_key(fragment: Any, partition_by: Sequence[str]) -> Key:
    """A data file's partition as text (a column without an equality is a null partition)."""
    values = pads.get_partition_keys(fragment.partition_expression)
    return tuple(partition_text(values.get(column)) for column in partition_by)


def digest_table(dt: Any, partition_by: Sequence[str], where: Any = None) -> PartitionDigests:
    """Every row of the open table ``dt`` (matching ``where``) hashed per partition."""
    digests = PartitionDigests(partition_by)
    hasher = BackgroundDigests(digests)
    try:
        for batch, key in partition_batches(dt, partition_by, where):
            hasher.update(batch, key)
    finally:
        hasher.close()
    return digests
