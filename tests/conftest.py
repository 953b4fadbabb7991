"""Shared fixtures: real components started as subprocesses, manifests on disk.

S3 runs on ``moto_server`` in its own process (the in-process threaded server can
deadlock with delta-rs); GCS on ``gcp-storage-emulator``; Azure Blob on Azurite
(from the npm registry, installed by .ci/run into .ci/node). In CI (CI=true) a
component that cannot start fails the test run; it is never skipped.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import socket
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NODE_BIN = REPO / ".ci" / "node" / "node_modules" / ".bin"


def require_tool(name: str) -> str:
    """The path of a tool the tests need; missing, it fails in CI and skips elsewhere.
    Looked for beside this Python, in .ci/node (npm tools), then on PATH."""
    here = Path(sys.executable).parent / name
    found = next((str(p) for p in (here, NODE_BIN / name) if p.exists()), None) \
        or shutil.which(name)
    if not found:
        message = f"{name} is not installed; .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


class MotoServer:
    def __init__(self, port: int, process: subprocess.Popen[bytes]):
        self.port = port
        self.process = process
        self.endpoint = f"http://127.0.0.1:{port}"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def start_server(name: str, args: list[str], port: int, timeout: float = 30,
                 host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """Start a server subprocess and wait until it accepts connections on ``host:port``."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return process
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}")
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"{name} did not start within {timeout:.0f} s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def running_moto() -> Iterator[MotoServer]:
    """A moto_server subprocess on a free loopback port, stopped afterwards unless
    the test already killed it."""
    for key, value in AWS_ENV.items():
        os.environ.setdefault(key, value)
    port = free_port()
    process = start_server("moto_server", [require_tool("moto_server"), "-H", "127.0.0.1",
                                           "-p", str(port)], port)
    try:
        yield MotoServer(port, process)
    finally:
        if process.poll() is None:
            stop_server(process)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with running_moto() as server:
        yield server


class GcsEmulator:
    """gcp-storage-emulator: buckets are made through gcsfs, as a user's would be."""

    def __init__(self, port: int):
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        # What a manifest gives: the endpoint, anonymous access, a project name.
        self.options = {"endpoint_url": self.endpoint, "token": "anon", "project": "test"}

    def fs(self):  # type: ignore[no-untyped-def]
        from datamove.stores.core import Location

        return Location.of("gs://x", self.options).fs

    def new_bucket(self) -> str:
        name = f"g-{uuid.uuid4().hex[:12]}"
        self.fs().mkdir(name)
        return name

    def location(self, bucket: str, prefix: str = "data/") -> dict:
        return {"url": f"gs://{bucket}/{prefix}", "options": dict(self.options)}


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    port = free_port()
    process = start_server("gcp-storage-emulator", [
        require_tool("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port",
        str(port), "--in-memory"], port)
    try:
        yield GcsEmulator(port)
    finally:
        stop_server(process)


# Azurite's published development account (docs: "Azurite: well-known storage
# account and key"). Not a secret, but handled like one: it reaches datamove only
# through the environment, as a real key would.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr"
               "/KBHBeksoGMGw==")


class Azurite:
    def __init__(self, port: int):
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint};")
        # adlfs reads the connection string; delta-rs (an Azure ledger) does not, and
        # takes the key from AZURE_STORAGE_ACCOUNT_KEY (ledger.storage_options).
        self.env = {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string,
                    "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY}

    def fs(self):  # type: ignore[no-untyped-def]
        from datamove.stores.core import Location

        return Location.of("az://x").fs

    def new_container(self) -> str:
        name = f"c-{uuid.uuid4().hex[:12]}"
        self.fs().mkdir(name)
        return name

    def location(self, container: str, prefix: str = "data/") -> dict:
        return {"url": f"az://{container}/{prefix}"}


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    port = free_port()
    process = start_server("azurite-blob", [
        require_tool("azurite-blob"), "--inMemoryPersistence", "--loose",
        "--skipApiVersionCheck", "--blobHost", "127.0.0.1", "--blobPort", str(port)], port)
    server = Azurite(port)
    # Workers (threads here, processes in CLI tests) read it from the environment.
    previous = {name: os.environ.get(name) for name in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        stop_server(process)


def file_sha(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (tests copy objects of hundreds of MiB)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(path: Path, datasets: list[dict], **top: object) -> Path:
    """Write a manifest YAML with sensible defaults for tests."""
    doc = {"version": 1, "name": top.pop("name", "test"), **top, "datasets": datasets}
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def s3_location(server: MotoServer, bucket: str, prefix: str = "data/") -> dict:
    return {"url": f"s3://{bucket}/{prefix}", "options": {"endpoint_url": server.endpoint}}


def run_with_passphrase(args: list[str], passphrase: str, timeout: float = 120) -> str:
    """Run the age CLI answering its passphrase prompts on a pseudo-terminal.

    The child gets a new session without a controlling terminal, so age cannot open
    /dev/tty (which would be the developer's terminal) and falls back to stdin, the pty.
    Returns the terminal transcript (prompts and errors; echo is off, so no passphrase).
    """
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen([require_tool("age"), *args], stdin=slave,
                                   stdout=subprocess.DEVNULL, stderr=slave,
                                   start_new_session=True)
    finally:
        os.close(slave)
    transcript, pending = b"", b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            transcript += chunk
            pending += chunk
            if b"passphrase" in pending.lower() and pending.rstrip().endswith(b":"):
                wait_for_no_echo(master)
                os.write(master, passphrase.encode() + b"\n")
                pending = b""
        else:
            process.kill()
            pytest.fail(f"age {args} timed out; terminal said {transcript!r}")
        assert process.wait(timeout=10) == 0, f"age {args} failed: {transcript!r}"
    finally:
        os.close(master)
    return transcript.decode("utf-8", "replace")


def wait_for_no_echo(master: int, timeout: float = 10) -> None:
    """Answer only once age has turned echo off, or the terminal would echo the passphrase.

    age prints the prompt first and disables echo a moment later; a program answering
    instantly would race it (a person typing never does).
    """
    deadline = time.monotonic() + timeout
    while termios.tcgetattr(master)[3] & termios.ECHO:
        if time.monotonic() > deadline:
            pytest.fail("age never disabled terminal echo for the passphrase prompt")
        time.sleep(0.005)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            cwd: Path | None = None, stdin: bytes | None = None,
            binary: bool = False) -> subprocess.CompletedProcess[Any]:
    """Run the real ``datamove`` command in a subprocess; ``binary``: bytes in and out."""
    full_env = {**os.environ, **AWS_ENV, **(env or {})}
    return subprocess.run([sys.executable, "-m", "datamove.cli", *args], capture_output=True,
                          text=not binary, input=stdin, env=full_env, timeout=timeout, cwd=cwd)
