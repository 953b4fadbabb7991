"""``datamove archive``: move objects that lifecycle rules say are due to colder tiers.

The plan comes from the ledger, not from listings: each object's latest good
row says where its bytes are (``destination_url``, or ``archive_url`` after a
move to a cold location), in which storage class, and since when (its
``copied_at``). The due rule is the longest ``after`` an object has passed
(lifecycle.due). Moves go one way, colder; an object already there is left
alone, so archive is idempotent and safe to run from cron. Overlapping runs
take the ledger's writer lock in turn (locks.py) and the later one finds
nothing due.

Two kinds of move, each verified before it is recorded:

* **In place** (S3 storage classes): ``CopyObject`` onto itself with the new
  class, ``CopySourceIfMatch`` the ETag we checked, and ``ChecksumAlgorithm:
  SHA256`` so S3 computes the stored bytes' sha256 while copying; it must equal
  the ledger's ``stored_sha256``. Before moving into a class that needs a restore
  to read (GLACIER, DEEP_ARCHIVE) the object is read and hashed first: a corrupt
  object is never archived (repair it with ``run --reverify``).
* **To a cold location** (any store): stream the stored bytes into an atomic
  writer at the location, hashing them; commit only if the sha256 equals the
  ledger's. The ledger row (``status: archived``, ``archive_url``) is committed
  before the hot copy is deleted, and every archive run first finishes deletes
  an earlier, killed run left undone. A crash at any point loses nothing and a
  rerun finishes the move.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from datamove.audit import AuditWriter
from datamove.checksum import b64_sha256, hash_stream, read_chunks
from datamove.commands.restore import ensure_readable, stored_location
from datamove.crypto.dataset import stored_listing
from datamove.errors import BadInput, TransferError, VerifyMismatch
from datamove.ledger.lock import s3_error_code
from datamove.ledger.tables import OBJECTS, Ledger, LedgerRow, now, ts
from datamove.manifest.model import DatasetSpec, LifecycleRule, Manifest
from datamove.pipeline.auditing import record_tier_change
from datamove.pipeline.jobs import jobs_of, ledger_of
from datamove.pipeline.march import Action, DatasetJob, PlanItem, batches, march
from datamove.pipeline.progress import Progress
from datamove.pipeline.report import Report
from datamove.pipeline.session import RunSession
from datamove.pipeline.transfer import Batch, ObjectResult, TransferSettings, run_items
from datamove.stores.core import Entry, Location, describe, list_entries, open_read, remove, stat
from datamove.stores.writers import atomic_writer
from datamove.tiers import (
    GCS_TIERS,
    S3_TIERS,
    Tier,
    due,
    minimum_duration_warning,
    needs_restore,
    small_object_warning,
)

log = logging.getLogger(__name__)

MAX_COPY_OBJECT = 5 * 1024**3  # CopyObject's limit; larger objects need a multipart copy


@dataclass(frozen=True)
class Target:
    """Where a lifecycle rule sends objects: a storage class in place, or a location."""

    tier: str | None
    location: Location | None
    region: str | None = None
    storage_class: str | None = None  # a cold location on S3: the class it is written in

    @classmethod
    def of(cls, rule: LifecycleRule) -> Target:
        if rule.location is None:
            return cls(rule.tier, None)
        spec = rule.location
        return cls(None, Location.of(spec.url, spec.options, spec.region), spec.region,
                   spec.storage_class)

    def describe(self) -> str:
        return self.tier if self.location is None else self.location.url  # type: ignore[return-value]


@dataclass(frozen=True)
class TierBatch(Batch):
    """A batch of due objects and the targets their ``rule`` indexes point into."""

    targets: tuple[Target, ...] = ()

    def target_of(self, item: PlanItem) -> Target:
        assert item.rule is not None, "archive items name their due rule"
        return self.targets[item.rule]


def archive(manifest: Manifest, *, at: datetime | None = None, datasets: list[str] | None = None,
            dry_run: bool = False, scheduler: str | None = None, policies: list[str] | None = None,
            progress: Progress | None = None, lock_wait: float = 3600.0) -> Report:
    """Move every due object of the manifest's datasets with lifecycle rules."""
    at = at or datetime.now(UTC)
    chosen = [d for d in manifest.datasets if (not datasets or d.name in datasets) and d.lifecycle]
    specs = [d for d in chosen if d.destination.format != "delta"]
    tables = [d for d in chosen if d.destination.format == "delta"]  # partitions move
    if datasets:
        unknown = set(datasets) - {d.name for d in manifest.datasets}
        if unknown:
            raise BadInput(f"no dataset named {sorted(unknown)[0]!r} in manifest {manifest.name!r}")
    ledger = ledger_of(manifest)
    if specs and ledger.table(OBJECTS) is None:  # before the lock: bad input leaves no trace
        raise BadInput(f"ledger {ledger.url} has no objects yet: run `datamove run` first")
    with RunSession(manifest, "archive", scheduler=scheduler, progress=progress,
                    lock="archive", lock_wait=lock_wait) as session:
        report = session.report
        jobs = {job.name: job for job in jobs_of(manifest, [d.name for d in specs])} \
            if specs else {}
        if dry_run:
            report.command, report.engine = "archive-plan", ""  # nothing runs
            for spec in specs:
                for item, _ in _due(ledger, jobs[spec.name], spec, at, report):
                    report.dataset(spec.name).add("due", item.size)
            from datamove.tabular.tiering import due_partitions

            for spec in tables:
                report.dataset(spec.name, spec.source.url, spec.destination.url).counts[
                    "partitions_due"] += due_partitions(spec, now=at)
            return report.finish()
        return _archive(session, specs, tables, jobs, at, policies)


