"""Parts of one large object sent to the store several at a time, in bounded memory.

A multipart upload (S3 parts, Azure blocks) is slow one part at a time: each
request waits for the store's answer before the next begins, so one object's
throughput is one request's. :class:`PartSender` lets a writer hand a filled
part to a small pool of threads and go on filling the next, with at most
``buffers`` parts of the object in memory at once: the one being filled plus
``buffers - 1`` on their way. ``buffers = 1`` sends each part in the writing
thread, one after the other (no pool).

A part that failed makes the next ``submit`` or ``drain`` raise its exception,
so the writer stops and its caller aborts it; ``close`` waits for the parts
still on their way (a store may otherwise keep a part that arrives after the
upload was aborted) and starts none that had not begun.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

PART_BUFFERS = 2
"""Default parts of one object held in memory while it uploads (engine.part_buffers):
reading the next part overlaps sending the last. More pays off only where one
connection is slow (0.45x the time with 4 through a 32 MiB/s-per-connection relay,
benchmarks/parallel_parts.py); on moto 4 doubled peak RSS (804 vs 433 MiB) for no gain."""


class PartSender:
    """Runs ``send(*args)`` for each part, up to ``buffers - 1`` at once."""

    def __init__(self, buffers: int):
        self.limit = max(1, buffers) - 1  # parts on their way besides the one being filled
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[Future[None]] = set()

    def submit(self, send: Callable[..., None], *args: Any) -> None:
        """Send one part; blocks while ``buffers - 1`` parts are on their way.
        Raises the exception of a part that failed."""
        if self.limit == 0:
            send(*args)
            return
        self._settle(FIRST_COMPLETED, room=True)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.limit, thread_name_prefix="datamove-part")
        self._pending.add(self._pool.submit(send, *args))

    def drain(self) -> None:
        """Wait for every part; raise the first failure."""
        self._settle(None, room=False)
        self._shutdown()

    def close(self) -> None:
        """Abandon: start no further part, wait for those running, swallow their errors."""
        for future in self._pending:
            future.cancel()
        with contextlib.suppress(Exception):
            wait(self._pending)
        self._pending = set()
        self._shutdown()

    def _settle(self, when: str | None, room: bool) -> None:
        while self._pending and (not room or len(self._pending) >= self.limit):
            done, self._pending = wait(self._pending, return_when=when or "ALL_COMPLETED")
            for future in done:
                future.result()  # raises the part's exception

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
