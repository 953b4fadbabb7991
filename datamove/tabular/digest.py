"""Order-independent content digests of rows, per partition (docs/FORMAT.md, "Tabular tables").

A Delta load is verified by comparing, per partition, the source's rows with the
table's: their count and a digest that does not depend on row order, file
layout, batch boundaries or column order, so the source can be hashed while it
streams into the writer and the table while it streams back, and two digests
of disjoint row sets simply add up (a partition moved to a cold table still
counts: hot + cold = source).

Each row gets a 64-bit hash built from a canonical 64-bit value per column:
the same logical value hashes the same whatever Arrow type carries it
(int32 or int64, float32 or float64, timestamp[s] or timestamp[us], string or
large_string or dictionary), because a lossless type change is not a content
change. Everything is vectorised in ``pyarrow.compute`` (numpy is not a
dependency) and every constant is written down, so the digest is stable across
library versions and can be recomputed by anyone (a known-answer test pins it).

It detects lost, duplicated and altered rows with a failure chance of about
2**-64 for accidental damage; it is not a cryptographic commitment against an
adversary who chooses the rows (the ledger's and audit log's sha256s of files
are that).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import queue
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

U64 = pa.uint64()
MASK = (1 << 64) - 1
M1, M2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53  # MurmurHash3 fmix64
P = 0x100000001B3  # the polynomial base for bytes (FNV-1's 64-bit prime, odd)
K_LEN = 0x9E3779B97F4A7C15  # golden ratio: mixes a byte string's length in
ROW_C = 0x2545F4914F6CDD1D  # added before a row's final mix, so an all-null row is not 0
LIST_C = 0x27BB2EE687B0B0FD  # the same for a list value
DOMAIN = b"datamove-row-digest-v1\0"
_S33 = pa.scalar(33, U64)


class DigestError(ValueError):
    """A column whose type has no canonical encoding (the load refuses it)."""


def _u(value: int) -> pa.Scalar:
    return pa.scalar(value & MASK, U64)


def seed(name: str) -> int:
    """A column's seed: the first 8 bytes (little-endian) of sha256(DOMAIN + name)."""
    return int.from_bytes(hashlib.sha256(DOMAIN + name.encode()).digest()[:8], "little")


def multiplier(name: str) -> int:
    """A column's odd multiplier: bytes 8..16 of the same sha256, low bit set."""
    return int.from_bytes(hashlib.sha256(DOMAIN + name.encode()).digest()[8:16], "little") | 1


def fmix64(x: pa.Array) -> pa.Array:
    """MurmurHash3's 64-bit finaliser: a bijection with full avalanche."""
    x = pc.bit_wise_xor(x, pc.shift_right(x, _S33))
    x = pc.multiply(x, _u(M1))
    x = pc.bit_wise_xor(x, pc.shift_right(x, _S33))
    x = pc.multiply(x, _u(M2))
    return pc.bit_wise_xor(x, pc.shift_right(x, _S33))


# --- canonical 64-bit values ----------------------------------------------------------

_TO_MICROS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": -1_000}  # negative: divide


def _scaled(arr: pa.Array, unit: str) -> pa.Array:
    ints = arr.cast(pa.int64())
    factor = _TO_MICROS[unit]
    if factor == 1:
        return ints
    if factor > 0:
        return pc.multiply(ints, pa.scalar(factor, pa.int64()))
    return pc.divide(ints, pa.scalar(-factor, pa.int64()))


