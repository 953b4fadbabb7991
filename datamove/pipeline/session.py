"""One run session: what every command that runs work opens and closes, once.

``run``, ``verify``, ``keys rotate``, ``archive``, ``restore`` and ``drill``
each used to write their own opening and closing, and the copies drifted
(archive wrote without fsync, restore wrote its ``run.end`` by hand, rotate
and archive ignored ``engine.circuit_breaker``). A :class:`RunSession` owns,
in this order:

1. the ledger's writer lock (ledger/lock.py), for the commands that take it;
2. the run id and the :class:`Report` (engine description included);
3. the audit writer (pipeline/auditing.py), opened on first use: the policy
   preflight (:meth:`check_policies`) or :meth:`start`;
4. the ledger writer (``LedgerWriter``) and the ``runs`` start row, then the
   ``run.start`` audit event (:meth:`start`);
5. the engine and the progress display while work runs (:meth:`working`),
   with one :class:`TransferSettings` built from the manifest for every
   command (fsync, part size, retries, resume threshold, the run token);
6. settling (:meth:`settle`): results accounted as they arrive, rows flushed
   about once a second, a dataset's circuit breaker and SIGINT/SIGTERM
   (interrupt.py, cancel.py) stopping work with every finished object recorded;
7. the close (:meth:`finish`): the ``runs`` end row with the counts, a
   compaction, ``run.end`` and a (signed) checkpoint.

Leaving the ``with`` block on an exception (a failure, KeyboardInterrupt, a
signal before work was in flight) records no end and commits nothing more, as
if the process had died: the engine closes, then the lock is released. Rows
still buffered are lost the way a crash loses them, and every command is built
for that (a run verifies what a dead run copied, a rotation resumes from its
journal, an archive finishes the moves a killed run left). SIGINT and SIGTERM
under the CLI take the other way out: :meth:`settle` stops the work, records
every finished object and :meth:`finish` writes the end (exit 130/143).

Identity preflights stay with the commands (jobs.preflight_identities,
restore.require_identities): which identities a command needs is its own.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from datamove.audit import AuditWriter
from datamove.ledger.lock import ledger_lock
from datamove.ledger.tables import LedgerWriter, ts
from datamove.manifest.model import Manifest
from datamove.pipeline import cancel, interrupt
from datamove.pipeline.auditing import open_audit, record_policy
from datamove.pipeline.breaker import DEFAULT_THRESHOLD, CircuitBreaker
from datamove.pipeline.engine import Engine, LetGo
from datamove.pipeline.jobs import ledger_of, new_run_id, run_token
from datamove.pipeline.march import PlanItem
from datamove.pipeline.progress import Progress
from datamove.pipeline.report import Report
from datamove.pipeline.throttle import share
from datamove.pipeline.transfer import Batch, ObjectResult, TransferSettings
from datamove.policy.rules import PolicyReport
from datamove.stores.core import describe

FLUSH_SECONDS = 1.0
"""How often the driver commits the ledger and audit rows it holds."""


class RunSession:
    """The opening and closing of one command's run. Use as a context manager.

    ``lock``: the command name the ledger lock records (None: take no lock, as
    ``verify`` does). ``records``: the command writes ledger rows (a writer
    and ``runs`` start/end rows). ``audited``: it writes audit events.
    ``announces``: ``run.start``/``run.end`` events (``drill`` writes only its
    ``drill.completed``, docs/FORMAT.md).
    """

    def __init__(self, manifest: Manifest, command: str, *, scheduler: str | None = None,
                 progress: Progress | None = None, lock: str | None = None,
                 lock_wait: float = 3600.0, records: bool = True, audited: bool = True,
                 announces: bool = True):
        self.manifest = manifest
        self.command = command
        self.spec = manifest.engine
        self.engine = Engine.of(self.spec, scheduler)
        self.progress = progress or Progress()
        self.ledger = ledger_of(manifest)
        self.audit: AuditWriter | None = None
        self.writer: LedgerWriter | None = None
        self._lock = lock
        self._lock_wait = lock_wait
        self._records = records
        self._audited = audited
        self._announces = announces
        self._stack = contextlib.ExitStack()
        self._report: Report | None = None

    # --- opening ------------------------------------------------------------------------

    def __enter__(self) -> RunSession:
        if self._lock is not None:
            self._stack.enter_context(ledger_lock(self.manifest.ledger,
                                                  self.manifest.ledger_options,
                                                  command=self._lock, wait=self._lock_wait))
        self._report = Report(self.command, self.manifest.name, new_run_id(),
                              engine=self.engine.description)
        self.progress.run = {"command": self.command, "manifest": self.manifest.name,
                             "run_id": self._report.run_id}  # labels for the metrics
        return self

    @property
    def report(self) -> Report:
        assert self._report is not None, "enter the session first"
        return self._report

    @property
    def run_id(self) -> str:
        return self.report.run_id

    @property
    def token(self) -> str:
        """Names this run's temporary files and its cancel flags."""
        return run_token(self.run_id)

    @property
    def settings(self) -> TransferSettings:
        """What every worker task of this run writes with, from the manifest's engine.
        ``engine.bwlimit`` is split among the engine's worker processes (throttle.py):
        ask once the engine is open for a ``--scheduler`` cluster's count."""
        spec = self.spec
        return TransferSettings(part_size=spec.part_size, part_buffers=spec.part_buffers,
                                retries=spec.retries,
                                fsync=spec.fsync, run_token=self.token,
                                resume_threshold=4 * spec.part_size,
                                bwlimit=share(spec.bwlimit, self.engine.worker_processes))

    def open_audit(self) -> AuditWriter | None:
        """The run's audit writer, opened once (a bad log is refused before any write)."""
        if self._audited and self.audit is None:
            self.audit = open_audit(self.manifest, self.run_id)
        return self.audit

    def check_policies(self, policies: list[str] | None,
                       datasets: list[str] | None) -> PolicyReport:
        """The policy preflight: every decision goes to the audit log, then
        PolicyRefused (exit 3) if any rule denies, before anything moves; the
        warnings go into the report."""
        from datamove.policy.rules import check

        decided = check(self.manifest, policies, datasets=datasets)
        audit = self.open_audit()
        if audit is not None:
            record_policy(audit, decided)
        decided.raise_if_denied()
        self.report.policy_warnings = [f"{d.rule_id}: dataset {d.dataset}: {d.field}: "
                                       f"{d.reason}" for d in decided.warned]
        return decided

    def start(self, datasets: list[str], *, ensure_ledger: bool = False,
              **details: Any) -> None:
        """Record the start: the ledger writer and its ``runs`` row, then ``run.start``
        (with ``details``, e.g. the new key fingerprints of a rotation)."""
        audit = self.open_audit()
        manifest = self.manifest
        if self._records:
            if ensure_ledger:
                self.ledger.ensure()
            self.writer = LedgerWriter(self.ledger, self.run_id)
            self.writer.run_event("start", command=self.command, manifest_name=manifest.name,
                                  manifest_sha256=manifest.sha256,
                                  engine=self.engine.description,
                                  started_at=ts(self.report.started))
        if audit is not None and self._announces:
            audit.append("run.start", command=self.command, manifest_sha256=manifest.sha256,
                         engine=self.engine.description, datasets=datasets, **details)

    # --- working ------------------------------------------------------------------------

    @contextlib.contextmanager
    def working(self, *, engine: bool = True) -> Iterator[Engine]:
        """The engine (unless ``engine`` is False: nothing for workers) and the progress
        display, open while work runs; closed before the run records its end. The
        embedded cluster starts with the first task (Engine.start): a rerun with
        nothing to copy never starts one."""
        with self.engine if engine else contextlib.nullcontext():
            try:
                with self.progress:
                    yield self.engine
            finally:  # the embedded cluster starts with the first task, if any
                if engine and self.engine.dashboard:
                    self.report.dashboard = self.engine.dashboard

    def settle(self, task: Callable[[Batch], list[ObjectResult]], work: Iterator[Batch]
               ) -> Iterator[tuple[Batch, PlanItem, ObjectResult]]:
        """:func:`settle` on this session's engine, report and progress, with the
        manifest's circuit breaker, flushing this session's writers."""
        return settle(self.engine, task, work, self.report, self.progress,
                      threshold=self.spec.circuit_breaker, flush=self.flush)

    def flush(self) -> None:
        """Commit the ledger rows, then the audit events, held so far."""
        if self.writer is not None:
            self.writer.flush()
        if self.audit is not None:
            self.audit.flush()

    # --- closing ------------------------------------------------------------------------

    def finish(self) -> Report:
        """The end of a run that completed (or stopped on a signal, its finished
        objects settled): the ``runs`` end row with the counts, a compaction,
        ``run.end`` and a (signed) checkpoint."""
        report = self.report.finish()
        manifest = self.manifest
        if self.writer is not None:
            self.writer.flush()
            self.writer.run_event("end", command=report.command, manifest_name=manifest.name,
                                  manifest_sha256=manifest.sha256,
                                  engine=self.engine.description,
                                  started_at=ts(report.started), ended_at=ts(report.ended),
                                  counts_json=json.dumps(report.to_dict()["datasets"]),
                                  exit_code=report.exit_code)
            if not report.interrupted:  # a signal asked for a quick end
                self.ledger.compact()
        if self.audit is not None:
            if self._announces:
                self.audit.append("run.end", exit_code=report.exit_code,
                                  counts={name: dict(ds.counts)
                                          for name, ds in report.datasets.items()})
            self.audit.checkpoint()  # flushes; signs when the manifest has a signing key
        return report

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._stack.close()  # the lock, last: the engine closed when working() ended


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
    with cancel.Switch(run_token(report.run_id)) as switch:

        def stop(dataset: str | None = None) -> None:
            switch.client = engine.started  # workers, if any started, see the flags too
            switch.stop(dataset)

        def halted() -> bool:
            signal_name = interrupt.requested()
            if signal_name is not None and report.interrupted is None:
                report.interrupted = signal_name
                stop()
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
                    stop(batch.job.name)
            idle()
        halted()  # a signal during the last results still marks the report


def task_failed(batch: Batch, exc: BaseException) -> list[ObjectResult]:
    """A whole task was lost (e.g. its workers kept dying): fail its objects, go on."""
    return [ObjectResult(dataset=batch.job.name, key=item.key, action=item.action.value,
                         status="failed", size=item.size,
                         destination_url=batch.job.destination.url_of(
                             batch.job.stored_key(item.key)),
                         error=f"task failed: {describe(exc)}") for item in batch.items]
