"""Progress accounting (rclone's "accounting"): what is planned, what is done, how fast.

Totals grow while the listing is still being merged, so the ETA covers what is
known so far; the display says "listing" until the plan is complete. The
display goes to stderr and only on a terminal; ``--json`` output stays clean.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from datamove.pipeline.events import (
    DatasetFinished,
    DatasetStarted,
    ListingDone,
    ObjectDone,
    ProgressEvent,
    Totals,
)
from datamove.pipeline.march import PlanItem
from datamove.pipeline.report import human_bytes
from datamove.pipeline.transfer import LIVE_BYTES, ObjectResult


class Progress:
    """Counts objects and bytes; subclasses decide how to show them."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.planned_objects = self.planned_bytes = 0
        self.done_objects = self.done_bytes = 0
        self.failed = 0
        self.listing = True
        # Told every event (events.py) on the driver thread: api.run's on_event.
        self.listeners: list[Callable[[ProgressEvent], None]] = []

    def planned(self, item: PlanItem) -> None:
        self.planned_objects += 1
        self.planned_bytes += item.size

    def done(self, result: ObjectResult) -> None:
        self.done_objects += 1
        self.done_bytes += result.size
        self.failed += result.status == "failed"
        if self.listeners:
            self._tell(ObjectDone.of(result, self.totals()))

    def listing_done(self) -> None:
        self.listing = False
        if self.listeners:
            self._tell(ListingDone(self.totals()))

    @property
    def bytes_so_far(self) -> int:
        """Finished objects plus what in-flight objects have copied in this process."""
        return self.done_bytes + max(0, LIVE_BYTES.value)

    @property
    def rate(self) -> float:
        return self.bytes_so_far / max(1e-9, time.monotonic() - self.started)

    @property
    def eta_seconds(self) -> float | None:
        if self.listing or self.rate <= 0 or time.monotonic() - self.started < 2:
            return None
        return max(0.0, self.planned_bytes - self.bytes_so_far) / self.rate

    # --- listeners (events.py): nothing is counted here that the lines above do not count

    def dataset_started(self, name: str, source: str, destination: str) -> None:
        if self.listeners:
            self._tell(DatasetStarted(name, source, destination, self.totals()))

    def dataset_finished(self, name: str, counts: Mapping[str, int],
                         bytes_: Mapping[str, int], stopped: str | None) -> None:
        if self.listeners:
            self._tell(DatasetFinished(name, MappingProxyType(Counter(counts)),
                                       MappingProxyType(Counter(bytes_)), stopped,
                                       self.totals()))

    def totals(self) -> Totals:
        return Totals(self.planned_objects, self.planned_bytes, self.done_objects,
                      self.done_bytes, self.failed, self.listing)

    def _tell(self, event: ProgressEvent) -> None:
        """A listener that raises is logged, not obeyed: progress never changes a run."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                logging.getLogger(__name__).warning(
                    "progress listener %r raised on %s; the run goes on",
                    listener, type(event).__name__, exc_info=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class TerminalProgress(Progress):
    """A live line on stderr: objects, bytes, rate and ETA."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self._live: Any = Live(console=Console(file=sys.stderr), refresh_per_second=4,
                               transient=True, get_renderable=self._line)

    def _line(self) -> str:
        eta = self.eta_seconds
        eta_text = "listing…" if self.listing else (f"ETA {eta:,.0f}s" if eta is not None else "")
        failed = f", {self.failed:,} failed" if self.failed else ""
        return (f"{self.done_objects:,}/{self.planned_objects:,} objects{failed}  "
                f"{human_bytes(self.bytes_so_far)}/{human_bytes(self.planned_bytes)}  "
                f"{human_bytes(self.rate)}/s  {eta_text}")

    def __enter__(self) -> TerminalProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()


def progress_for(enabled: bool) -> Progress:
    """A terminal display when asked for and stderr is a terminal; else silent counting."""
    return TerminalProgress() if enabled and sys.stderr.isatty() else Progress()
