"""What a plan counts for its cost: objects, bytes and requests, in constant memory.

``plan`` feeds every planned object to a :class:`CopyCounter` as the listings
are merged, so counting ten million objects holds a few integers, never the
listing. The request counts follow what datamove's writers send (stores/s3.py,
gcs.py, azure.py): an object up to the part size is one request; a larger one
is a multipart upload of ``engine.part_size`` parts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from datamove.age.stream import CHUNK_SIZE, NONCE_SIZE, TAG_SIZE
from datamove.stores.s3 import part_size_for

KIB = 1024
MIB = 1024 * KIB
GB = 1024**3
"""A GB as the providers bill it (2^30 bytes)."""

READ_BLOCK = 4 * MIB
"""Sources are read in blocks of this size (stores/base.py ``open_read``): at
most one GET per block."""

GCS_CHUNK = 256 * KIB  # resumable upload chunks are multiples of this (stores/gcs.py)
LIST_PAGE = {"s3": 1000, "gcs": 1000, "azure": 5000}
"""Keys per listing request (ListObjectsV2, objects.list, List Blobs)."""

MONITORED_SIZE = 128 * KIB
"""S3 Intelligent-Tiering monitors (and charges for) objects of at least this size."""

AGE_HEADER = 256
"""An age header with a recipient or two, in bytes (docs/FORMAT.md): an estimate."""


def stored_size(size: int, encrypted: bool) -> int:
    """The bytes an object of ``size`` occupies at the destination: itself, or its
    age file (header, nonce, and a tag per 64 KiB chunk)."""
    if not encrypted:
        return size
    chunks = max(1, -(-size // CHUNK_SIZE))
    return AGE_HEADER + NONCE_SIZE + size + chunks * TAG_SIZE


def write_requests(provider: str, size: int, part_size: int) -> int:
    """Requests that write one object of ``size`` bytes, as datamove's writer for
    ``provider`` sends them.

    S3: one PutObject below the part size, else CreateMultipartUpload, one
    UploadPart per part (the part size grown to stay within 10,000 parts) and
    CompleteMultipartUpload. GCS: one upload up to a part (rounded down to
    256 KiB), else a resumable session and one request per chunk. Azure: one Put
    Blob up to a part, else one Put Block per part and Put Block List. Others:
    one write.
    """
    if provider == "s3":
        part = part_size_for(part_size, size)
        return 1 if size < part else -(-size // part) + 2
    if provider == "gcs":
        part = max(GCS_CHUNK, part_size // GCS_CHUNK * GCS_CHUNK)
        return 1 if size <= part else -(-size // part) + 1
    if provider == "azure":
        return 1 if size <= part_size else -(-size // part_size) + 1
    return 1


def read_requests(size: int) -> int:
    """GETs that read one object of ``size`` bytes: at most one per read block."""
    return max(1, -(-size // READ_BLOCK))


def list_requests(provider: str, keys: int) -> int:
    """Listing requests for ``keys`` keys: one per page (a lower bound when a
    long listing is listed by prefix, stores/prefixed.py)."""
    page = LIST_PAGE.get(provider)
    return 0 if page is None else max(1, -(-keys // page))


@dataclass
class CopyCounter:
    """One dataset's counts for its cost estimate, accumulated while planning.

    ``destination``: the destination's provider (its writer decides the
    requests); ``min_sizes``: the minimum billable object sizes (bytes) of the
    classes the data will be in, to count what small objects are billed as.
    """

    destination: str
    part_size: int
    encrypted: bool = False
    verify_full: bool = False  # verify: full reads every copy back
    min_sizes: tuple[int, ...] = ()
    copy_objects: int = 0
    copy_bytes: int = 0  # as read from the source
    copy_stored: int = 0  # as written (encrypted: age files)
    write_requests: int = 0
    source_reads: int = 0  # GETs at the source
    source_read_bytes: int = 0
    destination_reads: int = 0  # GETs at the destination (verification)
    destination_read_bytes: int = 0
    source_keys: int = 0  # listed at the source
    destination_keys: int = 0  # listed at the destination
    held_objects: int = 0  # at the destination once the run is done
    held_bytes: int = 0
    monitored_objects: int = 0  # of those, at least MONITORED_SIZE
    shortfall: Counter[int] = field(default_factory=Counter)  # min size -> bytes billed extra

    def add(self, action: str, size: int, at_source: bool, at_destination: bool) -> None:
        """Count one planned object: its action (``copy``, ``skip``, ``verify``,
        ``extra``, ``archived``), its size and which listings it was in."""
        self.source_keys += at_source
        self.destination_keys += at_destination
        if action not in ("copy", "skip", "verify"):
            return  # extra: not ours; archived: in a cold tier, priced by its rule
        stored = stored_size(size, self.encrypted)
        self.held_objects += 1
        self.held_bytes += stored
        self.monitored_objects += size >= MONITORED_SIZE
        for minimum in self.min_sizes:
            if stored < minimum:
                self.shortfall[minimum] += minimum - stored
        if action == "copy":
            self.copy_objects += 1
            self.copy_bytes += size
            self.copy_stored += stored
            self.write_requests += write_requests(self.destination, stored, self.part_size)
        if action == "copy" or action == "verify":  # verify: --reverify reads both sides
            self.source_reads += read_requests(size)
            self.source_read_bytes += size
        if (action == "copy" and self.verify_full) or action == "verify":
            self.destination_reads += read_requests(stored)
            self.destination_read_bytes += stored
