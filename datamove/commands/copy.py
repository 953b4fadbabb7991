"""``datamove plan``, ``run`` and ``verify``: the copy command and its read-only twins.

Flow of a run: take the ledger lock and open a run session (pipeline/session.py)
→ judge the policies → preflight every location and identity (fail before
anything moves) → record the run's start → stream each dataset's plan (source
× destination × ledger) → group copies into batches → run them on the engine
with a bounded window → fold results into the report and the ledger as they
arrive → tidy up what killed runs left → record the run's end. ``verify`` runs
the same plan with ``check_only`` and records nothing; ``plan`` only counts.
``format: delta`` datasets are loaded and verified by tabular/dataset.py.
``sync --delete`` (``mirror``) deletes, after the copies, what only the
destination has (pipeline/mirror.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from datamove.ledger.tables import OBJECTS
from datamove.manifest.model import Manifest
from datamove.pipeline.auditing import record_result
from datamove.pipeline.cleanup import OrphanSweeper, abort_orphan_uploads, store_clock
from datamove.pipeline.jobs import (
    count_housekeeping,
    filter_counters,
    jobs_of,
    ledger_of,
    ledger_row,
    new_run_id,
    preflight,
    preflight_identities,
    skipped_link_counter,
    stages,
)
from datamove.pipeline.march import Action, DatasetJob, PlanItem, batches, plan_dataset
from datamove.pipeline.mirror import Extras, Mirror, delete_batch, deletion_row
from datamove.pipeline.progress import Progress
from datamove.pipeline.report import DatasetReport, Report
from datamove.pipeline.session import RunSession
from datamove.pipeline.transfer import Batch, ObjectResult, run_batch
from datamove.stores.core import describe, list_entries

if TYPE_CHECKING:  # imported where used: a run without tables or costs loads neither
    from datamove.cost.report import PlanReport
    from datamove.tabular.dataset import TableJob


def plan(manifest: Manifest, *, reverify: bool = False,
         datasets: list[str] | None = None,
         on_item: Callable[[str, PlanItem], None] | None = None,
         prices: list[str] | None = None, progress: Progress | None = None) -> PlanReport:
    """Count what a run would copy and skip, per dataset, without copying, and
    estimate what it costs (docs/COST.md); ``on_item`` sees each planned object
    with its dataset's name (``--dry-run``); ``prices``: price files merged onto
    the shipped table after the manifest's ``prices:``; ``progress`` (the live
    display while long listings merge) counts each object planned."""
    from datamove.cost.dataset import DatasetCosting
    from datamove.cost.report import PlanReport
    from datamove.cost.table import load_prices

    table = load_prices([*([manifest.prices] if manifest.prices else []), *(prices or [])])
    jobs = jobs_of(manifest, datasets)
    preflight(jobs)
    report = PlanReport("plan", manifest.name, new_run_id(), engine="none")
    ledger = ledger_of(manifest)
    exists = ledger.table(OBJECTS) is not None
    progress = progress or Progress()
    with progress:
        for job in jobs:
            ds = report.dataset(job.name, job.source.url, job.destination.url)
            costing = DatasetCosting(job, manifest.dataset(job.name), manifest.engine, table)
            recorded = ledger.latest_done(job.name, job.destination.url_of("")) \
                if exists else None
            on_filtered, on_absent = filter_counters(report, job)
            for item in plan_dataset(job, reverify=reverify, recorded=recorded,
                                     on_link=skipped_link_counter(report, job),
                                     on_filtered=on_filtered, on_absent=on_absent):
                ds.add(item.action.value, item.size)
                costing.add(item)
                progress.planned(item)
                if on_item is not None:
                    on_item(job.name, item)
            report.costs[job.name] = costing.estimate()
        progress.listing_done()
    return report.finish()


def execute(command: str, manifest: Manifest, *, scheduler: str | None, reverify: bool,
            datasets: list[str] | None, progress: Progress | None,
            identity: str | None = None, policies: list[str] | None = None,
            mirror: Mirror | None = None) -> Report:
    """``run`` (copies, records, holds the lock) or ``verify`` (compares, records nothing).
    ``mirror``: a run then deletes what only the destination has (``sync --delete``)."""
    writes = command == "run"
    with RunSession(manifest, command, scheduler=scheduler, progress=progress,
                    lock="run" if writes else None, records=writes,
                    audited=writes) as session:
        return _execute(session, reverify=reverify, datasets=datasets, identity=identity,
                        policies=policies, mirror=mirror if writes else None)


def _table_jobs(manifest: Manifest, datasets: list[str] | None) -> list[TableJob]:
    """The ``format: delta`` datasets to run; tabular/ (and pyarrow.dataset) is only
    imported for a manifest that has one."""
    if not any(spec.is_table for spec in manifest.datasets):
        return []
    from datamove.tabular.dataset import table_jobs

    return table_jobs(manifest, datasets)


def _execute(session: RunSession, *, reverify: bool, datasets: list[str] | None,
             identity: str | None, policies: list[str] | None,
             mirror: Mirror | None = None) -> Report:
    manifest, report, ledger = session.manifest, session.report, session.ledger
    # format: delta datasets are loaded and verified by tabular/dataset.py, not planned as objects.
    tables = _table_jobs(manifest, datasets)
    jobs = [job for job in jobs_of(manifest, datasets, identity)
            if job.name not in {table.name for table in tables}]
    writes = report.command == "run"
    if writes:
        session.check_policies(policies, datasets)
    preflight(jobs)
    if tables:
        from datamove.tabular.dataset import execute_table, preflight_tables

        preflight_tables(tables)
    preflight_identities(jobs)
    spec, progress, settings = session.spec, session.progress, session.settings
    for job in jobs:
        report.dataset(job.name, job.source.url, job.destination.url)
    for table in tables:
        report.dataset(table.name, table.source.url, table.table.location.url)
    check_only = not writes
    session.start([job.name for job in jobs], ensure_ledger=True)
    writer, audit = session.writer, session.audit
    extras = {job.name: Extras(job, manifest.ledger) for job in jobs} if mirror else {}

    def work(stage: list[DatasetJob], last: bool) -> Iterator[Batch]:
        for job in stage:
            progress.dataset_started(job.name, job.source.url, job.destination.url)
            started.append(job.name)
            recorded = sweeper = None
            if writer is not None:  # only a run writes: it records and it cleans up
                recorded = ledger.latest_done(job.name, job.destination.url_of(""))
                sweeper = OrphanSweeper(job.destination, settings.run_token)
                upload_cutoffs[job.name] = store_clock(job.destination)
            elif ledger.table(OBJECTS) is not None:
                # verify compares ciphertext with the ledger, and must know what lifecycle
                # rules archived: those are counted, never read (docs/LIFECYCLE.md).
                recorded = ledger.latest_done(job.name, job.destination.url_of(""))
            on_filtered, on_absent = filter_counters(report, job)
            items = _worker_items(plan_dataset(job, reverify=reverify, check_only=check_only,
                                               recorded=recorded, on_partial=sweeper,
                                               on_link=skipped_link_counter(report, job),
                                               on_filtered=on_filtered, on_absent=on_absent),
                                  job, report, progress, extras.get(job.name))
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
        progress.dataset_started(table.name, table.source.url, table.table.location.url)
        execute_table(table, report.command, report, run_id=report.run_id,
                      ledger=ledger if writer is not None else None, audit=audit,
                      sequence=sequence)
        _tell_finished(progress, report, [table.name])
    upload_cutoffs: dict[str, datetime | None] = {}
    started: list[str] = []  # datasets whose planning began, not yet told finished
    staged = stages(jobs)

    with session.working(engine=bool(jobs or not tables)):
        # Now that the engine is up: engine.bwlimit is split among its worker processes.
        settings = session.settings
        for number, stage in enumerate(staged, start=1):  # a stage ends before the next plans
            if report.interrupted:
                break
            for batch, item, result in session.settle(run_batch,
                                                      work(stage, number == len(staged))):
                if writer is not None:
                    writer.add(ledger_row(batch.job, item, result, report.run_id))
                if audit is not None:
                    record_result(audit, batch.job, result)
            if mirror is None:
                _tell_finished(progress, report, started)
                started.clear()
        if mirror is not None:
            _delete_extras(session, mirror, extras)
            _tell_finished(progress, report, started)  # deletions are part of the outcome
    for job in jobs:  # after the copies: resumed uploads are complete by now
        if job.name in upload_cutoffs and not report.interrupted and \
                job.name not in report.stopped:  # be quick; its endpoint may be gone
            tidy_up(report, job, upload_cutoffs[job.name], settings.run_token,
                    workers_lost=session.engine.may_have_left_temporary_files)
    return session.finish()


def _tell_finished(progress: Progress, report: Report, names: list[str]) -> None:
    """Progress listeners learn each dataset's outcome once its last result is in."""
    for name in names:
        ds = report.dataset(name)
        progress.dataset_finished(name, ds.counts, ds.bytes, report.stopped.get(name))