def _archive(session: RunSession, specs: list[DatasetSpec], tables: list[DatasetSpec],
             jobs: dict[str, DatasetJob], at: datetime, policies: list[str] | None) -> Report:
    manifest, report, ledger = session.manifest, session.report, session.ledger
    session.check_policies(policies, [s.name for s in specs + tables] or None)
    spec_of, progress, settings = session.spec, session.progress, session.settings
    session.start([s.name for s in specs + tables], as_of=at.isoformat())
    writer, audit = session.writer, session.audit
    assert writer is not None and audit is not None
    targets = {s.name: tuple(Target.of(rule) for rule in s.lifecycle) for s in specs}
    for spec in specs:
        job = jobs[spec.name]
        report.dataset(spec.name, job.source.url, job.destination.url)
        _finish_deletes(ledger, job, targets[spec.name], report)  # a killed run's leftovers

    def work() -> Iterator[TierBatch]:
        for spec in specs:
            job = jobs[spec.name]
            items = (item for item, _ in _due(ledger, job, spec, at, report, progress))
            for group in batches(items, max_objects=spec_of.batch_objects,
                                 max_bytes=spec_of.batch_bytes, large=spec_of.part_size):
                yield TierBatch(job, tuple(group), settings, targets[spec.name])
        progress.listing_done()

    with session.working():
        for batch, item, result in session.settle(move_batch, work()):
            assert isinstance(batch, TierBatch)
            target = batch.target_of(item)
            if result.status == "moved":
                writer.add(_archived_row(batch.job, item, target, result, report.run_id))
            record_tier_change(audit, batch.job, item, target.describe(), target.region,
                               result)
    writer.flush()  # the rows land before any hot copy is deleted
    for spec in specs:
        _finish_deletes(ledger, jobs[spec.name], targets[spec.name], report)
    for spec in tables:
        _tier_table(manifest, spec, at, audit, report)
    return session.finish()


def _tier_table(manifest: Manifest, spec: DatasetSpec, at: datetime, audit: AuditWriter,
                report: Report) -> None:
    """A ``format: delta`` dataset: due partitions move to the cold table
    (tabular_tiering.py, crash-safe step by step)."""
    from datamove.tabular.tiering import tier_partitions

    ds = report.dataset(spec.name, spec.source.url, spec.destination.url)
    result = tier_partitions(manifest, spec, now=at, audit=audit)
    ds.counts["partitions_moved"] += result.partitions_moved
    ds.counts["rows_moved"] += result.rows_moved
    for failure in result.failures:
        report.record(ObjectResult(dataset=spec.name, key="", action="archive",
                                   status="failed", size=0, error=failure))


# --- planning (driver) -----------------------------------------------------------------

