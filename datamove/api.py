"""The Python API behind every command: plan, run, verify.

Each function takes a loaded :class:`~datamove.manifest.model.Manifest` and returns a
:class:`~datamove.pipeline.report.Report`; the CLI only parses arguments and renders.
Flow of a run: preflight every location (fail before anything moves) → record
the run's start in the ledger → stream each dataset's plan (source × destination
× ledger) → group copies into batches → run them on the engine with a bounded
window → fold results into the report and the ledger as they arrive → record
the run's end.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime

from datamove.audit import AuditWriter
from datamove.errors import LocationUnreachable
from datamove.ledger.lock import ledger_lock
from datamove.ledger.tables import DONE_STATUSES, OBJECTS, ROTATING, Ledger, LedgerWriter, now, ts
from datamove.manifest.model import Manifest, load_manifest
from datamove.pipeline import cancel, interrupt
from datamove.pipeline.auditing import open_audit, record_policy, record_result
from datamove.pipeline.breaker import DEFAULT_THRESHOLD, CircuitBreaker
from datamove.pipeline.cleanup import OrphanSweeper, abort_orphan_uploads, store_clock
from datamove.pipeline.engine import Engine, LetGo
from datamove.pipeline.march import Action, DatasetJob, PlanItem, batches, plan_dataset
from datamove.pipeline.progress import Progress
from datamove.pipeline.report import DatasetReport, Report
from datamove.pipeline.transfer import Batch, ObjectResult, TransferSettings, run_batch
from datamove.policy.rules import PolicyReport
from datamove.stores.core import check_readable, describe, list_entries
from datamove.tabular.dataset import execute_table, preflight_tables, table_jobs

__all__ = ["load_manifest", "plan", "run", "verify"]


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def jobs_of(manifest: Manifest, only: list[str] | None = None,
            identity: str | None = None) -> list[DatasetJob]:
    """The manifest's datasets as worker jobs, optionally just the named ones.

    ``identity``: an identity file that replaces the manifest's for encrypted
    datasets (``--identity``); its passphrase variable and KMS context still come
    from the manifest.
    """
    specs = [manifest.dataset(name) for name in only] if only else manifest.datasets
    jobs = [DatasetJob.from_spec(spec, manifest.encryption_of(spec)) for spec in specs]
    if identity is not None:
        jobs = [with_identity_file(job, identity) for job in jobs]
    return jobs


def with_identity_file(job: DatasetJob, path: str) -> DatasetJob:
    from dataclasses import replace

    from datamove.crypto.identities import IdentityRef

    if job.encryption is None:
        return job
    ref = job.encryption.identity or IdentityRef(file=path)
    ref = replace(ref, file=os.path.abspath(path) if "://" not in path else path)
    return replace(job, encryption=replace(job.encryption, identity=ref))


def check_policies(manifest: Manifest, policies: list[str] | None,
                   datasets: list[str] | None, audit: AuditWriter) -> PolicyReport:
    """The policy preflight of a run: every decision goes to the audit log, then
    PolicyRefused (exit 3) if any rule denies, before anything moves."""
    from datamove.policy.rules import check

    decided = check(manifest, policies, datasets=datasets)
    record_policy(audit, decided)
    decided.raise_if_denied()
    return decided


def preflight_identities(jobs: list[DatasetJob]) -> None:
    """Open every identity a command may use, on the driver, before work starts:
    a wrong passphrase or a KMS refusal is one clear error (exit 2), not one
    failure per object, and nothing has been written. A run may use one even
    without ``--reverify``: ``verify: full`` decrypts every copy, and an object
    a killed run copied is verified by decryption before it is recorded.
    (Workers open their own copy; nothing secret is sent.)"""
    for job in jobs:
        if job.encryption is not None and job.encryption.identity is not None:
            job.encryption.identities()


def preflight(jobs: list[DatasetJob]) -> None:
    """Every source readable and every destination listable, before anything moves."""
    for job in jobs:
        check_readable(job.source)
        try:
            next(iter(list_entries(job.destination)), None)
        except LocationUnreachable:
            raise
        except Exception as exc:
            raise LocationUnreachable(
                f"dataset {job.name}: destination {job.destination.url} cannot be reached: "
                f"{describe(exc)}") from exc


def ledger_of(manifest: Manifest) -> Ledger:
    return Ledger(manifest.ledger, manifest.ledger_options)


def plan(manifest: Manifest, *, reverify: bool = False,
         datasets: list[str] | None = None) -> Report:
    """Count what a run would copy and skip, per dataset, without copying."""
    jobs = jobs_of(manifest, datasets)
    preflight(jobs)
    report = Report("plan", manifest.name, new_run_id(), engine="none")
    ledger = ledger_of(manifest)
    exists = ledger.table(OBJECTS) is not None
    for job in jobs:
        ds = report.dataset(job.name, job.source.url, job.destination.url)
        recorded = ledger.latest_done(job.name, job.destination.url_of("")) if exists else None
        for item in plan_dataset(job, reverify=reverify, recorded=recorded,
                                 on_link=skipped_link_counter(report, job)):
            ds.add(item.action.value, item.size)
    return report.finish()


def run(manifest: Manifest, *, scheduler: str | None = None, reverify: bool = False,
        datasets: list[str] | None = None, progress: Progress | None = None,
        identity: str | None = None, policies: list[str] | None = None) -> Report:
    """Copy every dataset; verify each object per its mode; never raise for one object.

    Policies are evaluated first (docs/POLICIES.md): a denial raises PolicyRefused
    (exit 3) before anything moves. ``policies``: policy files, directories or
    globs instead of the default search.
    """
    with ledger_lock(manifest.ledger, manifest.ledger_options, command="run"):
        return _execute("run", manifest, scheduler=scheduler, reverify=reverify,
                        datasets=datasets, progress=progress, identity=identity,
                        policies=policies)


def verify(manifest: Manifest, *, scheduler: str | None = None,
           datasets: list[str] | None = None, progress: Progress | None = None,
           identity: str | None = None) -> Report:
    """Compare sources with destinations without copying: missing, extra, differing.

    Encrypted objects are decrypted and compared when an identity is configured
    (or given), otherwise their stored bytes are compared with the ledger.
    """
    return _execute("verify", manifest, scheduler=scheduler, reverify=False,
                    datasets=datasets, progress=progress, identity=identity)


def _execute(command: str, manifest: Manifest, *, scheduler: str | None, reverify: bool,
             datasets: list[str] | None, progress: Progress | None,
             identity: str | None = None, policies: list[str] | None = None) -> Report:
    # format: delta datasets are loaded and verified by tabular.py, not planned as objects.
    tables = table_jobs(manifest, datasets)
    jobs = [job for job in jobs_of(manifest, datasets, identity)
            if job.name not in {table.name for table in tables}]
    run_id = new_run_id()
    audit = decided = None
    if command == "run":
        audit = open_audit(manifest, run_id)
        decided = check_policies(manifest, policies, datasets, audit)
    preflight(jobs)
    preflight_tables(tables)
    preflight_identities(jobs)
    progress = progress or Progress()
    spec = manifest.engine
    engine = Engine.of(spec, scheduler)
    report = Report(command, manifest.name, run_id, engine=engine.description)
    if decided is not None:
        report.policy_warnings = [f"{d.rule_id}: dataset {d.dataset}: {d.field}: {d.reason}"
                                  for d in decided.warned]
    token = run_token(report)
    settings = TransferSettings(part_size=spec.part_size, retries=spec.retries,
                                fsync=spec.fsync, run_token=token,
                                resume_threshold=4 * spec.part_size)
    for job in jobs:
        report.dataset(job.name, job.source.url, job.destination.url)
    for table in tables:
        report.dataset(table.name, table.source.url, table.table.location.url)
    check_only = command == "verify"
    ledger = ledger_of(manifest)
    writer: LedgerWriter | None = None
    if command == "run":
        ledger.ensure()
        writer = LedgerWriter(ledger, report.run_id)
        writer.run_event("start", command=command, manifest_name=manifest.name,
                         manifest_sha256=manifest.sha256, engine=engine.description,
                         started_at=ts(report.started))
    if audit is not None:
        audit.append("run.start", command=command, manifest_sha256=manifest.sha256,
                     engine=engine.description, datasets=[job.name for job in jobs])

    def work(stage: list[DatasetJob], last: bool) -> Iterator[Batch]:
        for job in stage:
            recorded = sweeper = None
            if writer is not None:  # only a run writes: it records and it cleans up
                recorded = ledger.latest_done(job.name, job.destination.url_of(""))
                sweeper = OrphanSweeper(job.destination, token)
                upload_cutoffs[job.name] = store_clock(job.destination)
            elif ledger.table(OBJECTS) is not None:
                # verify compares ciphertext with the ledger, and must know what lifecycle
                # rules archived: those are counted, never read (docs/LIFECYCLE.md).
                recorded = ledger.latest_done(job.name, job.destination.url_of(""))
            items = _worker_items(plan_dataset(job, reverify=reverify, check_only=check_only,
                                               recorded=recorded, on_partial=sweeper,
                                               on_link=skipped_link_counter(report, job)),
                                  job, report, progress)
            for group in batches(items, max_objects=spec.batch_objects,
                                 max_bytes=spec.batch_bytes, large=spec.part_size):
                if job.name in report.stopped:
                    report.not_attempted(job.name, len(group))
                    break  # its circuit breaker tripped: list no further
                yield Batch(job, tuple(group), settings)
            if sweeper is not None and job.name not in report.stopped:
                count_housekeeping(report, job, "orphan_files_removed", sweeper.removed)
        if last:
            progress.listing_done()

    for sequence, table in enumerate(tables, start=1):
        execute_table(table, command, report, run_id=report.run_id,
                      ledger=ledger if writer is not None else None, audit=audit,
                      sequence=sequence)
    upload_cutoffs: dict[str, datetime | None] = {}
    staged = stages(jobs)

    def flush() -> None:  # rows land while the run goes on, not only at its end
        if writer is not None:
            writer.flush()
        if audit is not None:
            audit.flush()

    with engine if jobs or not tables else contextlib.nullcontext(), progress:
        for number, stage in enumerate(staged, start=1):  # a stage ends before the next plans
            if report.interrupted:
                break
            for batch, item, result in settle(engine, run_batch,
                                              work(stage, number == len(staged)), report,
                                              progress, threshold=spec.circuit_breaker,
                                              flush=flush):
                if writer is not None:
                    writer.add(ledger_row(batch.job, item, result, report.run_id))
                if audit is not None:
                    record_result(audit, batch.job, result)
    for job in jobs:  # after the copies: resumed uploads are complete by now
        if job.name in upload_cutoffs and not report.interrupted and \
                job.name not in report.stopped:  # be quick; its endpoint may be gone
            tidy_up(report, job, upload_cutoffs[job.name], token)
    return close_run(manifest, report, engine.description, ledger, writer, audit)


def tidy_up(report: Report, job: DatasetJob, cutoff: datetime | None, token: str) -> None:
    """After a dataset's copies: abort the uploads killed runs left, and remove the
    temporary files this run's dead workers left. A store that fails now costs a
    warning, not the run: its objects are recorded and the next run tidies up."""
    try:
        count_housekeeping(report, job, "orphan_uploads_aborted",
                           abort_orphan_uploads(job.destination, cutoff))
        wrote = report.dataset(job.name).counts
        if job.destination.backend.atomic_temp_names and (
                wrote["copied"] or wrote["repaired"] or wrote["failed"]):
            # A worker that died mid-copy left temporary files named for this run.
            sweeper = OrphanSweeper(job.destination, token, run_is_over=True)
            for _ in list_entries(job.destination, on_partial=sweeper):
                pass
            count_housekeeping(report, job, "orphan_files_removed", sweeper.removed)
    except Exception as exc:
        report.warn(f"dataset {job.name}: clean-up of {job.destination.url} skipped "
                    f"({describe(exc)}); the next run does it")


def close_run(manifest: Manifest, report: Report, engine: str, ledger: Ledger,
              writer: LedgerWriter | None, audit: AuditWriter | None) -> Report:
    """End a command that wrote the ledger: its ``end`` row with the counts, a
    compaction, the audit log's ``run.end`` and a (signed) checkpoint. Shared by
    run, keys rotate and archive."""
    report.finish()
    if writer is not None:
        writer.flush()
        writer.run_event("end", command=report.command, manifest_name=manifest.name,
                         manifest_sha256=manifest.sha256, engine=engine,
                         started_at=ts(report.started), ended_at=ts(report.ended),
                         counts_json=json.dumps(report.to_dict()["datasets"]),
                         exit_code=report.exit_code)
        if not report.interrupted:  # a signal asked for a quick end
            ledger.compact()
    if audit is not None:
        audit.append("run.end", exit_code=report.exit_code,
                     counts={name: dict(ds.counts) for name, ds in report.datasets.items()})
        audit.checkpoint()  # flushes; signs when the manifest has a signing key
    return report


def stages(jobs: list[DatasetJob]) -> list[list[DatasetJob]]:
    """Datasets in the order they can run: one whose source overlaps an earlier
    dataset's destination (a chain such as S3 → GCS → Azure) waits until that
    dataset's copies are done, so it never plans from half-written output."""
    from datamove.manifest.checks import comparable_url

    def overlaps(a: str, b: str) -> bool:
        a, b = comparable_url(a), comparable_url(b)
        return a.startswith(b) or b.startswith(a)

    level: list[int] = []
    for i, job in enumerate(jobs):
        after = [level[j] + 1 for j in range(i)
                 if overlaps(job.source.url, jobs[j].destination.url)]
        level.append(max(after, default=0))
    return [[job for job, at in zip(jobs, level, strict=True) if at == n]
            for n in range(max(level, default=-1) + 1)]


