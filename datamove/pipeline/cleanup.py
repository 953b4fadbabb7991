"""Removing what killed runs left behind: temporary files and incomplete uploads.

A run killed with SIGKILL never publishes a partial object, but it can leave
(1) temporary files ``<name>.datamove-partial-<run token>-<random>`` next to
their final names, and (2) S3 multipart uploads that were never completed,
which are invisible as objects but are billed for their parts.

The next run of the same destination resumes the uploads it can use
(writers.S3Writer) and the journaled large local copies it can use
(writers.ResumableLocalWriter, kept for RESUMABLE_FOR_SECONDS), and removes the
rest. Temporary files carry the
token of the run that wrote them, so a run only ever deletes files of *other*
runs; multipart uploads are aborted when the store says they were initiated
before this run first looked (the store's clock, not ours). Two runs writing
the same destination at the same time are not supported.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime

from datamove.errors import UnsafePath
from datamove.stores.core import PARTIAL_MARKER, Location, describe, remove
from datamove.stores.safepath import key_problem
from datamove.stores.writers import RESUME_TOKEN

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
    """The S3 store's current time (the Date of a cheap request), or None."""
    if not location.is_s3:
        return None
    bucket, prefix = location.bucket_and_prefix()
    page = location.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix,
                               MaxUploads=1)
    return _response_date(page)


def abort_orphan_uploads(location: Location, cutoff: datetime | None = None) -> int:
    """Abort incomplete multipart uploads under an S3 location begun before ``cutoff``.

    A run takes the cutoff from the store's clock (``store_clock``) before it
    uploads anything to the location, and sweeps after its copies are done: by
    then it has resumed and completed the uploads it could use (writers.S3Writer),
    and whatever else a killed run left is aborted. Clock skew between this host
    and the store plays no part. Without a cutoff, the store's "now" is used.
    """
    if not location.is_s3:
        return 0
    fs = location.fs
    bucket, prefix = location.bucket_and_prefix()
    aborted = 0
    kwargs: dict[str, str] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = fs.call_s3("list_multipart_uploads", **kwargs)
        if cutoff is None:
            cutoff = _response_date(page)
        for upload in page.get("Uploads", ()):
            if cutoff is not None and upload["Initiated"] >= cutoff:
                continue  # begun by this run (or later): not an orphan
            with contextlib.suppress(FileNotFoundError):
                fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"],
                           UploadId=upload["UploadId"])
                aborted += 1
        if not page.get("IsTruncated"):
            return aborted
        kwargs["KeyMarker"] = page["NextKeyMarker"]
        kwargs["UploadIdMarker"] = page["NextUploadIdMarker"]


def _response_date(response: dict) -> datetime | None:
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(header) if header else None
    except (TypeError, ValueError):
        return None
