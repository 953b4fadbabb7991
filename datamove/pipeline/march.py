"""Deciding what to copy: a merge of sorted streams (rclone's "march").

The source listing, the destination listing and the ledger's rows for a
dataset all arrive in UTF-8 byte order of the key (stores.list_entries,
ledger.Ledger.latest_done), so one pass over the streams lines up every key
with its counterparts; the listings never need to fit in memory. Each key
becomes a :class:`PlanItem`: copy, skip, verify (re-check a skipped object)
or, for ``datamove verify``, check. Items are grouped into batches so that many
small objects share one Dask task.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol, TypeVar

from datamove.crypto.dataset import Encryption, stored_listing
from datamove.ledger.tables import LedgerRow
from datamove.manifest.model import DatasetSpec, EncryptSpec, VerifyMode
from datamove.pipeline.filters import Filters
from datamove.stores.attributes import Fidelity
from datamove.stores.core import Entry, KeyFilter, Location, check_readable, list_entries
from datamove.stores.safepath import key_problem
from datamove.tiers import needs_restore


class Keyed(Protocol):
    key: str


K = TypeVar("K", bound=Keyed)


class Action(StrEnum):
    copy = "copy"  # the destination is missing or outdated
    skip = "skip"  # the destination is up to date
    verify = "verify"  # up to date by listing, but re-check the bytes (and repair)
    check = "check"  # compare only, never write (``datamove verify``)
    extra = "extra"  # only at the destination; reported, never deleted
    rotate = "rotate"  # re-wrap an encrypted object's header (``datamove keys rotate``)
    archived = "archived"  # in a cold tier: not read here (``restore`` and ``drill`` read it)
    archive = "archive"  # move to a colder tier (``datamove archive``)
    delete = "delete"  # only at the destination, deleted by ``sync --delete`` (mirror.py)


@dataclass(frozen=True)
class DatasetJob:
    """Everything a worker needs about one dataset. Picklable; holds no secrets."""

    name: str
    source: Location
    destination: Location
    key_filter: KeyFilter
    verify: VerifyMode
    encryption: Encryption | None = None
    storage_class: str | None = None  # S3 destinations: the class objects are written in
    filters: Filters | None = None  # sizes, ages, files_from (pipeline/filters.py)
    # Content-Type, metadata, tags and S3 SSE of the copies (stores/attributes.py).
    fidelity: Fidelity = field(default_factory=Fidelity)

    @classmethod
    def from_spec(cls, spec: DatasetSpec, encrypt: EncryptSpec | None = None) -> DatasetJob:
        """``encrypt``: the dataset's effective encryption (Manifest.encryption_of)."""
        return cls(
            name=spec.name,
            source=Location.of(spec.source.url, spec.source.options, spec.source.region,
                               links=spec.source.links, list_threads=spec.source.list_threads,
                               inventory=spec.source.inventory),
            destination=Location.of(spec.destination.url, spec.destination.options,
                                    spec.destination.region,
                                    list_threads=spec.destination.list_threads),
            key_filter=KeyFilter(tuple(spec.include), tuple(spec.exclude)),
            verify=spec.verify,
            encryption=Encryption.from_spec(encrypt) if encrypt is not None else None,
            storage_class=spec.destination.storage_class,
            filters=Filters.from_spec(spec),
            fidelity=Fidelity.of(
                carry=spec.destination.carry_metadata, content_type=spec.destination.content_type,
                metadata=spec.destination.metadata, tags=spec.tags, sse=spec.destination.sse,
                sse_kms_key_id=spec.destination.sse_kms_key_id),
        )

    def stored_key(self, key: str) -> str:
        """Where the object for source ``key`` lives at the destination."""
        return self.encryption.stored_key(key) if self.encryption else key


@dataclass(frozen=True)
class PlanItem:
    action: Action
    key: str
    source: Entry | None
    destination: Entry | None
    reason: str
    recorded: LedgerRow | None = None  # the latest good ledger row, if any
    rule: int | None = None  # archive: the index of the lifecycle rule that is due

    @property
    def size(self) -> int:
        entry = self.source or self.destination
        return entry.size if entry else 0


@dataclass
class PlanTotals:
    """Objects and bytes per action for one dataset."""

    objects: dict[str, int] = field(default_factory=lambda: {a.value: 0 for a in Action})
    bytes: dict[str, int] = field(default_factory=lambda: {a.value: 0 for a in Action})

    def add(self, item: PlanItem) -> None:
        self.objects[item.action.value] += 1
        self.bytes[item.action.value] += item.size