def skipped_link_counter(report: Report, job: DatasetJob) -> Callable[[str], None]:
    """Counts the source's symbolic links left out by ``links: skip`` (as rclone
    does by default), so the report says how many were not copied."""
    def skipped(key: str) -> None:
        report.dataset(job.name).counts["links_skipped"] += 1

    return skipped


def count_housekeeping(report: Report, job: DatasetJob, what: str, n: int) -> None:
    """Housekeeping counts shown with the dataset (zero counts stay out of the way)."""
    if n:
        report.dataset(job.name).counts[what] += n


def ledger_row(job: DatasetJob, item: PlanItem, result: ObjectResult,
               run_id: str) -> dict[str, object]:
    """The ``objects`` row for one result (docs/FORMAT.md)."""
    done = result.status in DONE_STATUSES
    error = result.error or ""
    source, row = item.source, item.recorded
    encrypted = job.encryption is not None
    stored_size, stored_sha = result.stored_size, result.stored_sha256
    payload_sha, fingerprints = result.payload_sha256, result.key_fingerprints
    if encrypted and done and stored_sha is None and row is not None:
        # Verified by decryption: the stored object is the one the ledger recorded.
        stored_size, stored_sha = row.stored_size, row.stored_sha256
        payload_sha, fingerprints = row.payload_sha256, row.key_fingerprints
    elif not encrypted:
        stored_size, stored_sha = result.size, result.sha256
    return {
        "dataset": job.name, "key": item.key, "run_id": run_id, "status": result.status,
        "source_url": job.source.url_of(item.key),
        "size": source.size if source else (row.size if row else result.size),
        "source_mtime": ts(source.mtime if source else (row.source_mtime if row else None)),
        "source_etag": source.etag if source else (row.source_etag if row else None),
        "source_version": None,
        "sha256": result.sha256,
        "destination_url": result.destination_url,
        "stored_size": stored_size if done else None,
        "stored_sha256": stored_sha if done else None,
        "native_checksum": result.native_checksum,
        "encrypted": encrypted, "key_fingerprints": list(fingerprints),
        "payload_sha256": payload_sha if done else None,
        "previous_key_fingerprints": list(result.previous_key_fingerprints),
        "storage_class": (job.storage_class or "STANDARD")
        if job.destination.backend.storage_classes is not None else None,
        "region": job.destination.region,
        "verify_mode": job.verify.value,
        "verify_result": "ok" if done else (None if result.status == ROTATING else
                                            "mismatch" if "VerifyMismatch" in error
                                            else "error"),
        "verified_at": now() if done else None,
        "attempts": result.attempts, "error": result.error, "recorded_at": now(),
    }


