"""``--metrics-file``: a Prometheus text file for node_exporter's textfile collector.

Written atomically (textfile.write_atomic: a temporary file in the same directory,
flushed, then renamed), so a scrape never reads half a file:
while the run goes on, from the progress snapshots (every stats interval, or
every 15 s), and once more at the end from the report, whose counts are the
run's own (the same numbers ``--json`` prints). Every family is a gauge of *this*
run (node_exporter serves the file until the next run replaces it); alert on
``datamove_run_exit_code`` and on the age of ``datamove_run_end_timestamp_seconds``.

Labels: ``command`` (run, verify, archive, ...) and ``manifest`` (the manifest
path as given on the command line) on every family, so several manifests can
write files into one textfile directory without colliding; ``dataset`` and
``outcome`` where they apply. docs/OPERATIONS.md lists the families.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datamove.pipeline.progress import Snapshot

PREFIX = "datamove_"
_DESCRIBED = ("source", "destination")


@dataclass
class RunFacts:
    """What one write of the file says, whichever side it comes from."""

    command: str
    manifest: str
    started: float
    run_id: str = ""
    ended: float | None = None
    exit_code: int | None = None
    planned_objects: int = 0
    planned_bytes: int = 0
    rate: float = 0.0
    # dataset -> outcome -> (objects, bytes)
    outcomes: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # dataset -> duration
    done_bytes: dict[str, int] = field(default_factory=dict)  # dataset -> bytes handled


def facts_of_snapshot(command: str, manifest: str, s: Snapshot) -> RunFacts:
    """The file while the run goes on: the progress accountant's counts."""
    facts = RunFacts(command, manifest, started=s.at - s.elapsed,
                     run_id=s.run.get("run_id", ""), planned_objects=s.objects_total,
                     planned_bytes=s.bytes_total, rate=s.rate)
    _add_progress(facts, s)
    for ds in s.datasets:
        outcomes = {o: (n, ds.outcome_bytes[o]) for o, n in ds.outcomes.items()}
        if ds.skipped:
            outcomes["skipped"] = (ds.skipped, ds.skipped_bytes)
        facts.outcomes[ds.name] = outcomes
    return facts


def facts_of_report(command: str, manifest: str, report: Mapping[str, Any],
                    s: Snapshot | None) -> RunFacts:
    """The file at the end: the report's counts (``Report.to_dict`` or an error's
    ``{"error", "exit_code"}``), durations and rate from the last snapshot."""
    started = s.at - s.elapsed if s is not None else time.time()
    facts = RunFacts(command, manifest, started=started, run_id=str(report.get("run_id", "")),
                     ended=time.time(), exit_code=int(report.get("exit_code", 0)))
    if s is not None:
        facts.planned_objects, facts.planned_bytes = s.objects_total, s.bytes_total
        _add_progress(facts, s)
    datasets = report.get("datasets")
    for name, counts in (datasets.items() if isinstance(datasets, Mapping) else ()):
        facts.outcomes[name] = {
            key: (value, int(counts.get(f"bytes_{key}", 0))) for key, value in counts.items()
            if key not in _DESCRIBED and not key.startswith("bytes_") and isinstance(value, int)}
    return facts


def _add_progress(facts: RunFacts, s: Snapshot) -> None:
    for ds in s.datasets:
        facts.seconds[ds.name] = ds.seconds
        facts.done_bytes[ds.name] = ds.done_bytes


def write(path: str, facts: RunFacts) -> None:
    """Replace ``path`` atomically with the Prometheus text of ``facts`` (BadInput,
    naming the file, if it cannot be written)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    from datamove.textfile import write_atomic

    registry = CollectorRegistry()
    run = {"command": facts.command, "manifest": facts.manifest}
    names = list(run)

    def gauge(name: str, doc: str, *labels: str) -> Any:
        return Gauge(PREFIX + name, doc, [*names, *labels], registry=registry)

    gauge("run_info", "The run this file describes (value 1).", "run_id") \
        .labels(**run, run_id=facts.run_id).set(1)
    gauge("run_start_timestamp_seconds", "When the run started (Unix time).") \
        .labels(**run).set(facts.started)
    gauge("run_in_progress", "1 while the run goes on, 0 once it ended.") \
        .labels(**run).set(0 if facts.ended else 1)
    ended = facts.ended or time.time()
    gauge("run_duration_seconds", "Seconds since the run started (to its end, once ended).") \
        .labels(**run).set(max(0.0, ended - facts.started))
    if facts.ended is not None:
        gauge("run_end_timestamp_seconds", "When the run ended (Unix time).") \
            .labels(**run).set(facts.ended)
        gauge("run_exit_code", "The run's exit code (0 ok, 1 objects failed, 2 bad input, "
                               "3 refused by policy, 130/143 interrupted).") \
            .labels(**run).set(facts.exit_code or 0)
    gauge("run_planned_objects", "Objects planned for a worker so far.").labels(**run) \
        .set(facts.planned_objects)
    gauge("run_planned_bytes", "Bytes planned for a worker so far.").labels(**run) \
        .set(facts.planned_bytes)
    gauge("run_rate_bytes_per_second", "Moving-average transfer rate (last interval).") \
        .labels(**run).set(facts.rate)
    objects = gauge("objects", "Objects of this run by dataset and outcome.", "dataset",
                    "outcome")
    sizes = gauge("bytes", "Bytes of those objects by dataset and outcome.", "dataset",
                  "outcome")
    failures = gauge("failures", "Objects that failed, by dataset.", "dataset")
    duration = gauge("duration_seconds", "Seconds a dataset was worked on (first object "
                                         "planned to last result).", "dataset")
    throughput = gauge("throughput_bytes_per_second", "Bytes of finished objects per "
                                                      "second of the dataset's duration.",
                       "dataset")
    for name in sorted(set(facts.outcomes) | set(facts.seconds)):
        outcomes = facts.outcomes.get(name, {})
        for outcome, (count, size) in sorted(outcomes.items()):
            objects.labels(**run, dataset=name, outcome=outcome).set(count)
            sizes.labels(**run, dataset=name, outcome=outcome).set(size)
        failures.labels(**run, dataset=name).set(outcomes.get("failed", (0, 0))[0])
        seconds = facts.seconds.get(name, 0.0)
        duration.labels(**run, dataset=name).set(seconds)
        done = facts.done_bytes.get(name, 0)
        throughput.labels(**run, dataset=name).set(done / seconds if seconds > 0 else 0.0)
    write_atomic(path, generate_latest(registry).decode("utf-8"), what="metrics file")


def observer(path: str, command: str, manifest: str) -> Callable[[Snapshot], None]:
    """A progress observer that rewrites the file from each snapshot."""

    def write_metrics_file(s: Snapshot) -> None:
        write(path, facts_of_snapshot(command, manifest, s))

    return write_metrics_file
