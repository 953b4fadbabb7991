"""Running batches on Dask: an embedded cluster by default, or an existing one.

The driver keeps a bounded window of in-flight tasks instead of building one
graph of a million tasks, so memory on the driver and the scheduler stays flat
and results stream back while the plan is still being listed. Finished futures
arrive on a queue the driver reads with a short timeout, so it can also stop
(a signal, a tripped circuit breaker) and flush its ledger while nothing
finishes. Tasks are time-bounded (transfer.run_batch returns what it finished
after about a second) and the rest of a batch is resubmitted at once, so
results stream per object, on the embedded cluster and on a remote scheduler
alike. Tasks are submitted with ``pure=False`` (a resubmitted key must run
again, not return a cached error) and may run twice after a worker dies, which
transfer.run_batch tolerates.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from datamove.errors import BadInput
from datamove.stores.core import describe
from datamove.stores.transport import clear_text_scheduler

if TYPE_CHECKING:
    from datamove.manifest.model import EngineSpec

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)
run_log = logging.getLogger("datamove.run")  # what an operator is told at INFO (cli/logs.py)


class Engine:
    """A Dask client for the run. Use as a context manager.

    ``scheduler=None`` starts an embedded in-process cluster with ``threads``
    worker threads: copies are IO-bound and threads avoid pickling and process
    start-up on small machines. ``processes=N`` starts N worker processes
    instead (``threads`` shared among them), for CPU-bound work such as
    encrypting many small local files, where threads contend for the GIL. A
    ``tcp://`` or ``tls://`` address attaches to an existing cluster whose workers
    must have datamove installed and their own credentials (docs/SCALE-OUT.md);
    ``tcp://`` to another host only with ``allow_insecure`` (stores/transport.py).
    TLS certificates come from Dask's own configuration (``distributed.comm.tls``).
    """

    def __init__(self, scheduler: str | None = None, threads: int = 8, window: int = 16,
                 processes: int = 0, allow_insecure: bool = False):
        problem = None if allow_insecure else clear_text_scheduler(scheduler)
        if problem is not None:
            raise BadInput(f"the Dask scheduler {scheduler} {problem}")
        if scheduler and scheduler.split("://", 1)[0].lower() == "tls":
            _require_tls_settings(scheduler)  # before the run records anything
        self.scheduler = scheduler
        self.threads = threads
        self.window = window
        self.processes = processes
        self._client: Any = None
        self._cluster: Any = None
        self._abandoned = False  # tasks were let go: do not wait for their threads
        self.workers_lost_mid_task = 0  # workers the scheduler removed while they ran tasks
        self._watching = False  # subscribed to the scheduler's events (_on_cluster_event)
        self._config: Any = None  # dask settings of the embedded cluster, undone on exit
        self.dashboard: str | None = None  # the Dask dashboard's address, once open
        self._entered = False  # within ``with``: the embedded cluster may start

    @classmethod
    def of(cls, spec: EngineSpec, scheduler: str | None = None) -> Engine:
        """The engine a manifest's ``engine`` section asks for (``--scheduler`` wins)."""
        return cls(scheduler or spec.scheduler, threads=spec.threads,
                   window=spec.effective_window, processes=spec.processes,
                   allow_insecure=spec.allow_insecure)

    def __enter__(self) -> Engine:
        """Attach to a ``--scheduler`` cluster now (an unreachable one is bad input
        before anything runs); the embedded cluster starts with the first task
        (:meth:`start`), so a run with nothing to copy never starts one: its import
        and start were about 0.2 s of a no-op rerun's 1.2 s here."""
        self._entered = True
        if self.scheduler is not None:
            self.start()
        return self

    def start(self) -> None:
        """Start the embedded cluster, or attach to the scheduler (once; within ``with``)."""
        if self._client is not None:
            return
        assert self._entered, "use the engine as a context manager"
        import dask
        from distributed import Client, LocalCluster

        # distributed configures its loggers on import; its INFO chatter is not ours.
        logging.getLogger("distributed").setLevel(logging.ERROR)

        if self.scheduler is None:
            # The workers' statistical profiler samples every thread's stack every
            # 10 ms for the dashboard; embedded, it runs in the driver's process and
            # holds the GIL the copies and the driver need (worker processes get
            # the setting through their nanny).
            # The workers' and scheduler's debugging logs keep the last 1000 stimuli and
            # transitions, and a task's stimulus holds its whole batch: up to 1000
            # batches of plan items alive at once, ~1.5 KB an object (32 MB traced at
            # 20k tiny objects). A few are enough for a traceback's context.
            self._config = dask.config.set({"distributed.worker.profile.enabled": False,
                                            "distributed.admin.low-level-log-length": 16})
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
            self.dashboard = _embedded_dashboard(self._cluster)
        else:
            try:
                self._client = Client(self.scheduler, timeout="10s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise BadInput(
                    f"cannot reach the Dask scheduler at {self.scheduler}: {exc}. Check the "
                    "address (engine.scheduler or --scheduler) and that the scheduler runs"
                ) from exc
            self.dashboard = _remote_dashboard(self._client)
        _quiet_shutdown_timeouts(self._client.loop.asyncio_loop)
        if self.processes or self.scheduler is not None:
            self._client.subscribe_topic("all", self._on_cluster_event)
            self._watching = True
        if self.dashboard:
            run_log.info("Dask dashboard: %s", self.dashboard)

    def __exit__(self, *exc_info: object) -> None:
        self._entered = False
        if self._cluster is not None and self._abandoned:
            # A let-go task may be blocked on a dead endpoint: closing the embedded
            # workers would wait for its thread. Their threads are daemons.
            for worker in list(self._cluster.workers.values()):
                with contextlib.suppress(Exception):
                    self._cluster.sync(worker.close, executor_wait=False)
        if self._client is not None:
            if self._watching:
                # Otherwise the scheduler sends this client's own remove-client event
                # to it while it closes, and logs a CRITICAL traceback for the comm.
                with contextlib.suppress(Exception):
                    self._client.unsubscribe_topic("all")
                self._watching = False
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        if self._config is not None:
            self._config.__exit__(None, None, None)
            self._config = None
        self._client = self._cluster = None

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        """Count the workers removed while they ran tasks (a killed worker process).

        A task that dies with its process leaves its temporary files behind; the
        scheduler runs it again elsewhere, and the run sweeps its destinations at the
        end only when this count says it must (commands/copy.tidy_up): the sweep is a
        second listing of every destination. The scheduler logs the removal before it
        reschedules the tasks, on the same comm as their results, so the count is
        up to date once the last result is in. Threads of the embedded cluster share
        the driver's process: they cannot die alone, so it is not watched.
        """
        message = event[1]
        if isinstance(message, dict) and message.get("action") == "remove-worker" and \
                message.get("processing-tasks"):
            log.warning("worker %s left with %d tasks running; they run again elsewhere",
                        message.get("worker"), len(message["processing-tasks"]))
            self.workers_lost_mid_task += 1

    @property
    def may_have_left_temporary_files(self) -> bool:
        """Whether a task of this run may have ended without removing its temporary
        files: its worker was lost mid-task, or it was let go still running."""
        return bool(self.workers_lost_mid_task) or self._abandoned

    @property
    def client(self) -> Any:
        """The Dask client while the engine is open (started on first use; None outside
        ``with``)."""
        if self._entered:
            self.start()
        return self._client

    @property
    def started(self) -> Any:
        """The Dask client if one was started or attached, else None (nothing to stop
        on workers that never ran)."""
        return self._client

    @property
    def worker_processes(self) -> int:
        """Worker processes the run's work is spread over (``engine.bwlimit`` is split
        among them): the embedded cluster's, or the cluster's workers once attached."""
        if self.scheduler is None:
            return max(1, self.processes)
        if self._client is None:
            return 1
        try:
            return max(1, len(self._client.scheduler_info().get("workers", {})))
        except Exception:  # the scheduler went away: the run fails elsewhere, clearly
            return 1

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

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T], retries: int = 2, *,
                      rest: Callable[[T, R | BaseException], T | None] | None = None,
                      halted: Callable[[], bool] | None = None,
                      idle: Callable[[], None] | None = None,
                      grace: float = 2.5) -> Iterator[tuple[T, R | BaseException]]:
        """Run ``fn`` over ``items`` with at most ``window`` tasks in flight.

        Yields ``(item, result)`` as tasks finish; a task that failed outright
        (after Dask's own retries, e.g. its workers kept dying) yields its
        exception instead, so the caller can fail those objects and go on.

        ``rest(item, result)``: what of ``item`` the task left undone (tasks are
        time-bounded so results stream back), submitted again at once; None when
        nothing is left. ``halted()``, asked between results and at least every
        ``TICK`` seconds: once True, nothing more is submitted, tasks in flight
        get ``grace`` seconds to return what they finished (workers see the
        cancel flags), and those still running after that are let go: yielded
        with a :class:`LetGo` and no longer waited for. ``idle()`` is called every
        ``TICK`` seconds while no task finishes (the driver's timed flushes).
        """
        client: Any = None  # started with the first task: maybe never
        source = iter(items)
        pending: dict[Any, T] = {}
        finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        deadline: float | None = None
        stopped = halted or (lambda: False)

        def submit(item: T) -> None:
            nonlocal client
            client = client or self.client
            future = client.submit(fn, item, pure=False, retries=retries)
            pending[future] = item
            future.add_done_callback(finished.put)

        def fill() -> None:
            while len(pending) < self.window and not stopped():
                item = next(source, _DONE)
                if item is _DONE:
                    return
                submit(item)

        fill()
        while pending:
            try:
                future = finished.get(timeout=TICK)
            except queue.Empty:
                future = None
            if stopped() and deadline is None:
                deadline = time.monotonic() + grace
            if future is None:
                if idle is not None:
                    idle()
                if deadline is not None and time.monotonic() >= deadline:
                    yield from self._let_go(pending)
                continue
            if future not in pending:
                continue  # let go earlier
            item = pending.pop(future)
            try:
                outcome: R | BaseException = future.result()
            except Exception as exc:  # the task itself failed, not one object
                outcome = exc
            future.release()
            yield item, outcome
            left = rest(item, outcome) if rest is not None else None
            if left is not None and not stopped():
                submit(left)
            fill()

    def _let_go(self, pending: dict[Any, T]) -> Iterator[tuple[T, BaseException]]:
        """Stop waiting for tasks that did not return within the grace period."""
        futures = list(pending)
        self._abandoned = True
        with contextlib.suppress(Exception):
            self._client.cancel(futures)
        for future in futures:
            yield pending.pop(future), LetGo("still running when the run stopped; let go")