def _worker_items(items: Iterator[PlanItem], job: DatasetJob, report: Report,
                  progress: Progress) -> Iterator[PlanItem]:
    """Pass on what needs a worker; account for what the driver settles itself."""
    ds = report.dataset(job.name)
    try:
        yield from _settle_driver_side(items, job, ds, report, progress)
    except Exception as exc:  # a listing that broke half-way fails its dataset only
        report.record(ObjectResult(
            dataset=job.name, key="", action="list", status="failed", size=0,
            error=f"listing stopped; the rest of this dataset was not planned: {describe(exc)}"))


def _settle_driver_side(items: Iterator[PlanItem], job: DatasetJob, ds: DatasetReport,
                        report: Report, progress: Progress) -> Iterator[PlanItem]:
    for item in items:
        if item.action == Action.skip:
            ds.add("skipped", item.size)
        elif item.action == Action.extra and report.command == "verify":
            report.record(ObjectResult(dataset=job.name, key=item.key, action="extra",
                                       status="extra", size=item.size,
                                       error="only at the destination"))
        elif item.action == Action.extra:
            ds.add("extra", item.size)  # reported, never deleted
        elif item.action == Action.archived:
            ds.add("archived", item.size)  # in a cold tier; drills read it back
        else:
            progress.planned(item)
            yield item


