"""Questions answered from the ledger: ``status``, ``history`` and ``show``.

Read-only: nothing here writes to the ledger, a source or a destination. Each
function takes a loaded :class:`~datamove.manifest.model.Manifest` and returns a
result with ``to_dict()`` (what ``--json`` prints), ``render(out)`` (the human
form), ``exit_code`` and ``error`` (a message for stderr, or None); the CLI
only parses arguments and prints.

* :func:`status`: per dataset, how many objects are done, pending and failed,
  from the ledger *and* a fresh plan (the same merge of source listing,
  destination listing and ledger rows that ``datamove run`` performs).
* :func:`history`: the runs recorded in the ``runs`` table, newest first.
* :func:`show`: every ``objects`` row for one key, oldest first: the object's
  provenance across runs.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc

from datamove.commands import DEFAULT_HISTORY_LIMIT
from datamove.errors import EXIT_OBJECTS_FAILED, EXIT_OK
from datamove.ledger.tables import OBJECTS, RUNS, Ledger, LedgerRow, batches, scan
from datamove.ledger.vouched import events_by_run
from datamove.manifest.model import Manifest, VerifyMode
from datamove.pipeline.jobs import jobs_of, ledger_of, preflight
from datamove.pipeline.march import Action, PlanItem, plan_dataset
from datamove.pipeline.report import human_bytes

__all__ = ["HistoryResult", "RunSummary", "ShowResult", "StatusResult", "history", "show",
           "status"]

STATUS_KEYS = ("done", "pending", "failed", "deleted_at_source", "only_at_destination")
"""Status categories, disjoint: done + pending + failed = objects at the source."""

ARCHIVED = "archived"  # done objects a lifecycle rule moved to a cold tier (part of done)

MAX_LISTED_FAILURES = 1_000
"""Failed objects listed per dataset in ``status`` (the counts are always complete)."""

SHOWN_FAILURES = 20
"""Failed objects printed by the human form of ``status``."""

_RUN_COUNT_KEYS = ("copied", "skipped", "verified", "repaired", "failed")


def no_runs_message(ledger: Ledger, manifest: Manifest) -> str:
    """What to say when the ledger has no tables yet."""
    return (f"no runs recorded yet at {ledger.url}; "
            f"run `datamove run {manifest.path or manifest.name}` first")


# --- status ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedObject:
    """An object whose latest ledger row says failed and that still needs work."""

    key: str
    run_id: str
    error: str
    attempts: int | None
    recorded_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "run_id": self.run_id, "error": self.error,
                "attempts": self.attempts, "recorded_at": _iso(self.recorded_at)}


@dataclass
class DatasetStatus:
    """Counts and bytes per status category for one dataset."""

    name: str
    source: str
    destination: str
    verify: str
    counts: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    pending_reasons: Counter[str] = field(default_factory=Counter)
    failures: list[FailedObject] = field(default_factory=list)

    def add(self, category: str, size: int) -> None:
        self.counts[category] += 1
        self.bytes[category] += size

    @property
    def reverified_each_run(self) -> bool:
        """``verify: full`` datasets re-read their done objects on every run."""
        return self.verify == VerifyMode.full.value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "destination": self.destination,
                               "verify": self.verify}
        out.update({key: self.counts[key] for key in STATUS_KEYS})
        out.update({f"bytes_{key}": self.bytes[key] for key in STATUS_KEYS})
        out[ARCHIVED], out[f"bytes_{ARCHIVED}"] = self.counts[ARCHIVED], self.bytes[ARCHIVED]
        out["pending_reasons"] = dict(self.pending_reasons.most_common())
        out["failures"] = [f.to_dict() for f in self.failures]
        out["reverified_each_run"] = self.reverified_each_run
        return out


@dataclass
class StatusResult:
    """``datamove status``: where a manifest's migration stands."""

    manifest: str
    ledger: str
    ledger_exists: bool
    datasets: dict[str, DatasetStatus] = field(default_factory=dict)
    notice: str | None = None
    error: str | None = None
    exit_code: int = EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        totals = Counter[str]()
        for ds in self.datasets.values():
            totals.update({key: ds.counts[key] for key in (*STATUS_KEYS, ARCHIVED)})
        return {"command": "status", "manifest": self.manifest, "ledger": self.ledger,
                "ledger_exists": self.ledger_exists, "notice": self.notice,
                "datasets": {name: ds.to_dict() for name, ds in self.datasets.items()},
                "totals": {key: totals[key] for key in (*STATUS_KEYS, ARCHIVED)},
                "exit_code": self.exit_code}

    def render(self, out: TextIO) -> None:
        console = _console(out)
        if self.notice:
            console.print(self.notice)
        table = _table(f"datamove status: {self.manifest}")
        for column in ("dataset", "done", "pending", "failed", "deleted at source",
                       "bytes done", "bytes to do"):
            table.add_column(column, justify="left" if column == "dataset" else "right",
                             no_wrap=column == "dataset")
        for name, ds in self.datasets.items():
            c = ds.counts
            table.add_row(name, f"{c['done']:,}", f"{c['pending']:,}", f"{c['failed']:,}",
                          f"{c['deleted_at_source']:,}", human_bytes(ds.bytes["done"]),
                          human_bytes(ds.bytes["pending"] + ds.bytes["failed"]))
        console.print(table)
        shown = 0
        for name, ds in self.datasets.items():
            if ds.pending_reasons:
                reasons = ", ".join(f"{n:,} {reason}" for reason, n
                                    in ds.pending_reasons.most_common())
                console.print(f"{name}: to do: {reasons}")
            if ds.counts["only_at_destination"]:
                console.print(f"{name}: {ds.counts['only_at_destination']:,} objects only at "
                              "the destination (never recorded; left alone)")
            if ds.counts[ARCHIVED]:
                console.print(f"{name}: {ds.counts[ARCHIVED]:,} of the done objects are "
                              "archived (not read by run or verify; `datamove drill` reads "
                              "them back)")
            if ds.reverified_each_run and ds.counts["done"]:
                console.print(f"{name}: verify: full, so every run re-reads its "
                              f"{ds.counts['done']:,} done objects")
            for failure in ds.failures:
                if shown == SHOWN_FAILURES:
                    break
                shown += 1
                console.print(f"failed {name}/{failure.key} (run {failure.run_id}): "
                              f"{failure.error}")
        total_failed = sum(ds.counts["failed"] for ds in self.datasets.values())
        if total_failed > shown:
            console.print(f"… and {total_failed - shown:,} more failed (see --json)")
        t = self.to_dict()["totals"]
        console.print(f"status: {t['done']:,} done, {t['pending']:,} pending, "
                      f"{t['failed']:,} failed, {t['deleted_at_source']:,} deleted at source")


