"""Throughput over time, in bounded memory: what the HTML report charts.

The driver folds every finished object into a :class:`Throughput` (the report
does, in ``Report.record``). Time is cut into equal buckets, at most
``buckets`` of them; when a run outgrows them, neighbouring buckets are merged
in pairs and the bucket width doubles. So a ten-second run is charted in tenths
of a second and a ten-hour run in a few minutes per point, and either holds the
same few kilobytes whatever the object count.

An object's bytes are spread over the time it took (``ObjectResult.seconds``,
ending when its result arrived), so a large object shows as a plateau, not as
one spike at its end; objects are counted when they finish.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

BUCKETS = 256
"""Most buckets kept (even, so buckets merge in pairs)."""
FIRST_WIDTH = 0.1
"""Seconds per bucket until the run outgrows ``BUCKETS`` of them."""


@dataclass(frozen=True)
class Sample:
    """One bucket: its start (seconds since the run started), length, and rates."""

    start: float
    seconds: float
    bytes_per_second: float
    objects_per_second: float


class Throughput:
    """Bytes and objects finished per time bucket since ``started`` (a ``time.time()``)."""

    def __init__(self, started: float | None = None, *, buckets: int = BUCKETS,
                 width: float = FIRST_WIDTH) -> None:
        if buckets < 2 or buckets % 2:
            raise ValueError("buckets: an even number, at least 2")
        self.started = time.time() if started is None else started
        self.width = width
        self._max = buckets
        self._bytes: list[float] = []
        self._objects: list[int] = []
        self.last = self.started  # the latest moment anything was added
        # per dataset: when its first object began and its last one finished (one pair each)
        self.spans: dict[str, tuple[float, float]] = {}

    def add(self, nbytes: int, seconds: float = 0.0, objects: int = 1,
            now: float | None = None, dataset: str | None = None) -> None:
        """``objects`` (of ``dataset``) finished at ``now`` (default: the current
        time), having moved ``nbytes`` over the ``seconds`` before it."""
        end = max(self.started, time.time() if now is None else now)
        begin = max(self.started, end - max(0.0, seconds))
        self.last = max(self.last, end)
        if dataset is not None:
            first, last = self.spans.get(dataset, (begin, end))
            self.spans[dataset] = (min(first, begin), max(last, end))
        self._reach(end)
        self._objects[self._index(end)] += objects
        if nbytes <= 0:
            return
        if end - begin < 1e-9:
            self._bytes[self._index(end)] += nbytes
            return
        rate = nbytes / (end - begin)
        first, last = self._index(begin), self._index(end)
        for i in range(first, last + 1):  # the overlap of [begin, end] with each bucket
            low = max(begin, self.started + i * self.width)
            high = min(end, self.started + (i + 1) * self.width)
            if high > low:
                self._bytes[i] += rate * (high - low)

    def samples(self, until: float | None = None) -> list[Sample]:
        """Every bucket up to ``until`` (default: the last addition), as rates; the
        last bucket's rate is over the part of it the run lasted."""
        end = max(self.last, until or 0.0)
        count = min(len(self._bytes), self._index(end) + 1) if self._bytes else 0
        out = []
        for i in range(count):
            start = i * self.width
            span = min(self.width, end - self.started - start) if i == count - 1 else self.width
            span = max(span, 1e-3)
            out.append(Sample(start, span, self._bytes[i] / span, self._objects[i] / span))
        return out

    @property
    def total_bytes(self) -> float:
        return sum(self._bytes)

    @property
    def total_objects(self) -> int:
        return sum(self._objects)

    def _index(self, moment: float) -> int:
        return min(len(self._bytes) - 1, max(0, int((moment - self.started) / self.width)))

    def _reach(self, moment: float) -> None:
        """Grow (and merge, as often as needed) until ``moment`` has a bucket."""
        needed = int((moment - self.started) / self.width) + 1
        while needed > self._max:
            self._bytes = [sum(self._bytes[i:i + 2]) for i in range(0, len(self._bytes), 2)]
            self._objects = [sum(self._objects[i:i + 2]) for i in range(0, len(self._objects), 2)]
            self.width *= 2
            needed = int((moment - self.started) / self.width) + 1
        grow = needed - len(self._bytes)
        if grow > 0:
            self._bytes.extend([0.0] * grow)
            self._objects.extend([0] * grow)
