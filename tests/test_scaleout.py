"""Scale-out on an existing Dask cluster, as users run one: a ``dask scheduler`` and
``dask worker`` processes started from their command lines, ``--scheduler tcp://...``,
and a worker killed with SIGKILL half-way through the run.

The workers are separate processes with their own environment; they import datamove
from this checkout (PYTHONPATH), as a cluster's workers import the datamove installed
in their image. What they ran is read from the scheduler's own task stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
import pytest

from datamove.ledger.tables import Ledger
from datamove.stores.core import PARTIAL_MARKER

from .conftest import REPO, cli, require_tool, stop_server, write_manifest


@dataclass
class DaskCluster:
    """A scheduler and named workers, each its own process; ``client`` is the test's."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]]
    client: Any
    logs: Path

    def worker_address(self, name: str) -> str:
        return next(address for address, info in self.client.scheduler_info()["workers"].items()
                    if info["name"] == name)


@dataclass(frozen=True)
class Certificates:
    """A CA and one certificate it signed for 127.0.0.1 (server and client use)."""

    ca: Path
    cert: Path
    key: Path

    def cli_args(self) -> list[str]:
        return ["--tls-ca-file", str(self.ca), "--tls-cert", str(self.cert),
                "--tls-key", str(self.key)]

    def dask_config(self) -> dict[str, object]:
        """Dask's client TLS settings (docs/SCALE-OUT.md sets them as environment
        variables: DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ...)."""
        return {"distributed.comm.tls.ca-file": str(self.ca),
                "distributed.comm.tls.client.cert": str(self.cert),
                "distributed.comm.tls.client.key": str(self.key),
                "distributed.comm.require-encryption": True}