def march(*streams: Iterable[K]) -> Iterator[tuple[K | None, ...]]:
    """Pair the entries of key-sorted streams; a stream without the key gives None.

    A tuple is yielded before any stream is advanced past it, so a listing that
    fails mid-way has already delivered everything it listed.
    """
    iters = [iter(s) for s in streams]
    heads = [next(it, None) for it in iters]
    previous: bytes | None = None
    while any(h is not None for h in heads):
        keys = [h.key.encode("utf-8", "surrogateescape") if h is not None else None
                for h in heads]
        current = min(k for k in keys if k is not None)
        if previous is not None and current < previous:
            # A listing out of order would silently turn into copies and extras.
            raise RuntimeError(f"listing is not in key order near {heads!r}; refusing to plan")
        previous = current
        yield tuple(h if k == current else None for h, k in zip(heads, keys, strict=True))
        for i, k in enumerate(keys):
            if k == current:
                heads[i] = next(iters[i], None)


def decide(source: Entry | None, destination: Entry | None, *, destination_is_local: bool,
           reverify: bool, check_only: bool = False, recorded: LedgerRow | None = None,
           with_ledger: bool = False, encrypted: bool = False) -> PlanItem:
    """The action for one key, with the reason a user sees in ``plan``.

    With a ledger, an object is skipped without reading it only when its latest
    good ledger row matches the source's identity (size and mtime, or ETag) and
    the destination still has the recorded size. An object the listing thinks
    is current but the ledger does not know is verified (read, compared and
    recorded) rather than copied again: that is how a copy finished by a run
    killed before its ledger commit gets its row. An encrypted object without a
    row is encrypted again instead: its stored size and bytes say nothing
    about the source without the row's checksums. The item carries ``recorded``
    (built once: this runs for every listed object).
    """
    if source is None:
        assert destination is not None or recorded is not None
        entry = destination or Entry(recorded.key, recorded.stored_size)  # type: ignore[union-attr]
        reason = "deleted at the source since it was copied" if recorded else \
            "only at the destination"
        return PlanItem(Action.extra, entry.key, None, destination, reason, recorded)
    key = source.key
    if recorded is not None and _archived(recorded, destination) and \
            _same_version(source, recorded):
        where = recorded.archive_url or f"{recorded.storage_class} in place"
        return PlanItem(Action.archived, key, source, destination,
                        f"archived ({where}); read back with datamove restore or drill",
                        recorded)
    if check_only:
        reason = "missing at the destination" if destination is None else "compare"
        return PlanItem(Action.check, key, source, destination, reason, recorded)
    if destination is None:
        reason = "the recorded copy is missing" if recorded else "new"
        return PlanItem(Action.copy, key, source, None, reason, recorded)
    if recorded is not None:
        if not _same_version(source, recorded):
            return PlanItem(Action.copy, key, source, destination,
                            "source changed since it was recorded", recorded)
        if destination.size != recorded.stored_size:
            return PlanItem(Action.copy, key, source, destination,
                            "destination differs from the recorded copy", recorded)
        action = Action.verify if reverify else Action.skip
        return PlanItem(action, key, source, destination,
                        "re-verify" if reverify else "recorded and unchanged", recorded)
    if encrypted:
        return PlanItem(Action.copy, key, source, destination,
                        "encrypted copy without a ledger row: encrypt again")
    if destination.size != source.size:
        return PlanItem(Action.copy, key, source, destination,
                        f"size differs ({source.size} at source, {destination.size} here)")
    if source.mtime is None or destination.mtime is None:
        return PlanItem(Action.copy, key, source, destination, "modification time unknown")
    if destination_is_local:
        # We set a local copy's mtime to the source's: anything else means it changed.
        current = abs(destination.mtime - source.mtime) <= 0.001
    else:
        # Object stores stamp the upload time, truncated to the second.
        current = destination.mtime >= math.floor(source.mtime)
    if not current:
        return PlanItem(Action.copy, key, source, destination, "source is newer")
    if with_ledger:
        return PlanItem(Action.verify, key, source, destination,
                        "not in the ledger: verify and record")
    if reverify:
        return PlanItem(Action.verify, key, source, destination, "re-verify")
    return PlanItem(Action.skip, key, source, destination, "up to date")