class _KeysSeen:
    """Passes ledger rows through and remembers the last key handed out.

    ``march`` yields a key before it advances any stream past it, so while the
    plan item for key K is being handled, the last ledger row handed out has
    key K exactly when the ledger has a good row for K.
    """

    def __init__(self, rows: Iterable[LedgerRow]):
        self._rows = rows
        self.last: str | None = None

    def __iter__(self) -> Iterator[LedgerRow]:
        for row in self._rows:
            self.last = row.key
            yield row


def status(manifest: Manifest, *, datasets: list[str] | None = None) -> StatusResult:
    """Done / pending / failed per dataset, from the ledger and a fresh plan.

    Categories are disjoint, per object key:

    * ``done``: the plan skips it (its latest good ledger row matches the source
      and the destination still has the recorded size); also counted as done when
      ``verify: full`` makes every run re-read it, and when a lifecycle rule
      archived it (moved to a cold location or a class that needs a restore; also
      counted as ``archived``: a run neither reads nor copies it).
    * ``failed``: the plan would copy or verify it, and its latest ledger row (of
      any status) says ``failed``.
    * ``pending``: the plan would copy or verify it, and it did not fail last time
      (new, changed at the source, missing at the destination, or present at the
      destination but never recorded).
    * ``deleted_at_source``: recorded in the ledger, gone from the source.
    * ``only_at_destination``: at the destination, never recorded, not at the
      source (reported, never deleted).

    Lists every source and destination (like ``datamove plan``), so both must be
    reachable. Memory: the ledger rows of one dataset at a time, as for a run.
    """
    jobs = jobs_of(manifest, datasets)
    preflight(jobs)
    ledger = ledger_of(manifest)
    _, objects = _open(ledger)
    exists = objects is not None
    result = StatusResult(manifest.name, ledger.url, exists,
                          notice=None if exists else no_runs_message(ledger, manifest))
    for job in jobs:
        ds = DatasetStatus(job.name, job.source.url, job.destination.url, job.verify.value)
        result.datasets[job.name] = ds
        seen = _KeysSeen(ledger.latest_done(job.name, job.destination.url_of(""))
                         if exists else ())
        failures = _latest_failures(objects, job.name)
        pending_failure: FailedObject | None = next(failures, None)
        # Always plan "with a ledger" (even an empty one), as a run does: an object
        # already at the destination but never recorded is still to be verified.
        for item in plan_dataset(job, recorded=seen):
            recorded = seen.last == item.key
            if item.action == Action.extra:
                ds.add("deleted_at_source" if recorded else "only_at_destination", item.size)
                continue
            if item.action in (Action.skip, Action.archived) or (
                    item.action == Action.verify and recorded):
                ds.add("done", item.size)
                if item.action == Action.archived:
                    ds.add(ARCHIVED, item.size)
                continue
            failure = None
            while pending_failure is not None and _utf8(pending_failure.key) <= _utf8(item.key):
                if pending_failure.key == item.key:
                    failure = pending_failure
                pending_failure = next(failures, None)
            ds.pending_reasons[_reason(item)] += 1
            if failure is None:
                ds.add("pending", item.size)
            else:
                ds.add("failed", item.size)
                if len(ds.failures) < MAX_LISTED_FAILURES:
                    ds.failures.append(failure)
    return result


