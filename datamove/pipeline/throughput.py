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
        self.spans: dict[str, list[float]] = {}

    def add(self, nbytes: int, seconds: float = 0.0, objects: int = 1,
            now: float | None = None, dataset: str | None = None) -> None:
        """``objects`` (of ``dataset``) finished at ``now`` (default: the current
        time), having moved ``nbytes`` over the ``seconds`` before it. Called once per
        object on the driver, so the common case (one bucket) is kept short."""
        started = self.started
        end = time.time() if now is None else now
        if end < started:
            end = started
        begin = end - seconds if seconds > 0 else end
        if begin < started:
            begin = started
        if end > self.last:
            self.last = end
        if dataset is not None:
            span = self.spans.get(dataset)
            if span is None:
                self.spans[dataset] = [begin, end]
            else:
                if begin < span[0]:
                    span[0] = begin
                if end > span[1]:
                    span[1] = end
        last = int((end - started) / self.width)
        if last >= len(self._objects):
            self._reach(end)
            last = int((end - started) / self.width)
        self._objects[last] += objects
        if nbytes <= 0:
            return
        width = self.width
        first = int((begin - started) / width)
        if first == last or end - begin < 1e-9:
            self._bytes[last] += nbytes
            return
        rate = nbytes / (end - begin)
        for i in range(first, last + 1):  # the overlap of [begin, end] with each bucket
            low = max(begin, started + i * width)
            high = min(end, started + (i + 1) * width)
            if high > low:
                self._bytes[i] += rate * (high - low)

    def samples(self, until: float | None = None) -> list[Sample]:
        """Every bucket up to ``until`` (default: the last addition), as rates. The
        last bucket's rate is over the part of it the run lasted; less than half a
        bucket is folded into the one before (a sliver would make a spike)."""
        end = max(self.last, until or 0.0)
        count = min(len(self._bytes), int((end - self.started) / self.width) + 1)
        rows = [(i * self.width, self.width, self._bytes[i], self._objects[i])
                for i in range(count)]
        if rows:
            start, _, nbytes, objects = rows[-1]
            partial = max(0.0, end - self.started - start)
            rows[-1] = (start, partial, nbytes, objects)
            if partial < self.width / 2 and len(rows) > 1:
                before = rows[-2]
                rows[-2:] = [(before[0], before[1] + partial, before[2] + nbytes,
                              before[3] + objects)]
        return [Sample(start, span, nbytes / max(span, 1e-3), objects / max(span, 1e-3))
                for start, span, nbytes, objects in rows]

    @property
    def total_bytes(self) -> float:
        return sum(self._bytes)

    @property
    def total_objects(self) -> int:
        return sum(self._objects)

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
