"""Progress accounting (rclone's "accounting"): what is planned, what is done, how fast.

The one accountant of a run: the live display on a terminal (TerminalProgress),
the stats lines off one (``--stats``), the per-object log lines (``-v``,
pipeline/events.py) and the metrics file (pipeline/metrics.py) all read it.
The driver calls it as results stream in, whatever runs the tasks (threads,
worker processes, a remote cluster), so everything it reports comes from one
place and one thread of accounting.

Three promises the displays rely on:

- **Counts never go backwards.** Objects done only grow; the bytes shown are a
  high-water mark of finished bytes plus what in-flight objects have copied in
  this process (``LIVE_BYTES`` drops an object's bytes the moment it finishes,
  before the driver counts it, and a retried read counts its bytes again).
- **The rate is a moving average** over the last ``window`` seconds (at least
  the stats interval), not an average since the start, so a stall shows at once.
- **An ETA only once the listing is complete.** While listing, totals grow and
  the display says "listing" with the count found so far. The ETA is the larger
  of the byte-based and the object-based estimate (many tiny objects are bound by
  objects per second, not bytes per second).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from datamove.pipeline import events
from datamove.pipeline.events import duration
from datamove.pipeline.march import PlanItem
from datamove.pipeline.progress_events import (
    DatasetFinished,
    DatasetStarted,
    ListingDone,
    ObjectDone,
    ProgressEvent,
    Totals,
)
from datamove.pipeline.report import human_bytes
from datamove.pipeline.transfer import LIVE_BYTES, ObjectResult


class Sized(Protocol):
    """What is counted as planned: anything with a size (PlanItem, LedgerRow)."""

    @property
    def size(self) -> int: ...


RATE_WINDOW = 10.0
"""Seconds of history the moving-average rate covers (or the stats interval, if longer)."""

OBSERVE_SECONDS = 15.0
"""How often observers (the metrics file) are refreshed when there are no stats lines."""

_SAMPLE_SPACING = 0.2
_FAILED = frozenset({"failed"})


@dataclass
class DatasetProgress:
    """One dataset's counts: planned (grows while listing), done, by outcome."""

    name: str
    planned_objects: int = 0
    planned_bytes: int = 0
    done_objects: int = 0
    done_bytes: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    listing: bool = True
    first: float | None = None  # monotonic time of the first thing planned or done
    last: float | None = None  # ... and of the last result
    outcomes: Counter[str] = field(default_factory=Counter)
    outcome_bytes: Counter[str] = field(default_factory=Counter)

    @property
    def seconds(self) -> float:
        """How long the dataset has been worked on: first plan item to last result."""
        if self.first is None:
            return 0.0
        return max(0.0, (self.last or self.first) - self.first)


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of the counts at one moment, for a display or a file."""

    at: float  # wall-clock time (time.time())
    elapsed: float
    listing: bool
    objects_done: int
    objects_total: int
    bytes_done: int
    bytes_total: int
    failed: int
    skipped: int
    rate: float  # bytes/s, moving average over ``window``
    object_rate: float  # objects/s, the same window
    eta: float | None  # seconds; None while listing or before any rate is known
    datasets: tuple[DatasetProgress, ...]
    run: dict[str, str] = field(default_factory=dict)  # command, manifest, run_id


class Progress:
    """Counts objects and bytes; the displays read it (subclasses or the stats ticker).

    ``stats_every``: seconds between two stats snapshots handed to ``observers``
    (0: none) while the progress is entered; the stats line and the metrics file
    are such observers (pipeline/events.py, pipeline/metrics.py).
    """

    def __init__(self, *, stats_every: float = 0.0,
                 observers: list[Callable[[Snapshot], None]] | None = None) -> None:
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.stats_every = stats_every
        self.observers = list(observers or [])
        self.window = max(RATE_WINDOW, stats_every)
        self.datasets: dict[str, DatasetProgress] = {}
        self.listing = True
        self.ticks = 0  # stats snapshots handed to the observers
        self.run: dict[str, str] = {}  # command, manifest, run_id: set by the run session
        self._lock = threading.Lock()
        self._shown_bytes = 0
        self._samples: deque[tuple[float, int, int]] = deque([(self.started, 0, 0)])
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        # Told every typed event (progress_events.py) on the driver thread: api's on_event.
        self.listeners: list[Callable[[ProgressEvent], None]] = []

    # --- what the driver reports (the driver's thread; kept cheap: once per object) ------

    def dataset(self, name: str) -> DatasetProgress:
        ds = self.datasets.get(name)
        if ds is None:
            with self._lock:
                ds = self.datasets.setdefault(name, DatasetProgress(name, first=time.monotonic()))
        return ds

    def planned(self, item: Sized, dataset: str = "") -> None:
        """An object that needs a worker was found by the listing (a plan item, or a
        ledger row that restore reads back)."""
        ds = self.datasets.get(dataset) or self.dataset(dataset)
        size = item.size
        ds.planned_objects += 1
        ds.planned_bytes += size

    def skipped_item(self, dataset: str, item: PlanItem) -> None:
        """An object the driver settled without a worker (up to date)."""
        ds = self.datasets.get(dataset) or self.dataset(dataset)
        size = item.size
        ds.skipped += 1
        ds.skipped_bytes += size
        events.skipped(dataset, item.key, size)

    def done(self, result: ObjectResult) -> None:
        """A worker's result reached the driver: count it and log its line."""
        ds = self.datasets.get(result.dataset) or self.dataset(result.dataset)
        status, size = result.status, result.size
        # Only this thread writes; a snapshot's copy of a dict is one C call under the GIL.
        ds.outcomes[status] += 1
        ds.outcome_bytes[status] += size
        ds.done_objects += 1
        ds.done_bytes += size
        if status == "failed":
            ds.failed += 1
        ds.last = time.monotonic()
        events.object_done(result)
        if self.listeners:
            self._tell(ObjectDone.of(result, self.totals()))

    def listing_done(self, dataset: str | None = None) -> None:
        """The listing of ``dataset`` (None: of every dataset) is complete."""
        if dataset is None:
            self.listing = False
            for ds in list(self.datasets.values()):
                ds.listing = False
        else:
            self.dataset(dataset).listing = False
        if dataset is None and self.listeners:
            self._tell(ListingDone(self.totals()))

    # --- listeners (progress_events.py): told what the lines above counted ----------------

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
                      self.done_bytes, self.failed, self.skipped, self.listing)

    def _tell(self, event: ProgressEvent) -> None:
        """A listener that raises is logged, not obeyed: progress never changes a run."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                logging.getLogger(__name__).warning(
                    "progress listener %r raised on %s; the run goes on",
                    listener, type(event).__name__, exc_info=True)

    # --- totals over the datasets --------------------------------------------------------

    def _total(self, name: str) -> int:
        return sum(getattr(ds, name) for ds in list(self.datasets.values()))

    @property
    def planned_objects(self) -> int:
        return self._total("planned_objects")

    @property
    def planned_bytes(self) -> int:
        return self._total("planned_bytes")

    @property
    def done_objects(self) -> int:
        return self._total("done_objects")

    @property
    def done_bytes(self) -> int:
        return self._total("done_bytes")

    @property
    def failed(self) -> int:
        return self._total("failed")

    @property
    def skipped(self) -> int:
        return self._total("skipped")

    # --- what the displays read ------------------------------------------------------------

    @property
    def bytes_so_far(self) -> int:
        """Finished objects plus what in-flight objects have copied in this process;
        never less than a value shown before."""
        done = self.done_bytes
        live = done + max(0, LIVE_BYTES.value)
        ceiling = max(self.planned_bytes, done)
        with self._lock:
            self._shown_bytes = max(self._shown_bytes, min(live, ceiling))
            return self._shown_bytes

    def _sample(self, window: float) -> tuple[float, float]:
        """Record a sample; the (bytes/s, objects/s) over the last ``window`` seconds."""
        now = time.monotonic()
        shown = self.bytes_so_far
        objects = self.done_objects
        with self._lock:
            if now - self._samples[-1][0] >= _SAMPLE_SPACING:
                self._samples.append((now, shown, objects))
            keep = max(self.window, window)
            while len(self._samples) > 1 and self._samples[1][0] <= now - keep:
                self._samples.popleft()  # the oldest kept is the anchor just past the window
            anchor = next((s for s in reversed(self._samples) if s[0] <= now - window),
                          self._samples[0])
        seconds = now - anchor[0]
        if seconds <= 0:
            return 0.0, 0.0
        return (shown - anchor[1]) / seconds, (objects - anchor[2]) / seconds

    @property
    def rate(self) -> float:
        """Bytes per second over the last ``window`` seconds."""
        return self._sample(self.window)[0]

    @property
    def eta_seconds(self) -> float | None:
        return self.snapshot().eta

    def snapshot(self) -> Snapshot:
        rate, object_rate = self._sample(self.window)
        shown = self.bytes_so_far
        datasets = tuple(
            DatasetProgress(ds.name, ds.planned_objects, ds.planned_bytes,
                            ds.done_objects, ds.done_bytes, ds.failed, ds.skipped,
                            ds.skipped_bytes, ds.listing and self.listing, ds.first,
                            ds.last, Counter(ds.outcomes), Counter(ds.outcome_bytes))
            for ds in list(self.datasets.values()))
        planned_objects = sum(ds.planned_objects for ds in datasets)
        planned_bytes = sum(ds.planned_bytes for ds in datasets)
        done_objects = sum(ds.done_objects for ds in datasets)
        elapsed = time.monotonic() - self.started
        eta = None
        if not self.listing and done_objects >= planned_objects:
            eta = 0.0
        elif not self.listing and elapsed >= 2:  # a rate from the first second misleads
            estimates = []
            if rate > 0:
                estimates.append(max(0, planned_bytes - shown) / rate)
            if object_rate > 0:
                estimates.append(max(0, planned_objects - done_objects) / object_rate)
            eta = max(estimates) if estimates else None
        return Snapshot(at=time.time(), elapsed=elapsed, listing=self.listing,
                        objects_done=done_objects, objects_total=planned_objects,
                        bytes_done=shown, bytes_total=max(planned_bytes, shown),
                        failed=sum(ds.failed for ds in datasets),
                        skipped=sum(ds.skipped for ds in datasets), rate=rate,
                        object_rate=object_rate, eta=eta,
                        datasets=tuple(ds for ds in datasets if ds.name), run=dict(self.run))

    # --- the stats ticker ------------------------------------------------------------------

    def __enter__(self) -> Progress:
        if self.stats_every > 0 and self.observers and self._ticker is None:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick_loop, name="datamove-stats",
                                            daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is None:
            return
        self._stop.set()
        ticker.join(timeout=5)
        if self.ticks:  # a run long enough for stats lines gets a closing one
            self._tick()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.stats_every):
            self._tick()

    def _tick(self) -> None:
        snapshot = self.snapshot()
        self.ticks += 1
        for observe in self.observers:
            try:
                observe(snapshot)
            except Exception as exc:  # a full disk for metrics must not stop the run
                events.observer_failed(observe, exc)


# --- the live display on a terminal ---------------------------------------------------------

MAX_BARS = 12
"""Datasets shown with a bar of their own; the rest are summed in the total line."""


class TerminalProgress(Progress):
    """The live display on a terminal: a bar per dataset (bytes of finished objects
    out of those planned so far; objects when there are no bytes), and a total
    line with the moving-average rate, elapsed time and the ETA, on stderr."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import sys

        from rich.console import Console
        from rich.live import Live

        self._live: Any = Live(console=Console(file=sys.stderr), refresh_per_second=4,
                               transient=True, get_renderable=self._render)

    def _render(self) -> Any:
        return render(self.snapshot())

    def __enter__(self) -> TerminalProgress:
        super().__enter__()
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()
        super().__exit__(*exc)