def _reason(item: PlanItem) -> str:
    """The plan's reason without its per-object details ("size differs (3 …)")."""
    return item.reason.split(" (", 1)[0]


def _utf8(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _latest_failures(objects: Any, dataset: str) -> Iterator[FailedObject]:
    """Keys of ``dataset`` whose latest row (any status) is ``failed``, in key order.

    Reads only the rows of keys that ever failed, so a healthy ledger costs one
    filtered scan of the ``key`` and ``status`` columns.
    """
    ever = _scan(objects, (pc.field("dataset") == dataset) & (pc.field("status") == "failed"),
                 ["key"])
    if ever.num_rows == 0:
        return
    keys = pc.unique(ever["key"])
    rows = _scan(objects, (pc.field("dataset") == dataset) & pc.field("key").isin(keys),
                 ["key", "status", "run_id", "error", "attempts", "recorded_at"])
    rows = rows.sort_by([("key", "ascending"), ("recorded_at", "ascending"),
                         ("run_id", "ascending")])
    latest = rows.group_by("key", use_threads=False).aggregate(
        [(name, "last") for name in ("status", "run_id", "error", "attempts", "recorded_at")])
    latest = latest.filter(pc.field("status_last") == "failed").sort_by("key")
    for batch in latest.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            yield FailedObject(key=row["key"], run_id=row["run_id_last"],
                               error=row["error_last"] or "failed",
                               attempts=row["attempts_last"],
                               recorded_at=row["recorded_at_last"])


# --- history --------------------------------------------------------------------------


@dataclass
class RunSummary:
    """One run, from its start and end rows in the ``runs`` table."""

    run_id: str
    command: str | None
    manifest_name: str | None
    manifest_sha256: str | None
    user: str | None
    host: str | None
    engine: str | None
    datamove_version: str | None
    started: datetime | None
    ended: datetime | None
    exit_code: int | None
    counts: dict[str, int]
    counts_from: str  # "end row" | "objects rows" (interrupted) | "audit log" (lost)
    datasets: dict[str, Any]
    lost: str | None = None  # the ledger lost (some of) its records: what, who accepted

    @property
    def interrupted(self) -> bool:
        """No end row: the run was killed (or is still running)."""
        return self.ended is None

    @property
    def state(self) -> str:
        return "lost" if self.lost else "interrupted" if self.interrupted else "ended"

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "command": self.command,
                "manifest_name": self.manifest_name, "manifest_sha256": self.manifest_sha256,
                "user": self.user, "host": self.host, "engine": self.engine,
                "datamove_version": self.datamove_version,
                "started": _iso(self.started), "ended": _iso(self.ended),
                "state": self.state, "lost": self.lost,
                "exit_code": self.exit_code, **self.counts,
                "counts_from": self.counts_from, "datasets": self.datasets}


