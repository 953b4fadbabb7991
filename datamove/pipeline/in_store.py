"""Copies made inside the store: when they apply, and the one read they may need.

When a dataset's source and destination are locations of the same store, with
the same client options (so the same endpoint, account and credentials), and
nothing is encrypted, the store can copy an object itself (S3 CopyObject and
UploadPartCopy): no byte travels through datamove. transfer.copy_object asks
:func:`applies` and then the backend's ``copy_within``. Such a copy is verified
like any other: the ledger needs the source's sha256, which is the store's own
when it keeps one (S3's whole ChecksumSHA256) and otherwise comes from one
read of the source (:func:`hash_source`: still no upload through this host).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from datamove.checksum import PartHasher, StreamHasher, read_chunks
from datamove.pipeline import cancel
from datamove.pipeline.march import DatasetJob
from datamove.stores.base import HashSource, SourceHash
from datamove.stores.core import Entry, open_read
from datamove.stores.source_guard import SourceGuard


def applies(job: DatasetJob) -> bool:
    """Same store, same client options, a backend that copies inside the store,
    and no encryption (an encrypted copy needs new bytes)."""
    source, destination = job.source, job.destination
    backend = source.backend
    return (job.encryption is None and backend.server_side_copy
            and type(destination.backend) is type(backend)
            and backend.client_options(source) == destination.backend.client_options(destination))


def hash_source(job: DatasetJob, entry: Entry, token: str) -> HashSource:
    """One read of the listed version of ``entry``: sha256, and per-part sha256s
    when a part size is given. Stops at the next chunk when the run is stopped;
    raises SourceChanged if the source is not the listed version."""

    def read(part_size: int | None, natives: tuple[str, ...]) -> SourceHash:
        whole = StreamHasher(natives)
        parts = PartHasher(part_size) if part_size else None
        with contextlib.closing(open_read(job.source, entry.key)) as reader:
            guard = SourceGuard(job.source, entry, reader)
            for chunk in read_chunks(reader):
                cancel.check(token, job.name)
                whole.update(chunk)
                if parts is not None:
                    parts.update(chunk)
            guard.confirm(whole.size)
        return SourceHash(sha256=whole.sha256, size=whole.size,
                          parts=tuple(parts.finish()) if parts is not None else (),
                          natives={a: whole.native(a) for a in natives})

    return read


def stopper(job: DatasetJob, token: str) -> Callable[[], None]:
    """Raises cancel.Cancelled once the run or the dataset is stopped."""
    return lambda: cancel.check(token, job.name)
