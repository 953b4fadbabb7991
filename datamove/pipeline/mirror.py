"""Mirroring (``datamove sync --delete``): destination objects the source no longer has.

The plan (march.py) already names them: ``extra`` items, listed within the
dataset's filters, so an object the filters leave out is never one (as rclone,
which never deletes what it excludes). This module keeps them until the run's
copies are done and then deletes them, under three rules:

* only after every object of the run settled and none failed (no failure, no
  dataset stopped by its circuit breaker, no signal): a run that could not
  bring the destination up to date must not make it smaller;
* never more than ``max_delete`` (``--max-delete N``): more, and the run deletes
  nothing, is refused (exit 3) and says how many would have gone;
* never everything because the source listed nothing: an object store answers a
  mistyped prefix with an empty listing, not an error, so a dataset whose source
  listed no object within its filters deletes only with an explicit
  ``--max-delete`` (rclone refuses such a source as "directory not found");
* never outside the destination root (safepath.key_problem), never a file of
  datamove's own (temporary names are not listed at all, and keys under the
  ledger's URL, which holds the audit log and the lock, are left alone) and
  never the source's own objects (a source inside its destination).

Extras wait in a temporary file (one JSON line each), not in memory: a mirror of
ten million deletions holds one line at a time. Deletions are worker tasks like
copies (:func:`delete_batch`), settled by the run session, so each one lands in
the ledger (status ``deleted``) and the audit log (``object.deleted``) as it
happens, and a signal or a dead endpoint stops them the way it stops copies.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from datamove.errors import UnsafePath
from datamove.ledger.tables import DELETED
from datamove.manifest.checks import comparable_url
from datamove.pipeline.march import Action, DatasetJob, PlanItem
from datamove.pipeline.transfer import (
    Batch,
    ObjectResult,
    TransferSettings,
    process_item,
    run_items,
)
from datamove.stores.core import Entry, remove
from datamove.stores.safepath import key_problem


@dataclass(frozen=True)
class Mirror:
    """``sync --delete``: delete destination objects the source does not have.
    ``max_delete``: refuse (delete nothing) when more than this many would go."""

    max_delete: int | None = None


class Extras:
    """A dataset's objects to delete, kept in a temporary file until the copies are done."""

    def __init__(self, job: DatasetJob, ledger_url: str):
        self.job = job
        self.count = 0
        self.bytes = 0
        self.protected = 0  # under the ledger's or the source's URL: never deleted
        self.source_objects = 0  # what the source listed within the filters
        self._kept_out = _prefixes_within(job.destination.url,
                                          (ledger_url, job.source.url))
        # Open for the whole run, closed by close() (commands/copy.py, in a finally).
        self._file: IO[str] = tempfile.TemporaryFile(  # noqa: SIM115
            "w+", encoding="utf-8", prefix="datamove-extras-")

    def add(self, item: PlanItem) -> bool:
        """Keep ``item`` for deletion; False for an object of datamove's own."""
        if self._kept_out and self.job.stored_key(item.key).startswith(self._kept_out):
            self.protected += 1
            return False
        self.count += 1
        self.bytes += item.size
        self._file.write(json.dumps([item.key, item.size]) + "\n")
        return True

    def items(self) -> Iterator[PlanItem]:
        """The kept objects as ``delete`` plan items, in listing order."""
        self._file.seek(0)
        for line in self._file:
            key, size = json.loads(line)
            yield PlanItem(Action.delete, key, None, Entry(key, size),
                           "only at the destination")

    def close(self) -> None:
        self._file.close()


def _prefixes_within(root: str, urls: tuple[str, ...]) -> tuple[str, ...]:
    """The key prefixes under ``root`` at which each of ``urls`` lies (``""``: ``root``
    itself lies inside one of them); none for URLs outside ``root``."""
    base = comparable_url(root)
    out = []
    for url in urls:
        other = comparable_url(url)
        if other.startswith(base):
            out.append(other[len(base):])
        elif base.startswith(other):
            out.append("")
    return tuple(out)


def delete_batch(batch: Batch) -> list[ObjectResult]:
    """The Dask task for deletions: one result per item, as transfer.run_batch."""
    return run_items(batch, lambda item: process_item(batch.job, item, batch.settings,
                                                      attempt_once=_delete_once))


def _delete_once(job: DatasetJob, item: PlanItem, settings: TransferSettings) -> ObjectResult:
    """Delete one destination object (retried by process_item on transient errors).
    Already gone counts as deleted: a task Dask runs twice deletes nothing twice."""
    stored = job.stored_key(item.key)
    problem = key_problem(stored)
    if problem:
        raise UnsafePath(f"{stored!r}: not deleted: {problem}")
    with contextlib.suppress(FileNotFoundError):
        remove(job.destination, stored)
    return ObjectResult(dataset=job.name, key=item.key, action=Action.delete.value,
                        status=DELETED, size=item.size,
                        destination_url=job.destination.url_of(stored))


def deletion_row(row: dict[str, Any], item: PlanItem, result: ObjectResult) -> dict[str, Any]:
    """The ``objects`` row of a deletion (docs/FORMAT.md): from ``ledger_row``'s, with
    the size that was deleted and no verification (nothing is left to verify)."""
    if result.status != DELETED:
        return row
    return {**row, "stored_size": item.size, "verify_result": None, "sha256": None,
            "source_mtime": None, "source_etag": None}
