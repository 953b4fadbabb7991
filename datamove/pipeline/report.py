"""Run reports: counts per dataset, failures, exit code; as JSON or a human table.

One report shape serves ``run``, ``plan`` and ``verify``: per dataset, a count and
a byte total per outcome (``copied``, ``skipped``, ``failed``, … for runs; ``copy``,
``skip``, … for plans; ``matched``, ``missing``, ``differs``, ``extra`` for
verification). The JSON form is what ``--json`` prints as its last line.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from datamove.errors import EXIT_BAD_INPUT, EXIT_OBJECTS_FAILED, EXIT_OK, EXIT_POLICY_REFUSED
from datamove.pipeline.interrupt import exit_code as signal_exit_code
from datamove.pipeline.throughput import Throughput
from datamove.pipeline.transfer import ObjectResult

MAX_LISTED_PROBLEMS = 10_000
"""Problems kept for the final listing; beyond this only the count grows."""

RUN_KEYS = ("copied", "skipped", "verified", "repaired", "failed")
PLAN_KEYS = ("copy", "skip", "verify", "extra")
VERIFY_KEYS = ("matched", "missing", "differs", "extra", "failed")
ROTATE_KEYS = ("rotated", "skipped", "failed")
ARCHIVE_KEYS = ("moved", "in_tier", "not_due", "failed")
ARCHIVE_PLAN_KEYS = ("due", "in_tier", "not_due")
RESTORE_KEYS = ("restored", "failed")
_KEYS = {"run": RUN_KEYS, "plan": PLAN_KEYS, "verify": VERIFY_KEYS, "rotate": ROTATE_KEYS,
         "archive": ARCHIVE_KEYS, "archive-plan": ARCHIVE_PLAN_KEYS, "restore": RESTORE_KEYS}
_MOVED = {"run": "copied", "plan": "copy", "verify": "matched", "rotate": "rotated",
          "archive": "moved", "archive-plan": "due", "restore": "restored"}
_PROBLEM_STATUSES = {"failed", "missing", "differs", "extra", "repaired"}
_NOT_DONE = _PROBLEM_STATUSES - {"repaired"}  # objects whose bytes the chart does not count


@dataclass
class DatasetReport:
    name: str
    source: str
    destination: str
    counts: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: str, size: int) -> None:
        self.counts[outcome] += 1
        self.bytes[outcome] += size

    def to_dict(self, keys: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "destination": self.destination}
        for key in (*keys, *sorted(set(self.counts) - set(keys))):
            out[key] = self.counts[key]
        for key in (*keys, *sorted(set(self.bytes) - set(keys))):
            out[f"bytes_{key}"] = self.bytes[key]
        return out


@dataclass
class Problem:
    dataset: str
    key: str
    status: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"dataset": self.dataset, "key": self.key, "status": self.status,
                "error": self.error}


@dataclass
class Report:
    command: str  # run | plan | verify
    manifest: str
    run_id: str
    engine: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    datasets: dict[str, DatasetReport] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    key_failures: int = 0  # objects no key we hold could open: bad input, exit 2
    policy_warnings: list[str] = field(default_factory=list)  # warn-severity violations
    warnings: list[str] = field(default_factory=list)  # e.g. lifecycle charges; kept short
    warning_count: int = 0
    interrupted: str | None = None  # the signal that stopped the run (SIGINT, SIGTERM)
    stopped: dict[str, str] = field(default_factory=dict)  # dataset -> why (circuit breaker)
    dashboard: str | None = None  # the Dask dashboard's address (bokeh installed)
    refused: list[str] = field(default_factory=list)  # e.g. sync --max-delete: exit 3
    # bytes and objects over time, in bounded memory (throughput.py; the HTML report's chart)
    throughput: Throughput = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.throughput = Throughput(self.started)

    def dataset(self, name: str, source: str = "", destination: str = "") -> DatasetReport:
        if name not in self.datasets:
            self.datasets[name] = DatasetReport(name, source, destination)
        return self.datasets[name]

    def warn(self, message: str) -> None:
        """A warning shown with the report (the first MAX_LISTED_PROBLEMS; all counted)."""
        self.warning_count += 1
        if len(self.warnings) < MAX_LISTED_PROBLEMS:
            self.warnings.append(message)

    def record(self, result: ObjectResult) -> None:
        ds = self.dataset(result.dataset)
        ds.add(result.status, result.size)
        ds.bytes["sent"] += result.bytes_written
        self.throughput.add(0 if result.status in _NOT_DONE else result.size, result.seconds,
                            dataset=result.dataset)
        if result.error_kind == "key":
            self.key_failures += 1
        if result.status in _PROBLEM_STATUSES:
            self.problem_count += 1
            if len(self.problems) < MAX_LISTED_PROBLEMS:
                self.problems.append(Problem(result.dataset, result.key, result.status,
                                             result.error or result.status))

    def not_attempted(self, dataset: str, count: int) -> None:
        """Objects planned but never started (or let go) because work stopped early."""
        if count:
            self.dataset(dataset).counts["not_attempted"] += count

    def stop(self, dataset: str, reason: str) -> None:
        """A dataset stopped before its end (its circuit breaker tripped): exit 1."""
        self.stopped.setdefault(dataset, reason)

    def refuse(self, reason: str) -> None:
        """Part of the work was refused by a guard (``--max-delete``): exit 3."""
        self.refused.append(reason)

    def stop_lines(self) -> list[Problem]:
        """One problem per stopped dataset, with what was left undone (counted to the end)."""
        return [Problem(name, "", "stopped",
                        f"{reason}; {self.dataset(name).counts['not_attempted']:,} objects not "
                        "attempted")
                for name, reason in self.stopped.items()]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return signal_exit_code(self.interrupted)
        if self.key_failures:
            return EXIT_BAD_INPUT
        if self.refused:
            return EXIT_POLICY_REFUSED
        bad = ("failed",) if self.command == "run" else ("failed", "missing", "differs", "extra")
        if self.command in ("plan", "archive-plan"):
            bad = ()
        failed = any(ds.counts[k] for ds in self.datasets.values() for k in bad)
        return EXIT_OBJECTS_FAILED if failed or self.stopped else EXIT_OK

    def finish(self) -> Report:
        self.ended = time.time()
        return self

    def to_dict(self) -> dict[str, Any]:
        keys = _KEYS[self.command]
        return {
            "command": self.command,
            "manifest": self.manifest,
            "run_id": self.run_id,
            "engine": self.engine,
            "started": iso_time(self.started),
            "ended": iso_time(self.ended) if self.ended else None,
            "seconds": round((self.ended or time.time()) - self.started, 3),
            "datasets": {name: ds.to_dict(keys) for name, ds in self.datasets.items()},
            "problems": [p.to_dict() for p in self.stop_lines() + self.problems],
            "problem_count": self.problem_count + len(self.stopped),
            **({"interrupted": self.interrupted} if self.interrupted else {}),
            **({"dashboard": self.dashboard} if self.dashboard else {}),
            **({"refused": self.refused} if self.refused else {}),
            **({"policy_warnings": self.policy_warnings} if self.policy_warnings else {}),
            **({"warnings": self.warnings, "warning_count": self.warning_count}
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
        keys = _KEYS[self.command]
        table = Table(title=f"datamove {self.command}: {self.manifest}", title_justify="left")
        table.add_column("dataset", no_wrap=True)
        for key in keys:
            table.add_column(key, justify="right")
        table.add_column("bytes", justify="right")
        moved = _MOVED[self.command]
        for name, ds in self.datasets.items():
            table.add_row(name, *(f"{ds.counts[k]:,}" for k in keys),
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
        self.render_more(console)
        seconds = (self.ended or time.time()) - self.started
        console.print(self._interruption() + self._verdict() +
                      f" in {seconds:.1f}s (exit {self.exit_code})")

    def render_more(self, console: Any) -> None:
        """What a command's own report adds before the verdict (plan: costs)."""

    def _interruption(self) -> str:
        """What a signal left undone, before the verdict of what was done."""
        if not self.interrupted:
            return ""
        left = sum(ds.counts["not_attempted"] for ds in self.datasets.values())
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
