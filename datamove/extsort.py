"""An external sort of Arrow record batches: any number of rows in bounded memory.

Planning lines the ledger's rows up with listings that arrive in the UTF-8 byte
order of the key (S3's order), so the rows must come in that order too; at ten
million objects they cannot be sorted in memory. :func:`sorted_batches` sorts
chunks of at most ``memory_rows`` rows with Arrow (its string order is the byte
order of the UTF-8 encoding: a ``memcmp``), spills each sorted chunk ("run") to
a temporary Arrow IPC file, and merges the runs. Input that fits in one chunk
is sorted in memory and never touches disk.

The merge works a batch at a time, not a row at a time: every row not after the
smallest of the runs' current last rows (in the total order key, ``then``, run,
position) can be emitted, since every row still unread comes after it. Those
rows, taken as a prefix of each run's current batch, are sorted together
(stably, runs in order) and emitted; the run that set the bound always empties
its batch, so each round makes progress. Memory: one chunk and its sorted copy
while runs are formed; while merging, one batch of ``memory_rows // FAN_IN``
rows per run (at most ``FAN_IN`` runs: more are first merged into longer runs
on disk), so about ``2 × memory_rows`` rows at the peak, whatever the input size.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

FAN_IN = 64
"""Runs merged at once; more runs are first merged into longer ones on disk, so the
merge holds at most this many batches whatever the input size."""

MIN_READ_ROWS = 1_024
"""The smallest batch a spilled run is written (and read back) in."""


def sorted_batches(batches: Iterable[pa.RecordBatch], by: str, *, then: str | None = None,
                   memory_rows: int = 1_000_000,
                   spill_dir: str | None = None) -> Iterator[pa.RecordBatch]:
    """``batches``' rows ordered by the UTF-8 byte order of string column ``by``, then by
    column ``then`` (nulls last), otherwise in input order (a stable sort).

    At most ``memory_rows`` rows are sorted in memory at once; bigger inputs spill
    sorted runs to Arrow IPC files in a fresh directory under ``spill_dir`` (the
    system's temporary directory by default, ``TMPDIR``), removed when this
    iterator is exhausted, closed or fails. ``by`` must hold no nulls. Every batch
    has the input's schema; an empty input yields nothing.
    """
    if memory_rows < 1:
        raise ValueError(f"memory_rows must be at least 1, not {memory_rows}")
    sort_keys = [(by, "ascending")] + ([(then, "ascending")] if then else [])
    read_rows = max(MIN_READ_ROWS, memory_rows // FAN_IN)
    spill = _Spill(spill_dir)
    try:
        pending: list[pa.RecordBatch] = []
        rows = 0
        schema: pa.Schema | None = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            schema = schema or batch.schema
            _check_keys(batch, by)
            pending.append(batch)
            rows += batch.num_rows
            while rows > memory_rows:  # more is coming: this chunk cannot be the only one
                chunk = pa.Table.from_batches(pending)
                spill.write(chunk.slice(0, memory_rows).sort_by(sort_keys), read_rows)
                rest = chunk.slice(memory_rows)
                pending, rows = rest.to_batches(), rest.num_rows
                del chunk, rest
        if schema is None:
            return
        if not spill.runs:  # one chunk: sorted in memory, never on disk
            table = pa.Table.from_batches(pending, schema).sort_by(sort_keys)
            del pending
            yield from table.to_batches(max_chunksize=read_rows)
            return
        if pending:
            spill.write(pa.Table.from_batches(pending, schema).sort_by(sort_keys), read_rows)
        del pending
        while len(spill.runs) > FAN_IN:  # merge neighbours into longer runs, order kept
            runs, spill.runs = spill.runs, []
            for start in range(0, len(runs), FAN_IN):
                group = runs[start:start + FAN_IN]
                with spill.writer(schema) as writer:
                    for merged in _merge([spill.read(p) for p in group], by, then, sort_keys):
                        writer.write_table(pa.Table.from_batches([merged]), read_rows)
                spill.close()
                for path in group:
                    os.unlink(path)
        yield from _merge([spill.read(p) for p in spill.runs], by, then, sort_keys)
    finally:
        spill.remove()


def _check_keys(batch: pa.RecordBatch, by: str) -> None:
    column = batch.column(by)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise TypeError(f"sort column {by!r} is {column.type}, not a string column")
    if column.null_count:
        raise ValueError(f"sort column {by!r} holds nulls")


class _Spill:
    """The temporary directory of one sort and its run files, in the order written."""

    def __init__(self, parent: str | None):
        self.parent = parent
        self.directory: str | None = None
        self.runs: list[str] = []
        self._written = 0
        self._open: list[Any] = []

    def _path(self) -> str:
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="datamove-sort-", dir=self.parent)
        self._written += 1
        return os.path.join(self.directory, f"run-{self._written:06d}.arrow")

    @contextlib.contextmanager
    def writer(self, schema: pa.Schema) -> Iterator[Any]:
        path = self._path()
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            yield writer
        self.runs.append(path)

    def write(self, table: pa.Table, read_rows: int) -> None:
        with self.writer(table.schema) as writer:
            writer.write_table(table, max_chunksize=read_rows)

    def read(self, path: str) -> Iterator[pa.RecordBatch]:
        """A run's batches, read one at a time (not memory-mapped: its pages would
        count towards the process's resident memory until unmapped)."""
        source = pa.OSFile(path, "rb")
        self._open.append(source)
        reader = pa.ipc.open_file(source)
        return (reader.get_batch(i) for i in range(reader.num_record_batches))

    def close(self) -> None:
        for source in self._open:
            with contextlib.suppress(Exception):
                source.close()
        self._open = []

    def remove(self) -> None:
        self.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _binary(column: pa.Array) -> pa.Array:
    """A string column as bytes, so comparisons are plainly bytewise."""
    return column.cast(pa.large_binary() if pa.types.is_large_string(column.type)
                       else pa.binary())


def _merge(runs: list[Iterator[pa.RecordBatch]], by: str, then: str | None,
           sort_keys: list[tuple[str, str]]) -> Iterator[pa.RecordBatch]:
    """Merge sorted runs (each a stream of non-empty batches), stably: on equal keys
    an earlier run's rows come first."""
    heads: dict[int, pa.RecordBatch] = {}
    for index, run in enumerate(runs):
        batch = next(run, None)
        if batch is not None:
            heads[index] = batch
    while heads:
        bound_run, bound_key, bound_then = min(
            ((i, *_last(b, by, then)) for i, b in heads.items()),
            key=lambda last: (last[1], *_then_order(last[2]), last[0]))
        pieces = []
        for index, batch in list(heads.items()):
            if index == bound_run:
                taken = batch.num_rows
            else:
                taken = _rows_before(batch, by, then, bound_key, bound_then,
                                     earlier=index < bound_run)
            if taken:
                pieces.append(batch.slice(0, taken))
            if taken < batch.num_rows:
                heads[index] = batch.slice(taken)
                continue
            following = next(runs[index], None)
            if following is None:
                del heads[index]
            else:
                heads[index] = following
        table = pa.Table.from_batches(pieces)
        if len(pieces) > 1:
            table = table.sort_by(sort_keys)  # stable: pieces are in run order
        yield from table.combine_chunks().to_batches()


def _last(batch: pa.RecordBatch, by: str, then: str | None) -> tuple[bytes, Any]:
    last = batch.num_rows - 1
    key = _binary(batch.column(by).slice(last, 1))[0].as_py()
    return key, (batch.column(then)[last] if then else None)


def _then_order(value: pa.Scalar | None) -> tuple[bool, Any]:
    """Python ordering of a ``then`` value: nulls last, as Arrow sorts them."""
    if value is None or not value.is_valid:
        return (True, None)
    return (False, value.as_py())


def _rows_before(batch: pa.RecordBatch, by: str, then: str | None, key: bytes,
                 then_value: pa.Scalar | None, *, earlier: bool) -> int:
    """How many leading rows of a sorted batch come before the bound row (key,
    then_value) of another run; on a tie, rows of an ``earlier`` run do."""
    keys = _binary(batch.column(by))
    bound = pa.scalar(key, keys.type)
    before = pc.less(keys, bound)
    same = pc.equal(keys, bound)
    if then is None:
        tie = pa.scalar(earlier)
    else:
        values = batch.column(then)
        if then_value is None or not then_value.is_valid:  # the bound is null: last
            less, equal = pc.is_valid(values), pc.is_null(values)
        else:
            less = pc.fill_null(pc.less(values, then_value), False)
            equal = pc.fill_null(pc.equal(values, then_value), False)
        tie = pc.or_(less, pc.and_(equal, pa.scalar(earlier)))
    # sorted rows, so the rows before the bound are a prefix: count them
    return pc.sum(pc.or_(before, pc.and_(same, tie))).as_py() or 0
