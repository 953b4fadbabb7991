"""Typed progress events: what a listener of the progress accountant (progress.py) is told.

``datamove.api.run(manifest, on_event=callback)`` hands these to ``callback``, on
the driver thread (the one that called ``run``), in the order the driver accounts
for them: a dataset's ``DatasetStarted`` before its objects, ``ObjectDone`` as each
object's result arrives (datasets of one stage interleave), ``ListingDone`` once
every dataset has been planned, and ``DatasetFinished`` after the last of its
results. Each event carries the run's ``Totals`` as they stand after it, so a
listener never counts anything itself. docs/API.md has examples.

Objects the driver settles without a worker (up to date, extra, archived) are not
told one by one: ``DatasetFinished.counts`` has them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from datamove.pipeline.transfer import ObjectResult


@dataclass(frozen=True)
class Totals:
    """The run so far: objects and bytes planned for the workers, and done."""

    planned_objects: int
    planned_bytes: int
    done_objects: int
    done_bytes: int
    failed: int
    skipped: int  # up to date: settled by the driver, not in planned_* or done_*
    listing: bool  # still planning: the planned totals can grow


@dataclass(frozen=True)
class DatasetStarted:
    """A dataset's planning began: its objects follow."""

    dataset: str
    source: str
    destination: str
    totals: Totals


@dataclass(frozen=True)
class ObjectDone:
    """One object's result: ``status`` is the report's outcome (copied, verified,
    repaired, failed for a run, and deleted for a sync with delete; matched, missing,
    differs, failed for verify)."""

    dataset: str
    key: str
    status: str
    size: int  # the object's size at the source
    bytes_written: int  # bytes sent to the destination (0 when nothing was copied)
    error: str | None  # why it failed or differs; never a secret
    totals: Totals

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @classmethod
    def of(cls, result: ObjectResult, totals: Totals) -> ObjectDone:
        return cls(dataset=result.dataset, key=result.key, status=result.status,
                   size=result.size, bytes_written=result.bytes_written, error=result.error,
                   totals=totals)


@dataclass(frozen=True)
class ListingDone:
    """Every dataset has been planned: ``totals.planned_*`` are final."""

    totals: Totals


@dataclass(frozen=True)
class DatasetFinished:
    """A dataset's last result is in. ``counts``/``bytes`` per outcome as in the
    report (missing outcomes read 0); ``stopped``: why it stopped early, if it did."""

    dataset: str
    counts: Mapping[str, int]
    bytes: Mapping[str, int]
    stopped: str | None
    totals: Totals


ProgressEvent = DatasetStarted | ObjectDone | ListingDone | DatasetFinished
"""Any event a progress listener receives."""