def make_certificates(folder: Path) -> Certificates:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
              signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False).add_extension(x509.ExtendedKeyUsage([
                    ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                    critical=False)
        return builder.sign(signer, hashes.SHA256())

    folder.mkdir(parents=True, exist_ok=True)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("test CA", ca_key, "test CA", ca_key, ca=True)
    cert = build("127.0.0.1", key, "test CA", ca_key, ca=False)
    paths = Certificates(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths


@contextlib.contextmanager
def dask_cluster(work: Path, workers: int = 2, threads: int = 2,
                 tls: Certificates | None = None) -> Iterator[DaskCluster]:
    """``dask scheduler`` on a loopback port the system picks (port 0; its address read
    from the ``--scheduler-file`` it writes, so no port is chosen in advance) and
    ``workers`` ``dask worker`` processes without a nanny (a killed worker stays dead).
    With ``tls``, every connection is TLS with client certificates (``tls://``).
    The scheduler's task stream is switched on before anything runs."""
    from distributed import Client
    from distributed.security import Security

    dask = require_tool("dask")
    secure = tls.cli_args() if tls else []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    work.mkdir(parents=True, exist_ok=True)
    scheduler_file = work / "scheduler.json"
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(work / f"{name}.log", "wb") as log:
            process = subprocess.Popen([dask, *args], env=env, cwd=work, stdout=log,
                                       stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    try:
        scheduler = start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0",
                          "--no-dashboard", "--scheduler-file", str(scheduler_file),
                          *(["--protocol", "tls", *secure] if tls else []))
        # The workers start at once too (importing distributed is most of the wait)
        # and find the scheduler through its file.
        started = {f"w{i}": start(f"w{i}", "worker", "--scheduler-file", str(scheduler_file),
                                  "--name", f"w{i}", "--nthreads", str(threads),
                                  "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                                  *secure)
                   for i in range(workers)}
        address = _scheduler_address(scheduler_file, scheduler, work / "scheduler.log")
        security = Security(tls_ca_file=str(tls.ca), tls_client_cert=str(tls.cert),
                            tls_client_key=str(tls.key), require_encryption=True) \
            if tls else None
        with Client(address, set_as_default=False, timeout="20s",
                    security=security) as client:
            client.wait_for_workers(workers, timeout=60)
            client.get_task_stream(count=0)  # installs the scheduler's task-stream plugin
            yield DaskCluster(address, scheduler, started, client, work)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            if process.poll() is None:
                stop_server(process)  # type: ignore[arg-type]


def _scheduler_address(path: Path, scheduler: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            pytest.fail(f"dask scheduler exited with {scheduler.returncode}: "
                        f"{log.read_text()[-2000:]}")
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
            return str(json.loads(path.read_text())["address"])
        time.sleep(0.05)
    pytest.fail("dask scheduler wrote no scheduler file within 30 s")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_worker_killed_mid_run_on_a_cli_started_cluster_loses_nothing(tmp_path):
    """Two ``dask worker`` processes share the run; one is SIGKILLed once some but not
    all objects are at the destination. Dask reruns its tasks on the other worker
    (datamove's tasks are idempotent), and the run ends with every object copied
    once, byte-identical, recorded once as copied, no temporary file left (the dead
    worker's are swept at the end of the dataset: without that sweep this test
    finds them), and an audit log that verifies."""
    count, size = 600, 64 * 1024
    src, dst, ledger = tmp_path / "src", tmp_path / "dst", tmp_path / "ledger"
    src.mkdir()
    for i in range(count):
        (src / f"d{i % 6}").mkdir(exist_ok=True)
        (src / f"d{i % 6}/f{i:04d}.bin").write_bytes(os.urandom(size))
    expected = {p.relative_to(src).as_posix(): sha256_of(p) for p in src.rglob("*.bin")}
    keygen = cli("audit", "keygen", "--name", "scaleout.test", "-o",
                 str(tmp_path / "signer.key"), "--pubkey-out", str(tmp_path / "verifier"))
    assert keygen.returncode == 0, keygen.stderr
    manifest = write_manifest(
        tmp_path / "m.yaml",
        [{"name": "d", "source": {"url": str(src)}, "destination": {"url": str(dst)}}],
        ledger=str(ledger), audit={"signing_key": str(tmp_path / "signer.key")},
        # Small batches: many tasks, so both workers hold some when one dies.
        engine={"batch_objects": 8, "window": 8})

    with dask_cluster(tmp_path / "cluster") as cluster:
        # The workers run this checkout's datamove, imported in their own processes.
        where = cluster.client.run(_datamove_file)
        assert set(where.values()) == {str(REPO / "datamove" / "__init__.py")}, where
        victim = cluster.worker_address("w0")
        killed: dict[str, Any] = {}

        def victim_finished_a_task() -> bool:
            return any(t["worker"] == victim and t["status"] == "OK"
                       for t in cluster.client.get_task_stream())

        def kill_mid_run() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = _published(dst)
                # Some objects published, not all; the victim has done work (its first
                # task may wait for imports on a busy machine) and holds tasks now.
                held = cluster.client.processing(victim)[victim] \
                    if count // 5 <= done < count * 3 // 4 and victim_finished_a_task() \
                    else ()
                if held:
                    cluster.workers["w0"].send_signal(signal.SIGKILL)
                    killed.update(published=done, at=time.monotonic(), held=set(held))
                    return
                if done >= count * 3 // 4:
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_mid_run)
        killer.start()
        began = time.monotonic()
        run = cli("run", str(manifest), "--scheduler", cluster.address, "--json",
                  "--no-progress")
        ended = time.monotonic()
        killer.join()
        assert killed, f"the victim was not killed mid-run ({_published(dst)} published)"
        assert cluster.workers["w0"].wait(10) == -signal.SIGKILL
        # The run outlived the victim; that it had to finish the victim's tasks is
        # checked below. (Not by a margin: 600 objects can finish 0.4 s after the kill.)
        assert began < killed["at"] < ended
        stream = cluster.client.get_task_stream()

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["engine"] == f"dask {cluster.address}"
    assert (report["datasets"]["d"]["copied"], report["datasets"]["d"]["failed"]) == (count, 0)

    # Both workers ran tasks (the scheduler's record of which worker finished each),
    # and the tasks the victim held when it died were finished by the survivor. A task
    # can appear twice: one the victim finished whose result the driver had not yet
    # collected is run again on the survivor, so count runs, not keys.
    finished = [(t["key"], t["worker"]) for t in stream if t["status"] == "OK"]
    ran = Counter(worker for _, worker in finished)
    assert len(ran) == 2 and ran[victim] > 0, ran
    assert killed["held"] <= {key for key, _ in finished}, \
        "a task of the dead worker never finished"
    assert any(key in killed["held"] for key, worker in finished if worker != victim), \
        "nothing was rescheduled"

    # Every object is at the destination, byte-identical, and nothing else is.
    assert {p.relative_to(dst).as_posix(): sha256_of(p)
            for p in dst.rglob("*") if p.is_file()} == expected
    assert not [p for p in dst.rglob("*") if PARTIAL_MARKER in p.name]

    # One ledger row per object: copied, with the source's sha256.
    rows = Ledger(str(ledger)).objects(columns=["dataset", "key", "status", "sha256"])
    rows = [r for r in rows.to_pylist() if r["dataset"] == "d"]
    assert Counter(r["key"] for r in rows) == Counter(list(expected))
    assert {(r["key"], r["status"], r["sha256"]) for r in rows} == \
        {(key, "copied", digest) for key, digest in expected.items()}

    audit = cli("audit", "verify", str(manifest), "--pubkey", str(tmp_path / "verifier"),
                "--json")
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]

    # A rerun finds nothing to do: nothing was left half-done.
    again = cli("run", str(manifest), "--json", "--no-progress")
    assert again.returncode == 0, again.stderr[-2000:]
    counts = json.loads(again.stdout.strip().splitlines()[-1])["datasets"]["d"]
    assert (counts["copied"], counts["skipped"]) == (0, count)


def _datamove_file() -> str:
    import datamove

    return str(datamove.__file__)


def _published(root: Path) -> int:
    """Objects published under ``root`` (temporary files not counted)."""
    if not root.exists():
        return 0
    return sum(1 for _, _, files in os.walk(root) for name in files
               if PARTIAL_MARKER not in name)


def test_a_tls_scheduler_is_reached_with_dasks_own_tls_settings(tmp_path):
    """``tls://`` (mutual TLS between scheduler, worker and client): datamove's client
    takes its CA, certificate and key from Dask's configuration; without them the
    run is refused with what to set, before anything is recorded."""
    certs = make_certificates(tmp_path / "tls")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i:02d}").write_bytes(os.urandom(1000 + i))
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(src)}, "destination": {"url": str(tmp_path / "dst")}}],
        ledger=str(tmp_path / "ledger"))
    with dask_cluster(tmp_path / "cluster", workers=1, tls=certs) as cluster:
        assert cluster.address.startswith("tls://127.0.0.1:")
        # Without the settings: exit 2 and what to set (distributed's own error was a
        # TypeError traceback, then a 20 s hang at exit).
        refused = cli("run", str(manifest), "--scheduler", cluster.address, "--json",
                      "--no-progress")
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert f"the Dask scheduler {cluster.address} speaks TLS, but Dask's configuration " \
            "gives this client no certificate: set distributed.comm.tls.ca-file" \
            in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not (tmp_path / "ledger").exists() and not (tmp_path / "dst").exists()
        # Dask's configuration, as its DASK_DISTRIBUTED__COMM__TLS__* variables give it
        # to a new process (this one read its environment at import).
        with dask.config.set(certs.dask_config()):
            run = cli("run", str(manifest), "--scheduler", cluster.address, "--json",
                      "--no-progress")
        stream = cluster.client.get_task_stream()
        worker = cluster.worker_address("w0")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert (report["engine"], report["datasets"]["d"]["copied"]) == \
        (f"dask {cluster.address}", 20)
    assert {t["worker"] for t in stream if t["status"] == "OK"} == {worker}  # it ran them
    assert all((tmp_path / "dst" / p.name).read_bytes() == p.read_bytes() for p in src.iterdir())