@dataclass
class HistoryResult:
    """``datamove history``: runs of a manifest, newest first."""

    manifest: str
    ledger: str
    ledger_exists: bool
    runs: list[RunSummary]
    total: int
    notice: str | None = None
    error: str | None = None
    exit_code: int = EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"command": "history", "manifest": self.manifest, "ledger": self.ledger,
                "ledger_exists": self.ledger_exists, "notice": self.notice,
                "total": self.total, "runs": [r.to_dict() for r in self.runs],
                "exit_code": self.exit_code}

    def render(self, out: TextIO) -> None:
        console = _console(out)
        if self.notice:
            console.print(self.notice)
        table = _table(f"datamove history: {self.manifest}")
        for column in ("run", "command", "started", "ended", "exit", "copied", "failed",
                       "user@host", "engine"):
            table.add_column(column, justify="right" if column in ("exit", "copied", "failed")
                             else "left", no_wrap=column in ("run", "started", "ended"))
        for run in self.runs:
            marker = {"end row": "", "audit log": "†"}.get(run.counts_from, "*")
            table.add_row(run.run_id, run.command or "", _human_time(run.started),
                          run.state if run.state != "ended" else _human_time(run.ended),
                          "" if run.exit_code is None else str(run.exit_code),
                          f"{run.counts['copied']:,}{marker}",
                          f"{run.counts['failed']:,}{marker}",
                          f"{run.user or '?'}@{run.host or '?'}", run.engine or "")
        console.print(table)
        if any(run.interrupted for run in self.runs):
            console.print("interrupted: no end row (killed, or still running); "
                          "* counts are the objects it recorded before it stopped")
        for run in (run for run in self.runs if run.lost):
            audit = "; † counts from the audit log" if run.counts_from == "audit log" else ""
            console.print(f"lost {run.run_id}: {run.lost}{audit}")
        console.print(f"history: {len(self.runs):,} of {self.total:,} runs")


def history(manifest: Manifest, *, limit: int | None = DEFAULT_HISTORY_LIMIT,
            all_manifests: bool = False) -> HistoryResult:
    """The runs recorded for ``manifest`` (by name; all runs in the ledger with
    ``all_manifests``), newest first, at most ``limit`` (None or 0: all).

    Counts come from the end row's ``counts_json``; a run with no end row (killed,
    or still running) gets counts from the ``objects`` rows it committed. A run
    whose records the ledger lost (its loss accepted, ledger_audit.py) is shown
    as ``lost``, with what the audit log knew of it when its own rows are gone.
    """
    ledger = ledger_of(manifest)
    runs_table, _ = _open(ledger)
    exists = runs_table is not None
    by_run = events_by_run(_scan(runs_table).to_pylist())
    runs = [_run_summary(run_id, events) for run_id, events in by_run.items()]
    if not all_manifests:
        runs = [r for r in runs if r.manifest_name == manifest.name]
    runs.sort(key=lambda r: (r.started or datetime.min.replace(tzinfo=UTC), r.run_id),
              reverse=True)
    total = len(runs)
    if limit:
        runs = runs[:limit]
    interrupted = [r for r in runs if r.interrupted]
    if interrupted:
        _count_interrupted(ledger.table(OBJECTS), interrupted)  # opened (checked) above
    notice = None if exists else no_runs_message(ledger, manifest)
    if exists and total == 0:
        notice = f"no runs of manifest {manifest.name!r} recorded at {ledger.url}"
    return HistoryResult(manifest.name, ledger.url, exists, runs, total, notice=notice)


