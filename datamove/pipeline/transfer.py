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
import os
import random
import stat as stat_mod
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

from datamove.checksum import (
    b64_sha256,
    composite_of_stream,
    hash_stream,
    native_algo,
    read_chunks,
    same_checksum,
)
from datamove.crypto.dataset import Sealer, decrypt_digest, stored_size_bound
from datamove.errors import (
    IdentityMismatch,
    KeyProblem,
    SourceChanged,
    TransferError,
    UnsafePath,
    VerifyMismatch,
)
from datamove.manifest.model import VerifyMode
from datamove.pipeline import cancel, in_store, local_gate, throttle
from datamove.pipeline.march import Action, DatasetJob, PlanItem
from datamove.stores.attributes import Attributes, attributes_for
from datamove.stores.base import WriteOptions
from datamove.stores.connection import OUTAGES, connection_endpoint
from datamove.stores.core import (
    META_PART_SIZE,
    Entry,
    Location,
    ObjectInfo,
    describe,
    open_read,
    remove,
    stat,
)
from datamove.stores.parts import PART_BUFFERS
from datamove.stores.safepath import reused_dirs
from datamove.stores.source_guard import SourceCrc, SourceGuard
from datamove.stores.writers import Committed, atomic_writer


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
    part_buffers: int = PART_BUFFERS  # parts of one object in memory while it uploads
    retries: int = 4
    fsync: bool = False
    backoff_base: float = 0.2
    backoff_max: float = 10.0
    run_token: str = ""  # names this run's temporary files and its cancel flags
    resume_threshold: int = 64 * 1024 * 1024  # local copies this large are journaled
    task_seconds: float = 1.0  # a task starts no new object after this: results stream
    dead_after: float = 10.0  # no attempt reached the endpoint for this long: stop retrying
    bwlimit: int | None = None  # bytes/s this process's copies read (throttle.py); None: no limit


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
    # What is stored, when it differs from the plaintext (encrypted datasets).
    stored_size: int | None = None
    stored_sha256: str | None = None
    payload_sha256: str | None = None
    key_fingerprints: tuple[str, ...] = ()
    previous_key_fingerprints: tuple[str, ...] = ()
    error_kind: str | None = None  # "key": the wrong or a missing key (exit 2);
    #                                "connection": the endpoint could not be reached;
    #                                "space": a disk full or over quota
    endpoint: str | None = None  # with "connection": the endpoint (scheme://host:port)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Batch:
    job: DatasetJob
    items: tuple[PlanItem, ...]
    settings: TransferSettings

    def rest(self, done: int) -> Batch | None:
        """The same batch without its first ``done`` items; None if nothing is left."""
        return replace(self, items=self.items[done:]) if done < len(self.items) else None


def run_batch(batch: Batch) -> list[ObjectResult]:
    """The Dask task: one result per item, in order, for the items it got to."""
    return run_items(batch, lambda item: process_item(batch.job, item, batch.settings))


def run_items(batch: Batch, one: Callable[[PlanItem], ObjectResult]) -> list[ObjectResult]:
    """Results of ``one`` for a prefix of the batch's items.

    A task starts no new object after ``settings.task_seconds`` (at least one
    object per task), so results reach the driver, its report and its ledger
    about once a second rather than once per batch of hundreds; the driver
    submits the rest of the batch again at once. It also stops when the driver
    has stopped the run or the dataset (cancel.py), and after an object that
    failed for lack of space: what was finished is returned, an object cut
    short published nothing. A batch of small local objects first waits for its
    process's gate (local_gate.py).
    """
    token, dataset = batch.settings.run_token, batch.job.name
    results: list[ObjectResult] = []
    gated = local_gate.applies(batch.job.source, batch.job.destination,
                               (item.size for item in batch.items))
    with local_gate.held(token, dataset) if gated else contextlib.nullcontext(True) as go, \
            reused_dirs():  # local stores: each directory is walked once per task
        started = time.monotonic()  # after the gate: waiting is not working
        for item in batch.items if go else ():
            if results and time.monotonic() - started >= batch.settings.task_seconds:
                break
            if cancel.is_set(token, dataset):
                break
            try:
                results.append(one(item))
            except cancel.Cancelled:
                break
            if results[-1].error_kind == "space":
                break  # the disk is full: the driver stops the dataset (breaker.py)
    return results