def _due(ledger: Ledger, job: DatasetJob, spec: DatasetSpec, at: datetime, report: Report,
         progress: Progress | None = None) -> Iterator[tuple[PlanItem, Target]]:
    """The dataset's objects a rule says must move now, in key order, with warnings."""
    ds = report.dataset(spec.name, job.source.url, job.destination.url)
    tiers = job.destination.backend.storage_classes or {}
    targets = [Target.of(rule) for rule in spec.lifecycle]
    for row in ledger.latest_done(job.name, job.destination.url_of("")):
        index = due(spec.lifecycle, ts(row.copied_at), ts(row.source_mtime), at)
        if index is None:
            ds.add("not_due", row.stored_size)
            continue
        target = targets[index]
        if _already_there(row, target, tiers):
            ds.add("in_tier", row.stored_size)
            continue
        if target.location is None and row.archive_url is not None:
            ds.add("in_tier", row.stored_size)  # moved out already; classes stay behind
            continue
        warning = _warning(row, target, tiers, at)
        if warning:
            report.warn(f"dataset {job.name}: {row.key}: {warning}")
        item = PlanItem(Action.archive, row.key, None, Entry(row.key, row.stored_size),
                        f"due: lifecycle[{index}] → {target.describe()}", recorded=row,
                        rule=index)
        if progress is not None:
            progress.planned(item, job.name)
        yield item, target


def _already_there(row: LedgerRow, target: Target, tiers: dict[str, Tier]) -> bool:
    if target.location is not None:
        return row.archive_url is not None and \
            row.archive_url.startswith(target.location.url_of(""))
    current = tiers.get(row.storage_class or "STANDARD")
    wanted = tiers[target.tier or ""]
    return current is not None and current.rank >= wanted.rank


def _warning(row: LedgerRow, target: Target, tiers: dict[str, Tier], at: datetime) -> str | None:
    """Early-deletion and minimum-size charges: warned about, never silently incurred."""
    previous = tiers.get(row.storage_class or "")
    since = ts(row.recorded_at if row.status == "archived" else row.copied_at)
    held = at - since if since else timedelta(0)
    early = minimum_duration_warning(previous, held)
    if target.tier is not None:
        small = small_object_warning(tiers[target.tier], row.stored_size)
        return "; ".join(w for w in (small, early) if w) or None
    return early


# --- moving (workers) ------------------------------------------------------------------

def move_batch(batch: Batch) -> list[ObjectResult]:
    """The Dask task: move the items of a TierBatch, one result per item, in order,
    for those it finished within about a second (transfer.run_items)."""
    assert isinstance(batch, TierBatch)
    return run_items(batch, lambda item: move_object(batch.job, item, batch.target_of(item),
                                                     batch.settings, batch.targets))


def move_object(job: DatasetJob, item: PlanItem, target: Target, settings: TransferSettings,
                targets: tuple[Target, ...] = ()) -> ObjectResult:
    """Move one recorded object to ``target`` and prove its stored bytes did not change."""
    row = item.recorded
    assert row is not None and row.stored_sha256 is not None
    stored_key = job.stored_key(item.key)
    here = stored_location(job, row, _cold(targets))
    base = ObjectResult(dataset=job.name, key=item.key, action="archive", status="moved",
                        size=row.stored_size, sha256=row.sha256,
                        stored_size=row.stored_size, stored_sha256=row.stored_sha256,
                        destination_url=here.url_of(stored_key))
    try:
        if target.location is not None:
            url = _move_to_location(here, stored_key, row, target.location, settings,
                                    target.storage_class)
            return replace(base, destination_url=url, bytes_written=row.stored_size)
        if not here.backend.class_change_in_place:
            _rewrite_in_class(here, stored_key, row, target.tier or "", settings)
            return replace(base, bytes_written=row.stored_size)
        checksum = _change_class(here, stored_key, row, target.tier or "")
        return replace(base, native_checksum=checksum)
    except (TransferError, OSError) as exc:
        return replace(base, status="failed", error=describe(exc))