def _run_summary(run_id: str, events: dict[str, dict[str, Any]]) -> RunSummary:
    start, end, lost = events.get("start"), events.get("end"), events.get("lost")
    first = start or end or {}

    def pick(name: str) -> Any:
        return next((e[name] for e in (end, start) if e and e.get(name) is not None), None)

    datasets: dict[str, Any] = {}
    counts = dict.fromkeys(_RUN_COUNT_KEYS, 0) | {"bytes_copied": 0}
    if end and end.get("counts_json"):
        datasets = json.loads(end["counts_json"])
        for ds in datasets.values():
            for key in counts:
                counts[key] += int(ds.get(key, 0))
    return RunSummary(
        run_id=run_id, command=pick("command"), manifest_name=pick("manifest_name"),
        manifest_sha256=pick("manifest_sha256"), user=pick("user"), host=pick("host"),
        engine=pick("engine"), datamove_version=pick("datamove_version"),
        started=first.get("started_at") or pick("started_at"),
        ended=end.get("ended_at") if end else None,
        exit_code=end.get("exit_code") if end else None, counts=counts,
        counts_from="audit log" if end and end.get("from_audit") else
        "end row" if end else "objects rows", datasets=datasets,
        lost=f"the ledger lost its records ({lost['note']}); run {lost['run_id']} went on "
             "without them" if lost else None)


def _count_interrupted(objects: Any, runs: list[RunSummary]) -> None:
    """Fill the counts of runs without an end row from the objects they recorded."""
    rows = _scan(objects, pc.field("run_id").isin([r.run_id for r in runs]),
                 ["run_id", "dataset", "status", "size"])
    if rows.num_rows == 0:
        return
    grouped = rows.group_by(["run_id", "dataset", "status"]).aggregate(
        [("size", "count"), ("size", "sum")])
    by_id = {r.run_id: r for r in runs}
    for row in grouped.to_pylist():
        run = by_id[row["run_id"]]
        status_, n, size = row["status"], row["size_count"], row["size_sum"] or 0
        if status_ in run.counts:
            run.counts[status_] += n
        if status_ == "copied":
            run.counts["bytes_copied"] += size
        ds = run.datasets.setdefault(row["dataset"], {})
        ds[status_] = ds.get(status_, 0) + n
        ds[f"bytes_{status_}"] = ds.get(f"bytes_{status_}", 0) + size


# --- show -----------------------------------------------------------------------------


@dataclass
class ShowResult:
    """``datamove show``: every ledger row of one object, oldest first."""

    manifest: str
    ledger: str
    key: str
    datasets_searched: list[str]
    rows: list[dict[str, Any]]
    error: str | None = None
    suggestions: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.rows else EXIT_OBJECTS_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"command": "show", "manifest": self.manifest, "ledger": self.ledger,
                "key": self.key, "datasets_searched": self.datasets_searched,
                "rows": [{k: _jsonable(v) for k, v in row.items()} for row in self.rows],
                "error": self.error, "suggestions": self.suggestions,
                "exit_code": self.exit_code}

    def render(self, out: TextIO) -> None:
        console = _console(out)
        if not self.rows:
            for suggestion in self.suggestions:
                console.print(f"did you mean: {suggestion}")
            return
        width = max(len(name) for name in self.rows[0])
        summary = _table(f"datamove show: {self.key} ({len(self.rows)} rows, oldest first)")
        for column in ("#", "recorded", "dataset", "run", "status", "size", "sha256"):
            summary.add_column(column, no_wrap=True,
                               justify="right" if column in ("#", "size") else "left")
        for i, row in enumerate(self.rows, 1):
            summary.add_row(str(i), _human_time(row["recorded_at"]), row["dataset"],
                            row["run_id"], row["status"],
                            "" if row["size"] is None else f"{row['size']:,}",
                            (row["sha256"] or "")[:16])
        console.print(summary)
        for i, row in enumerate(self.rows, 1):
            console.print(f"\n#{i} {row['dataset']}/{row['key']} · run {row['run_id']} · "
                          f"{row['status']}")
            for name, value in row.items():
                shown = "—" if value is None or value == [] else _jsonable(value)
                console.print(f"  {name:<{width}}  {shown}")


