"""The log lines an operator reads: one per object (``-v``) and a stats line every N s.

Both are emitted by the driver as results stream in (progress.py calls these),
so they are the same for worker threads, worker processes and a remote
cluster: nothing is logged from a worker. Each record carries its values as
``record.fields`` with stable names (docs/OPERATIONS.md), which the JSON log
format (cli/logs.py) writes as top-level keys; the text format writes the
message. Values are scrubbed there (redact.py): a key or an error that quotes a
credential prints ``<redacted>``.

Loggers: ``datamove.objects`` (INFO per object, WARNING for a failed one) and
``datamove.stats`` (INFO; the CLI enables it when stats lines are on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datamove.pipeline.progress import Snapshot
    from datamove.pipeline.transfer import ObjectResult

DEFAULT_STATS_SECONDS = 30.0
"""Seconds between stats lines when stderr is not a terminal (``--stats``)."""

objects_log = logging.getLogger("datamove.objects")
stats_log = logging.getLogger("datamove.stats")
_log = logging.getLogger(__name__)


def object_done(result: ObjectResult) -> None:
    """One line for a worker's result: what happened to which key, bytes, duration."""
    failed = result.status == "failed"
    level = logging.WARNING if failed else logging.INFO
    if not objects_log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "event": "object", "dataset": result.dataset, "key": result.key,
        "status": result.status, "action": result.action, "bytes": result.size,
        "seconds": round(result.seconds, 6), "attempts": result.attempts}
    if result.error:
        fields["error"] = result.error
    tail = f" after {result.attempts} attempts" if result.attempts > 1 else ""
    error = f": {result.error}" if result.error else ""
    objects_log.log(level, "%s: %s %s (%s B, %.3f s%s)%s", result.dataset, result.status,
                    result.key, f"{result.size:,}", result.seconds, tail, error,
                    extra={"fields": fields})


def skipped(dataset: str, key: str, size: int) -> None:
    """One line for an object the driver found up to date (no worker touched it)."""
    if not objects_log.isEnabledFor(logging.INFO):
        return
    fields = {"event": "object", "dataset": dataset, "key": key, "status": "skipped",
              "action": "skip", "bytes": size, "seconds": 0.0, "attempts": 0}
    objects_log.info("%s: skipped %s (%s B, up to date)", dataset, key, f"{size:,}",
                     extra={"fields": fields})


def stats_line(snapshot: Snapshot) -> None:
    """The stats line: counts, bytes, the moving-average rate, failures, elapsed, ETA."""
    if not stats_log.isEnabledFor(logging.INFO):
        return
    s = snapshot
    fields = {"event": "stats", "objects_done": s.objects_done,
              "objects_total": s.objects_total, "bytes_done": s.bytes_done,
              "bytes_total": s.bytes_total, "rate_bytes_per_second": round(s.rate, 1),
              "objects_per_second": round(s.object_rate, 2), "failed": s.failed,
              "skipped": s.skipped, "elapsed_seconds": round(s.elapsed, 3),
              "eta_seconds": None if s.eta is None else round(s.eta, 1),
              "listing": s.listing}
    stats_log.info("%s", stats_text(s), extra={"fields": fields})


def stats_text(s: Snapshot) -> str:
    """``1,234/5,000 objects, 1.2 GiB/4.0 GiB, 45.3 MiB/s, 0 failed, 12 skipped,
    elapsed 1m02s, ETA 1m24s`` (``listing, 5,000 found so far`` instead of the ETA)."""
    from datamove.pipeline.report import human_bytes

    if s.listing:
        tail = f"listing, {s.objects_total:,} found so far"
    elif s.eta is None:
        tail = "ETA -"
    else:
        tail = f"ETA {duration(s.eta)}"
    return (f"{s.objects_done:,}/{s.objects_total:,} objects, "
            f"{human_bytes(s.bytes_done)}/{human_bytes(s.bytes_total)}, "
            f"{human_bytes(s.rate)}/s, {s.failed:,} failed, {s.skipped:,} skipped, "
            f"elapsed {duration(s.elapsed)}, {tail}")


def duration(seconds: float) -> str:
    """``4s``, ``1m02s``, ``3h05m``: short and sortable by eye."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def observer_failed(observer: Callable[..., Any], exc: Exception) -> None:
    """A stats observer (the metrics file) failed: say so, keep running."""
    from datamove.stores.core import describe

    name = getattr(observer, "__qualname__", type(observer).__name__)
    _log.warning("%s failed: %s", name, describe(exc))