def value_hash(arr: pa.Array) -> pa.Array:
    """The canonical 64-bit value of each element (uint64; null where ``arr`` is null)."""
    t = arr.type
    if pa.types.is_dictionary(t):  # each distinct value once, then by index
        return pc.take(value_hash(arr.dictionary), arr.indices)
    if pa.types.is_boolean(t) or pa.types.is_integer(t):
        if t == U64:
            return arr
        return (arr if t == pa.int64() else arr.cast(pa.int64())).view(U64)
    if pa.types.is_floating(t):
        # NaNs by their bits: both sides hash the same conformed values (tabular.Rows),
        # so a NaN's payload is what the table stores.
        floats = arr if t == pa.float64() else arr.cast(pa.float64())
        return floats.view(U64)
    if pa.types.is_date32(t):
        return arr.cast(pa.int32()).cast(pa.int64()).view(U64)
    if pa.types.is_date64(t):
        return pc.divide(arr.cast(pa.int64()), pa.scalar(86_400_000, pa.int64())).view(U64)
    if pa.types.is_timestamp(t) or pa.types.is_time(t) or pa.types.is_duration(t):
        return _scaled(arr, t.unit).view(U64)
    if pa.types.is_decimal(t):
        return _bytes_hash(arr.cast(pa.string()))
    if pa.types.is_string(t) or pa.types.is_binary(t):
        return _strings_hash(arr)
    if (pa.types.is_large_string(t) or pa.types.is_large_binary(t)
            or pa.types.is_string_view(t) or pa.types.is_binary_view(t)
            or pa.types.is_fixed_size_binary(t)):
        wide = pa.large_string() if pa.types.is_string_view(t) or pa.types.is_large_string(t) \
            else pa.large_binary()
        return _strings_hash(arr.cast(wide))
    if pa.types.is_struct(t):
        fields = [(t.field(i).name, child) for i, child in enumerate(arr.flatten())]
        combined = fmix64(pc.add(combine(fields, len(arr)), _u(ROW_C)))
        return pc.if_else(arr.is_valid(), combined, pa.scalar(None, U64))
    if pa.types.is_map(t):
        entries = pa.StructArray.from_arrays([arr.keys, arr.items], names=["key", "value"])
        lists = pa.ListArray.from_arrays(arr.offsets, entries, mask=arr.is_null())
        return value_hash(lists)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) \
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return _list_hash(arr.cast(pa.large_list(t.value_type)))
    if pa.types.is_null(t):
        return pa.nulls(len(arr), U64)
    raise DigestError(f"type {t} has no canonical encoding in the row digest")


_cache: dict[str, pa.Array] = {}
SLICE_BYTES = 1 << 20  # byte strings are hashed in row slices of about this many bytes
P_INV = pow(P, -1, 1 << 64)


def _arange(n: int) -> pa.Array:
    """0, 1, …, n-1 as int64 (a cached array, grown by doubling)."""
    have = _cache.get("arange")
    if have is None or len(have) < n:
        size = max(1024, 1 << (max(n, 1) - 1).bit_length())
        have = _cache["arange"] = pc.subtract(
            pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), size)),
            pa.scalar(1, pa.int64()))
    return have.slice(0, n)


def _powers(base: int, n: int, name: str) -> pa.Array:
    """base**0, …, base**(n-1) mod 2**64; cached up to SLICE_BYTES entries."""
    have = _cache.get(name)
    if have is None:
        have = pa.array([1], U64)
    while len(have) < n:
        have = pa.concat_arrays([have, pc.multiply(have, _u(pow(base, len(have), 1 << 64)))])
    if len(have) <= 2 * SLICE_BYTES:
        _cache[name] = have
    return have.slice(0, n)


def _length_terms(n: int) -> pa.Array:
    """For lengths 0 … n-1: sum_{j<len} P**j + len * K_LEN mod 2**64, the part of a byte
    string's hash that depends on its length only (the "+ 1" of every byte and the
    length term); cached like _powers."""
    have = _cache.get("lengths")
    if have is None or len(have) < n:
        size = max(n, len(have) if have is not None else 0)
        geometric = pa.concat_arrays([pa.array([0], U64),
                                      pc.cumulative_sum(_powers(P, size - 1, "pow"))])
        have = pc.add(geometric, pc.multiply(_arange(size).cast(U64), _u(K_LEN)))
        if size <= 2 * SLICE_BYTES + 1:
            _cache["lengths"] = have
    return have.slice(0, n)


def _segment_sums(values: pa.Array, offsets: pa.Array) -> pa.Array:
    """Sum (mod 2**64) of ``values[offsets[i]:offsets[i+1]]`` for each i (offsets from 0).

    From one running sum: cum[k - 1] is the sum of the first k values, and k = 0
    (a null index, filled with 0) has none; no copy of ``values`` is made. (The
    running sum is taken as int64, which wraps to the same bits a third faster.)"""
    cum = pc.cumulative_sum(values.view(pa.int64())).view(U64)
    before = pc.subtract(offsets, pa.scalar(1, pa.int64()))
    before = pc.if_else(pc.less(before, pa.scalar(0, pa.int64())),
                        pa.scalar(None, pa.int64()), before)
    bounds = pc.fill_null(pc.take(cum, before), _u(0))
    return pc.subtract(bounds.slice(1), bounds.slice(0, len(bounds) - 1))