Attempt = Callable[[DatasetJob, PlanItem, TransferSettings], "ObjectResult"]

OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A full disk or quota: the object fails with ``error_kind="space"``, which stops
its dataset (breaker.py)."""


def process_item(job: DatasetJob, item: PlanItem, settings: TransferSettings,
                 attempt_once: Attempt | None = None) -> ObjectResult:
    """One object, with retries; a failure becomes a result, never an exception.

    The one exception is cancel.Cancelled: the driver stopped this work (a
    signal, the dataset's circuit breaker) and the object is neither done nor
    failed; run_items returns what it finished. Connection failures are not
    retried once the dataset's endpoint has been out of reach for
    ``settings.dead_after`` seconds (connection.Outages). ``attempt_once``:
    what one attempt does (default: copy, verify or check by the item's
    action); ``rotate`` passes its own.
    """
    attempt_once = attempt_once or _attempt
    token = settings.run_token
    outage = f"{token}/{job.name}"
    started = time.monotonic()
    if item.source is not None and item.source.problem:  # found by the plan: fail, touch nothing
        return ObjectResult(dataset=job.name, key=item.key, action=item.action.value,
                            status="failed", size=item.size,
                            destination_url=job.destination.url_of(job.stored_key(item.key)),
                            error=item.source.problem)
    attempt = 0
    while True:
        attempt += 1
        cancel.check(token, job.name)  # raises Cancelled: the driver stopped this work
        try:
            result = attempt_once(job, item, settings)
            OUTAGES.ended(outage)
            return _with(result, attempts=attempt, seconds=time.monotonic() - started)
        except cancel.Cancelled:
            raise
        except Exception as exc:  # each object's failure is contained here
            key_trouble = isinstance(exc, IdentityMismatch | KeyProblem)
            endpoint = None if key_trouble else connection_endpoint(exc)
            gone = endpoint is not None and OUTAGES.failed(outage) >= settings.dead_after
            if attempt <= settings.retries and _is_transient(exc, job) and not gone:
                delay = min(settings.backoff_max, settings.backoff_base * 2 ** (attempt - 1))
                cancel.sleep(delay * (0.5 + random.random()), token, job.name)
                continue
            if isinstance(exc, VerifyMismatch) and item.action in (Action.copy, Action.verify):
                _remove_bad_copy(job.destination, job.stored_key(item.key))
            ours = key_trouble or isinstance(exc, UnsafePath | SourceChanged)
            full = isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE
            return ObjectResult(
                dataset=job.name, key=item.key, action=item.action.value, status="failed",
                size=item.size, destination_url=job.destination.url_of(job.stored_key(item.key)),
                attempts=attempt, error=str(exc) if ours else describe(exc),
                seconds=time.monotonic() - started,
                error_kind="key" if key_trouble else "connection" if endpoint is not None
                else "space" if full else None, endpoint=endpoint or None)


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
    """Stream one object to its destination atomically (encrypting it on the way
    for an encrypted dataset), or have the store copy it when source and
    destination are the same store (in_store.py), then verify it."""
    assert item.source is not None
    if in_store.applies(job):
        return _copy_in_store(job, item, settings, status)
    source, key = item.source, item.key
    encryption = job.encryption
    stored_key = job.stored_key(key)
    sha = hashlib.sha256()
    size = 0
    readback = job.verify != VerifyMode.size
    attributes, source_info = object_attributes(job, key)
    source_crc = SourceCrc.of(source_info, source)
    with contextlib.closing(open_read(job.source, key)) as reader, \
            contextlib.nullcontext(SourceGuard(job.source, source, reader)) as guard, \
            atomic_writer(job.destination, stored_key, part_size=settings.part_size,
                          size_hint=stored_size_bound(source.size) if encryption
                          else source.size, fsync=settings.fsync,
                          readback=readback, run_token=settings.run_token,
                          resume_id=None if encryption else _resume_id(source, settings),
                          resumable=encryption is None,
                          storage_class=job.storage_class,
                          mode=_source_mode(reader, guard.opened),
                          part_buffers=settings.part_buffers,
                          attributes=attributes) as writer:
        # The guard was taken before the writer opened: a source changed since it was
        # listed fails before anything is written, and its fstat gives the mode.
        # Encrypted objects restart from byte 0: a new file key makes new bytes.
        sink = Sealer(writer, encryption.parsed_recipients()) if encryption else writer
        limit = throttle.bucket(settings.run_token, settings.bwlimit) \
            if settings.bwlimit else None
        try:
            for chunk in read_chunks(reader):
                cancel.check(settings.run_token, job.name)  # nothing is published then
                if limit is not None:
                    limit.take(len(chunk), settings.run_token, job.name)
                sha.update(chunk)
                source_crc.update(chunk)
                sink.write(chunk)
                size += len(chunk)
                LIVE_BYTES.add(len(chunk))
        finally:
            LIVE_BYTES.add(-size)
        guard.confirm(size)  # before anything is published
        source_crc.confirm(job.source.url_of(key))
        digest = sha.hexdigest()
        stored_size, stored_sha, payload_sha = (
            sink.finish() if isinstance(sink, Sealer) else (size, digest, None))
        committed = writer.commit(stored_sha, source.mtime)
    native = verify_destination(job.destination, stored_key, stored_sha, stored_size,
                                job.verify, committed)
    if encryption and job.verify == VerifyMode.full and encryption.identity is not None:
        opened = decrypt_digest(job.destination, stored_key, encryption.identities())
        if (opened.sha256, opened.size) != (digest, size):
            raise VerifyMismatch(f"{job.destination.url_of(stored_key)}: decrypts to other "
                                 "bytes than the source's")
    return ObjectResult(dataset=job.name, key=key, action=item.action.value, status=status,
                        size=size, sha256=digest,
                        destination_url=job.destination.url_of(stored_key),
                        bytes_written=stored_size if committed.sent is None else committed.sent,
                        native_checksum=native, stored_size=stored_size,
                        stored_sha256=stored_sha, payload_sha256=payload_sha,
                        key_fingerprints=encryption.fingerprints if encryption else ())


def _copy_in_store(job: DatasetJob, item: PlanItem, settings: TransferSettings,
                   status: str) -> ObjectResult:
    """The store copies the object itself; verified like a streamed copy."""
    assert item.source is not None
    token = settings.run_token
    options = WriteOptions(part_size=settings.part_size, size_hint=item.source.size,
                           run_token=token, storage_class=job.storage_class,
                           part_buffers=settings.part_buffers,
                           attributes=object_attributes(job, item.key)[0])
    destination = job.destination
    sha256, committed = destination.backend.copy_within(
        job.source, item.source, destination, item.key, options,
        in_store.hash_source(job, item.source, token), in_store.stopper(job, token))
    size = item.source.size
    native = verify_destination(destination, item.key, sha256, size, job.verify, committed)
    return ObjectResult(dataset=job.name, key=item.key, action=item.action.value, status=status,
                        size=size, sha256=sha256, destination_url=destination.url_of(item.key),
                        bytes_written=0, native_checksum=native, stored_size=size,
                        stored_sha256=sha256)


def object_attributes(job: DatasetJob, key: str
                      ) -> tuple[Attributes | None, ObjectInfo | None]:
    """What the copy of ``key`` carries besides its bytes, and the source's stat
    when it was taken for them (stores/attributes.py)."""
    return attributes_for(job.source, job.destination, job.fidelity, key,
                          encrypted=job.encryption is not None)


def _source_mode(reader: object, opened: os.stat_result | None = None) -> int | None:
    """A local source file's permission bits, kept by a local copy (None: the
    writer's default). Set-id and sticky bits are never carried over.
    ``opened``: the reader's ``fstat``, when the source guard already took it."""
    try:
        st = opened or os.fstat(reader.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None
    return stat_mod.S_IMODE(st.st_mode) & 0o777


def _resume_id(source: Entry, settings: TransferSettings) -> str | None:
    """Large objects get a temporary name a later run can find and continue:
    derived from the source version, so a changed source never reuses parts."""
    if source.size < settings.resume_threshold:
        return None
    identity = f"{source.key}\0{source.size}\0{source.mtime!r}\0{source.etag}"
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def reverify_object(job: DatasetJob, item: PlanItem, settings: TransferSettings) -> ObjectResult:
    """Re-check an up-to-date object against its source; re-copy it if it differs."""
    natives = () if job.encryption or job.verify != VerifyMode.checksum else \
        native_algos_of(job.destination)
    with contextlib.closing(open_read(job.source, item.key)) as reader:
        source_hash = hash_stream(reader, natives)
    try:
        if job.encryption is not None:
            return _with(check_encrypted(job, item, source_hash.sha256, source_hash.size),
                         action=item.action.value, status="verified")
        native = verify_destination(job.destination, item.key, source_hash.sha256,
                                    source_hash.size, job.verify, None,
                                    source_natives={a: source_hash.native(a) for a in natives})
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
    if job.encryption is not None:
        return _check_encrypted_object(job, item)
    info = stat(job.destination, item.key)
    if info is None:
        return ObjectResult(**base, status="missing", error="missing at the destination")
    if job.verify == VerifyMode.size:
        if info.size != item.size:
            return ObjectResult(**base, status="differs",
                                error=f"size {info.size} at the destination, {item.size} at source")
        recorded = _recorded_native(item)
        stored = info.native.get(native_algo(recorded) or "")
        if recorded and stored and not same_checksum(stored, recorded):
            return ObjectResult(**base, status="differs",
                                error=f"the store's {stored.split(':')[0]} is not the one "
                                      "recorded when it was copied")
        return ObjectResult(**base, status="matched",
                            native_checksum=stored if recorded and stored else None)
    part_size = _int(info.metadata.get(META_PART_SIZE))
    natives = native_algos_of(job.destination, info) \
        if info.native_trusted and job.verify == VerifyMode.checksum and \
        not info.checksum_sha256 else ()
    source_natives: dict[str, str] = {}
    with contextlib.closing(open_read(job.source, item.key)) as reader:
        if info.checksum_sha256 and part_size:  # a composite, "-N" or not
            digest, composite, size = composite_of_stream(reader, part_size)
        else:
            hashed = hash_stream(reader, natives)
            digest, composite, size = hashed.sha256, None, hashed.size
            source_natives = {a: hashed.native(a) for a in natives}
    committed = Committed(size=size, native=f"sha256:{info.checksum_sha256}",
                          expected=f"sha256:{composite}", multipart=True) if composite else None
    try:
        native = verify_destination(job.destination, item.key, digest, size, job.verify,
                                    committed, info=info, source_natives=source_natives)
    except VerifyMismatch as exc:
        return ObjectResult(**base, status="differs", sha256=digest, error=str(exc))
    return ObjectResult(**base, status="matched", sha256=digest, native_checksum=native)


def _check_encrypted_object(job: DatasetJob, item: PlanItem) -> ObjectResult:
    """``datamove verify`` for one encrypted object: matched, missing or differs."""
    stored_key = job.stored_key(item.key)
    base = {"dataset": job.name, "key": item.key, "action": item.action.value, "size": item.size,
            "destination_url": job.destination.url_of(stored_key)}
    info = stat(job.destination, stored_key)
    if info is None:
        return ObjectResult(**base, status="missing", error="missing at the destination")
    source_sha = None
    if job.verify != VerifyMode.size:
        with contextlib.closing(open_read(job.source, item.key)) as reader:
            source_sha = hash_stream(reader).sha256
    try:
        checked = check_encrypted(job, item, source_sha, item.size, info)
    except VerifyMismatch as exc:
        return ObjectResult(**base, status="differs", sha256=source_sha, error=str(exc))
    return _with(checked, status="matched")


def check_encrypted(job: DatasetJob, item: PlanItem, source_sha: str | None,
                    source_size: int, info: ObjectInfo | None = None) -> ObjectResult:
    """Does the encrypted object hold the source's bytes? Raises VerifyMismatch if not.

    With an identity: stream-decrypt it and compare the plaintext's sha256 with
    the source's (nothing is written). Without one: compare the stored bytes'
    sha256 with the ledger's, and the source with what the ledger says was
    encrypted. ``source_sha`` None (verify mode ``size``): sizes only, from
    ``info`` when the caller already has the stored object's stat.
    """
    assert job.encryption is not None
    stored_key = job.stored_key(item.key)
    url = job.destination.url_of(stored_key)
    row = item.recorded
    result = ObjectResult(dataset=job.name, key=item.key, action=item.action.value,
                          status="matched", size=source_size, sha256=source_sha,
                          destination_url=url)
    if row is not None and row.size != source_size:
        raise VerifyMismatch(f"{url}: the source has {source_size} bytes, the ledger says "
                             f"{row.size} were encrypted")
    if source_sha is None:  # verify: size
        info = info or stat(job.destination, stored_key)
        if row is None or info is None or info.size != row.stored_size:
            raise VerifyMismatch(f"{url}: stored size {info.size if info else 'missing'} is "
                                 f"not the recorded {row.stored_size if row else 'unknown'}")
        return result
    if job.encryption.identity is not None:
        opened = decrypt_digest(job.destination, stored_key, job.encryption.identities())
        if (opened.sha256, opened.size) != (source_sha, source_size):
            raise VerifyMismatch(f"{url}: decrypts to other bytes than the source's "
                                 f"({opened.sha256[:16]}… ≠ {source_sha[:16]}…)")
        return result
    if row is None or not row.stored_sha256:
        raise VerifyMismatch(f"{url}: not in the ledger and no identity to decrypt it with; "
                             "set encrypt.identity to verify it by decryption")
    if row.sha256 != source_sha:
        raise VerifyMismatch(f"{url}: the source changed since it was encrypted")
    with contextlib.closing(open_read(job.destination, stored_key)) as reader:
        stored = hash_stream(reader)
    if (stored.sha256, stored.size) != (row.stored_sha256, row.stored_size):
        raise VerifyMismatch(f"{url}: sha256 of the stored bytes differs from the ledger's "
                             f"({stored.sha256[:16]}… ≠ {row.stored_sha256[:16]}…)")
    return _with(result, stored_size=stored.size, stored_sha256=stored.sha256)


def verify_destination(location: Location, key: str, sha256: str, size: int,
                       mode: VerifyMode, committed: Committed | None,
                       info: ObjectInfo | None = None,
                       source_natives: dict[str, str] | None = None) -> str | None:
    """Check the destination holds ``size`` bytes with ``sha256``; raise VerifyMismatch.

    A checksum the store computed at commit is compared in every mode (it costs
    nothing, and a mismatch is a failure). Then ``size``: the stored size.
    ``checksum``: a native checksum the store computed (S3 ChecksumSHA256 whole or
    composite-of-parts, GCS crc32c/md5Hash, an Azure Content-MD5 from one Put
    Blob) when there is one we computed from the source's bytes to compare it
    with (at commit, or ``source_natives``), otherwise a re-read. ``full``:
    always a re-read. Returns the native checksum that was compared, if any
    (``<algo>:<base64>``; a local read-back's sha256 in hex).
    """
    proven: str | None = None
    if info is None and committed and committed.native and committed.expected:
        # Checked at commit: the store's own checksum of what it received, or
        # every byte read back before the object became visible.
        if not same_checksum(committed.native, committed.expected) or committed.size != size:
            raise VerifyMismatch(f"{location.url_of(key)}: store checksum differs")
        if mode == VerifyMode.checksum or (mode == VerifyMode.full and committed.reread):
            return committed.native
        proven = committed.native
    info = info or stat(location, key)
    if info is None:
        raise VerifyMismatch(f"{location.url_of(key)}: missing after commit")
    if info.size != size:
        raise VerifyMismatch(f"{location.url_of(key)}: {info.size} bytes stored, {size} expected")
    if mode == VerifyMode.size:
        return proven
    if mode == VerifyMode.checksum:
        native = _native_match(location, key, info, sha256, committed, source_natives or {})
        if native:
            return native
    with contextlib.closing(open_read(location, key)) as reader:
        stored = hash_stream(reader)
    if stored.sha256 != sha256 or stored.size != size:
        raise VerifyMismatch(f"{location.url_of(key)}: sha256 of the stored bytes differs "
                             f"({stored.sha256[:16]}… ≠ {sha256[:16]}…)")
    return proven


def _native_match(location: Location, key: str, info: ObjectInfo, sha256: str,
                  committed: Committed | None, source_natives: dict[str, str]) -> str | None:
    """The store's native checksum, if it could be compared with one computed from
    the source's bytes and equals it; raises VerifyMismatch if it differs; None
    when there was nothing trustworthy to compare (the caller re-reads)."""
    if info.checksum_sha256:  # S3
        native = f"sha256:{info.checksum_sha256}"
        multipart = META_PART_SIZE in info.metadata or (committed and committed.multipart)
        expected = committed.expected if multipart and committed else \
            None if multipart else f"sha256:{b64_sha256(sha256)}"
        if expected:
            if not same_checksum(native, expected):
                raise VerifyMismatch(f"{location.url_of(key)}: store checksum differs")
            return native
    if not info.native_trusted:
        return None
    for algo in ("md5", "crc64nvme", "crc32c", "crc32"):  # the stronger first
        stored, ours = info.native.get(algo), source_natives.get(algo)
        if stored and ours:
            if not same_checksum(stored, ours):
                raise VerifyMismatch(f"{location.url_of(key)}: the store's {algo} differs from "
                                     "the source's")
            return stored
    return None


def native_algos_of(location: Location, info: ObjectInfo | None = None) -> tuple[str, ...]:
    """The one native checksum worth computing from a source for this destination
    (docs/BACKENDS.md): GCS crc32c (present for every object, composite ones too),
    Azure Content-MD5, S3's ETag MD5 or CRC32C of an object without ChecksumSHA256.
    With ``info``: the first of those the object actually has."""
    backend = location.backend
    preferred = backend.native_checksums
    if info is not None:
        preferred = tuple(a for a in preferred if a in info.native)
    elif backend.sha256_on_write:
        return ()  # datamove's own objects there carry a SHA-256 the store keeps
    return preferred[:1]


def _recorded_native(item: PlanItem) -> str | None:
    """The native checksum recorded with the object's last copy, when the ledger
    row carries one (``LedgerRow.native_checksum``)."""
    value = getattr(item.recorded, "native_checksum", None)
    return value if native_algo(value) else None


def _remove_bad_copy(location: Location, key: str) -> None:
    """A copy that never verified must not stay visible as if it were good."""
    with contextlib.suppress(Exception):
        remove(location, key)


def _is_transient(exc: BaseException, job: DatasetJob) -> bool:
    """Worth another attempt: datamove's own errors say so themselves; anything
    else is judged by the backends at either end (``Backend.is_transient``), so
    an answer that will not change (access denied, no such bucket, an invalid
    request) fails the object at once."""
    if isinstance(exc, TransferError):
        return exc.transient
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError |
                  NotADirectoryError | FileExistsError):
        return False
    return any(where.backend.is_transient(exc) for where in (job.source, job.destination))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _with(result: ObjectResult, **changes: object) -> ObjectResult:
    """``dataclasses.replace`` without re-running the frozen ``__init__`` (a fifth
    of the Python time of a 4 KiB local copy went there)."""
    unknown = changes.keys() - _RESULT_FIELDS
    if unknown:
        raise TypeError(f"ObjectResult has no field {', '.join(sorted(unknown))}")
    copy = object.__new__(ObjectResult)
    copy.__dict__.update(result.__dict__, **changes)
    return copy


_RESULT_FIELDS = frozenset(field.name for field in fields(ObjectResult))