def settle(engine: Engine, task: Callable[[Batch], list[ObjectResult]], work: Iterator[Batch],
           report: Report, progress: Progress, *, threshold: int = DEFAULT_THRESHOLD,
           flush: Callable[[], None] | None = None
           ) -> Iterator[tuple[Batch, PlanItem, ObjectResult]]:
    """Run ``task`` over ``work`` on the engine and account each object's result (report
    and progress) as it arrives; yields them for the caller to record.

    Tasks return what they finished within about a second (transfer.run_items);
    the rest of their batch is submitted again at once, so results, and the
    ledger rows the caller writes, stream per object. ``flush`` (the caller's
    ledger and audit writers) is called about once a second while results are
    pending or none arrive, so rows land while the run goes on.

    Work stops early in two ways. A dataset whose circuit breaker trips
    (``threshold`` connection failures in a row, breaker.py) gets nothing more
    submitted, its workers are told to stop (cancel.py), and the report names
    the endpoint and counts what was not attempted. A first SIGINT or SIGTERM
    (interrupt.py) stops everything the same way: in-flight objects stop at
    their next chunk and what they finished is yielded and recorded; tasks
    still running after a short grace are let go. The report is then marked
    interrupted (exit 130 or 143).
    """
    interrupt.defer()
    breaker = CircuitBreaker(threshold)
    flushed = time.monotonic()
    with cancel.Switch(run_token(report), engine.client) as switch:

        def halted() -> bool:
            signal_name = interrupt.requested()
            if signal_name is not None and report.interrupted is None:
                report.interrupted = signal_name
                switch.stop()
            return signal_name is not None

        def wanted() -> Iterator[Batch]:
            for batch in work:
                if batch.job.name in breaker.tripped:
                    report.not_attempted(batch.job.name, len(batch.items))
                    continue
                yield batch

        def rest(batch: Batch, outcome: object) -> Batch | None:
            left = batch.rest(len(outcome)) if isinstance(outcome, list) else None
            if left is not None and (halted() or batch.job.name in breaker.tripped):
                report.not_attempted(batch.job.name, len(left.items))
                return None
            return left

        def idle() -> None:
            nonlocal flushed
            if flush is not None and time.monotonic() - flushed >= FLUSH_SECONDS:
                flush()
                flushed = time.monotonic()

        for batch, outcome in engine.map_unordered(task, wanted(), rest=rest, halted=halted,
                                                   idle=idle):
            if isinstance(outcome, LetGo | cancel.Cancelled):
                report.not_attempted(batch.job.name, len(batch.items))
                continue
            results = outcome if isinstance(outcome, list) else task_failed(batch, outcome)
            for item, result in zip(batch.items, results, strict=False):  # a prefix: rest()
                report.record(result)
                progress.done(result)
                yield batch, item, result
                reason = breaker.observe(batch.job, result)
                if reason is not None:
                    report.stop(batch.job.name, reason)
                    switch.stop(batch.job.name)
            idle()
        halted()  # a signal during the last results still marks the report


FLUSH_SECONDS = 1.0
"""How often the driver commits the ledger and audit rows it holds."""


def run_token(report: Report) -> str:
    """The run's short token: names its temporary files and its cancel flags."""
    return report.run_id.rsplit("-", 1)[-1]


def task_failed(batch: Batch, exc: BaseException) -> list[ObjectResult]:
    """A whole task was lost (e.g. its workers kept dying): fail its objects, go on."""
    return [ObjectResult(dataset=batch.job.name, key=item.key, action=item.action.value,
                         status="failed", size=item.size,
                         destination_url=batch.job.destination.url_of(
                             batch.job.stored_key(item.key)),
                         error=f"task failed: {describe(exc)}") for item in batch.items]
