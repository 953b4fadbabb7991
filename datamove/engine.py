"""Running batches on Dask: an embedded cluster by default, or an existing one.

The driver keeps a bounded window of in-flight tasks (``as_completed`` + ``add``)
instead of building one graph of a million tasks, so memory on the driver and
the scheduler stays flat and results stream back while the plan is still being
listed. Tasks are submitted with ``pure=False`` (a resubmitted key must run
again, not return a cached error) and may run twice after a worker dies, which
transfer.run_batch tolerates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import BadInput

if TYPE_CHECKING:
    from .manifest import EngineSpec

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class Engine:
    """A Dask client for the run. Use as a context manager.

    ``scheduler=None`` starts an embedded in-process cluster with ``threads``
    worker threads: copies are IO-bound and threads avoid pickling and process
    start-up on small machines. ``processes=N`` starts N worker processes
    instead (``threads`` shared among them), for CPU-bound work such as
    encrypting many small local files, where threads contend for the GIL. A
    ``tcp://`` address attaches to an existing cluster whose workers must have
    datamove installed and their own credentials.
    """

    def __init__(self, scheduler: str | None = None, threads: int = 8, window: int = 16,
                 processes: int = 0):
        self.scheduler = scheduler
        self.threads = threads
        self.window = window
        self.processes = processes
        self._client: Any = None
        self._cluster: Any = None

    @classmethod
    def of(cls, spec: EngineSpec, scheduler: str | None = None) -> Engine:
        """The engine a manifest's ``engine`` section asks for (``--scheduler`` wins)."""
        return cls(scheduler or spec.scheduler, threads=spec.threads,
                   window=spec.effective_window, processes=spec.processes)

    def __enter__(self) -> Engine:
        from distributed import Client, LocalCluster

        # distributed configures its loggers on import; its INFO chatter is not ours.
        logging.getLogger("distributed").setLevel(logging.ERROR)

        if self.scheduler is None:
            # The scheduler always serves HTTP (health checks); ":0" keeps it off
            # the well-known port 8787 so parallel runs never collide.
            if self.processes:
                self._cluster = LocalCluster(
                    n_workers=self.processes, processes=True,
                    threads_per_worker=self.threads_per_process,
                    dashboard_address="127.0.0.1:0")
            else:
                self._cluster = LocalCluster(n_workers=1, threads_per_worker=self.threads,
                                             processes=False,
                                             dashboard_address="127.0.0.1:0")
            self._client = Client(self._cluster, set_as_default=False)
        else:
            try:
                self._client = Client(self.scheduler, timeout="10s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise BadInput(
                    f"cannot reach the Dask scheduler at {self.scheduler}: {exc}. Check the "
                    "address (engine.scheduler or --scheduler) and that the scheduler runs"
                ) from exc
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    @property
    def threads_per_process(self) -> int:
        return max(1, self.threads // max(1, self.processes))

    @property
    def description(self) -> str:
        if self.scheduler is None and self.processes:
            return (f"embedded ({self.processes} processes × {self.threads_per_process} "
                    f"thread{'s' * (self.threads_per_process != 1)})")
        if self.scheduler is None:
            return f"embedded ({self.threads} threads)"
        return f"dask {self.scheduler}"

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T],
                      retries: int = 2) -> Iterator[tuple[T, R | BaseException]]:
        """Run ``fn`` over ``items`` with at most ``window`` tasks in flight.

        Yields ``(item, result)`` as tasks finish; a task that failed outright
        (after Dask's own retries, e.g. its workers kept dying) yields its
        exception instead, so the caller can fail those objects and go on.
        """
        from distributed import as_completed

        client = self._client
        source = iter(items)
        pending: dict[Any, T] = {}

        def submit_next() -> Any:
            item = next(source, _DONE)
            if item is _DONE:
                return None
            future = client.submit(fn, item, pure=False, retries=retries)
            pending[future] = item
            return future

        first = [f for f in (submit_next() for _ in range(self.window)) if f is not None]
        if not first:
            return
        completed = as_completed(first, loop=client.loop)
        for future in completed:
            item = pending.pop(future)
            try:
                outcome: R | BaseException = future.result()
            except Exception as exc:  # the task itself failed, not one object
                outcome = exc
            future.release()
            nxt = submit_next()
            if nxt is not None:
                completed.add(nxt)
            yield item, outcome


_DONE: Any = object()