def tidy_up(report: Report, job: DatasetJob, cutoff: datetime | None, token: str, *,
            workers_lost: bool) -> None:
    """After a dataset's copies: abort the uploads killed runs left, and remove the
    temporary files this run's dead workers left. A store that fails now costs a
    warning, not the run: its objects are recorded and the next run tidies up.

    Only a copy that did not run to its end leaves a temporary file: one whose worker
    died or was let go (``workers_lost``, Engine.may_have_left_temporary_files) or
    one that failed (its clean-up may have failed too). Otherwise the destination is
    not listed a second time: at 20,000 local files that listing was 0.4 s."""
    try:
        count_housekeeping(report, job, "orphan_uploads_aborted",
                           abort_orphan_uploads(job.destination, cutoff))
        if job.destination.backend.atomic_temp_names and (
                workers_lost or report.dataset(job.name).counts["failed"]):
            # A worker that died mid-copy left temporary files named for this run.
            sweeper = OrphanSweeper(job.destination, token, run_is_over=True)
            for _ in list_entries(job.destination, on_partial=sweeper):
                pass
            count_housekeeping(report, job, "orphan_files_removed", sweeper.removed)
    except Exception as exc:
        report.warn(f"dataset {job.name}: clean-up of {job.destination.url} skipped "
                    f"({describe(exc)}); the next run does it")


