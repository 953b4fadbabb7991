"""Stopping work that is already on the workers: one flag per run and per dataset.

The driver decides to stop (a signal, a dataset's circuit breaker); the objects
in flight must then stop promptly, before they publish anything, so that every
object that *is* published comes back as a result and is recorded. Workers
check the flag between objects, between attempts and between the chunks of a
copy, and raise :class:`Cancelled` (writers abort on any exception: temporary
files removed, multipart uploads aborted).

Where the flag lives depends on where the worker runs. Threads of the driver's
process (the embedded cluster) read a ``threading.Event``: free to check per
chunk. Any other worker process (``engine.processes``, a ``tcp://`` scheduler)
reads a ``distributed.Event`` on the scheduler, at most once per ``POLL``
seconds per process, so a chunk loop costs a dictionary lookup, not a network
round trip.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

POLL = 0.5
"""Seconds between two looks at the scheduler's flag from one worker process."""

_lock = threading.Lock()
_local: dict[str, threading.Event] = {}  # flags of runs driven from this process
_driven: set[str] = set()  # tokens of those runs
_remote: dict[str, tuple[float, bool]] = {}  # flag name -> (checked at, was set)


class Cancelled(Exception):
    """The driver asked this work to stop. Nothing of the object was published;
    it is neither copied nor failed: the next run does it."""


def flag_name(token: str, dataset: str | None = None) -> str:
    """The flag of a whole run (``dataset`` None) or of one of its datasets."""
    return f"datamove-stop-{token}" + (f"/{dataset}" if dataset else "")


class Switch:
    """The driver's side: raise the flags. Use as a context manager for one run.

    ``client``: the run's Dask client, so that worker processes see the flags
    too (None: only threads of this process can).
    """

    def __init__(self, token: str, client: Any = None):
        self.token = token
        self.client = client
        self._raised: list[str] = []

    def __enter__(self) -> Switch:
        with _lock:
            _driven.add(self.token)
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _driven.discard(self.token)
            for name in [n for n in _local if n.startswith(flag_name(self.token))]:
                del _local[name]
        for name in self._raised:  # the scheduler forgets a cleared event
            with contextlib.suppress(Exception):
                self._event(name).clear()

    def stop(self, dataset: str | None = None) -> None:
        """Ask the run's workers (or one dataset's) to stop as soon as they can."""
        name = flag_name(self.token, dataset)
        with _lock:
            _local.setdefault(name, threading.Event()).set()
        if self.client is not None:
            with contextlib.suppress(Exception):  # a scheduler gone: nothing runs there
                self._event(name).set()
                self._raised.append(name)

    def _event(self, name: str) -> Any:
        from distributed import Event

        return Event(name, client=self.client)


def is_set(token: str, dataset: str | None = None) -> bool:
    """Has the driver asked this run (or this dataset of it) to stop?"""
    if not token:
        return False
    names = (flag_name(token), flag_name(token, dataset)) if dataset else (flag_name(token),)
    if token in _driven:
        return any(name in _local and _local[name].is_set() for name in names)
    return any(_remote_is_set(name) for name in names)


def _remote_is_set(name: str) -> bool:
    """The scheduler's flag, looked at once per POLL seconds by this process."""
    now = time.monotonic()
    checked = _remote.get(name)
    if checked is not None and (checked[1] or now - checked[0] < POLL):
        return checked[1]
    value = False
    try:
        from distributed import Event, get_worker

        get_worker()  # outside a Dask worker there is no scheduler to ask
        value = bool(Event(name).is_set())
    except Exception:  # not on a worker, or the scheduler is gone: keep going
        value = False
    _remote[name] = (now, value)
    return value


def check(token: str, dataset: str | None = None) -> None:
    """Raise Cancelled if the driver asked this work to stop."""
    if is_set(token, dataset):
        raise Cancelled(f"stopped by the driver (run {token})")


def sleep(seconds: float, token: str, dataset: str | None = None) -> None:
    """``time.sleep`` that ends early, raising Cancelled, when the work is stopped."""
    deadline = time.monotonic() + seconds
    while True:
        check(token, dataset)
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))
