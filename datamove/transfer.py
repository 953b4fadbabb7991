"""The per-object pipeline that runs on workers.

``run_batch`` is the Dask task: a pure function of a batch of plan items to a
list of :class:`ObjectResult`. It never raises for one object's failure: each
object is retried with exponential backoff on transient errors, and a permanent
failure becomes a result with ``status="failed"`` so the other objects go on.
Running a batch twice (Dask may, after a worker dies) is harmless: writes are
atomic and a repeated copy writes the same bytes.

Copy: read the source in chunks → sha256 while reading → atomic writer →
commit → verify per mode. Nothing is held whole in memory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import random
import threading
import time
from dataclasses import asdict, dataclass

from .checksum import b64_sha256, composite_of_stream, hash_stream, read_chunks
from .errors import SourceChanged, TransferError, VerifyMismatch
from .manifest import VerifyMode
from .plan import Action, DatasetJob, PlanItem
from .stores import (
    META_PART_SIZE,
    Entry,
    Location,
    ObjectInfo,
    describe,
    open_read,
    stat,
)
from .writers import Committed, atomic_writer


class LiveBytes:
    """Bytes copied so far by objects still in flight in *this* process.

    Lets the progress display move during a large object when workers are
    threads of the driver (the embedded cluster). On a remote cluster it stays
    at zero and progress advances per finished object.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


LIVE_BYTES = LiveBytes()


@dataclass(frozen=True)
class TransferSettings:
    part_size: int = 16 * 1024 * 1024
    retries: int = 4
    fsync: bool = False
    backoff_base: float = 0.2
    backoff_max: float = 10.0
    run_token: str = ""  # names this run's temporary files (writers.partial_name)
    resume_threshold: int = 64 * 1024 * 1024  # local copies this large are journaled


@dataclass(frozen=True)
class ObjectResult:
    """The outcome for one object; the driver turns these into reports (and ledger rows)."""

    dataset: str
    key: str
    action: str
    status: str  # copied | verified | repaired | failed | matched | missing | differs
    size: int
    sha256: str | None = None
    destination_url: str = ""
    attempts: int = 1
    error: str | None = None
    seconds: float = 0.0
    bytes_written: int = 0
    native_checksum: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Batch:
    job: DatasetJob
    items: tuple[PlanItem, ...]
    settings: TransferSettings


def run_batch(batch: Batch) -> list[ObjectResult]:
    """The Dask task. Returns one result per item, in order."""
    return [_process(batch.job, item, batch.settings) for item in batch.items]


def _process(job: DatasetJob, item: PlanItem, settings: TransferSettings) -> ObjectResult:
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = _attempt(job, item, settings)
            return _with(result, attempts=attempt, seconds=time.monotonic() - started)
        except Exception as exc:  # each object's failure is contained here
            if attempt <= settings.retries and _is_transient(exc):
                delay = min(settings.backoff_max, settings.backoff_base * 2 ** (attempt - 1))
                time.sleep(delay * (0.5 + random.random()))
                continue
            if isinstance(exc, VerifyMismatch) and item.action != Action.check:
                _remove_bad_copy(job.destination, item.key)
            return ObjectResult(
                dataset=job.name, key=item.key, action=item.action.value, status="failed",
                size=item.size, destination_url=job.destination.url_of(item.key),
                attempts=attempt, error=describe(exc), seconds=time.monotonic() - started)


def _attempt(job: DatasetJob, item: PlanItem, settings: TransferSettings) -> ObjectResult:
    if item.action == Action.copy:
        return copy_object(job, item, settings)
    if item.action == Action.verify:
        return reverify_object(job, item, settings)
    if item.action == Action.check:
        return check_object(job, item)
    raise ValueError(f"no worker action for {item.action.value!r}")


def copy_object(job: DatasetJob, item: PlanItem, settings: TransferSettings,
                status: str = "copied") -> ObjectResult:
    """Stream one object to its destination atomically, then verify it."""
    assert item.source is not None
    source, key = item.source, item.key
    sha = hashlib.sha256()
    size = 0
    readback = job.verify != VerifyMode.size
    with contextlib.closing(open_read(job.source, key)) as reader, \
            atomic_writer(job.destination, key, part_size=settings.part_size,
                          size_hint=source.size, fsync=settings.fsync,
                          readback=readback, run_token=settings.run_token,
                          resume_id=_resume_id(source, settings)) as writer:
        try:
            for chunk in read_chunks(reader):
                sha.update(chunk)
                writer.write(chunk)
                size += len(chunk)
                LIVE_BYTES.add(len(chunk))
        finally:
            LIVE_BYTES.add(-size)
        if size != source.size:
            raise SourceChanged(
                f"source changed while copying: listed {source.size} bytes, read {size}")
        digest = sha.hexdigest()
        committed = writer.commit(digest, source.mtime)
    native = verify_destination(job.destination, key, digest, size, job.verify, committed)
    return ObjectResult(dataset=job.name, key=key, action=item.action.value, status=status,
                        size=size, sha256=digest, destination_url=job.destination.url_of(key),
                        bytes_written=size if committed.sent is None else committed.sent,
                        native_checksum=native)


