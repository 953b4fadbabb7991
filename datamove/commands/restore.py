"""``datamove restore``: read recorded objects back from any tier, decrypted and verified.

For each recorded object of a dataset: make it readable (an S3 object in
GLACIER or DEEP_ARCHIVE needs an archive restore: start it, then poll until it
completes or a timeout passes), stream the stored bytes, decrypt them when the
dataset is encrypted, and write the plaintext atomically to the target. The
write is committed only when the plaintext's sha256 and size equal the
ledger's (and the stored bytes' sha256 equals ``stored_sha256``): a restore
never leaves a wrong or partial file. ``drill.py`` runs the same pipeline on a
sample, into scratch space.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from datamove.age import AgeDecryptor, AgeError, NoIdentityMatch
from datamove.checksum import read_chunks
from datamove.errors import BadInput, KeyProblem, TransferError
from datamove.ledger.lock import s3_error_code
from datamove.ledger.tables import OBJECTS, LedgerRow
from datamove.manifest.checks import comparable_url
from datamove.manifest.model import Manifest
from datamove.pipeline.jobs import jobs_of, ledger_of
from datamove.pipeline.march import DatasetJob, batches
from datamove.pipeline.progress import Progress
from datamove.pipeline.report import Report
from datamove.pipeline.session import RunSession
from datamove.pipeline.transfer import ObjectResult
from datamove.stores.core import Location, describe, open_read, remove
from datamove.stores.safepath import PRIVATE_FILE_MODE
from datamove.stores.writers import atomic_writer
from datamove.tiers import needs_restore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Waiting:
    """How long to wait for archive restores, and how they are requested (S3)."""

    timeout: float = 12 * 3600.0  # seconds; 0 = start restores but do not wait
    poll: float = 60.0
    days: int = 1  # how long S3 keeps the restored copy readable
    tier: str = "Standard"  # S3 retrieval tier: Expedited, Standard or Bulk


def ensure_readable(location: Location, key: str, storage_class: str | None,
                    waiting: Waiting | None = None, *, timeout: float | None = None) -> float:
    """Make an archived S3 object readable; returns the seconds spent waiting.

    Starts the archive restore if none is under way (a restore already in
    progress is fine: concurrent drills share it), then polls until S3 says it
    completed. Raises TransferError on timeout, naming what to do.
    """
    waiting = waiting or Waiting()
    if timeout is not None:
        waiting = Waiting(timeout, waiting.poll, waiting.days, waiting.tier)
    if not location.backend.archive_restore or not needs_restore(storage_class):
        return 0.0
    bucket, prefix = location.bucket_and_prefix()
    url = location.url_of(key)
    started = time.monotonic()
    requested = False
    while True:
        head = location.fs.call_s3("head_object", Bucket=bucket, Key=prefix + key)
        current = head.get("StorageClass", "STANDARD")
        restore = head.get("Restore") or ""
        if not needs_restore(current) or 'ongoing-request="false"' in restore:
            return time.monotonic() - started
        if not restore and not requested:
            try:
                location.fs.call_s3("restore_object", Bucket=bucket, Key=prefix + key,
                                    RestoreRequest={"Days": waiting.days, "GlacierJobParameters":
                                                    {"Tier": waiting.tier}})
            except OSError as exc:
                if s3_error_code(exc) != "RestoreAlreadyInProgress":
                    raise
            requested = True
            continue  # some stores restore at once: look again before waiting
        waited = time.monotonic() - started
        if waited >= waiting.timeout:
            raise TransferError(
                f"{url}: in {current}; the archive restore was requested but has not completed "
                f"after {waited:.0f} s. Run the command again once it has (restores take "
                "minutes to hours); restore and drill can wait longer with --timeout")
        time.sleep(min(waiting.poll, max(0.05, waiting.timeout - waited)))


def stored_location(job: DatasetJob, row: LedgerRow,
                    cold: tuple[Location, ...] = ()) -> Location:
    """Where a recorded object's bytes are now: the destination, or the cold location
    a lifecycle rule moved it to (with the rule's options when it is still in ``cold``)."""
    if row.archive_url is None:
        return job.destination
    for location in cold:
        if row.archive_url.startswith(location.url_of("")):
            return location
    return Location.of(row.archive_url[:len(row.archive_url) - len(job.stored_key(row.key))])


@dataclass(frozen=True)
class Restored:
    """One object read back: where from, how long it took, whether it verified."""

    dataset: str
    key: str
    tier: str  # storage class, or the cold location's URL
    stored_size: int
    ok: bool
    seconds: float = 0.0
    first_byte_seconds: float | None = None  # from the request to the first byte
    waited_seconds: float = 0.0  # for an archive restore to complete
    restored_url: str = ""
    error: str | None = None
    wrong_key: bool = False  # no identity we hold opens it: bad input (exit 2)

    def as_result(self) -> ObjectResult:
        return ObjectResult(dataset=self.dataset, key=self.key, action="restore",
                            status="restored" if self.ok else "failed", size=self.stored_size,
                            destination_url=self.restored_url, error=self.error,
                            seconds=self.seconds, error_kind="key" if self.wrong_key else None)


@dataclass(frozen=True)
class RestoreBatch:
    job: DatasetJob
    rows: tuple[LedgerRow, ...]
    to: Location
    cold: tuple[Location, ...]
    waiting: Waiting
    part_size: int
    run_token: str
    keep: bool = True  # drills delete each file once it verified
    mode: int = PRIVATE_FILE_MODE  # restored local files: private unless asked otherwise
    fsync: bool = False  # engine.fsync: flushed to disk before published


def restore_batch(batch: RestoreBatch) -> list[Restored]:
    """The Dask task: restore each row of the batch; one result per row, in order.

    Archive restores for the whole batch are requested first, so they run in S3
    at the same time instead of one after another."""
    if batch.job.destination.backend.archive_restore or batch.cold:
        for row in batch.rows:
            if needs_restore(row.storage_class):
                here = stored_location(batch.job, row, batch.cold)
                with contextlib.suppress(TransferError, OSError):  # restore_object reports
                    ensure_readable(here, batch.job.stored_key(row.key), row.storage_class,
                                    batch.waiting, timeout=0)
    return [restore_object(batch, row) for row in batch.rows]


class _Timed:
    """A reader that notes when its first byte arrived."""

    def __init__(self, reader: BinaryIO):
        self.reader = reader
        self.first_byte: float | None = None

    def readinto(self, buffer: memoryview) -> int:
        n = self.reader.readinto(buffer)  # type: ignore[attr-defined]
        if self.first_byte is None:
            self.first_byte = time.monotonic()
        return n

    def read(self, n: int = -1) -> bytes:
        data = self.reader.read(n)
        if self.first_byte is None:
            self.first_byte = time.monotonic()
        return data


def restore_object(batch: RestoreBatch, row: LedgerRow) -> Restored:
    """Read one object back, decrypt it, verify it against the ledger, write it."""
    job = batch.job
    here = stored_location(job, row, batch.cold)
    stored_key = job.stored_key(row.key)
    tier = here.url if row.archive_url else (row.storage_class or "STANDARD")
    started = time.monotonic()
    result = {"dataset": job.name, "key": row.key, "tier": tier, "stored_size": row.stored_size,
              "restored_url": batch.to.url_of(row.key)}
    waited = 0.0
    try:
        waited = ensure_readable(here, stored_key, row.storage_class, batch.waiting)
        requested = time.monotonic()
        url = here.url_of(stored_key)
        with atomic_writer(batch.to, row.key, part_size=batch.part_size, size_hint=row.size,
                           run_token=batch.run_token, resumable=False,
                           mode=batch.mode, fsync=batch.fsync) as writer, \
                contextlib.closing(open_read(here, stored_key)) as raw:
            reader = _Timed(raw)
            plain_sha, plain_size, stored_sha, stored_size = _copy_back(job, reader, writer)
            if row.stored_sha256 and (stored_sha, stored_size) != (row.stored_sha256,
                                                                   row.stored_size):
                raise TransferError(f"{url}: stored bytes differ from the ledger "
                                    f"({stored_sha[:16]}… ≠ {row.stored_sha256[:16]}…)")
            if (plain_sha, plain_size) != (row.sha256, row.size):
                raise TransferError(f"{url}: restores to other bytes than the ledger recorded "
                                    f"({plain_sha[:16]}… ≠ {(row.sha256 or '')[:16]}…)")
            writer.commit(plain_sha, row.source_mtime)
        if not batch.keep:
            remove(batch.to, row.key)
        first = reader.first_byte - requested if reader.first_byte is not None else None
        return Restored(**result, ok=True, seconds=time.monotonic() - started,
                        first_byte_seconds=first, waited_seconds=waited)
    except (TransferError, OSError, AgeError) as exc:
        return Restored(**result, ok=False, seconds=time.monotonic() - started,
                        waited_seconds=waited, error=_explain(exc, here.url_of(stored_key)),
                        wrong_key=isinstance(exc, NoIdentityMatch))


def _copy_back(job: DatasetJob, reader: _Timed, writer: object) -> tuple[str, int, str, int]:
    """Stream stored bytes through the decryptor (if any) into ``writer``; hash both sides."""
    stored, plain = hashlib.sha256(), hashlib.sha256()
    stored_size = plain_size = 0
    decryptor = AgeDecryptor(job.encryption.identities(), armor=False) \
        if job.encryption is not None else None

    def out(piece: bytes | memoryview) -> None:
        nonlocal plain_size
        plain.update(piece)
        plain_size += len(piece)
        writer.write(piece)  # type: ignore[attr-defined]

    for chunk in read_chunks(reader):  # type: ignore[arg-type]
        stored.update(chunk)
        stored_size += len(chunk)
        if decryptor is None:
            out(chunk)
        else:
            for piece in decryptor.update_chunks(chunk):
                out(piece)
    if decryptor is not None:
        out(decryptor.finalize())
    return plain.hexdigest(), plain_size, stored.hexdigest(), stored_size


def _explain(exc: BaseException, url: str) -> str:
    if isinstance(exc, NoIdentityMatch):
        return f"{url}: no identity matches; is this the identity for the keys it was " \
               "encrypted to?"
    if isinstance(exc, AgeError):
        return f"{url}: does not decrypt: {type(exc).__name__}: {exc}"
    if isinstance(exc, FileNotFoundError):
        return f"{url}: missing (the ledger records it here)"
    return describe(exc)


# --- the command -----------------------------------------------------------------------

def restore(manifest: Manifest, dataset: str, to_url: str, *, prefix: str = "",
            identity: str | None = None, waiting: Waiting | None = None,
            scheduler: str | None = None, progress: Progress | None = None,
            to_options: dict[str, object] | None = None,
            mode: int = PRIVATE_FILE_MODE) -> Report:
    """Restore a dataset's recorded objects (those under ``prefix``) into ``to_url``.

    ``mode``: permission bits of restored local files; private (0600) by default
    because restored data may be secret whatever it was at the source."""
    try:
        spec = manifest.dataset(dataset)
    except KeyError as exc:
        raise BadInput(str(exc.args[0])) from None
    if spec.destination.format == "delta":
        raise BadInput(f"dataset {dataset} is a Delta table: read it with time travel "
                       "(docs/TABULAR.md), restore copies objects")
    for side, url in (("source", spec.source.url), ("destination", spec.destination.url)):
        if comparable_url(to_url).startswith(comparable_url(url)) or \
                comparable_url(url).startswith(comparable_url(to_url)):
            raise BadInput(f"--to {to_url} overlaps the dataset's {side} {url}; restore into "
                           "a separate place")
    job = jobs_of(manifest, [dataset], identity)[0]
    require_identities([job])
    to = Location.of(to_url, dict(to_options or {}))
    with RunSession(manifest, "restore", scheduler=scheduler, progress=progress,
                    lock="restore", records=False) as session:
        session.report.dataset(dataset, spec.destination.url, to.url)
        rows = recorded_rows(manifest, job, prefix)
        session.start([dataset], to=to.url, prefix=prefix)
        audit = session.audit
        assert audit is not None
        for restored in run_restores(session, job, rows, to, waiting or Waiting(), keep=True,
                                     mode=mode):
            audit.append("object.restored" if restored.ok else "object.failed",
                         dataset=dataset, key=restored.key, tier=restored.tier,
                         stored_size=restored.stored_size, restored_url=restored.restored_url,
                         **({"error": restored.error} if restored.error else {}))
        return session.finish()


def require_identities(jobs: list[DatasetJob]) -> None:
    """Reading encrypted data back needs its identity: open each on the driver first,
    so a missing or wrong one is one exit-2 error before anything is read."""
    for job in jobs:
        if job.encryption is not None:
            try:
                job.encryption.identities()
            except KeyProblem as exc:
                raise KeyProblem(f"dataset {job.name}: {exc}") from None


def recorded_rows(manifest: Manifest, job: DatasetJob, prefix: str = "") -> Iterator[LedgerRow]:
    """The dataset's latest good rows whose key starts with ``prefix``, in key order."""
    ledger = ledger_of(manifest)
    if ledger.table(OBJECTS) is None:
        raise BadInput(f"ledger {ledger.url} has no objects: nothing was copied yet")
    return (row for row in ledger.latest_done(job.name, job.destination.url_of(""))
            if row.key.startswith(prefix))


def run_restores(session: RunSession, job: DatasetJob, rows: Iterator[LedgerRow] | list,
                 to: Location, waiting: Waiting, *, keep: bool,
                 mode: int = PRIVATE_FILE_MODE) -> Iterator[Restored]:
    """Restore ``rows`` on the session's engine, accounting each result in its report.

    Restored files are flushed to disk before they are published when the
    manifest says ``engine.fsync``; a drill's scratch copies (``keep`` False),
    deleted once verified, are not."""
    spec, report, progress = session.spec, session.report, session.progress
    cold = tuple(Location.of(r.location.url, r.location.options, r.location.region)
                 for r in session.manifest.dataset(job.name).lifecycle
                 if r.location is not None)
    def counted(rows: Iterator[LedgerRow] | list) -> Iterator[LedgerRow]:
        """The rows as they are read, counted as planned (the progress's totals)."""
        for row in rows:
            progress.planned(row, job.name)
            yield row
        progress.listing_done()

    work = (RestoreBatch(job, tuple(group), to, cold, waiting, spec.part_size, session.token,
                         keep, mode, fsync=spec.fsync and keep)
            for group in batches(counted(rows),  # type: ignore[arg-type]
                                 max_objects=spec.batch_objects,
                                 max_bytes=spec.batch_bytes, large=spec.part_size))
    with session.working() as engine:
        for batch, outcome in engine.map_unordered(restore_batch, work):
            results = outcome if isinstance(outcome, list) else [
                Restored(job.name, row.key, row.storage_class or "", row.stored_size, False,
                         error=f"task failed: {describe(outcome)}") for row in batch.rows]
            for restored in results:
                result = restored.as_result()
                report.record(result)
                progress.done(result)
                yield restored


def parse_seconds(text: str) -> float:
    """``--timeout``/``--poll``: a duration such as 30s, 15m, 12h (lifecycle syntax)."""
    from datamove.tiers import parse_duration

    try:
        return parse_duration(text).total_seconds() if not text.isdigit() else float(text)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
