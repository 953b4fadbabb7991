"""``datamove drill``: prove that archived data can be read back, and how fast.

A drill picks recorded objects deterministically, restores each into scratch
space through the same pipeline as ``datamove restore`` (archive restore and
polling, decryption, sha256 against the ledger, atomic write), deletes it once
it verified, and writes evidence: per object its tier, bytes, time to first
byte, total time and result; in total the coverage, the throughput and an
estimate of how long recovering the whole dataset would take. The evidence is
a JSON and a Markdown report and a ``drill.completed`` audit event.

Sampling is a pure function of ``(seed, dataset, key)``: every object gets a
score and a bucket from its sha256. ``--sample P`` takes the objects scoring
under P %, ``--count N`` the N lowest scores (a bounded heap), and
``--rotate n/t`` only bucket n of t, so drills ``1/t`` … ``t/t`` with one seed
together cover every object exactly once (a quarterly rotation with ``4``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datamove.commands.restore import (
    Restored,
    Waiting,
    recorded_rows,
    require_identities,
    run_restores,
)
from datamove.errors import BadInput
from datamove.ledger.tables import LedgerRow
from datamove.manifest.model import Manifest
from datamove.pipeline.jobs import jobs_of
from datamove.pipeline.progress import Progress
from datamove.pipeline.report import human_bytes, iso_time
from datamove.pipeline.session import RunSession
from datamove.pipeline.throughput import Throughput
from datamove.stores.core import Location
from datamove.textfile import write_atomic

MAX_FAILURES_IN_EVENT = 100


@dataclass(frozen=True)
class Selection:
    """Which objects a drill reads back."""

    sample: float | None = None  # percent, 0 < p <= 100
    count: int | None = None
    rotate: tuple[int, int] | None = None  # (n, t): bucket n of t, 1-based
    seed: str = ""

    def __post_init__(self) -> None:
        if self.sample is not None and self.count is not None:
            raise BadInput("give --sample or --count, not both")
        if self.sample is not None and not 0 < self.sample <= 100:
            raise BadInput(f"--sample {self.sample}: a percentage above 0 and at most 100")
        if self.count is not None and self.count < 1:
            raise BadInput(f"--count {self.count}: at least 1")
        if self.rotate is not None and not 1 <= self.rotate[0] <= self.rotate[1]:
            raise BadInput(f"--rotate {self.rotate[0]}/{self.rotate[1]}: n/t with 1 <= n <= t")

    def _digest(self, dataset: str, key: str) -> bytes:
        return hashlib.sha256(f"{self.seed}\0{dataset}\0{key}".encode(
            "utf-8", "surrogateescape")).digest()

    def score(self, dataset: str, key: str) -> float:
        """Where an object falls in [0, 1): the sample takes the lowest scores."""
        return int.from_bytes(self._digest(dataset, key)[:8], "big") / 2**64

    def bucket(self, dataset: str, key: str, buckets: int) -> int:
        """The object's rotation bucket, 1 … ``buckets``."""
        return int.from_bytes(self._digest(dataset, key)[8:16], "big") % buckets + 1

    def pick(self, dataset: str, rows: Iterator[LedgerRow], totals: DatasetTotals
             ) -> list[LedgerRow] | Iterator[LedgerRow]:
        """The chosen rows, counting every row into ``totals`` on the way."""
        def eligible() -> Iterator[LedgerRow]:
            for row in rows:
                totals.objects += 1
                totals.bytes += row.stored_size
                if self.rotate and self.bucket(dataset, row.key, self.rotate[1]) != self.rotate[0]:
                    continue
                if self.sample is not None and self.score(dataset, row.key) * 100 >= self.sample:
                    continue
                yield row

        if self.count is None:
            return eligible()
        chosen = heapq.nsmallest(self.count, eligible(),
                                 key=lambda row: self.score(dataset, row.key))
        return sorted(chosen, key=lambda row: row.key.encode("utf-8", "surrogateescape"))


@dataclass
class DatasetTotals:
    objects: int = 0  # recorded objects in the dataset
    bytes: int = 0
    drilled: int = 0
    drilled_bytes: int = 0
    failed: int = 0
    seconds: float = 0.0  # wall time of this dataset's drill
    longest_wait: float = 0.0  # archive restore


