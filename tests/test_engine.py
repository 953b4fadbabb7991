"""The engine under faults: transient errors retried, permanent ones contained,
an existing multi-process Dask cluster, nothing secret shipped to workers."""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections import Counter
from typing import ClassVar

import fsspec
import pytest
import yaml
from fsspec.implementations.memory import MemoryFileSystem

from datamove import api
from datamove.age import X25519Identity, format_identity_file
from datamove.manifest.model import parse_manifest
from datamove.pipeline.engine import Engine
from datamove.pipeline.march import DatasetJob, plan_dataset
from datamove.pipeline.transfer import Batch, TransferSettings


class FlakyFileSystem(MemoryFileSystem):
    """An in-memory store whose reads fail for real, by key:

    ``transient*`` keys raise ConnectionResetError on their first two opens;
    ``denied*`` keys always raise PermissionError. Opens are counted per key.
    """

    protocol = "flaky"
    store: dict = {}  # noqa: RUF012 - fsspec's MemoryFileSystem shares class-level state
    pseudo_dirs = [""]  # noqa: RUF012
    opens: ClassVar[Counter[str]] = Counter()
    lock = threading.Lock()

    @classmethod
    def _strip_protocol(cls, path):
        # MemoryFileSystem strips only "memory://"; datamove asks the class for its paths.
        if isinstance(path, str) and path.startswith("flaky://"):
            path = "memory://" + path[len("flaky://"):]
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        if "r" in mode:
            name = path.rsplit("/", 1)[-1]
            with self.lock:
                self.opens[name] += 1
                count = self.opens[name]
            if name.startswith("transient") and count <= 2:
                raise ConnectionResetError(f"injected reset #{count} for {name}")
            if name.startswith("denied"):
                raise PermissionError(f"injected permanent denial for {name}")
        return super()._open(path, mode=mode, **kwargs)

    def ls(self, path, detail=True, **kwargs):
        if path.rstrip("/").endswith("unlistable"):
            raise ConnectionResetError(f"injected listing failure in {path}")
        return super().ls(path, detail=detail, **kwargs)


fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


def flaky_manifest(tmp_path, **engine):
    doc = {"version": 1, "name": "flaky",
           "engine": {"threads": 4, "retries": 3, **engine},
           "datasets": [{"name": "d", "source": {"url": "flaky://src/"},
                         "destination": {"url": str(tmp_path / "dst") + "/"}}]}
    return parse_manifest(yaml.safe_dump(doc), "flaky.yaml", base_dir=tmp_path)


@pytest.fixture
def flaky_source():
    fs = fsspec.filesystem("flaky")
    FlakyFileSystem.store.clear()
    FlakyFileSystem.opens.clear()
    for i in range(20):
        fs.pipe(f"/src/ok-{i:02d}", f"ok {i}".encode())
    fs.pipe("/src/transient-a", b"comes through on the third try")
    fs.pipe("/src/denied-b", b"never readable")
    return fs


def test_transient_errors_are_retried_and_permanent_ones_contained(tmp_path, flaky_source):
    report = api.run(flaky_manifest(tmp_path))
    counts = report.datasets["d"].counts
    assert counts["copied"] == 21
    assert counts["failed"] == 1
    assert report.exit_code == 1
    assert (tmp_path / "dst/transient-a").read_bytes() == b"comes through on the third try"
    assert FlakyFileSystem.opens["transient-a"] == 3
    assert FlakyFileSystem.opens["denied-b"] == 1  # permanent: not retried
    assert not (tmp_path / "dst/denied-b").exists()
    [problem] = report.problems
    assert problem.key == "denied-b" and "PermissionError" in problem.error
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == sorted(
        [f"ok-{i:02d}" for i in range(20)] + ["transient-a"])


def test_listing_that_breaks_half_way_fails_only_its_dataset(tmp_path, flaky_source):
    flaky_source.pipe("/src/zz-unlistable/x", b"behind a broken listing")
    report = api.run(flaky_manifest(tmp_path))
    counts = report.datasets["d"].counts
    assert counts["copied"] == 21  # every key listed before the broken directory
    assert (tmp_path / "dst/transient-a").exists()
    assert not (tmp_path / "dst/zz-unlistable").exists()
    listing = [p for p in report.problems if p.key == ""]
    assert len(listing) == 1 and "injected listing failure" in listing[0].error
    assert counts["failed"] == 2  # denied-b and the listing
    assert report.exit_code == 1


def test_retries_exhausted_is_a_failure_with_attempts(tmp_path, flaky_source):
    report = api.run(flaky_manifest(tmp_path, retries=1))
    failed = {p.key: p.error for p in report.problems}
    assert set(failed) == {"transient-a", "denied-b"}
    assert "ConnectionResetError" in failed["transient-a"]
    assert FlakyFileSystem.opens["transient-a"] == 2


