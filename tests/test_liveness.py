"""Liveness and interruption, with real faults: an S3 endpoint (moto_server) killed with
SIGKILL mid-run, SIGINT / SIGTERM sent to a real ``datamove run``, a passphrase that
does not open the identity. Each run is a subprocess here because the process's exit
(its code, its time, its stderr) is what is tested.

Per object, what is at the destination after the fault must be in the ledger, so a
rerun never has to copy or verify it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from datamove import api
from datamove.age import X25519Identity
from datamove.crypto.identities import protect_with_passphrase
from datamove.ledger.tables import Ledger
from datamove.stores.core import PARTIAL_MARKER, Location

from .conftest import (
    AWS_ENV,
    MotoServer,
    cli,
    last_json,
    running_moto,
    s3_location,
    write_manifest,
)

SIZE = 64 * 1024


@pytest.fixture
def doomed_moto() -> Iterator[MotoServer]:
    """A moto_server of the test's own, to be killed (the session's one must live)."""
    with running_moto() as server:
        yield server


def start_run(manifest: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "datamove.cli", "run", str(manifest), "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **AWS_ENV})


def finish(process: subprocess.Popen[str], within: float) -> tuple[int, str, str, float]:
    """Wait for the run to end; fail (and kill it) if it outlives ``within`` seconds."""
    began = time.monotonic()
    try:
        out, err = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"datamove still running {within:.0f} s later; stderr: {err[-2000:]}")
    return process.returncode, out, err, time.monotonic() - began


def wait_until(condition, what: str, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def local_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and PARTIAL_MARKER not in p.name}


def s3_keys(server: MotoServer, bucket: str, prefix: str = "data/") -> set[str]:
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix)
    return {o["Key"][len(prefix):] for page in pages for o in page.get("Contents", ())}


def recorded(ledger: Path, dataset: str) -> dict[str, str]:
    """key -> status of its latest row."""
    rows = Ledger(str(ledger)).objects(columns=["dataset", "key", "status", "recorded_at"])
    latest: dict[str, str] = {}
    for row in sorted(rows.to_pylist(), key=lambda r: r["recorded_at"]):
        if row["dataset"] == dataset:
            latest[row["key"]] = row["status"]
    return latest


def fill_local(root: Path, count: int, size: int = SIZE, big: int = 0) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"f{i:04d}.bin").write_bytes(os.urandom(size))
    for i in range(big):
        (root / f"big{i}.bin").write_bytes(os.urandom(12 * 1024 * 1024))


def fill_s3(server: MotoServer, bucket: str, count: int) -> None:
    client = server.client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=bucket, Key=f"data/f{i:04d}.bin",
                                                  Body=os.urandom(SIZE)), range(count)))


# --- an endpoint killed mid-run ------------------------------------------------------------

def test_source_endpoint_killed_mid_run_stops_its_dataset_and_records_what_finished(
        tmp_path: Path, doomed_moto: MotoServer) -> None:
    """The S3 source dies (SIGKILL) with copies in flight: the run ends within 60 s
    (exit 1) naming the endpoint; every object at the destination is recorded; a
    dataset on other stores is copied in full."""
    bucket = doomed_moto.new_bucket()
    fill_s3(doomed_moto, bucket, 600)
    fill_local(tmp_path / "other-src", 30)
    dst, ledger = tmp_path / "dst", tmp_path / "ledger"
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "remote", "source": s3_location(doomed_moto, bucket),
         "destination": {"url": str(dst)}},
        {"name": "other", "source": {"url": str(tmp_path / "other-src")},
         "destination": {"url": str(tmp_path / "other-dst")}},
    ], ledger=str(ledger), engine={"threads": 2})
    run = start_run(manifest)
    wait_until(lambda: len(local_files(dst)) >= 40 or run.poll() is not None,
               "the first copies")
    assert run.poll() is None, "the run ended before the endpoint could be killed"
    doomed_moto.process.kill()
    code, out, err, seconds = finish(run, within=60)
    print(f"\nsource endpoint killed: datamove exited {code} after {seconds:.1f} s")

    assert code == 1, err[-3000:]
    assert "Traceback" not in err
    report = last_json(out)
    [stop] = [p for p in report["problems"] if p["status"] == "stopped"]
    assert stop["dataset"] == "remote"
    assert f"consecutive connection failures to {doomed_moto.endpoint}" in stop["error"]
    assert report["datasets"]["remote"]["not_attempted"] > 0
    assert report["datasets"]["other"]["copied"] == 30
    copied = local_files(dst)
    rows = recorded(ledger, "remote")
    assert 40 <= len(copied) < 600
    assert {key for key in copied if rows.get(key) != "copied"} == set()
    assert not [p for p in dst.rglob("*") if PARTIAL_MARKER in p.name]


def test_destination_endpoint_killed_mid_run_records_every_published_object(
        tmp_path: Path, doomed_moto: MotoServer) -> None:
    """The S3 destination dies (SIGKILL): the run ends within 60 s (exit 1) naming
    the endpoint, and every object S3 listed just before the kill is recorded."""
    fill_local(tmp_path / "src", 600)
    bucket = doomed_moto.new_bucket()
    ledger = tmp_path / "ledger"
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "up", "source": {"url": str(tmp_path / "src")},
         "destination": s3_location(doomed_moto, bucket)},
    ], ledger=str(ledger), engine={"threads": 2})
    run = start_run(manifest)
    wait_until(lambda: run.poll() is not None or len(s3_keys(doomed_moto, bucket)) >= 40,
               "the first uploads")
    published = s3_keys(doomed_moto, bucket)
    doomed_moto.process.kill()
    assert run.poll() is None, "the run ended before the endpoint could be killed"
    code, out, err, seconds = finish(run, within=60)
    print(f"\ndestination endpoint killed: datamove exited {code} after {seconds:.1f} s")

    assert code == 1, err[-3000:]
    assert "Traceback" not in err
    report = last_json(out)
    [stop] = [p for p in report["problems"] if p["status"] == "stopped"]
    assert f"consecutive connection failures to {doomed_moto.endpoint}" in stop["error"]
    rows = recorded(ledger, "up")
    assert 40 <= len(published) < 600
    assert {key for key in published if rows.get(key) != "copied"} == set()


# --- SIGINT and SIGTERM ------------------------------------------------------------------

def interrupted_setup(tmp_path: Path, moto_server: MotoServer) -> tuple[Path, str, Path]:
    """400 objects of 256 KiB and 3 multipart-sized ones, local → S3, two threads."""
    fill_local(tmp_path / "src", 400, size=256 * 1024, big=3)
    bucket = moto_server.new_bucket()
    ledger = tmp_path / "ledger"
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(tmp_path / "src")},
         "destination": s3_location(moto_server, bucket)},
    ], ledger=str(ledger), engine={"threads": 2, "part_size": 5 * 1024 * 1024})
    return manifest, bucket, ledger


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_records_what_is_done_and_exits_within_5_seconds(
        tmp_path: Path, moto_server: MotoServer, signum: int) -> None:
    manifest, bucket, ledger = interrupted_setup(tmp_path, moto_server)
    run = start_run(manifest)
    # Rows land while the run goes on (per object, flushed every second), not per batch.
    wait_until(lambda: run.poll() is not None or len(recorded(ledger, "d")) >= 10,
               "the first ledger rows")
    assert run.poll() is None, "the run ended before it could be interrupted"
    run.send_signal(signum)
    code, out, err, seconds = finish(run, within=30)
    print(f"\n{signal.Signals(signum).name}: datamove exited {code} after {seconds:.2f} s")

    assert code == 128 + signum, err[-3000:]
    assert seconds < 5
    assert "Traceback" not in err and "Aborted!" not in err
    report = last_json(out)
    assert report["interrupted"] == signal.Signals(signum).name
    assert report["exit_code"] == 128 + signum
    published = s3_keys(moto_server, bucket)
    rows = recorded(ledger, "d")
    assert 10 <= len(published) < 403
    assert {key for key in published if rows.get(key) != "copied"} == set()
    assert report["datasets"]["d"]["copied"] == len(published)
    uploads = moto_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []  # the uploads cut short were aborted

    rerun = api.run(api.load_manifest(manifest))  # copies the rest, re-verifies nothing
    counts = rerun.datasets["d"].counts
    assert (counts["copied"], counts["skipped"], counts["verified"]) == (
        403 - len(published), len(published), 0)
    assert rerun.exit_code == 0


def test_second_signal_stops_at_once(tmp_path: Path, moto_server: MotoServer) -> None:
    manifest, bucket, _ = interrupted_setup(tmp_path, moto_server)
    run = start_run(manifest)
    wait_until(lambda: run.poll() is not None or len(s3_keys(moto_server, bucket)) >= 20,
               "the first uploads")
    assert run.poll() is None, "the run ended before it could be interrupted"
    run.send_signal(signal.SIGINT)
    time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    code, _, err, seconds = finish(run, within=30)
    print(f"\nSIGINT twice: datamove exited {code} after {seconds:.2f} s")
    assert code == 130
    assert "SIGINT again: stopping now" in err
    assert "Traceback" not in err and "Aborted!" not in err
    assert seconds < 2


# --- an identity that cannot be opened ------------------------------------------------------

def test_wrong_passphrase_stops_the_run_before_anything_moves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = X25519Identity.generate()
    (tmp_path / "id.age").write_text(protect_with_passphrase(identity, "the right one"))
    fill_local(tmp_path / "src", 5, size=1000)
    ledger, dst = tmp_path / "ledger", tmp_path / "dst"
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "secret", "source": {"url": str(tmp_path / "src")},
         "destination": {"url": str(dst)}, "verify": "full",
         "encrypt": {"recipients": [str(identity.recipient)],
                     "identity": {"file": str(tmp_path / "id.age")}}},
    ], ledger=str(ledger))
    monkeypatch.setenv("DATAMOVE_PASSPHRASE", "a wrong one")
    result = cli("run", str(manifest), "--no-progress")
    assert result.returncode == 2, result.stderr
    assert f"wrong passphrase for identity file {tmp_path / 'id.age'}" in result.stderr
    assert not dst.exists() or local_files(dst) == set()
    assert recorded(ledger, "secret") == {}


def test_timeouts_are_bounded_by_default_and_an_explicit_option_wins() -> None:
    """gcsfs sends requests without any timeout unless told; botocore's legacy retries
    spend ~10 s per refused request. An option the manifest sets wins."""
    s3 = Location.of("s3://b/", {"endpoint_url": "http://127.0.0.1:9"}).fs
    assert (s3.config_kwargs["connect_timeout"], s3.config_kwargs["read_timeout"]) == (10, 30)
    assert s3.config_kwargs["retries"] == {"max_attempts": 3, "mode": "standard"}
    mine = Location.of("s3://b/", {"endpoint_url": "http://127.0.0.1:9",
                                   "config_kwargs": {"read_timeout": 300}}).fs
    assert (mine.config_kwargs["connect_timeout"], mine.config_kwargs["read_timeout"]) == (10, 300)
    gcs = Location.of("gs://b/", {"endpoint_url": "http://127.0.0.1:9", "token": "anon"}).fs
    assert (gcs.requests_timeout.sock_connect, gcs.requests_timeout.sock_read) == (10, 30)


def _wait_for_stop(token: str, dataset: str) -> float:
    """A task that runs until the driver raises its dataset's stop flag (at most 30 s)."""
    from datamove.pipeline import cancel

    began = time.monotonic()
    while not cancel.is_set(token, dataset) and time.monotonic() - began < 30:
        time.sleep(0.05)
    return time.monotonic() - began


def test_stop_flags_reach_worker_processes_of_a_remote_scheduler() -> None:
    """Workers in other processes (engine.processes, a tcp:// scheduler) see the
    driver's stop flag through the scheduler, within the poll interval."""
    from distributed import Client, LocalCluster

    from datamove.pipeline import cancel

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster.scheduler_address, set_as_default=False) as client, \
            cancel.Switch("tok12345", client) as switch:
        other = client.submit(_wait_for_stop, "tok12345", "other", pure=False)
        mine = client.submit(_wait_for_stop, "tok12345", "mine", pure=False)
        time.sleep(2)
        switch.stop("mine")
        assert mine.result(timeout=10) < 5
        assert not other.done()  # another dataset's work goes on
        switch.stop()  # the whole run
        assert other.result(timeout=10) < 10