@dataclass
class DrillReport:
    """The evidence: per object and in total; ``exit_code`` 1 if anything failed."""

    manifest: str
    run_id: str
    selection: Selection
    started: float = field(default_factory=time.time)
    ended: float | None = None
    objects: list[Restored] = field(default_factory=list)
    datasets: dict[str, DatasetTotals] = field(default_factory=dict)
    # bytes and objects read back over time (the HTML report's chart), in bounded memory
    throughput: Throughput = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.throughput = Throughput(self.started)

    @property
    def failures(self) -> list[Restored]:
        return [r for r in self.objects if not r.ok]

    @property
    def exit_code(self) -> int:
        if any(r.wrong_key for r in self.objects):
            return 2  # no identity we hold opens them: bad input, as for run and verify
        return 1 if self.failures else 0

    def totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, t in self.datasets.items():
            # Reading speed: the drill's wall time without its longest archive-restore
            # wait (restores of a batch are requested together and overlap).
            reading = t.seconds - t.longest_wait
            rate = t.drilled_bytes / reading if reading > 0 and t.drilled_bytes else None
            out[name] = {
                "objects": t.objects, "bytes": t.bytes, "drilled": t.drilled,
                "drilled_bytes": t.drilled_bytes, "failed": t.failed,
                "coverage_objects": round(t.drilled / t.objects, 6) if t.objects else None,
                "coverage_bytes": round(t.drilled_bytes / t.bytes, 6) if t.bytes else None,
                "seconds": round(t.seconds, 3),
                "throughput_bytes_per_second": round(rate) if rate else None,
                "longest_restore_wait_seconds": round(t.longest_wait, 3),
                # Recovering everything: the longest archive wait, then all bytes at the
                # drill's rate (one machine, this engine's parallelism).
                "estimated_full_recovery_seconds":
                    round(t.longest_wait + t.bytes / rate, 1) if rate else None,
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "drill", "manifest": self.manifest, "run_id": self.run_id,
            "selection": {**asdict(self.selection),
                          "rotate": "/".join(map(str, self.selection.rotate))
                          if self.selection.rotate else None},
            "started": iso_time(self.started),
            "ended": iso_time(self.ended) if self.ended else None,
            "totals": self.totals(),
            "objects": [{k: v for k, v in asdict(r).items() if k != "restored_url"}
                        for r in self.objects],
            "failed": len(self.failures), "exit_code": self.exit_code,
        }

    def to_markdown(self) -> str:
        lines = [f"# Restore drill: {self.manifest}", "",
                 f"Run `{self.run_id}`, {iso_time(self.started)} to "
                 f"{iso_time(self.ended or time.time())}. Result: **"
                 f"{'FAILED' if self.failures else 'passed'}** ({len(self.objects)} objects "
                 f"read back, {len(self.failures)} failed).", "",
                 "| dataset | objects | drilled | coverage | failed | throughput | "
                 "est. full recovery |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, t in self.totals().items():
            rate = t["throughput_bytes_per_second"]
            eta = t["estimated_full_recovery_seconds"]
            coverage = t["coverage_objects"]
            lines.append(f"| {name} | {t['objects']:,} | {t['drilled']:,} | "
                         f"{coverage * 100 if coverage is not None else 0:.1f} % | "
                         f"{t['failed']} | {human_bytes(rate) + '/s' if rate else '–'} | "
                         f"{f'{eta:,.0f} s' if eta is not None else '–'} |")
        lines += ["", "| dataset | key | tier | bytes | first byte | total | result |",
                  "|---|---|---|---:|---:|---:|---|"]
        for r in self.objects:
            first = f"{r.first_byte_seconds:.3f} s" if r.first_byte_seconds is not None else "–"
            result = "ok" if r.ok else f"FAILED: {r.error}"
            lines.append(f"| {r.dataset} | `{r.key}` | {r.tier} | {r.stored_size:,} | {first} | "
                         f"{r.seconds:.3f} s | {result.replace('|', '/')} |")
        return "\n".join(lines) + "\n"


def drill(manifest: Manifest, selection: Selection, *, datasets: list[str] | None = None,
          identity: str | None = None, scratch: str | None = None,
          waiting: Waiting | None = None, scheduler: str | None = None,
          progress: Progress | None = None) -> DrillReport:
    """Read back a deterministic sample of each dataset's recorded objects."""
    jobs = [j for j in jobs_of(manifest, datasets, identity)
            if manifest.dataset(j.name).destination.format != "delta"]
    if not jobs:
        raise BadInput("no dataset to drill: Delta-table datasets are read with time travel")
    require_identities(jobs)
    own_scratch = scratch is None
    root = scratch or tempfile.mkdtemp(prefix="datamove-drill-")
    run_id: str | None = None
    try:
        with RunSession(manifest, "drill", scheduler=scheduler, progress=progress,
                        lock="drill", records=False, announces=False) as session:
            run_id = session.run_id
            report = DrillReport(manifest.name, run_id, selection)
            session.start([job.name for job in jobs])  # no run.start: drill.completed says it
            audit = session.audit
            assert audit is not None
            for job in jobs:
                totals = report.datasets.setdefault(job.name, DatasetTotals())
                rows = selection.pick(job.name, recorded_rows(manifest, job), totals)
                to = Location.of(f"{root.rstrip('/')}/{run_id}/{job.name}/")
                started = time.monotonic()
                for restored in run_restores(session, job, rows, to, waiting or Waiting(),
                                             keep=False):
                    report.objects.append(restored)
                    report.throughput.add(restored.stored_size if restored.ok else 0,
                                          restored.seconds, dataset=job.name)
                    totals.drilled += 1
                    totals.drilled_bytes += restored.stored_size
                    totals.failed += not restored.ok
                    totals.longest_wait = max(totals.longest_wait, restored.waited_seconds)
                totals.seconds = time.monotonic() - started
            report.ended = time.time()
            failures = report.failures
            audit.append("drill.completed", selection=_selection_for_audit(selection),
                         totals=_for_audit(report.totals()), failed=len(failures),
                         failures=[{"dataset": f.dataset, "key": f.key, "tier": f.tier,
                                    "error": f.error or ""}
                                   for f in failures[:MAX_FAILURES_IN_EVENT]])
            session.finish()  # checkpoints the audit log
    finally:
        if own_scratch:
            shutil.rmtree(root, ignore_errors=True)
        elif run_id is not None:
            _remove_run_dir(root, run_id)
    return report


def write_report(report: DrillReport, path: str) -> list[str]:
    """``--report FILE``: .json or .md by suffix; any other name gets both."""
    target = Path(path)
    written = []
    suffix = target.suffix.lower()
    outputs = {".json": [target], ".md": [target]}.get(
        suffix, [target.with_name(target.name + ".json"), target.with_name(target.name + ".md")])
    for out in outputs:
        text = json.dumps(report.to_dict(), indent=2) if out.suffix == ".json" \
            else report.to_markdown()
        written.append(write_atomic(out, text, what="report"))
    return written


def parse_rotate(text: str) -> tuple[int, int]:
    try:
        n, t = (int(part) for part in text.split("/"))
    except ValueError:
        raise BadInput(f"--rotate {text!r}: give n/t, e.g. 1/4 (drill 1 of 4)") from None
    return n, t


def _for_audit(totals: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Audit events carry no floats (canonical JSON): seconds become milliseconds and
    shares parts per million, under names that say so (null stays null)."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in totals.items():
        row: dict[str, Any] = {}
        for key, value in values.items():
            if key.startswith("coverage"):
                row[f"{key}_ppm"] = None if value is None else round(value * 1_000_000)
            elif key.endswith("seconds"):
                row[key[:-len("seconds")] + "ms"] = None if value is None else round(value * 1000)
            elif key == "throughput_bytes_per_second":
                row[key] = None if value is None else round(value)
            else:
                row[key] = value
        out[name] = row
    return out


def _selection_for_audit(selection: Selection) -> dict[str, Any]:
    return {"sample_percent": None if selection.sample is None else f"{selection.sample:g}",
            "count": selection.count, "seed": selection.seed,
            "rotate": "/".join(map(str, selection.rotate)) if selection.rotate else None}


def _remove_run_dir(root: str, run_id: str) -> None:
    location = Location.of(f"{root.rstrip('/')}/{run_id}/")
    try:
        if location.fs.exists(location.path("")):
            location.fs.rm(location.path(""), recursive=True)
    except OSError:
        pass  # scratch space we could not tidy is the user's to remove; objects are deleted
