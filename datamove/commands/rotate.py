"""Key rotation: re-wrap encrypted objects for new recipients, payload untouched.

An age file is a header (the file key, wrapped once per recipient, and a MAC)
followed by the payload (a nonce and the STREAM chunks). Rotation unwraps the
file key with the current identity, wraps it for the new recipients, and
rewrites each object as ``new header + the same payload bytes``: terabytes are
re-uploaded, never re-encrypted, and the ledger's ``payload_sha256`` proves the
payload did not change.

Resumable, through a journal in the ledger (docs/FORMAT.md, "Key rotation"):
before a batch of objects is rewritten, the driver records a ``rotating`` row
for each, naming the new key fingerprints. An object whose latest good row
already has those fingerprints is skipped. If a run dies between rewriting an
object and recording it, the next run finds a header the old identity cannot
open, a ``rotating`` row newer than the good row with the same target, and the
payload hash the ledger recorded: it records the object as rotated without
touching it. Any other header the old identity cannot open is reported, never
overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import BinaryIO

from datamove.age import (
    AgeError,
    InvalidKey,
    NoIdentityMatch,
    header_bytes,
    load_recipients,
    new_header,
    read_header,
)
from datamove.checksum import read_chunks
from datamove.crypto.dataset import fingerprints_of
from datamove.errors import BadInput, IdentityMismatch, KeyProblem, TransferError
from datamove.ledger.tables import (
    DONE_STATUSES,
    OBJECTS,
    ROTATING,
    Ledger,
    LedgerRow,
)
from datamove.manifest.model import Manifest, VerifyMode
from datamove.pipeline.auditing import record_result
from datamove.pipeline.cleanup import OrphanSweeper, abort_orphan_uploads, store_clock
from datamove.pipeline.jobs import count_housekeeping, jobs_of, ledger_row, preflight_identities
from datamove.pipeline.march import Action, DatasetJob, PlanItem, batches, march
from datamove.pipeline.progress import Progress
from datamove.pipeline.report import Report
from datamove.pipeline.session import RunSession
from datamove.pipeline.transfer import (
    Batch,
    ObjectResult,
    TransferSettings,
    object_attributes,
    process_item,
    run_items,
    verify_destination,
)
from datamove.stores.core import list_entries, open_read
from datamove.stores.writers import atomic_writer

log = logging.getLogger(__name__)

RESUME = "resume: an interrupted rotation to these keys may have re-wrapped it"
JOURNAL_CHUNK = 2_000  # objects journaled (one ledger commit) before they are dispatched


def rotate(manifest: Manifest, recipients_file: str, *, identity_file: str | None = None,
           datasets: list[str] | None = None, scheduler: str | None = None,
           progress: Progress | None = None) -> Report:
    """Re-wrap every recorded encrypted object for the recipients in ``recipients_file``."""
    with RunSession(manifest, "rotate", scheduler=scheduler, progress=progress,
                    lock="keys rotate") as session:
        return _rotate(session, recipients_file, identity_file=identity_file,
                       datasets=datasets)


def _rotate(session: RunSession, recipients_file: str, *, identity_file: str | None,
            datasets: list[str] | None) -> Report:
    try:
        new_recipients = tuple(r.encode() for r in load_recipients(recipients_file))
    except OSError as exc:
        raise KeyProblem(f"cannot read recipients file {recipients_file}: "
                         f"{exc.strerror or exc}") from None
    except (InvalidKey, UnicodeDecodeError) as exc:
        raise KeyProblem(str(exc)) from None
    manifest, report, ledger = session.manifest, session.report, session.ledger
    target = fingerprints_of(new_recipients)
    jobs = _encrypted_jobs(manifest, datasets, identity_file)
    preflight_identities(jobs)
    if ledger.table(OBJECTS) is None:
        raise BadInput(f"ledger {ledger.url} has no objects yet: nothing to rotate")

    spec, progress, settings = session.spec, session.progress, session.settings
    session.start([job.name for job in jobs], new_key_fingerprints=list(target))
    writer, audit = session.writer, session.audit
    assert writer is not None and audit is not None
    for job in jobs:
        report.dataset(job.name, job.source.url, job.destination.url)
        assert job.encryption is not None
        if job.encryption.fingerprints != target:
            log.warning("dataset %s: the manifest still encrypts new objects for %s; point "
                        "its recipients at %s to use the new keys", job.name,
                        ", ".join(job.encryption.fingerprints), recipients_file)

    upload_cutoffs = {job.name: store_clock(job.destination) for job in jobs}

    def work() -> Iterator[Batch]:
        for job in jobs:
            assert job.encryption is not None
            count_housekeeping(report, job, "orphan_files_removed", _sweep(job, settings.run_token))
            rotating = replace(job, encryption=replace(job.encryption,
                                                       recipients=new_recipients))
            items = _rotation_items(ledger, job, target, report)
            while chunk := list(itertools.islice(items, JOURNAL_CHUNK)):
                for item in chunk:  # the journal lands before any of these is rewritten
                    writer.add(ledger_row(rotating, item, _journal(rotating, item),
                                          report.run_id))
                    progress.planned(item, job.name)
                writer.flush()
                for group in batches(chunk, max_objects=spec.batch_objects,
                                     max_bytes=spec.batch_bytes, large=spec.part_size):
                    yield Batch(rotating, tuple(group), settings)
        progress.listing_done()

    with session.working():
        for batch, item, result in session.settle(rotate_batch, work()):
            writer.add(ledger_row(batch.job, item, result, report.run_id))
            record_result(audit, batch.job, result,
                          "key.rotation" if result.status == "rotated" else None)
    for job in jobs:  # uploads a killed rotation left behind
        if report.interrupted or job.name in report.stopped:
            continue  # be quick; its endpoint may be gone. The next rotation does it
        count_housekeeping(report, job, "orphan_uploads_aborted",
               abort_orphan_uploads(job.destination, upload_cutoffs[job.name]))
    return session.finish()


def _sweep(job: DatasetJob, run_token: str) -> int:
    """Remove the temporary files an earlier, killed command left at the destination."""
    sweeper = OrphanSweeper(job.destination, run_token)
    for _ in list_entries(job.destination, on_partial=sweeper):
        pass
    return sweeper.removed


def _encrypted_jobs(manifest: Manifest, datasets: list[str] | None,
                    identity_file: str | None) -> list[DatasetJob]:
    jobs = jobs_of(manifest, datasets, identity_file)
    plain = [job.name for job in jobs if job.encryption is None]
    if datasets and plain:
        raise BadInput(f"dataset {plain[0]} is not encrypted: there are no keys to rotate")
    jobs = [job for job in jobs if job.encryption is not None]
    if not jobs:
        raise BadInput(f"manifest {manifest.name} has no encrypted dataset: nothing to rotate")
    for job in jobs:
        assert job.encryption is not None
        if job.encryption.identity is None:
            raise KeyProblem(f"dataset {job.name}: rotation needs the current identity to "
                             "unwrap each file key; set encrypt.identity (or keys.identity) "
                             "in the manifest, or pass --identity FILE")
    return jobs


def _rotation_items(ledger: Ledger, job: DatasetJob, target: tuple[str, ...],
                    report: Report) -> Iterator[PlanItem]:
    """The recorded objects not yet encrypted for ``target``, in key order."""
    prefix = job.destination.url_of("")
    done = ledger.latest(job.name, prefix, DONE_STATUSES)
    journal = ledger.latest(job.name, prefix, (ROTATING,))
    ds = report.dataset(job.name)
    for row, pending in march(done, journal):
        if row is None:
            continue  # journaled, then deleted from the ledger's view: nothing to do
        if not row.key_fingerprints:
            ds.add("not_encrypted", row.size)  # copied before the dataset was encrypted
            continue
        if tuple(sorted(row.key_fingerprints)) == target:
            ds.add("skipped", row.size)
            continue
        resumed = (pending is not None and tuple(sorted(pending.key_fingerprints)) == target
                   and (pending.recorded_at or 0) > (row.recorded_at or 0))
        yield PlanItem(Action.rotate, row.key, None, None,
                       RESUME if resumed else "rotate", recorded=row)


def _journal(job: DatasetJob, item: PlanItem) -> ObjectResult:
    assert job.encryption is not None and item.recorded is not None
    return ObjectResult(dataset=job.name, key=item.key, action=Action.rotate.value,
                        status=ROTATING, size=item.recorded.size, sha256=item.recorded.sha256,
                        destination_url=job.destination.url_of(job.stored_key(item.key)),
                        key_fingerprints=job.encryption.fingerprints,
                        previous_key_fingerprints=item.recorded.key_fingerprints)


# --- on the workers ------------------------------------------------------------------

def rotate_batch(batch: Batch) -> list[ObjectResult]:
    """The Dask task: rotate the batch's objects (retries as for copies), returning
    what it finished within about a second, like transfer.run_batch."""
    return run_items(batch, lambda item: process_item(batch.job, item, batch.settings,
                                                      rotate_object))


def rotate_object(job: DatasetJob, item: PlanItem, settings: TransferSettings) -> ObjectResult:
    """Rewrite one object as new header + its payload bytes, atomically, then verify."""
    assert job.encryption is not None and item.recorded is not None
    row = item.recorded
    stored_key = job.stored_key(item.key)
    url = job.destination.url_of(stored_key)
    identities = job.encryption.identities()
    with contextlib.closing(open_read(job.destination, stored_key)) as reader:
        try:
            header, rest = read_header(reader)
            head = new_header(header, identities, job.encryption.parsed_recipients())
        except NoIdentityMatch:
            if item.reason == RESUME:
                return _recorded_as_rotated(job, item, reader, header_bytes(header), rest)
            raise IdentityMismatch(
                f"{url}: no identity matches its header; it is encrypted for other keys than "
                "the identity's (if an earlier rotation to other keys was interrupted, give "
                "an identity file holding those keys too)") from None
        except AgeError as exc:
            raise TransferError(f"{url}: not rotated, the age header does not open: "
                                f"{type(exc).__name__}: {exc}") from None
        old_stored = hashlib.sha256(header_bytes(header))
        payload = hashlib.sha256()
        new_stored = hashlib.sha256(head)
        size = len(head)
        with atomic_writer(job.destination, stored_key, part_size=settings.part_size,
                           size_hint=row.stored_size + len(head), fsync=settings.fsync,
                           readback=job.verify != VerifyMode.size,
                           run_token=settings.run_token, resumable=False,
                           storage_class=job.storage_class,
                           # The rewritten object keeps its type, tags and SSE-KMS.
                           attributes=object_attributes(job, item.key)[0]) as writer:
            writer.write(head)
            for piece in itertools.chain([rest], read_chunks(reader)):
                for digest in (old_stored, payload, new_stored):
                    digest.update(piece)
                writer.write(piece)
                size += len(piece)
            _check_unchanged(url, row, old_stored.hexdigest(), payload.hexdigest())
            committed = writer.commit(new_stored.hexdigest(), row.source_mtime)
    native = verify_destination(job.destination, stored_key, new_stored.hexdigest(), size,
                                job.verify, committed)
    return ObjectResult(dataset=job.name, key=item.key, action=item.action.value,
                        status="rotated", size=row.size, sha256=row.sha256,
                        destination_url=url, native_checksum=native,
                        bytes_written=size if committed.sent is None else committed.sent,
                        stored_size=size, stored_sha256=new_stored.hexdigest(),
                        payload_sha256=payload.hexdigest(),
                        key_fingerprints=job.encryption.fingerprints,
                        previous_key_fingerprints=row.key_fingerprints)


def _check_unchanged(url: str, row: LedgerRow, stored_sha: str, payload_sha: str) -> None:
    """Refuse to rotate an object that is not the one the ledger recorded."""
    if row.stored_sha256 and stored_sha != row.stored_sha256:
        raise TransferError(f"{url}: not rotated: its stored bytes differ from the ledger's "
                            "sha256 (run `datamove verify` and repair it first)")
    if row.payload_sha256 and payload_sha != row.payload_sha256:
        raise TransferError(f"{url}: not rotated: its payload differs from the ledger's")


def _recorded_as_rotated(job: DatasetJob, item: PlanItem, reader: BinaryIO, head: bytes,
                         rest: bytes) -> ObjectResult:
    """An interrupted rotation already rewrote this object: check its payload, record it."""
    assert job.encryption is not None and item.recorded is not None
    row = item.recorded
    url = job.destination.url_of(job.stored_key(item.key))
    stored = hashlib.sha256(head)
    payload = hashlib.sha256()
    size = len(head)
    for piece in itertools.chain([rest], read_chunks(reader)):
        stored.update(piece)
        payload.update(piece)
        size += len(piece)
    if not row.payload_sha256 or payload.hexdigest() != row.payload_sha256:
        raise IdentityMismatch(f"{url}: no identity matches its header, and its payload is "
                               "not the one the ledger recorded: not rotated")
    return ObjectResult(dataset=job.name, key=item.key, action=item.action.value,
                        status="rotated", size=row.size, sha256=row.sha256, destination_url=url,
                        stored_size=size, stored_sha256=stored.hexdigest(),
                        payload_sha256=payload.hexdigest(),
                        key_fingerprints=job.encryption.fingerprints,
                        previous_key_fingerprints=row.key_fingerprints)
