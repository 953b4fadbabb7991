"""Removing what killed runs left behind: temporary files and incomplete uploads.

A run killed with SIGKILL never publishes a partial object, but it can leave
(1) temporary files ``<name>.datamove-partial-<run token>-<random>`` next to
their final names, and (2) S3 multipart uploads that were never completed,
which are invisible as objects but are billed for their parts.

The next run of the same destination resumes the uploads it can use
(s3.S3Writer) and the journaled large local copies it can use
(local.ResumableLocalWriter, kept for RESUMABLE_FOR_SECONDS), and removes the
rest. Temporary files carry the
token of the run that wrote them, so a run only ever deletes files of *other*
runs; multipart uploads are aborted when the store says they were initiated
before this run first looked (the store's clock, not ours). Two runs writing
the same destination at the same time are not supported.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime

from datamove.errors import UnsafePath
from datamove.stores.base import RESUME_TOKEN
from datamove.stores.core import PARTIAL_MARKER, Location, describe, remove
from datamove.stores.safepath import key_problem

RESUMABLE_FOR_SECONDS = 7 * 24 * 3600
"""How long a journaled large local copy stays resumable before it counts as an orphan."""

log = logging.getLogger(__name__)


@dataclass
class OrphanSweeper:
    """Deletes temporary files of other runs as the destination listing meets them."""

    location: Location
    run_token: str
    removed: int = 0
    run_is_over: bool = False  # then this run's own leftovers (a killed worker's) go too

    def __call__(self, key: str) -> None:
        token = key.rsplit(PARTIAL_MARKER, 1)[-1].split("-", 1)[0]
        if token == self.run_token and not self.run_is_over:
            return  # one of ours, still being written
        if key_problem(key) is not None:
            return  # not a name datamove writes (and not one to map to a path)
        path = self.location.path(key)
        try:
            if token == RESUME_TOKEN and self.location.is_local and \
                    time.time() - os.path.getmtime(path) < RESUMABLE_FOR_SECONDS:
                return  # a large copy this or a later run may continue
            remove(self.location, key)
            self.removed += 1
        except FileNotFoundError:
            pass  # another cleanup got there first
        except (OSError, UnsafePath) as exc:
            log.warning("cannot remove orphaned temporary file %s: %s", path, describe(exc))


def store_clock(location: Location) -> datetime | None:
    """The store's current time, where incomplete uploads outlive a run (S3), or None."""
    clock: datetime | None = location.backend.store_clock(location)
    return clock


def abort_orphan_uploads(location: Location, cutoff: datetime | None = None) -> int:
    """Abort the incomplete uploads under ``location`` begun before ``cutoff`` (the
    store's clock, taken by ``store_clock`` before this run uploaded anything);
    the backend knows its kind (s3.S3Backend.abort_orphan_uploads). Without a
    cutoff, the store's "now" is used."""
    return int(location.backend.abort_orphan_uploads(location, cutoff))