def render(s: Snapshot) -> Any:
    """The display of one snapshot: a table of dataset bars, then the total line."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    table = Table.grid(padding=(0, 1))
    for column in ("dataset", "bar", "objects", "bytes"):
        table.add_column(column, no_wrap=True, justify="left" if column != "objects"
                         else "right")
    for ds in [d for d in s.datasets if d.planned_objects or d.skipped][:MAX_BARS]:
        bar = ProgressBar(total=max(1, ds.planned_bytes) if not ds.listing else None,
                          completed=min(ds.done_bytes, max(1, ds.planned_bytes)), width=30)
        if not ds.listing and ds.planned_bytes == 0:  # nothing to copy, or only empty files
            bar = ProgressBar(total=max(1, ds.planned_objects),
                              completed=ds.done_objects or (not ds.planned_objects), width=30)
        failed = f", {ds.failed:,} failed" if ds.failed else ""
        skipped = f", {ds.skipped:,} up to date" if ds.skipped else ""
        table.add_row(ds.name, bar, f"{ds.done_objects:,}/{ds.planned_objects:,}{failed}"
                      f"{skipped}", f"{human_bytes(ds.done_bytes)}/"
                      f"{human_bytes(ds.planned_bytes)}")
    table.add_row("total", "", f"{s.objects_done:,}/{s.objects_total:,}", total_line(s))
    return table


def total_line(s: Snapshot) -> str:
    """Bytes, rate, elapsed and the ETA (or "listing, N found so far")."""
    if s.listing:
        eta = f"listing, {s.objects_total:,} found so far"
    else:
        eta = f"ETA {duration(s.eta)}" if s.eta is not None else "ETA -"
    failed = f"  {s.failed:,} failed" if s.failed else ""
    return (f"{human_bytes(s.bytes_done)}/{human_bytes(s.bytes_total)}  "
            f"{human_bytes(s.rate)}/s  elapsed {duration(s.elapsed)}  {eta}{failed}")


def progress_for(enabled: bool, *, stats_every: float | None = None,
                 observers: list[Callable[[Snapshot], None]] | None = None) -> Progress:
    """What ``--progress``/``--stats`` ask for.

    On a terminal (stderr a TTY) with ``enabled``: the live display, and stats
    lines only when ``stats_every`` is given. Off a terminal: no live display,
    and stats lines every ``stats_every`` seconds (default
    :data:`events.DEFAULT_STATS_SECONDS`; 0 turns them off). ``observers`` (the
    metrics file) see the same snapshots, every :data:`OBSERVE_SECONDS` when there
    are no stats lines.
    """
    import sys

    terminal = sys.stderr.isatty()
    every = stats_every if stats_every is not None else \
        (0.0 if terminal else events.DEFAULT_STATS_SECONDS)
    watchers: list[Callable[[Snapshot], None]] = list(observers or [])
    if every > 0:
        watchers.insert(0, events.stats_line)
    elif watchers:
        every = OBSERVE_SECONDS
    if enabled and terminal:
        return TerminalProgress(stats_every=every, observers=watchers)
    return Progress(stats_every=every, observers=watchers)