def _delete_extras(session: RunSession, mirror: Mirror, extras: dict[str, Extras]) -> None:
    """``sync --delete``, once every copy settled: delete each dataset's extras, unless
    something failed or stopped (then nothing is deleted) or more than
    ``mirror.max_delete`` would go (then nothing is deleted and the run is refused,
    exit 3). Each deletion is a ledger row and an audit event (pipeline/mirror.py)."""
    report, writer, audit = session.report, session.writer, session.audit
    try:
        for name, kept in extras.items():
            if kept.protected:
                report.warn(f"dataset {name}: {_objects(kept.protected)} under the ledger's "
                            "or the source's URL left in place (datamove's own files and the "
                            "source are never deleted)")
        waiting = sum(kept.count for kept in extras.values())
        if not waiting:
            return
        failed = sum(ds.counts["failed"] for ds in report.datasets.values())
        if failed or report.stopped or report.interrupted:
            why = (f"{_objects(failed)} failed" if failed else "the run was interrupted"
                   if report.interrupted else "a dataset stopped")
            report.warn(f"nothing deleted: {why}; the {_objects(waiting)} only at the "
                        "destination stay until a run copies everything")
            return
        empty = sorted(name for name, kept in extras.items()
                       if kept.count and not kept.source_objects)
        if empty and mirror.max_delete is None:
            would = sum(extras[name].count for name in empty)
            report.refuse(f"dataset {', '.join(empty)}: the source listed no object, so "
                          f"{_objects(would)} would be deleted, everything at the "
                          "destination; nothing was deleted (a mistyped source empties "
                          "the destination). Check SRC, or give --max-delete N to allow it")
            if audit is not None:
                audit.append("delete.refused", would_delete=would, max_delete=None,
                             reason="empty source",
                             datasets={name: extras[name].count for name in empty})
            return
        if mirror.max_delete is not None and waiting > mirror.max_delete:
            report.refuse(f"--max-delete {mirror.max_delete}: {_objects(waiting)} would be "
                          "deleted; nothing was deleted (raise the limit to allow it)")
            if audit is not None:
                audit.append("delete.refused", would_delete=waiting,
                             max_delete=mirror.max_delete,
                             datasets={n: k.count for n, k in extras.items() if k.count})
            return
        spec, progress, settings = session.spec, session.progress, session.settings

        def planned(kept: Extras) -> Iterator[PlanItem]:
            for item in kept.items():
                progress.planned(item)
                yield item

        def work() -> Iterator[Batch]:
            for kept in extras.values():  # a deletion's size costs nothing: batch by count
                for group in batches(planned(kept), max_objects=spec.batch_objects,
                                     max_bytes=sys.maxsize, large=sys.maxsize):
                    yield Batch(kept.job, tuple(group), settings)

        for batch, item, result in session.settle(delete_batch, work()):
            if writer is not None:
                writer.add(deletion_row(ledger_row(batch.job, item, result, report.run_id),
                                        item, result))
            if audit is not None:
                record_result(audit, batch.job, result)
    finally:
        for kept in extras.values():
            kept.close()


def _objects(count: int) -> str:
    return f"{count:,} object" + ("" if count == 1 else "s")


def _worker_items(items: Iterator[PlanItem], job: DatasetJob, report: Report,
                  progress: Progress, extras: Extras | None = None) -> Iterator[PlanItem]:
    """Pass on what needs a worker; account for what the driver settles itself."""
    ds = report.dataset(job.name)
    try:
        yield from _settle_driver_side(items, job, ds, report, progress, extras)
    except Exception as exc:  # a listing that broke half-way fails its dataset only
        report.record(ObjectResult(
            dataset=job.name, key="", action="list", status="failed", size=0,
            error=f"listing stopped; the rest of this dataset was not planned: {describe(exc)}"))


def _settle_driver_side(items: Iterator[PlanItem], job: DatasetJob, ds: DatasetReport,
                        report: Report, progress: Progress,
                        extras: Extras | None = None) -> Iterator[PlanItem]:
    for item in items:
        if extras is not None and item.action != Action.extra:
            extras.source_objects += 1
        if item.action == Action.skip:
            ds.add("skipped", item.size)
            progress.skipped_item(job.name, item)
        elif item.action == Action.extra and report.command == "verify":
            report.record(ObjectResult(dataset=job.name, key=item.key, action="extra",
                                       status="extra", size=item.size,
                                       error="only at the destination"))
        elif item.action == Action.extra and extras is not None and extras.add(item):
            pass  # deleted once the copies are done (sync --delete)
        elif item.action == Action.extra:
            ds.add("extra", item.size)  # reported, never deleted
        elif item.action == Action.archived:
            ds.add("archived", item.size)  # in a cold tier; drills read it back
        else:
            progress.planned(item, job.name)
            yield item
    progress.listing_done(job.name)