def show(manifest: Manifest, key: str, *, datasets: list[str] | None = None) -> ShowResult:
    """Every ``objects`` row for ``key`` in the named datasets (default: all of the
    manifest's), oldest first, all columns.

    ``key`` is the object's key relative to its dataset (as ``plan`` and the
    ledger show it); a full source or destination URL is accepted too. No rows:
    ``exit_code`` 1 and an ``error`` naming the key and the datasets searched,
    with keys that end in the same name as suggestions.
    """
    names = [manifest.dataset(name).name for name in datasets] if datasets \
        else [d.name for d in manifest.datasets]
    ledger = ledger_of(manifest)
    result = ShowResult(manifest.name, ledger.url, key, names, [])
    _, objects = _open(ledger)
    if objects is None:
        result.error = (f"{key}: not recorded ({no_runs_message(ledger, manifest)})")
        return result
    in_datasets = pc.field("dataset").isin(names)
    rows = _scan(objects, in_datasets & (pc.field("key") == key))
    if rows.num_rows == 0:  # a URL instead of a key?
        rows = _scan(objects, in_datasets & ((pc.field("source_url") == key)
                                             | (pc.field("destination_url") == key)))
    if rows.num_rows == 0:
        result.error = (f"{key}: not recorded in the ledger at {ledger.url} "
                        f"(datasets searched: {', '.join(names)})")
        result.suggestions = _similar_keys(objects, in_datasets, key)
        return result
    rows = rows.sort_by([("recorded_at", "ascending"), ("run_id", "ascending")])
    result.rows = rows.to_pylist()
    return result


def _similar_keys(objects: Any, in_datasets: Any, key: str, limit: int = 5) -> list[str]:
    """Recorded keys with the same last path segment, as ``dataset/key``."""
    name = key.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        return []
    pairs: set[tuple[str, str]] = set()
    for batch in batches(objects, in_datasets, ["dataset", "key"]):
        keys = batch.column("key")
        hit = pc.or_(pc.equal(keys, name), pc.ends_with(keys, "/" + name))
        for row in batch.filter(hit).to_pylist():
            pairs.add((row["dataset"], row["key"]))
    return [f"{dataset}/{k}" for dataset, k in sorted(pairs)[:limit]]


# --- helpers --------------------------------------------------------------------------


def _open(ledger: Ledger) -> tuple[Any, Any]:
    """The runs and objects tables, both opened (so checked: damage anywhere is exit 2)."""
    return ledger.table(RUNS), ledger.table(OBJECTS)


def _scan(table: Any, filter_expr: Any = None, columns: list[str] | None = None) -> pa.Table:
    """Read a ledger table (a DeltaTable, or None when it does not exist yet)."""
    if table is None:
        return pa.table({name: pa.array([], pa.null()) for name in columns or []})
    return scan(table, filter_expr, columns)


def _iso(value: datetime | None) -> str | None:
    """UTC ISO 8601 with microseconds and a Z, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _human_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else ""


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _console(out: TextIO) -> Any:
    """A rich console; 160 columns when writing to a file or pipe (rich's default, 80,
    would squeeze the history table) unless COLUMNS says otherwise."""
    from rich.console import Console

    tty = getattr(out, "isatty", lambda: False)()
    width = None if tty or os.environ.get("COLUMNS") else 160
    return Console(file=out, highlight=False, soft_wrap=True, markup=False, width=width)


def _table(title: str) -> Any:
    from rich import box
    from rich.table import Table

    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)

