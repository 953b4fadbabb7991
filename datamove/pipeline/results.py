"""What a finished command returns: immutable, typed reports (the public API's results).

:class:`~datamove.pipeline.report.Report` is the driver's mutable accountant while a
command runs; when it ends, ``Report.snapshot()`` freezes it into one of these. They
are what :mod:`datamove.api` returns and the one place a report becomes JSON (what
``--json`` prints as its last line) or the human table, so the two never disagree.

Counts are mappings from an outcome name to a number of objects (``bytes``: to a
number of bytes); an outcome that never happened reads as 0. Each command has its
own outcome names (``outcomes``, in column order) and typed properties for them:
:class:`RunDataset` (``copied``, ``skipped``, ...), :class:`PlanDataset` (``copy``,
``skip``, ...), :class:`VerifyDataset` (``matched``, ``missing``, ...). Other counts
(``not_attempted``, ``links_skipped``, ``orphan_files_removed``, table rows, ...)
are in ``counts`` too.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TextIO, TypeVar

from datamove.errors import EXIT_OK
from datamove.pipeline.throughput import Throughput

MOVED = {"run": "copied", "plan": "copy", "verify": "matched", "rotate": "rotated",
         "archive": "moved", "archive-plan": "due", "restore": "restored"}
"""The outcome whose bytes the human table shows, per command."""


@dataclass(frozen=True)
class Problem:
    """One object that failed, did not verify, or needed repair."""

    dataset: str
    key: str  # the object's key in its source ("" for a listing that broke off)
    status: str  # failed | missing | differs | extra | repaired | stopped
    error: str  # what happened, without secrets

    def to_dict(self) -> dict[str, str]:
        return {"dataset": self.dataset, "key": self.key, "status": self.status,
                "error": self.error}


@dataclass(frozen=True)
class DatasetOutcome:
    """One dataset's counts: objects and bytes per outcome (missing outcomes read 0)."""

    name: str
    source: str  # the source URL
    destination: str  # the destination URL (a Delta table's location for format: delta)
    counts: Mapping[str, int]  # outcome -> objects
    bytes: Mapping[str, int]  # outcome -> bytes; "sent": bytes written to the destination

    def to_dict(self, outcomes: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "destination": self.destination}
        for key in (*outcomes, *sorted(set(self.counts) - set(outcomes))):
            out[key] = self.counts[key]
        for key in (*outcomes, *sorted(set(self.bytes) - set(outcomes))):
            out[f"bytes_{key}"] = self.bytes[key]
        return out

    @property
    def not_attempted(self) -> int:
        """Planned objects never started: the run was interrupted or the dataset stopped."""
        return self.counts["not_attempted"]