def test_batches_pickle_without_secrets(tmp_path, monkeypatch):
    secret = "s3cr3t-VALUE-that-must-not-travel"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/f").write_bytes(b"x")
    doc = {"version": 1, "name": "p", "datasets": [{
        "name": "d", "source": {"url": str(tmp_path / "src")},
        "destination": {"url": "s3://bucket/x/", "options": {"endpoint_url": "http://127.0.0.1:1"}}}]}
    job = DatasetJob.from_spec(parse_manifest(yaml.safe_dump(doc), "p.yaml").datasets[0])
    _ = job.destination.fs  # a filesystem exists in this process…
    items = tuple(plan_dataset(DatasetJob(job.name, job.source, job.source, job.key_filter,
                                          job.verify), check_only=True))
    blob = pickle.dumps(Batch(job, items, TransferSettings()))
    assert secret.encode() not in blob  # …but never travels with the task
    assert b"S3FileSystem" not in blob


def test_runs_on_an_existing_multiprocess_cluster(tmp_path):
    from distributed import LocalCluster

    src = tmp_path / "src"
    for i in range(40):
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 4}/f{i}").write_bytes(bytes([i]) * (i * 1000))
    doc = {"version": 1, "name": "remote", "engine": {"batch_objects": 5},
           "datasets": [{"name": "d", "source": {"url": str(src)},
                         "destination": {"url": str(tmp_path / "dst")}}]}
    manifest = parse_manifest(yaml.safe_dump(doc), "remote.yaml", base_dir=tmp_path)
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster:
        report = api.run(manifest, scheduler=cluster.scheduler_address)
        assert report.engine == f"dask {cluster.scheduler_address}"
        assert report.exit_code == 0
        assert report.datasets["d"].counts["copied"] == 40
        check = api.verify(manifest, scheduler=cluster.scheduler_address)
        assert check.datasets["d"].counts["matched"] == 40
    for i in range(40):
        assert (tmp_path / f"dst/d{i % 4}/f{i}").read_bytes() == bytes([i]) * (i * 1000)


_IN_FLIGHT = {"now": 0, "peak": 0}
_IN_FLIGHT_LOCK = threading.Lock()


def _tracked_task(x: int) -> int:
    """Module-level so Dask can pickle it; records how many run at once."""
    import time

    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT["now"] += 1
        _IN_FLIGHT["peak"] = max(_IN_FLIGHT["peak"], _IN_FLIGHT["now"])
    time.sleep(0.01)
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT["now"] -= 1
    return x * 2


def test_window_bounds_in_flight_tasks():
    _IN_FLIGHT.update(now=0, peak=0)
    with Engine(threads=8, window=3) as engine:
        results = dict(engine.map_unordered(_tracked_task, range(50)))
    assert results == {i: i * 2 for i in range(50)}
    assert 1 <= _IN_FLIGHT["peak"] <= 3


def _slow_task(x: int) -> int:
    import time

    time.sleep(0.5)
    return x + 1


def test_a_worker_process_killed_mid_task_is_counted_and_its_tasks_finish():
    """An embedded worker process SIGKILLed while it runs tasks: the engine counts it
    (the run then sweeps for the temporary files its copies left, commands/copy.tidy_up)
    and every task still returns once. Without a loss the count stays 0."""
    import signal
    import time

    with Engine(threads=2, window=4, processes=2) as engine:
        results = dict(engine.map_unordered(_slow_task, range(4)))
        assert engine.workers_lost_mid_task == 0
        assert not engine.may_have_left_temporary_files
        pids = engine.client.run(os.getpid)

        killed: list[str] = []

        def kill_a_busy_worker() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                busy = [address for address, keys in engine.client.processing().items()
                        if keys]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(busy[0])
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        results.update(engine.map_unordered(_slow_task, range(4, 12)))
        killer.join()
        assert killed, "no worker was busy to kill"
        assert engine.workers_lost_mid_task >= 1
        assert engine.may_have_left_temporary_files
    assert results == {i: i + 1 for i in range(12)}


def test_an_engine_that_watches_its_workers_closes_without_an_error_logged(caplog):
    """The engine subscribes to the scheduler's events (worker processes); closing the
    client while subscribed made the scheduler log a CRITICAL traceback for sending
    the client its own remove-client event."""
    with caplog.at_level(logging.ERROR), Engine(threads=1, window=2, processes=1) as engine:
        assert dict(engine.map_unordered(_slow_task, range(2))) == {0: 1, 1: 2}
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


class Payload:
    """A task's argument, counted while alive (a batch of plan items in a real run)."""

    def __init__(self, n: int) -> None:
        self.n = n


def _payload_size(payload: Payload) -> int:
    return payload.n


