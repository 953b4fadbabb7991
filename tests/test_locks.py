"""The ledger writer lock: flock on local ledgers, a conditional-write lease on S3
(moto_server), stale leases taken over, live ones waited for."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from datamove.ledger.lock import LockTimeout, ledger_lock
from tests.conftest import AWS_ENV, write_manifest


def test_local_lock_excludes_a_second_holder_until_released(tmp_path):
    ledger = str(tmp_path / "ledger")
    with ledger_lock(ledger, command="archive"), \
            pytest.raises(LockTimeout, match="datamove archive"), \
            ledger_lock(ledger, command="run", wait=0.3):
        pass
    with ledger_lock(ledger, command="run", wait=0.3):
        pass  # released: free again


def test_local_lock_is_released_when_its_holder_is_killed(tmp_path):
    ledger = str(tmp_path / "ledger")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time, sys\n"
        "from datamove.ledger.lock import ledger_lock\n"
        f"with ledger_lock({ledger!r}, command='archive'):\n"
        "    print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockTimeout), ledger_lock(ledger, command="run", wait=0.3):
        pass
    holder.kill()
    holder.wait()
    with ledger_lock(ledger, command="run", wait=2):
        pass


def s3_ledger(moto_server) -> tuple[str, dict]:
    return f"s3://{moto_server.new_bucket()}/ledger", {"endpoint_url": moto_server.endpoint}


def test_s3_lease_waits_for_a_live_holder_and_is_renewed(tmp_path, moto_server):
    url, options = s3_ledger(moto_server)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with ledger_lock(url, options, command="archive", ttl=1.0):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(10)
    time.sleep(2.5)  # longer than the ttl: only renewals keep the lease alive
    with pytest.raises(LockTimeout, match="datamove archive"), \
            ledger_lock(url, options, command="run", wait=1.0):
        pass
    release.set()
    holder.join()
    started = time.monotonic()
    with ledger_lock(url, options, command="run", wait=5):
        assert time.monotonic() - started < 2
    bucket = url.split("/")[2]
    listed = moto_server.client().list_objects_v2(Bucket=bucket, Prefix="ledger/_locks/")
    assert listed.get("KeyCount", 0) == 0  # released leases are deleted


def test_s3_lease_of_a_dead_process_is_taken_over(moto_server):
    url, options = s3_ledger(moto_server)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    bucket = url.split("/")[2]

    def plant(**lease: object) -> None:
        moto_server.client().put_object(Bucket=bucket, Key="ledger/_locks/writer.json",
                                        Body=json.dumps(lease).encode())

    plant(host=socket.gethostname(), pid=dead.pid, command="archive", owner="x",
          expires_at=time.time() + 3600)
    started = time.monotonic()
    with ledger_lock(url, options, command="archive", wait=5):
        assert time.monotonic() - started < 2  # not the hour the lease claimed
    plant(host="elsewhere", pid=1, command="archive", owner="y", expires_at=time.time() + 3600)
    with pytest.raises(LockTimeout, match="elsewhere"), \
            ledger_lock(url, options, command="archive", wait=1):
        pass  # a live lease elsewhere is honoured


def test_run_waits_for_the_ledger_while_another_writer_holds_it(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"a" * 1000)
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": {"url": str(tmp_path / "src") + "/"},
        "destination": {"url": str(tmp_path / "dst") + "/"}}], ledger=str(tmp_path / "ledger"))
    err_path = tmp_path / "run.err"
    with ledger_lock(str(tmp_path / "ledger"), command="archive"), err_path.open("w") as err:
        run = subprocess.Popen([sys.executable, "-m", "datamove.cli", "run", str(manifest)],
                               env={**os.environ, **AWS_ENV}, stdout=subprocess.DEVNULL,
                               stderr=err, text=True)
        # Released only once the run says it waits: on a busy machine the process may
        # take seconds to get that far, and a lock released earlier proves nothing.
        deadline = time.monotonic() + 60
        while "waiting for the ledger" not in err_path.read_text() and run.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.poll() is None, err_path.read_text()  # waiting, not writing
        time.sleep(0.5)
        assert not (tmp_path / "dst").exists() and not (tmp_path / "ledger" / "objects").exists()
    assert run.wait(timeout=120) == 0, err_path.read_text()
    assert "waiting for the ledger: held by `datamove archive`" in err_path.read_text()
    assert (tmp_path / "dst" / "a.bin").read_bytes() == b"a" * 1000