@dataclass(frozen=True)
class RunDataset(DatasetOutcome):
    """A dataset of ``run``: copied, skipped (up to date), verified, repaired, failed."""

    @property
    def copied(self) -> int:
        return self.counts["copied"]

    @property
    def skipped(self) -> int:
        """Up to date (the ledger and the listing agree): not read, not copied."""
        return self.counts["skipped"]

    @property
    def verified(self) -> int:
        """Already at the destination and verified, then recorded (nothing copied)."""
        return self.counts["verified"]

    @property
    def repaired(self) -> int:
        """Found to differ on re-verification and copied again."""
        return self.counts["repaired"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def bytes_copied(self) -> int:
        return self.bytes["copied"]


@dataclass(frozen=True)
class PlanDataset(DatasetOutcome):
    """A dataset of ``plan``: what a run would copy, skip, verify, and what is extra."""

    @property
    def copy(self) -> int:
        return self.counts["copy"]

    @property
    def skip(self) -> int:
        return self.counts["skip"]

    @property
    def verify(self) -> int:
        return self.counts["verify"]

    @property
    def extra(self) -> int:
        """Only at the destination (reported, never deleted)."""
        return self.counts["extra"]

    @property
    def bytes_to_copy(self) -> int:
        return self.bytes["copy"]


@dataclass(frozen=True)
class VerifyDataset(DatasetOutcome):
    """A dataset of ``verify``: matched, missing, differs, extra, failed."""

    @property
    def matched(self) -> int:
        return self.counts["matched"]

    @property
    def missing(self) -> int:
        return self.counts["missing"]

    @property
    def differs(self) -> int:
        return self.counts["differs"]

    @property
    def extra(self) -> int:
        return self.counts["extra"]

    @property
    def failed(self) -> int:
        """Could not be compared (unreadable, a store error)."""
        return self.counts["failed"]


D = TypeVar("D", bound=DatasetOutcome)


@dataclass(frozen=True)
class CommandReport(Generic[D]):
    """A finished command's report. ``exit_code`` is the CLI's (0 ok, 1 objects failed,
    2 bad input such as an identity that opens nothing, 128+N interrupted by signal N).

    Frozen: fields cannot be reassigned; mappings are read-only and sequences are
    copies (lists, so they compare equal to the lists a ``Report`` holds)."""

    command: str  # run | plan | verify (and rotate, archive, restore, ...)
    manifest: str  # the manifest's name
    run_id: str
    engine: str  # where the work ran ("embedded: 8 threads", a scheduler, "none")
    started: float  # seconds since the epoch
    ended: float | None
    outcomes: tuple[str, ...]  # the command's outcome names, in column order
    datasets: Mapping[str, D]  # by dataset name, in manifest order
    problems: Sequence[Problem]  # the first 10,000 object problems
    problem_count: int  # all object problems, listed or not
    policy_warnings: Sequence[str] = ()  # warn-severity policy violations
    warnings: Sequence[str] = ()  # the first 10,000 warnings
    warning_count: int = 0
    interrupted: str | None = None  # the signal that stopped the run (SIGINT, SIGTERM)
    stopped: Mapping[str, str] = field(default_factory=dict)  # dataset -> why it stopped
    dashboard: str | None = None  # the Dask dashboard's address (bokeh installed)
    refused: Sequence[str] = ()  # work a guard refused (sync --max-delete): exit 3
    exit_code: int = EXIT_OK
    # Bytes and objects over time, for the HTML report's chart (internal, not stable).
    throughput: Throughput | None = field(default=None, repr=False, compare=False)
    # What a command's own report prints before the verdict (plan: the cost table).
    more: Callable[[Any], None] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Exit code 0: every object done and verified (a plan is always ok)."""
        return self.exit_code == EXIT_OK

    @property
    def seconds(self) -> float:
        return (self.ended or time.time()) - self.started

    def dataset(self, name: str) -> D:
        """One dataset's outcome; KeyError names the datasets the report has."""
        if name not in self.datasets:
            raise KeyError(f"no dataset named {name!r} in this report (has: "
                           f"{', '.join(self.datasets)})")
        return self.datasets[name]

    def with_warning(self, message: str) -> Self:
        """A copy with one more warning (what the CLI adds after the work, such as an
        HTML report it could not write)."""
        return dataclasses.replace(self, warnings=[*self.warnings, message],
                                   warning_count=self.warning_count + 1)

    def total(self, outcome: str) -> int:
        """Objects with ``outcome`` over every dataset."""
        return sum(ds.counts[outcome] for ds in self.datasets.values())

    def stop_lines(self) -> list[Problem]:
        """One problem per stopped dataset, with what was left undone."""
        left = {name: ds.counts["not_attempted"] for name, ds in self.datasets.items()}
        return [Problem(name, "", "stopped",
                        f"{reason}; {left.get(name, 0):,} objects not attempted")
                for name, reason in self.stopped.items()]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``--json`` prints (docs/API.md lists its keys)."""
        return {
            "command": self.command,
            "manifest": self.manifest,
            "run_id": self.run_id,
            "engine": self.engine,
            "started": iso_time(self.started),
            "ended": iso_time(self.ended) if self.ended else None,
            "seconds": round(self.seconds, 3),
            "datasets": {name: ds.to_dict(self.outcomes) for name, ds in self.datasets.items()},
            "problems": [p.to_dict() for p in self.stop_lines() + list(self.problems)],
            "problem_count": self.problem_count + len(self.stopped),
            **({"interrupted": self.interrupted} if self.interrupted else {}),
            **({"dashboard": self.dashboard} if self.dashboard else {}),
            **({"refused": list(self.refused)} if self.refused else {}),
            **({"policy_warnings": list(self.policy_warnings)} if self.policy_warnings else {}),
            **({"warnings": list(self.warnings), "warning_count": self.warning_count}
               if self.warning_count else {}),
            "exit_code": self.exit_code,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False, ensure_ascii=False)

    def render(self, out: TextIO) -> None:
        """A human summary: one table row per dataset, then every problem."""
        from rich.console import Console
        from rich.table import Table

        console = Console(file=out, highlight=False, soft_wrap=True)
        table = Table(title=f"datamove {self.command}: {self.manifest}", title_justify="left")
        table.add_column("dataset", no_wrap=True)
        for key in self.outcomes:
            table.add_column(key, justify="right")
        table.add_column("bytes", justify="right")
        moved = MOVED[self.command]
        for name, ds in self.datasets.items():
            table.add_row(name, *(f"{ds.counts[k]:,}" for k in self.outcomes),
                          human_bytes(ds.bytes[moved]))
        console.print(table)
        for line in self._table_lines():
            console.print(line, markup=False, highlight=False)
        for warning in self.policy_warnings:
            console.print(f"[bold]policy warning[/bold] {warning}", markup=True,
                          highlight=False)
        for warning in self.warnings[:20]:
            console.print(f"[bold]warning[/bold] {warning}", markup=True, highlight=False)
        if self.warning_count > 20:
            console.print(f"… and {self.warning_count - 20:,} more warnings (--json lists "
                          "them)")
        for reason in self.refused:
            console.print(f"[bold]refused[/bold] {reason}", markup=True, highlight=False)
        for problem in self.stop_lines():
            console.print(f"[bold]stopped[/bold] dataset {problem.dataset}: {problem.error}",
                          markup=True, highlight=False)
        for problem in self.problems:
            console.print(f"[bold]{problem.status}[/bold] {problem.dataset}/{problem.key}: "
                          f"{problem.error}", markup=True, highlight=False)
        if self.problem_count > len(self.problems):
            console.print(f"… and {self.problem_count - len(self.problems):,} more")
        if self.more is not None:
            self.more(console)
        console.print(self._interruption() + self._verdict() +
                      f" in {self.seconds:.1f}s (exit {self.exit_code})")

    def _interruption(self) -> str:
        """What a signal left undone, before the verdict of what was done."""
        if not self.interrupted:
            return ""
        left = self.total("not_attempted")
        return (f"interrupted by {self.interrupted}: {left:,} planned objects not attempted, "
                "a rerun goes on from here; ")

    def _table_lines(self) -> list[str]:
        """What the table above cannot show: skipped links, and for ``format: delta``
        datasets, rows."""
        lines = []
        for name, ds in self.datasets.items():
            c = ds.counts
            if c["deleted"]:
                lines.append(f"dataset {name}: {_many(c['deleted'], 'object')} "
                             f"({human_bytes(ds.bytes['deleted'])}) deleted at the destination, "
                             "only there (sync --delete)")
            if c["links_skipped"]:
                lines.append(f"dataset {name}: {_many(c['links_skipped'], 'symbolic link')} "
                             "skipped (source.links: follow or copy-link copies them)")
            if c["filtered"]:
                lines.append(f"dataset {name}: {_many(c['filtered'], 'object')} "
                             f"({human_bytes(ds.bytes['filtered'])}) filtered out "
                             "(include/exclude, sizes, ages, files_from)")
            if c["not_at_source"]:
                lines.append(f"dataset {name}: {_many(c['not_at_source'], 'key')} in "
                             "files_from not at the source")
            if "partitions_due" in c:
                lines.append(f"table {name}: {_many(c['partitions_due'], 'partition')} "
                             "due to move")
            if "partitions_moved" in c:
                lines.append(f"table {name}: {_many(c['partitions_moved'], 'partition')} "
                             f"({_many(c['rows_moved'], 'row')}) moved to cold tables")
            if "partitions" in c:
                loaded = (f"{_many(c['rows_loaded'], 'row')} loaded in "
                          f"{_many(c['commits'], 'commit')}, " if self.command == "run" else "")
                version = (f" (table version {c['table_version']})"
                           if "table_version" in c else "")
                lines.append(f"table {name}: {loaded}{_many(c['rows_verified'], 'row')} "
                             f"verified in {_many(c['partitions'], 'partition')}{version}")
        return lines

    def _verdict(self) -> str:
        total = Counter[str]()
        for ds in self.datasets.values():
            total.update(ds.counts)
        if self.command == "plan":
            return f"plan: {total['copy']:,} to copy, {total['skip']:,} up to date"
        archived = (f", {total['archived']:,} archived (not read: `datamove drill` reads them "
                    "back)") if total["archived"] else ""
        if self.command == "verify":
            return (f"verify: {total['matched']:,} matched, {total['missing']:,} missing, "
                    f"{total['differs']:,} differ, {total['extra']:,} extra{archived}")
        if self.command == "rotate":
            return (f"rotate: {total['rotated']:,} re-wrapped, {total['skipped']:,} already "
                    f"for the new keys, {total['failed']:,} failed")
        if self.command == "archive":
            return (f"archive: {total['moved']:,} moved, {total['in_tier']:,} already in "
                    f"their tier, {total['not_due']:,} not due, {total['failed']:,} failed")
        if self.command == "archive-plan":
            return (f"archive --dry-run: {total['due']:,} due to move, {total['in_tier']:,} "
                    f"already in their tier, {total['not_due']:,} not due")
        if self.command == "restore":
            return f"restore: {total['restored']:,} restored, {total['failed']:,} failed"
        if total["copied"] == 0 and total["failed"] == 0 and total["repaired"] == 0:
            # a table's `verified` counts partitions, not objects
            current = total["skipped"] + sum(ds.counts["verified"] for ds in self.datasets.values()
                                             if "partitions" not in ds.counts)
            return f"nothing to copy: {current:,} objects up to date{archived}"
        return (f"copied {total['copied']:,}, skipped {total['skipped']:,}, "
                f"repaired {total['repaired']:,}, failed {total['failed']:,}")


@dataclass(frozen=True)
class RunReport(CommandReport[RunDataset]):
    """What :func:`datamove.api.run` returns. Exit 1 when any object failed or a
    dataset stopped (its circuit breaker tripped)."""

    @property
    def failed(self) -> int:
        return self.total("failed")


class Costed(Protocol):
    """A dataset's cost estimate (cost/estimate.py ``DatasetCost``, docs/COST.md)."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PlanReport(CommandReport[PlanDataset]):
    """What :func:`datamove.api.plan` returns: counts and cost estimates; nothing was
    copied."""

    costs: Mapping[str, Costed] = field(default_factory=dict)  # dataset -> its estimate

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for name, cost in self.costs.items():
            out["datasets"][name]["cost"] = cost.to_dict()
        return out


@dataclass(frozen=True)
class VerifyReport(CommandReport[VerifyDataset]):
    """What :func:`datamove.api.verify` returns. Exit 1 when anything is missing,
    differs, is extra, or could not be compared."""


REPORT_TYPES: dict[str, tuple[type[CommandReport[Any]], type[DatasetOutcome]]] = {
    "run": (RunReport, RunDataset),
    "plan": (PlanReport, PlanDataset),
    "verify": (VerifyReport, VerifyDataset),
}
"""The typed report and dataset classes per command; others use the generic ones."""


def _many(count: int, noun: str) -> str:
    """``1 commit``, ``2 commits``, ``1,000 rows``."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