def _strings_hash(arr: pa.Array) -> pa.Array:
    """Like _bytes_hash; a column of few distinct values hashes each distinct value once."""
    n = len(arr)
    if n >= 8192:  # a sample of 2048 values with repeats suggests a dictionary pays off
        sample = pc.take(arr, pc.multiply(_arange(2048), pa.scalar(n // 2048, pa.int64())))
        if len(pc.unique(sample)) <= 1024:
            encoded = pc.dictionary_encode(arr)
            return pc.take(_bytes_hash(encoded.dictionary), encoded.indices)
    return _bytes_hash(arr)


def _bytes_hash(arr: pa.Array) -> pa.Array:
    """sum_j (byte_j + 1) * P**j + length * K_LEN, mod 2**64, per value (string or binary)."""
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    n = len(arr)
    bufs = arr.buffers()
    offsets = pa.Array.from_buffers(pa.int64() if large else pa.int32(), n + 1,
                                    [None, bufs[1]], offset=arr.offset).cast(pa.int64())
    lengths = pc.subtract(offsets.slice(1), offsets.slice(0, n))
    first, last = offsets[0].as_py(), offsets[n].as_py()
    if last - first <= SLICE_BYTES:
        cuts = [0, n]
    else:  # rows in slices of about SLICE_BYTES (a longer value is a slice of its own)
        bucket = pc.divide(pc.subtract(offsets, pa.scalar(first, pa.int64())),
                           pa.scalar(SLICE_BYTES, pa.int64()))
        changes = pc.indices_nonzero(pc.not_equal(bucket.slice(1), bucket.slice(0, n)))
        cuts = sorted({0, n, *(i + 1 for i in changes.to_pylist() if i + 1 < n)})
    parts = []
    for lo, hi in itertools.pairwise(cuts):
        start, end = offsets[lo].as_py(), offsets[hi].as_py()
        if end == start:
            parts.append(pa.repeat(_u(0), hi - lo))
            continue
        # Each byte is weighted by P**(its position in the slice); a value's sum is then
        # divided by P**(its start) (P is odd, so invertible mod 2**64), and what depends
        # only on its length (the + 1 of each byte, the length term) is looked up.
        data = pa.Array.from_buffers(pa.uint8(), end - start, [None, bufs[2]], offset=start)
        terms = pc.multiply(data.cast(U64), _powers(P, end - start, "pow"))
        relative = pc.subtract(offsets.slice(lo, hi - lo + 1), pa.scalar(start, pa.int64()))
        sums = _segment_sums(terms, relative)
        starts = relative.slice(0, hi - lo)
        part_lengths = lengths.slice(lo, hi - lo)
        parts.append(pc.add(
            pc.multiply(sums, pc.take(_powers(P_INV, end - start + 1, "inv"), starts)),
            pc.take(_length_terms(end - start + 1), part_lengths)))
    value = parts[0] if len(parts) == 1 else pa.concat_arrays(parts)
    if arr.null_count:
        value = pc.if_else(arr.is_valid(), value, pa.scalar(None, U64))
    return value


def _list_hash(arr: pa.Array) -> pa.Array:
    """fmix64(sum_j fmix64(h(e_j) xor fmix64(j + 1)) + length * K_LEN + LIST_C)."""
    n = len(arr)
    offsets = arr.offsets.cast(pa.int64())
    relative = pc.subtract(offsets, pa.scalar(offsets[0].as_py(), pa.int64()))
    values = arr.values.slice(offsets[0].as_py(), offsets[n].as_py() - offsets[0].as_py())
    lengths = pc.subtract(relative.slice(1), relative.slice(0, n))
    elements = pc.fill_null(value_hash(values), _u(0))
    parents = pc.list_parent_indices(pa.LargeListArray.from_arrays(relative, values))
    position = pc.add(pc.subtract(_arange(len(values)), pc.take(relative, parents)),
                      pa.scalar(1, pa.int64())).cast(U64)
    terms = fmix64(pc.bit_wise_xor(elements, fmix64(position)))
    value = pc.add(_segment_sums(terms, relative), pc.multiply(lengths.cast(U64), _u(K_LEN)))
    value = fmix64(pc.add(value, _u(LIST_C)))
    if arr.null_count:
        value = pc.if_else(arr.is_valid(), value, pa.scalar(None, U64))
    return value


# --- rows -----------------------------------------------------------------------------

def combine(columns: Iterable[tuple[str, pa.Array]], n: int) -> pa.Array:
    """sum over columns of (value * multiplier(name) + seed(name)); a null adds 0.

    (The seeds of columns without nulls are added once, as one constant.)
    """
    total: pa.Array | None = None
    constant = 0
    for name, column in columns:
        if pa.types.is_null(column.type):
            continue  # all null: adds nothing, exactly like a column the rows lack
        values = value_hash(column)
        term = pc.multiply(values, _u(multiplier(name)))
        if term.null_count:
            term = pc.fill_null(pc.add(term, _u(seed(name))), _u(0))
        else:
            constant += seed(name)
        total = term if total is None else pc.add(total, term)
    if total is None:
        return pa.repeat(_u(constant), n)
    return pc.add(total, _u(constant)) if constant & MASK else total


def row_hashes(batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """fmix64(combine(columns) + ROW_C): one uint64 per row."""
    columns = [(name, _array(batch.column(i))) for i, name in enumerate(batch.schema.names)]
    return fmix64(pc.add(combine(columns, batch.num_rows), _u(ROW_C)))


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    return column


@dataclass
class Digest:
    """A multiset of rows: its size and two sums (mod 2**64) of its row hashes r."""

    rows: int = 0
    sum: int = 0  # sum of r
    square: int = 0  # sum of r*r

    def add(self, rows: int, total: int, square: int) -> None:
        self.rows += rows
        self.sum = (self.sum + total) & MASK
        self.square = (self.square + square) & MASK

    def merge(self, other: Digest) -> None:
        self.add(other.rows, other.sum, other.square)

    @property
    def hex(self) -> str:
        """32 hex digits: the sum, then the sum of squares (16 each, big-endian)."""
        return f"{self.sum:016x}{self.square:016x}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Digest) and (self.rows, self.sum, self.square) == \
            (other.rows, other.sum, other.square)


Key = tuple[str | None, ...]


def partition_text(value: Any) -> str | None:
    """A partition value as text: ISO 8601 for dates and times, ``true``/``false``,
    decimal digits for numbers, the string itself otherwise; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def partition_json(columns: Sequence[str], key: Key) -> str:
    """A partition as the ledger and audit log write it: ``{"day":"2024-01-01"}``."""
    return json.dumps(dict(zip(columns, key, strict=True)), separators=(",", ":"),
                      ensure_ascii=False)


class PartitionDigests:
    """Per-partition digests of a stream of record batches (``update`` each batch)."""

    def __init__(self, partition_by: Sequence[str]):
        self.partition_by = list(partition_by)
        self.parts: dict[Key, Digest] = {}

    def update(self, batch: pa.RecordBatch | pa.Table, key: Key | None = None) -> None:
        """Hash ``batch``'s rows; ``key``: the partition all of them belong to, when the
        caller knows it (a Delta file holds one partition), which saves grouping them."""
        if batch.num_rows == 0:
            return
        r = row_hashes(batch)
        square = pc.multiply(r, r)
        if key is not None or not self.partition_by:
            self._add(key or (), batch.num_rows, pc.sum(r).as_py(), pc.sum(square).as_py())
            return
        columns = {name: batch.column(name) for name in self.partition_by}
        grouped = pa.table({**columns, "__r": r, "__q": square}).group_by(
            self.partition_by, use_threads=False).aggregate(
            [("__r", "sum"), ("__q", "sum"), ("__r", "count")])
        keys = zip(*(grouped.column(name).to_pylist() for name in self.partition_by),
                   strict=True)
        for key, total, sq, count in zip(keys, grouped.column("__r_sum").to_pylist(),
                                         grouped.column("__q_sum").to_pylist(),
                                         grouped.column("__r_count").to_pylist(), strict=True):
            self._add(tuple(partition_text(v) for v in key), count, total, sq)

    def _add(self, key: Key, rows: int, total: int, square: int) -> None:
        digest = self.parts.get(key)
        if digest is None:
            digest = self.parts[key] = Digest()
        digest.add(rows, total, square)

    def merge(self, other: PartitionDigests) -> None:
        for key, digest in other.parts.items():
            self.parts.setdefault(key, Digest()).merge(digest)

    @property
    def total(self) -> Digest:
        out = Digest()
        for digest in self.parts.values():
            out.merge(digest)
        return out


class BackgroundDigests:
    """``PartitionDigests.update`` on a thread of its own, fed through a short queue.

    pyarrow compute releases the GIL, so hashing overlaps with reading the source
    and with delta-rs encoding Parquet (or with reading the table back) instead of
    adding to it. At most ``depth`` batches wait, so memory stays bounded.
    """

    def __init__(self, digests: PartitionDigests, depth: int = 4):
        self.digests = digests
        self._queue: queue.Queue[tuple[pa.RecordBatch, Key | None] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="datamove-digest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.digests.update(*item)
                except BaseException as exc:  # reported by update() or close()
                    self._error = exc

    def update(self, batch: pa.RecordBatch, key: Key | None = None) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((batch, key))

    def close(self) -> PartitionDigests:
        """Wait for every queued batch; the digests, or the hashing error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.digests
