"""Deciding what to copy: a merge of two sorted listings (rclone's "march").

Source and destination listings both arrive in UTF-8 byte order of the key
(stores.list_entries), so one pass over the two streams pairs every key with
its counterpart using memory that does not grow with the object count. Each
pair becomes a :class:`PlanItem`: copy, skip, verify (re-check a skipped object)
or, for ``datamove verify``, check. Items are grouped into batches so that many
small objects share one Dask task.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from .manifest import DatasetSpec, VerifyMode
from .stores import Entry, KeyFilter, Location, check_readable, list_entries


class Action(StrEnum):
    copy = "copy"  # the destination is missing or outdated
    skip = "skip"  # the destination is up to date
    verify = "verify"  # up to date by listing, but re-check the bytes (and repair)
    check = "check"  # compare only, never write (``datamove verify``)
    extra = "extra"  # only at the destination; reported, never deleted


@dataclass(frozen=True)
class DatasetJob:
    """Everything a worker needs about one dataset. Picklable; holds no secrets."""

    name: str
    source: Location
    destination: Location
    key_filter: KeyFilter
    verify: VerifyMode

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> DatasetJob:
        return cls(
            name=spec.name,
            source=Location.of(spec.source.url, spec.source.options, spec.source.region),
            destination=Location.of(spec.destination.url, spec.destination.options,
                                    spec.destination.region),
            key_filter=KeyFilter(tuple(spec.include), tuple(spec.exclude)),
            verify=spec.verify,
        )


@dataclass(frozen=True)
class PlanItem:
    action: Action
    key: str
    source: Entry | None
    destination: Entry | None
    reason: str

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


def march(source: Iterable[Entry], destination: Iterable[Entry]
          ) -> Iterator[tuple[Entry | None, Entry | None]]:
    """Pair entries of two key-sorted streams; a missing side is None.

    A pair is yielded before either stream is advanced past it, so a listing
    that fails mid-way has already delivered everything it listed.
    """
    src_iter, dst_iter = iter(source), iter(destination)
    src, dst = next(src_iter, None), next(dst_iter, None)
    previous: bytes | None = None
    while src is not None or dst is not None:
        src_key = src.key.encode("utf-8", "surrogateescape") if src else None
        dst_key = dst.key.encode("utf-8", "surrogateescape") if dst else None
        take_src = dst_key is None or (src_key is not None and src_key <= dst_key)
        take_dst = src_key is None or (dst_key is not None and dst_key <= src_key)
        current = src_key if take_src else dst_key
        if previous is not None and current is not None and current < previous:
            # A listing out of order would silently turn into copies and extras.
            raise RuntimeError(f"listing is not in key order near {(src, dst)!r}; "
                               "refusing to plan")
        previous = current
        yield (src if take_src else None), (dst if take_dst else None)
        if take_src:
            src = next(src_iter, None)
        if take_dst:
            dst = next(dst_iter, None)


def decide(source: Entry | None, destination: Entry | None, *, destination_is_local: bool,
           reverify: bool, check_only: bool = False) -> PlanItem:
    """The action for one key, with the reason a user sees in ``plan``."""
    if source is None:
        assert destination is not None
        return PlanItem(Action.extra, destination.key, None, destination,
                        "only at the destination")
    key = source.key
    if check_only:
        reason = "missing at the destination" if destination is None else "compare"
        return PlanItem(Action.check, key, source, destination, reason)
    if destination is None:
        return PlanItem(Action.copy, key, source, None, "new")
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
    if reverify:
        return PlanItem(Action.verify, key, source, destination, "re-verify")
    return PlanItem(Action.skip, key, source, destination, "up to date")


def plan_dataset(job: DatasetJob, *, reverify: bool = False,
                 check_only: bool = False) -> Iterator[PlanItem]:
    """Stream the plan for one dataset. Raises LocationUnreachable up front."""
    check_readable(job.source)
    source = list_entries(job.source, job.key_filter)
    destination = list_entries(job.destination, job.key_filter)
    reverify = reverify or job.verify == VerifyMode.full
    for src, dst in march(source, destination):
        yield decide(src, dst, destination_is_local=job.destination.is_local,
                     reverify=reverify, check_only=check_only)


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
