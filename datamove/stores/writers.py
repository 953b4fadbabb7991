"""Atomic object writers: nothing is visible under the final name until it is complete.

Each writer takes bytes with ``write``, then either ``commit`` (publish under the
final name) or ``abort`` (leave nothing behind). Use :func:`atomic_writer`; the
location's backend picks the writer for the store:

* local (local.LocalWriter): ``<name>.datamove-partial-<id>`` in the same
  directory, then ``os.replace`` (atomic on POSIX). The directory is reached one
  level at a time without following links (safepath.py), the temporary file is
  private (0600) while it is written, and the final file gets ``mode``; a large
  one may be continued by a later run (local.ResumableLocalWriter).
* S3 (s3.S3Writer): one PUT when the object fits in a part; otherwise a
  multipart upload that is completed only after every part succeeded and
  aborted on any failure.
* GCS (gcs.GCSWriter): one multipart request, or a resumable session
  finalized only on commit.
* Azure Blob (azure.AzureWriter): one Put Blob, or staged blocks whose list is
  committed only on commit.
* any other fsspec store (fsspec_generic.FsspecWriter): a hidden temporary
  name, then ``fs.mv``.

Writers record the plaintext sha256 as object metadata where the store has it, so
that later checks can be cheap (see transfer.verify_destination).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from datamove.stores.attributes import Attributes
from datamove.stores.base import (
    RESUME_TOKEN,
    AtomicWriter,
    Committed,
    Location,
    WriteOptions,
    partial_name,
)
from datamove.stores.parts import PART_BUFFERS
from datamove.stores.safepath import check_key

__all__ = ["RESUME_TOKEN", "AtomicWriter", "Committed", "atomic_writer", "partial_name"]


@contextlib.contextmanager
def atomic_writer(location: Location, key: str, *, part_size: int, size_hint: int = 0,
                  fsync: bool = False, readback: bool = False, run_token: str = "",
                  resume_id: str | None = None, resumable: bool = True,
                  storage_class: str | None = None,
                  mode: int | None = None,
                  part_buffers: int = PART_BUFFERS,
                  attributes: Attributes | None = None) -> Iterator[AtomicWriter]:
    """Yield a writer; abort it if the block raises or ends without ``commit``.

    ``resumable=False``: never continue an earlier attempt's upload (the bytes
    will differ, as with encryption under a fresh file key). ``storage_class``:
    the S3 or GCS class new objects are written in (manifest ``destination.storage_class``).
    ``mode``: a local file's permission bits (default 0666 less the umask).
    ``part_buffers``: parts of a multipart upload held in memory, all but one of
    them uploading at once (stores/parts.py; 1: one part at a time).
    ``attributes``: Content-Type, user metadata, tags and S3 SSE of the object
    where the store keeps them (attributes.py); ignored by stores that do not.
    Raises UnsafePath before anything is written if ``key`` could leave the root.
    """
    check_key(key)
    writer = location.backend.writer(location, key, WriteOptions(
        part_size=part_size, size_hint=size_hint, fsync=fsync, readback=readback,
        run_token=run_token, resume_id=resume_id, resumable=resumable,
        storage_class=storage_class, mode=mode, part_buffers=part_buffers,
        attributes=attributes))
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
    if not writer.committed:
        writer.abort()
        raise RuntimeError(f"{location.url_of(key)}: writer closed without commit; discarded")