def _resume_id(source: Entry, settings: TransferSettings) -> str | None:
    """Large objects get a temporary name a later run can find and continue:
    derived from the source version, so a changed source never reuses parts."""
    if source.size < settings.resume_threshold:
        return None
    identity = f"{source.key}\0{source.size}\0{source.mtime!r}\0{source.etag}"
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def reverify_object(job: DatasetJob, item: PlanItem, settings: TransferSettings) -> ObjectResult:
    """Re-check an up-to-date object against its source; re-copy it if it differs."""
    with contextlib.closing(open_read(job.source, item.key)) as reader:
        source_hash = hash_stream(reader)
    try:
        native = verify_destination(job.destination, item.key, source_hash.sha256,
                                    source_hash.size, job.verify, None)
    except VerifyMismatch as exc:
        repaired = copy_object(job, item, settings, status="repaired")
        return _with(repaired, error=f"destination differed and was re-copied: {exc}")
    return ObjectResult(dataset=job.name, key=item.key, action=item.action.value,
                        status="verified", size=source_hash.size, sha256=source_hash.sha256,
                        destination_url=job.destination.url_of(item.key),
                        native_checksum=native)


def check_object(job: DatasetJob, item: PlanItem) -> ObjectResult:
    """Compare source and destination without writing (``datamove verify``)."""
    url = job.destination.url_of(item.key)
    base = {"dataset": job.name, "key": item.key, "action": item.action.value, "size": item.size,
            "destination_url": url}
    info = stat(job.destination, item.key)
    if info is None:
        return ObjectResult(**base, status="missing", error="missing at the destination")
    if job.verify == VerifyMode.size:
        if info.size != item.size:
            return ObjectResult(**base, status="differs",
                                error=f"size {info.size} at the destination, {item.size} at source")
        return ObjectResult(**base, status="matched")
    part_size = _int(info.metadata.get(META_PART_SIZE))
    with contextlib.closing(open_read(job.source, item.key)) as reader:
        if info.checksum_sha256 and part_size and "-" in info.checksum_sha256:
            digest, composite, size = composite_of_stream(reader, part_size)
        else:
            hashed = hash_stream(reader)
            digest, composite, size = hashed.sha256, None, hashed.size
    committed = Committed(size=size, native=info.checksum_sha256, expected=composite,
                          multipart=True) if composite else None
    try:
        native = verify_destination(job.destination, item.key, digest, size, job.verify,
                                    committed, info=info)
    except VerifyMismatch as exc:
        return ObjectResult(**base, status="differs", sha256=digest, error=str(exc))
    return ObjectResult(**base, status="matched", sha256=digest, native_checksum=native)


def verify_destination(location: Location, key: str, sha256: str, size: int,
                       mode: VerifyMode, committed: Committed | None,
                       info: ObjectInfo | None = None) -> str | None:
    """Check the destination holds ``size`` bytes with ``sha256``; raise VerifyMismatch.

    ``size``: the stored size. ``checksum``: a checksum the store computed
    (S3 ChecksumSHA256, whole or composite-of-parts) when there is one we can
    compare with, otherwise a re-read. ``full``: always a re-read. Returns the
    native checksum that was compared, if any.
    """
    if info is None and committed and committed.native and committed.expected and (
            mode == VerifyMode.checksum or (mode == VerifyMode.full and committed.reread)):
        # Checked at commit: the store's own checksum of what it received, or
        # every byte read back before the object became visible.
        if not _same_checksum(committed.native, committed.expected) or committed.size != size:
            raise VerifyMismatch(f"{location.url_of(key)}: store checksum differs")
        return committed.native
    info = info or stat(location, key)
    if info is None:
        raise VerifyMismatch(f"{location.url_of(key)}: missing after commit")
    if info.size != size:
        raise VerifyMismatch(f"{location.url_of(key)}: {info.size} bytes stored, {size} expected")
    if mode == VerifyMode.size:
        return None
    native = info.checksum_sha256
    if mode == VerifyMode.checksum and native:
        multipart = META_PART_SIZE in info.metadata or (committed and committed.multipart)
        if not multipart:
            expected: str | None = b64_sha256(sha256)
        else:
            expected = committed.expected if committed else None
        if expected:
            if not _same_checksum(native, expected):
                raise VerifyMismatch(f"{location.url_of(key)}: store checksum differs")
            return native
    with contextlib.closing(open_read(location, key)) as reader:
        stored = hash_stream(reader)
    if stored.sha256 != sha256 or stored.size != size:
        raise VerifyMismatch(f"{location.url_of(key)}: sha256 of the stored bytes differs "
                             f"({stored.sha256[:16]}… ≠ {sha256[:16]}…)")
    return None


def _same_checksum(native: str, expected: str) -> bool:
    """Compare store and client checksums; S3 may or may not suffix a composite with -N."""
    return native.strip('"').split("-")[0] == expected.strip('"').split("-")[0]


def _remove_bad_copy(location: Location, key: str) -> None:
    """A copy that never verified must not stay visible as if it were good."""
    with contextlib.suppress(Exception):
        location.fs.rm_file(location.path(key))


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransferError):
        return exc.transient
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError |
                  NotADirectoryError | FileExistsError):
        return False
    if isinstance(exc, OSError):
        return exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG)
    return isinstance(exc, TimeoutError | ConnectionError) or \
        type(exc).__name__ in {"ClientError", "ServerTimeoutError", "ClientConnectorError",
                               "ClientPayloadError", "EndpointConnectionError",
                               "ReadTimeoutError", "ConnectTimeoutError"}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _with(result: ObjectResult, **changes: object) -> ObjectResult:
    from dataclasses import replace

    return replace(result, **changes)