def _archived(recorded: LedgerRow, destination: Entry | None) -> bool:
    """A lifecycle rule moved the object where a run must not read or re-copy it:
    to a cold location (the destination no longer has it, or will not once the
    move finishes), or in place to a class that needs a restore before reading."""
    if recorded.archive_url is not None:
        return True
    return needs_restore(recorded.storage_class) and destination is not None and \
        destination.size == recorded.stored_size


def _same_version(source: Entry, recorded: LedgerRow) -> bool:
    if source.size != recorded.size:
        return False
    if source.etag and recorded.source_etag:
        return source.etag == recorded.source_etag
    if source.mtime is None or recorded.source_mtime is None:
        return False
    return abs(source.mtime - recorded.source_mtime) <= 0.001


def plan_dataset(job: DatasetJob, *, reverify: bool = False, check_only: bool = False,
                 recorded: Iterable[LedgerRow] | None = None,
                 on_partial: Callable[[str], None] | None = None,
                 on_link: Callable[[str], None] | None = None,
                 on_filtered: Callable[[Entry, str], None] | None = None,
                 on_absent: Callable[[str], None] | None = None) -> Iterator[PlanItem]:
    """Stream the plan for one dataset; ``recorded`` is the ledger's latest good
    rows for it, key-sorted; ``on_partial`` sees temporary files at the
    destination, ``on_link`` the source's skipped symbolic links. Raises
    LocationUnreachable up front.

    The dataset's filters (filters.py) decide here, and only here, which keys
    are planned: a source object outside them goes to ``on_filtered`` with the
    reason, and its key is planned no further (no copy, no extra, the ledger's
    rows untouched); a key ``files_from`` names that the source lacks goes to
    ``on_absent``.

    A source object whose key cannot be mapped under the destination root
    (safepath.key_problem), or that the listing could not read, becomes a copy
    (or check) item carrying the reason: the worker fails it without touching
    either store, so it is reported and recorded like any failure.
    """
    check_readable(job.source)
    filters = job.filters or Filters()
    source = list_entries(job.source, on_link=on_link)  # globs judged below, counted
    if job.encryption is None:
        destination = list_entries(job.destination, job.key_filter, on_partial=on_partial)
    else:  # stored as key + suffix: list everything, map back, filter on the source key
        destination = stored_listing(list_entries(job.destination, on_partial=on_partial),
                                     job.encryption.suffix, job.key_filter)
    streams: list[Iterable[Keyed]] = [source, destination, recorded or ()]
    if filters.files_from is not None:
        streams.append(filters.listed())
    reverify = reverify or job.verify == VerifyMode.full
    with_ledger = recorded is not None
    active = filters.active
    now = time.time()  # ages count back from the plan's start
    for src, dst, row, *named in march(*streams):
        listed = bool(named) and named[0] is not None
        key = (src or dst or row or named[0]).key  # type: ignore[union-attr]
        if src is None and listed and on_absent is not None:
            on_absent(key)
        reason = "include/exclude" if not job.key_filter(key) else \
            filters.reason_out(src, dst, row, listed, now) if active else None
        if reason is not None:
            if src is not None and on_filtered is not None:
                on_filtered(src, reason)
            continue
        if src is None and dst is None:
            continue  # gone from both sides: nothing to do, the ledger keeps its history
        problem = (src.problem or _unsafe(src.key)) if src is not None else None
        if src is not None and problem:
            yield PlanItem(Action.check if check_only else Action.copy, src.key,
                           replace(src, problem=problem), dst, problem)
            continue
        yield decide(src, dst, destination_is_local=job.destination.is_local,
                     reverify=reverify, check_only=check_only, recorded=row,
                     with_ledger=with_ledger, encrypted=job.encryption is not None)


def _unsafe(key: str) -> str | None:
    problem = key_problem(key)
    return f"unsafe key: {problem}" if problem else None


def batches(items: Iterable[PlanItem], *, max_objects: int, max_bytes: int,
            large: int) -> Iterator[list[PlanItem]]:
    """Group items into tasks: objects of ``large`` bytes or more travel alone;
    small ones share a task until it holds ``max_objects`` or ``max_bytes``."""
    batch: list[PlanItem] = []
    batch_bytes = 0
    for item in items:
        if item.size >= large:
            yield [item]
            continue
        batch.append(item)
        batch_bytes += item.size
        if len(batch) >= max_objects or batch_bytes >= max_bytes:
            yield batch
            batch, batch_bytes = [], 0
    if batch:
        yield batch
