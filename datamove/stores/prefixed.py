"""Listing an object store by prefix, several prefixes at once, in byte order.

A flat listing of an object store is a chain of pages, each request waiting for
the previous one's continuation token, so a bucket of millions of keys is listed
at one page per round trip. Keys under different prefixes can be listed at the
same time: the first level is listed with a delimiter ('/'), which gives the
level's own keys and its common prefixes in byte order, and each common prefix
is listed on its own in a small thread pool. Under one prefix ``P`` the keys
form one contiguous byte range that sorts exactly where ``P`` sorts among the
level's keys (``a.txt`` < ``a/…`` < ``a0``), so yielding the level in order,
each prefix replaced by its range, keeps the whole stream in UTF-8 byte order
(stores/core.list_entries, pipeline/march.py).

Small listings are not fanned out: the first flat page is listed and yielded as
usual, and only a truncated one (more than a page of keys) switches to listing
by prefix for the keys after it, so a dataset of a few hundred objects costs
one request, as before. A chain of single prefixes (``data/2024/…`` holding
everything) is descended first so the fan-out happens where the keys spread.

Memory is bounded: at most ``lookahead`` prefixes are in flight, each holding at
most ``BUFFER_PAGES`` pages until the consumer reaches it, and at most
``MAX_PENDING`` of the level's own keys wait behind a prefix. An error in any
prefix is raised when the stream reaches that prefix, as the sequential listing
would raise it; every request keeps the backend's bounded timeouts, so a dead
endpoint ends the listing instead of hanging it. Closing the stream early stops
the pool's threads at their next page.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from datamove.stores.base import Entry

DEFAULT_THREADS = 8
"""Prefixes listed at once unless the location says otherwise (``list_threads``)."""

BUFFER_PAGES = 2
"""Pages a prefix's lister may hold before the consumer reaches that prefix."""

MAX_PENDING = 10_000
"""The level's own keys (and prefixes) queued behind a prefix still being listed."""

MAX_DESCENT = 16
"""Levels of single prefixes descended before fanning out."""


@dataclass(frozen=True)
class Page:
    """One page of a listing: entries (keys relative to the location, directory
    markers already dropped) and, for a delimited listing, the common prefixes
    (relative, ending in '/'); ``more``: another page follows."""

    entries: list[Entry]
    prefixes: list[str]
    more: bool


Pages = Callable[[str, bool], Iterator[Page]]
"""``pages(prefix, delimited)``: the pages of the keys under ``prefix`` (relative
to the location), with the delimiter '/' when ``delimited``, in byte order."""


def _b(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def list_by_prefix(pages: Pages, threads: int = DEFAULT_THREADS) -> Iterator[Entry]:
    """Every entry under the location in UTF-8 byte order, prefixes listed in parallel.

    ``threads`` 1 is the sequential listing. Otherwise the first flat page is
    yielded as it comes, and a truncated one is followed by the parallel listing
    of the keys after its last one.
    """
    flat = pages("", False)
    first = next(flat, None)
    if first is None:
        return
    yield from first.entries
    if not first.more:
        return
    if threads <= 1:
        for page in flat:
            yield from page.entries
        return
    flat.close()
    after = _b(first.entries[-1].key) if first.entries else None
    yield from _fan_out(pages, threads, after)


def _level(pages: Pages, after: bytes | None) -> Iterator[Entry | str]:
    """The widest useful level as one stream of its own keys and its prefixes,
    in byte order, leaving out what lies wholly at or before ``after``."""
    prefix = ""
    for _ in range(MAX_DESCENT):
        stream = pages(prefix, True)
        page = next(stream, None)
        if page is None:
            return
        if page.more or page.entries or len(page.prefixes) != 1:
            break
        stream.close()
        prefix = page.prefixes[0]  # everything is under one prefix: go down a level
    while page is not None:
        items: list[Entry | str] = [*page.entries, *page.prefixes]
        items.sort(key=lambda item: _b(item if isinstance(item, str) else item.key))
        for item in items:
            if after is None:
                yield item
            elif isinstance(item, str):
                name = _b(item)
                if after.startswith(name) or name > after:
                    yield item  # a range wholly listed already is left out
            elif _b(item.key) > after:
                yield item
        page = next(stream, None)


class _Range:
    """The keys under one prefix, listed in a pool thread into a bounded queue."""

    _END = object()

    def __init__(self, pages: Pages, prefix: str, after: bytes | None, stop: threading.Event):
        self.pages, self.prefix, self.after, self.stop = pages, prefix, after, stop
        # Only the prefix holding ``after`` has keys to leave out.
        if after is not None and not after.startswith(_b(prefix)):
            self.after = None
        self.queue: queue.Queue[object] = queue.Queue(maxsize=BUFFER_PAGES)

    def run(self) -> None:
        try:
            for page in self.pages(self.prefix, False):
                if self.stop.is_set():
                    return
                entries = page.entries
                if self.after is not None:
                    entries = [e for e in entries if _b(e.key) > self.after]
                if entries:
                    self._put(entries)
            self._put(self._END)
        except BaseException as exc:  # handed to the consumer, raised in its order
            self._put(exc)

    def _put(self, item: object) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def drain(self) -> Iterator[Entry]:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item  # type: ignore[misc]


def _fan_out(pages: Pages, threads: int, after: bytes | None) -> Iterator[Entry]:
    lookahead = 2 * threads
    stop = threading.Event()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="datamove-list")
    pending: deque[Entry | _Range] = deque()
    in_flight = 0

    def head() -> Iterator[Entry]:
        nonlocal in_flight
        item = pending.popleft()
        if isinstance(item, _Range):
            in_flight -= 1
            yield from item.drain()
        else:
            yield item

    try:
        for item in _level(pages, after):
            if isinstance(item, str):
                ranged = _Range(pages, item, after, stop)
                pool.submit(ranged.run)  # FIFO: the head's lister always started first
                pending.append(ranged)
                in_flight += 1
            else:
                pending.append(item)
            while pending and (in_flight >= lookahead or len(pending) >= MAX_PENDING
                               or not isinstance(pending[0], _Range)):
                yield from head()
        while pending:
            yield from head()
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