def test_finished_tasks_leave_no_arguments_behind():
    """The embedded cluster keeps what finished tasks were given only in a short
    debugging log: Dask's default keeps the last 1000 stimuli, each holding its
    task's whole batch, which grew a run's memory by ~1.5 KB an object."""
    import gc

    with Engine(threads=2, window=4) as engine:
        done = sum(1 for _ in engine.map_unordered(_payload_size, (Payload(i)
                                                                   for i in range(300))))
        gc.collect()
        alive = sum(1 for o in gc.get_objects() if isinstance(o, Payload))
    assert done == 300
    assert alive <= 40, f"{alive} task arguments still alive after their tasks finished"


def _drop_failed_futures() -> None:
    """On the engine's loop: two futures fail and are collected unretrieved."""
    import asyncio
    import gc

    loop = asyncio.get_running_loop()
    for exc in (TimeoutError("Timeout"), ValueError("a real bug")):
        future = loop.create_future()
        future.set_exception(exc)
        del future
    gc.collect()


def test_dask_close_timeouts_are_not_logged_but_other_lost_errors_are(caplog):
    """Closing the embedded cluster under load can leave one of Dask's internal
    timeouts unretrieved; asyncio then printed a traceback below the run's real
    error (seen in CI after a full disk stopped a run)."""
    import asyncio

    with Engine(threads=1) as engine, caplog.at_level(logging.ERROR, logger="asyncio"):
        async def on_loop() -> None:
            _drop_failed_futures()

        asyncio.run_coroutine_threadsafe(on_loop(), engine.client.loop.asyncio_loop).result(10)
    logged = [r.getMessage() + repr(r.exc_info) for r in caplog.records if r.name == "asyncio"]
    assert len(logged) == 1, logged
    assert "a real bug" in logged[0]
    assert "Timeout" not in logged[0]


NO_OP_RERUN = """
import sys
from datamove import api
from datamove.manifest.model import load_manifest
report = api.run(load_manifest(sys.argv[1]))
print(report.exit_code, report.datasets["d"].counts.get("skipped"),
      "distributed" in sys.modules)
"""


def test_a_rerun_with_nothing_to_copy_starts_no_cluster(tmp_path):
    """The embedded cluster starts with the first task: a rerun that finds everything
    up to date never imports Dask (about 0.2 s of a 1.2 s rerun here); a run with
    something to copy does."""
    import subprocess
    import sys

    from .conftest import REPO, cli, write_manifest

    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"x" * i)
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(src)}, "destination": {"url": str(tmp_path / "dst")}}],
        ledger=str(tmp_path / "ledger"))
    first = cli("run", str(manifest))
    assert first.returncode == 0, first.stderr

    def rerun() -> list[str]:
        done = subprocess.run([sys.executable, "-c", NO_OP_RERUN, str(manifest)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert rerun() == ["0", "5", "False"]
    (src / "f5").write_bytes(b"new")
    assert rerun() == ["0", "5", "True"]


def test_embedded_worker_processes_copy_encrypted_objects(tmp_path):
    """engine.processes: workers in their own processes, each opening the identity
    itself from the reference it receives (verify: full decrypts every copy)."""
    identity = X25519Identity.generate()
    (tmp_path / "id.key").write_text(format_identity_file(identity))
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}.bin").write_bytes(os.urandom(1000 + i))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({
        "version": 1, "name": "procs", "engine": {"processes": 2, "threads": 2,
                                                  "batch_objects": 5},
        "datasets": [{"name": "d", "source": {"url": str(src)},
                      "destination": {"url": str(tmp_path / "dst")}, "verify": "full",
                      "encrypt": {"recipients": [str(identity.recipient)],
                                  "identity": {"file": str(tmp_path / "id.key")}}}]}))
    report = api.run(api.load_manifest(manifest))
    assert report.engine == "embedded (2 processes × 1 thread)"
    assert report.exit_code == 0, report.to_json()
    assert report.datasets["d"].counts["copied"] == 40
    assert len(list((tmp_path / "dst").glob("*.age"))) == 40
    checked = api.verify(api.load_manifest(manifest))
    assert checked.datasets["d"].counts["matched"] == 40


def test_a_chained_dataset_waits_for_the_one_it_reads(tmp_path):
    from datamove.manifest.model import VerifyMode
    from datamove.pipeline.jobs import stages
    from datamove.pipeline.march import DatasetJob
    from datamove.stores.core import KeyFilter, Location

    def job(name: str, src: str, dst: str) -> DatasetJob:
        return DatasetJob(name, Location.of(src), Location.of(dst), KeyFilter((), ()),
                          VerifyMode.checksum)

    a = job("a", "s3://raw/x/", "gs://land/x/")
    b = job("b", "gs://land/x/sub/", "az://mirror/x/")
    c = job("c", str(tmp_path / "other"), str(tmp_path / "out"))
    d = job("d", "az://mirror/", str(tmp_path / "final"))
    assert [[j.name for j in stage] for stage in stages([a, b, c, d])] == [
        ["a", "c"], ["b"], ["d"]]
    assert stages([]) == []