def _change_class(location: Location, key: str, row: LedgerRow, tier: str) -> str:
    """S3 CopyObject onto itself into ``tier``; returns S3's sha256 of the stored bytes."""
    if not location.backend.class_change_in_place:
        raise TransferError(f"{location.url_of(key)}: only S3 objects change class in place")
    bucket, prefix = location.bucket_and_prefix()
    s3_key = prefix + key
    head = location.fs.call_s3("head_object", Bucket=bucket, Key=s3_key, ChecksumMode="ENABLED")
    url = location.url_of(key)
    if head["ContentLength"] != row.stored_size:
        raise VerifyMismatch(f"{url}: {head['ContentLength']} bytes, the ledger recorded "
                             f"{row.stored_size}; repair it with `datamove run --reverify`")
    expected = b64_sha256(row.stored_sha256 or "")
    current = head.get("StorageClass", "STANDARD")
    if current == tier and head.get("ChecksumSHA256") == expected:
        return f"sha256:{expected}"  # a killed run moved it before recording it
    if current != (row.storage_class or "STANDARD") and \
            S3_TIERS.get(current, S3_TIERS["STANDARD"]).rank >= S3_TIERS[tier].rank:
        raise TransferError(f"{url}: already in {current}, moved by something other than "
                            "datamove (an S3 lifecycle rule on the bucket?); datamove's rules "
                            "and the bucket's should not both manage this prefix")
    if needs_restore(current):  # GLACIER → DEEP_ARCHIVE: S3 copies only a restored object
        ensure_readable(location, key, current, timeout=0)
    if row.stored_size > MAX_COPY_OBJECT:
        raise TransferError(f"{url}: over 5 GiB; changing the class of objects this large "
                            "needs a multipart copy, which datamove does not do yet")
    if needs_restore(tier):  # never archive a corrupt object where it cannot be read back
        with contextlib.closing(open_read(location, key)) as reader:
            read = hash_stream(reader)
        if read.sha256 != row.stored_sha256:
            raise VerifyMismatch(f"{url}: stored bytes differ from the ledger's sha256 "
                                 f"({read.sha256[:16]}… ≠ {row.stored_sha256[:16]}…); not "
                                 "archived. Repair it with `datamove run --reverify`")
    try:
        copied = location.fs.call_s3(
            "copy_object", Bucket=bucket, Key=s3_key, StorageClass=tier,
            CopySource={"Bucket": bucket, "Key": s3_key}, CopySourceIfMatch=head["ETag"],
            MetadataDirective="COPY", ChecksumAlgorithm="SHA256", **_kept_sse(head))
    except OSError as exc:
        if s3_error_code(exc) == "PreconditionFailed":
            raise TransferError(f"{url}: changed while it was being archived; run "
                                "`datamove run --reverify`, then archive again") from None
        raise
    server = copied.get("CopyObjectResult", {}).get("ChecksumSHA256")
    if server != expected:
        raise VerifyMismatch(f"{url}: S3's sha256 of the archived copy ({server}) is not the "
                             f"ledger's ({expected}); the object is now in {tier} but differs. "
                             "Restore it, then `datamove run --reverify`")
    return f"sha256:{server}"


def _kept_sse(head: dict) -> dict[str, str]:
    """An SSE-KMS object stays SSE-KMS under the same key when its class changes: a
    CopyObject without encryption settings takes the bucket's default instead
    (metadata, Content-Type and tags are copied as they are)."""
    if head.get("ServerSideEncryption") != "aws:kms":
        return {}
    key = head.get("SSEKMSKeyId")
    return {"ServerSideEncryption": "aws:kms", **({"SSEKMSKeyId": key} if key else {})}


def _rewrite_in_class(location: Location, key: str, row: LedgerRow, tier: str,
                      settings: TransferSettings) -> None:
    """GCS: write the object again in ``tier``, committing only if its bytes hash right.

    GCS changes a class with objects.rewrite; gcp-storage-emulator ignores the class
    in a rewrite, so that path could not be tested here, and datamove streams the
    object through instead (read, hash, atomic re-upload in the new class). Every
    GCS class reads without a restore, so this needs nothing more.
    """
    info = stat(location, key)
    current = (info.storage_class if info else None) or "STANDARD"
    if current not in (tier, row.storage_class or "STANDARD") and \
            GCS_TIERS.get(current, GCS_TIERS["STANDARD"]).rank >= GCS_TIERS[tier].rank:
        raise TransferError(f"{location.url_of(key)}: already in {current}, moved by something "
                            "other than datamove (a bucket lifecycle rule?); datamove's rules "
                            "and the bucket's should not both manage this prefix")
    if info is None or info.storage_class != tier:
        _move_to_location(location, key, row, location, settings, tier)
        return
    with contextlib.closing(open_read(location, key)) as reader:  # a killed run wrote it
        read = hash_stream(reader)
    if (read.sha256, read.size) != (row.stored_sha256, row.stored_size):
        raise VerifyMismatch(f"{location.url_of(key)}: in {tier} already, but its bytes differ "
                             "from the ledger's; repair it with `datamove run --reverify`")


