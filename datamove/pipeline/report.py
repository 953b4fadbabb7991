"""Run reports: counts per dataset, failures, exit code; as JSON or a human table.

One report shape serves ``run``, ``plan`` and ``verify``: per dataset, a count and
a byte total per outcome (``copied``, ``skipped``, ``failed``, … for runs; ``copy``,
``skip``, … for plans; ``matched``, ``missing``, ``differs``, ``extra`` for
verification). ``Report`` is the driver's mutable accountant while a command
runs; ``snapshot()`` freezes it into the typed report (pipeline/results.py) that
the API returns and that alone renders the JSON ``--json`` prints and the table.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TextIO

from datamove.errors import EXIT_BAD_INPUT, EXIT_OBJECTS_FAILED, EXIT_OK, EXIT_POLICY_REFUSED
from datamove.pipeline.interrupt import exit_code as signal_exit_code
from datamove.pipeline.results import (
    REPORT_TYPES,
    CommandReport,
    DatasetOutcome,
    Problem,
    human_bytes,
    iso_time,
)
from datamove.pipeline.throughput import Throughput
from datamove.pipeline.transfer import ObjectResult

__all__ = ["MAX_LISTED_PROBLEMS", "DatasetReport", "Problem", "Report", "human_bytes",
           "iso_time"]

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

    def outcome(self, kind: type[DatasetOutcome] = DatasetOutcome) -> DatasetOutcome:
        """The counts frozen (missing outcomes still read 0)."""
        return kind(self.name, self.source, self.destination,
                    MappingProxyType(Counter(self.counts)), MappingProxyType(Counter(self.bytes)))


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
        return self.snapshot().stop_lines()

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

    def snapshot(self) -> CommandReport[Any]:
        """The report as it stands, frozen and typed (RunReport, PlanReport,
        VerifyReport; CommandReport for other commands)."""
        kind, dataset_kind = REPORT_TYPES.get(self.command, (CommandReport, DatasetOutcome))
        return kind(
            command=self.command, manifest=self.manifest, run_id=self.run_id,
            engine=self.engine, started=self.started, ended=self.ended,
            outcomes=_KEYS[self.command],
            datasets=MappingProxyType({name: ds.outcome(dataset_kind)
                                       for name, ds in self.datasets.items()}),
            problems=list(self.problems), problem_count=self.problem_count,
            policy_warnings=list(self.policy_warnings), warnings=list(self.warnings),
            warning_count=self.warning_count, interrupted=self.interrupted,
            stopped=MappingProxyType(dict(self.stopped)), dashboard=self.dashboard,
            refused=list(self.refused),
            exit_code=self.exit_code, throughput=self.throughput, **self.snapshot_fields())

    def snapshot_fields(self) -> dict[str, Any]:
        """What a command's own report adds to its snapshot (plan: ``costs``, and
        ``more``, the table it prints before the verdict)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        return self.snapshot().to_dict()

    def to_json(self) -> str:
        return self.snapshot().to_json()

    def render(self, out: TextIO) -> None:
        """A human summary (pipeline/results.py): one table row per dataset, then every
        problem."""
        self.snapshot().render(out)
