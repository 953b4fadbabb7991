"""Proof that a copy read one version of its source: the one that was listed.

A file rewritten in place while it is read (same size) would otherwise be
stored half old, half new, and recorded under the old version's size and
time. The guard looks at the source when the reader is opened and again after
the last byte, and raises SourceChanged if anything moved; the copy is then
discarded before it is published (the writer aborts) and the next run copies
the new version.

* Local files: ``fstat`` of the open descriptor must match the listing (size,
  mtime) at open, and again at the end (size, mtime and ctime in nanoseconds:
  a write changes them even within the same second); the path must still name
  the same inode (a file replaced by rename is a new version too).
* S3 (``pins_reads``): s3fs pins every ranged GET of an open file to the ETag it saw at open
  (``If-Match``), so a change mid-read fails the read; the guard checks that
  this ETag is the listed one.
* GCS, Azure and other stores: the object's ETag (or size and mtime) is read
  again after the last byte and must equal the listed one; ETags change with
  every write there.

``SourceCrc`` adds the source store's own CRC of the object, when a copy took
its stat anyway (stores/attributes.py): the bytes read must hash to it.
"""

from __future__ import annotations

import os
from typing import Any

from datamove.checksum import native_value, new_native_hasher, same_checksum
from datamove.errors import SourceChanged, VerifyMismatch
from datamove.stores.core import Entry, Location, ObjectInfo, stat


class SourceGuard:
    """Call :meth:`confirm` after the last byte was read; raises SourceChanged."""

    def __init__(self, location: Location, entry: Entry, reader: Any):
        self.location = location
        self.entry = entry
        self._fd: int | None = None
        self._opened: os.stat_result | None = None
        if location.is_local:
            fileno = getattr(reader, "fileno", None)
            try:
                self._fd = fileno() if fileno is not None else None
            except OSError:  # an in-memory reader (a copy-link target): nothing to pin
                self._fd = None
            if self._fd is not None:
                self._opened = os.fstat(self._fd)
                self._check_listed(self._opened.st_size, self._opened.st_mtime)
        elif location.backend.pins_reads:
            etag = (getattr(reader, "details", None) or {}).get("ETag", "").strip('"')
            if entry.etag and etag and etag != entry.etag:
                raise self._changed("its ETag is not the listed one")

    @property
    def opened(self) -> os.stat_result | None:
        """A local source's ``fstat`` when it was opened (None elsewhere)."""
        return self._opened

    def _check_listed(self, size: int, mtime: float | None) -> None:
        if size != self.entry.size:
            raise self._changed(f"listed {self.entry.size} bytes, now {size}")
        if self.entry.mtime is not None and mtime is not None and \
                abs(mtime - self.entry.mtime) > 1e-6:
            raise self._changed("its modification time is not the listed one")

    def _changed(self, why: str) -> SourceChanged:
        return SourceChanged(
            f"source changed during copy: {self.location.url_of(self.entry.key)}: {why}; "
            "nothing was published. Run again to copy the new version")

    def confirm(self, size_read: int) -> None:
        """After the last byte: the source is still the version that was opened."""
        if size_read != self.entry.size:
            raise self._changed(f"listed {self.entry.size} bytes, read {size_read}")
        if self._opened is not None and self._fd is not None:
            before = self._opened
            try:
                current = os.stat(self.location.path(self.entry.key),
                                  follow_symlinks=self.location.links == "follow")
            except FileNotFoundError:
                raise self._changed("it was removed while it was read") from None
            if (current.st_dev, current.st_ino) != (before.st_dev, before.st_ino):
                raise self._changed("it was replaced while it was read")
            after = os.fstat(self._fd)
            if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != \
                    (before.st_size, before.st_mtime_ns, before.st_ctime_ns):
                raise self._changed("it was written while it was read")
        elif not self.location.is_local and not self.location.backend.pins_reads:
            info = stat(self.location, self.entry.key)
            if info is None:
                raise self._changed("it was removed while it was read")
            if self.entry.etag and info.etag:
                if info.etag != self.entry.etag:
                    raise self._changed("its ETag changed while it was read")
            else:
                self._check_listed(info.size, info.mtime)


class SourceCrc:
    """The source store's own CRC of the object (GCS crc32c, S3 CRC32C or CRC32),
    when its stat was taken anyway, checked against the bytes read: damage on the
    way from the source fails the copy (and is retried) before anything is
    published. Cheap: CRCs run at several GB/s."""

    def __init__(self, algo: str | None = None, stored: str | None = None):
        self.algo, self.stored = algo, stored
        self._hasher = new_native_hasher(algo) if algo else None

    @classmethod
    def of(cls, info: ObjectInfo | None, entry: Entry) -> SourceCrc:
        if info is None or not info.native_trusted or \
                (entry.etag and info.etag and info.etag.strip('"') != entry.etag):
            return cls()  # nothing to check, or another version than the listed one
        for algo in ("crc32c", "crc32"):
            if algo in info.native:
                return cls(algo, info.native[algo])
        return cls()

    def update(self, chunk: bytes | memoryview) -> None:
        if self._hasher is not None:
            self._hasher.update(chunk)

    def confirm(self, where: str) -> None:
        if self._hasher is None or self.algo is None or self.stored is None:
            return
        if not same_checksum(native_value(self.algo, self._hasher.digest()), self.stored):
            raise VerifyMismatch(f"{where}: the bytes read differ from the source store's "
                                 f"{self.algo}; nothing was published")