def _move_to_location(here: Location, key: str, row: LedgerRow, cold: Location,
                      settings: TransferSettings, storage_class: str | None = None) -> str:
    """Copy the stored bytes to ``cold`` atomically, committing only if they hash right."""
    if here.backend.archive_restore:
        ensure_readable(here, key, row.storage_class, timeout=0)
    sha = hashlib.sha256()
    size = 0
    with atomic_writer(cold, key, part_size=settings.part_size, size_hint=row.stored_size,
                       run_token=settings.run_token, resumable=False, fsync=settings.fsync,
                       storage_class=storage_class) as writer, \
            contextlib.closing(open_read(here, key)) as reader:
        for chunk in read_chunks(reader):
            sha.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        if (sha.hexdigest(), size) != (row.stored_sha256, row.stored_size):
            raise VerifyMismatch(f"{here.url_of(key)}: stored bytes differ from the ledger "
                                 f"({sha.hexdigest()[:16]}… ≠ {(row.stored_sha256 or '')[:16]}…);"
                                 " not archived. Repair it with `datamove run --reverify`")
        writer.commit(sha.hexdigest(), None)
    return cold.url_of(key)


def _cold(targets: tuple[Target, ...]) -> tuple[Location, ...]:
    return tuple(t.location for t in targets if t.location is not None)


# --- recording and finishing (driver) --------------------------------------------------

def _archived_row(job: DatasetJob, item: PlanItem, target: Target, result: ObjectResult,
                  run_id: str) -> dict[str, object]:
    """The ``objects`` row for a verified move: the old row's facts, the new place."""
    row = item.recorded
    assert row is not None
    moved_out = target.location is not None
    return {
        "dataset": job.name, "key": row.key, "run_id": run_id, "status": "archived",
        "source_url": job.source.url_of(row.key), "size": row.size,
        "source_mtime": ts(row.source_mtime), "source_etag": row.source_etag,
        "sha256": row.sha256, "destination_url": row.destination_url,
        "stored_size": row.stored_size, "stored_sha256": row.stored_sha256,
        "native_checksum": result.native_checksum, "encrypted": row.encrypted,
        "key_fingerprints": list(row.key_fingerprints), "payload_sha256": row.payload_sha256,
        "storage_class": target.storage_class if moved_out else target.tier,
        "region": target.region if moved_out else job.destination.region,
        "verify_mode": "checksum", "verify_result": "ok", "verified_at": now(),
        "attempts": result.attempts, "error": None, "recorded_at": now(),
        "archive_url": result.destination_url if moved_out else None,
    }


def _finish_deletes(ledger: Ledger, job: DatasetJob, targets: tuple[Target, ...],
                    report: Report) -> None:
    """Delete hot copies of objects recorded as moved to a cold location.

    The row is committed before the delete, so a hot copy that is still there
    after its row is a delete a killed run did not get to. The cold copy is
    checked (present, the recorded size) before the hot one goes.
    """
    rows = (r for r in ledger.latest_done(job.name, job.destination.url_of(""))
            if r.archive_url is not None)
    hot: Iterator[Entry] = list_entries(job.destination, job.key_filter) \
        if job.encryption is None else \
        stored_listing(list_entries(job.destination), job.encryption.suffix, job.key_filter)
    removed = 0
    for entry, row in march(hot, rows):
        if entry is None or row is None:
            continue
        cold = stored_location(job, row, _cold(targets))
        stored_key = job.stored_key(row.key)
        info = stat(cold, stored_key)
        if info is None or info.size != row.stored_size:
            report.record(ObjectResult(
                dataset=job.name, key=row.key, action="archive", status="failed",
                size=row.stored_size, destination_url=row.archive_url or "",
                error=f"the cold copy at {row.archive_url} is "
                      f"{'missing' if info is None else f'{info.size} bytes'}; the hot copy "
                      "was kept"))
            continue
        remove(job.destination, stored_key)
        removed += 1
    if removed:
        report.dataset(job.name).counts["hot_copies_removed"] += removed