def _require_tls_settings(address: str) -> None:
    """A ``tls://`` scheduler needs a client certificate and the CA from Dask's
    configuration (``distributed.comm.tls``); without them distributed fails with a
    TypeError deep in its connect, and its half-made client hangs the exit."""
    import dask.config
    from distributed.security import Security

    if dask.config.get("distributed.client.security-loader", None):
        return  # the loader gives the client its credentials
    try:
        tls = Security().get_connection_args("client")["ssl_context"]
    except (OSError, ValueError, TypeError) as exc:
        raise BadInput(f"the TLS settings for the Dask scheduler {address} do not load: "
                       f"{describe(exc)}. Check distributed.comm.tls in Dask's "
                       "configuration (docs/SCALE-OUT.md)") from exc
    if tls is None:
        raise BadInput(
            f"the Dask scheduler {address} speaks TLS, but Dask's configuration gives this "
            "client no certificate: set distributed.comm.tls.ca-file, .client.cert and "
            ".client.key (e.g. DASK_DISTRIBUTED__COMM__TLS__CA_FILE, "
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT, "
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY; docs/SCALE-OUT.md)")


def _quiet_shutdown_timeouts(loop: Any) -> None:
    """Keep Dask's own close timeouts off the operator's terminal.

    Closing a worker or a comm under load can let one of Dask's internal
    tornado timeouts (``TimeoutError('Timeout')``) expire after its waiter gave
    up; asyncio then logs "Future exception was never retrieved" with a
    traceback when the future is collected, often right below the error that
    ended the run. Dask handles those timeouts itself; every other unretrieved
    exception on the client's loop is still logged.
    """
    def handle(loop: Any, context: dict[str, Any]) -> None:
        if (context.get("message", "").startswith("Future exception was never retrieved")
                and isinstance(context.get("exception"), TimeoutError)):
            log.debug("ignored a Dask timeout no one waited for: %r", context.get("future"))
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


def _embedded_dashboard(cluster: Any) -> str | None:
    """The embedded scheduler's dashboard, when bokeh is installed (Dask serves it only
    then): on 127.0.0.1 at the free port the scheduler's HTTP server was given
    (``dashboard_address="127.0.0.1:0"``), so it is never reachable from another host
    and parallel runs never collide."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        return None
    server = getattr(cluster.scheduler, "http_server", None)
    port = getattr(server, "port", None)
    return f"http://127.0.0.1:{port}/status" if port else None


def _remote_dashboard(client: Any) -> str | None:
    """The dashboard a remote scheduler advertises (its own host and port), if any."""
    try:
        return client.dashboard_link or None
    except Exception:  # no dashboard service on that scheduler
        return None


class LetGo(Exception):
    """A task still running when the run stopped, no longer waited for: what it
    did is unknown to the driver (the next run verifies anything it published)."""


TICK = 0.2
"""Seconds between two looks at ``halted`` and ``idle`` while no task finishes."""

_DONE: Any = object()
