"""Which objects a dataset takes: rclone's filters, judged in one place by the plan.

A dataset's ``include``/``exclude`` globs (stores/core.py, ``glob_to_regex``),
``min_size``/``max_size``, ``min_age``/``max_age`` and ``files_from``
(docs/MANIFEST.md, "Filters") are applied by ``march.plan_dataset`` to each key
it lines up: an object filtered out is neither copied, nor checked, nor counted
as a failure, and is counted as ``filtered``. A key is judged by its source
object; a key the source no longer has, by its last recorded copy (the ledger's
size and source time) or else by the destination's object. So an object that
leaves the filter (it grew past ``max_size``, it aged past ``max_age``) is never
planned as "deleted at the source", and its ledger rows stay as they are.

``files_from`` is a UTF-8 file of keys, one per line, read as a stream: its keys
are sorted into the listings' order (UTF-8 bytes) by the external sort
(extsort.py), in bounded memory whatever its length, and merged with the
listings like a third one. A key it names that the source lacks is reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from datamove.errors import BadInput
from datamove.ledger.tables import LedgerRow
from datamove.manifest.model import DatasetSpec
from datamove.stores.core import Entry
from datamove.units import format_size

FILES_FROM_MEMORY_ROWS = 250_000
"""Keys of a ``files_from`` sorted in memory at once; more spill to sorted runs on disk."""

_READ_ROWS = 65_536  # keys handed to the sort per batch


@dataclass(frozen=True, slots=True)
class Listed:
    """A key named by ``files_from``, shaped for march (it has a ``key``)."""

    key: str


@dataclass(frozen=True)
class Filters:
    """A dataset's filters beside its include/exclude globs (``DatasetJob.key_filter``).
    Picklable."""

    min_size: int | None = None
    max_size: int | None = None
    min_age: timedelta | None = None
    max_age: timedelta | None = None
    files_from: str | None = None  # a local path

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> Filters:
        return cls(spec.min_size, spec.max_size, spec.min_age, spec.max_age, spec.files_from)

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.min_size, self.max_size, self.min_age,
                                           self.max_age, self.files_from))

    def reason_out(self, source: Entry | None, destination: Entry | None,
                   recorded: LedgerRow | None, listed: bool, now: float) -> str | None:
        """Why this key is outside the dataset, or None when it is in. ``listed``:
        ``files_from`` names it (ignored without a ``files_from``); ``now``: the
        plan's start, which ages count back from."""
        if self.files_from is not None and not listed:
            return "not in files_from"
        if source is not None:
            size, mtime = source.size, source.mtime
        elif recorded is not None:
            size, mtime = recorded.size, recorded.source_mtime
        elif destination is not None:
            size, mtime = destination.size, destination.mtime
        else:
            return None
        if self.min_size is not None and size < self.min_size:
            return f"smaller than min_size {format_size(self.min_size)}"
        if self.max_size is not None and size > self.max_size:
            return f"larger than max_size {format_size(self.max_size)}"
        if self.min_age is None and self.max_age is None:
            return None
        if mtime is None:
            return "modification time unknown (min_age/max_age)"
        age = now - mtime
        if self.min_age is not None and age < self.min_age.total_seconds():
            return "newer than min_age"
        if self.max_age is not None and age > self.max_age.total_seconds():
            return "older than max_age"
        return None

    def listed(self, memory_rows: int = FILES_FROM_MEMORY_ROWS) -> Iterator[Listed]:
        """The keys ``files_from`` names, each once, in the UTF-8 byte order of the
        listings. Raises BadInput for a file that cannot be read or is not UTF-8."""
        import pyarrow as pa

        from datamove.extsort import sorted_batches

        assert self.files_from is not None

        per_batch = max(1, min(_READ_ROWS, memory_rows))

        def batches() -> Iterator[pa.RecordBatch]:
            chunk: list[str] = []
            for key in read_keys(self.files_from):  # type: ignore[arg-type]
                chunk.append(key)
                if len(chunk) >= per_batch:
                    yield pa.record_batch([pa.array(chunk, pa.string())], names=["key"])
                    chunk = []
            if chunk:
                yield pa.record_batch([pa.array(chunk, pa.string())], names=["key"])

        previous: str | None = None
        for batch in sorted_batches(batches(), by="key", memory_rows=memory_rows):
            for key in batch.column(0).to_pylist():
                if key != previous:
                    yield Listed(key)
                previous = key


def read_keys(path: str) -> Iterator[str]:
    """The keys of a ``files_from`` file, streamed: one per line, surrounding white
    space and a leading ``/`` dropped (as rclone does), blank lines and lines
    starting with ``#`` ignored. BadInput names the file and line of a problem."""
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8", errors="strict")
                except UnicodeDecodeError as exc:
                    raise BadInput(f"files_from {path}:{number}: not UTF-8 text (byte "
                                   f"0x{raw[exc.start]:02x}); save the list as UTF-8") from None
                key = line.strip()
                if not key or key.startswith("#"):
                    continue
                if "\0" in key:
                    raise BadInput(f"files_from {path}:{number}: a NUL byte; keys are one per "
                                   "line")
                yield key.lstrip("/")
    except OSError as exc:
        raise BadInput(f"files_from {path}: cannot read: {exc.strerror or exc}") from None


def check_files_from(name: str, filters: Filters) -> None:
    """The preflight: read the whole ``files_from`` once, before anything moves, so
    a bad line is exit 2 naming it rather than a dataset that stops half-way."""
    if filters.files_from is None:
        return
    try:
        for _ in read_keys(filters.files_from):
            pass
    except BadInput as exc:
        raise BadInput(f"dataset {name}: {exc}") from None
