"""Small local-to-local batches run one at a time in each worker process.

Copying a 4 KiB file between two local disks is about 100 µs of system calls
and twice that of Python, and only one thread runs Python at a time. With eight
worker threads on such batches every system call hands the interpreter lock to
another thread and back: on a 2-core machine 20,000 × 4 KiB took 12–16 s with 8
free threads against 7.2–9.3 s taking turns, with three times the system time
(futex wake-ups; benchmarks/README.md "Small local objects: one batch at a time").
So a batch whose objects are all small (≤ 64 KiB) and whose source and destination are
both on this machine's disks (stores/mounts.py) waits for the process's gate;
everything else (large objects, object stores, network mounts, where threads
overlap waits) runs freely beside it. Worker processes (``engine.processes``)
each have their own gate, which is how small local copies use several cores.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

from datamove.pipeline import cancel
from datamove.stores.core import Location
from datamove.stores.mounts import on_local_disk

SMALL_OBJECT = 64 * 1024
"""Objects up to this size are per-object work (about 300 µs of system calls and
Python), not bytes: hashing 64 KiB twice (source, read-back) takes ~80 µs. Larger ones
hash in C without the interpreter lock, which threads do in parallel on as many cores."""

WAIT_TICK = 0.05
"""Seconds between two looks at the cancel flags while waiting for the gate."""

_gate = threading.Lock()


def applies(source: Location, destination: Location, sizes: Iterator[int]) -> bool:
    """Is this a batch of small objects between two local disks?"""
    return source.is_local and destination.is_local and _local_disk(source.root) and \
        _local_disk(destination.root) and all(size <= SMALL_OBJECT for size in sizes)


@contextlib.contextmanager
def held(token: str, dataset: str) -> Iterator[bool]:
    """Hold the process's gate; yields False (without it) if the driver stopped
    the run or the dataset while this task waited, so the task returns at once."""
    while not _gate.acquire(timeout=WAIT_TICK):
        if cancel.is_set(token, dataset):
            yield False
            return
    try:
        yield True
    finally:
        _gate.release()


@functools.lru_cache(maxsize=64)
def _local_disk(root: str) -> bool:
    return on_local_disk(root)
