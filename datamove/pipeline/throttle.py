"""``engine.bwlimit``: a token bucket on the bytes copies read from their sources.

The limit is a total for the run. The driver splits it evenly among the worker
processes (session.py: one share for the embedded cluster's threads, 1/N each
for ``processes: N`` or the N workers of a ``--scheduler`` cluster when the run
starts), and every transfer thread of one process draws from that process's one
bucket, so a single large object may use the whole share while other threads
are idle, and many small ones share it.

The bucket lends: a read takes its bytes at once and the reader then sleeps off
the debt (``rate`` bytes a second), so the rate holds from the first byte and
whatever the chunk size; after an idle spell at most ``burst`` bytes go through
unthrottled. Sleeps end early when the run or the dataset is stopped (cancel.py).
Without a limit nothing here runs: the copy loop checks for a bucket once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from datamove.pipeline import cancel

BURST_SECONDS = 0.25
"""Credit an idle bucket may gather, in seconds of its rate."""

_KEPT = 16  # buckets of recent runs kept per process (a long-lived cluster worker)


class TokenBucket:
    """``rate`` bytes a second, shared by the threads that take from it."""

    def __init__(self, rate: float, burst_seconds: float = BURST_SECONDS) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = float(rate)
        self.burst = self.rate * burst_seconds
        self._tokens = 0.0  # the first bytes wait too: a limit holds from the start
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int, token: str = "", dataset: str | None = None) -> float:
        """Account ``n`` bytes and sleep until the rate allows them; returns the sleep.
        Raises cancel.Cancelled when the work is stopped meanwhile."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            if token:
                cancel.sleep(wait, token, dataset)
            else:
                time.sleep(wait)
        return wait


_buckets: OrderedDict[tuple[str, int], TokenBucket] = OrderedDict()
_buckets_lock = threading.Lock()


def bucket(run_token: str, rate: int) -> TokenBucket:
    """This process's bucket for one run's share ``rate`` (bytes a second)."""
    with _buckets_lock:
        found = _buckets.get((run_token, rate))
        if found is None:
            found = _buckets[(run_token, rate)] = TokenBucket(rate)
            while len(_buckets) > _KEPT:
                _buckets.popitem(last=False)
        return found


def share(bwlimit: int | None, processes: int) -> int | None:
    """One worker process's part of the run's ``bwlimit`` (at least 1 byte a second)."""
    if bwlimit is None:
        return None
    return max(1, bwlimit // max(1, processes))
