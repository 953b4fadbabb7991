"""Shared fixtures: real components started as subprocesses, manifests on disk.

S3 runs on ``moto_server`` in its own process (the in-process threaded server can
deadlock with delta-rs); GCS on ``gcp-storage-emulator``; Azure Blob on Azurite
(from the npm registry, installed by .ci/run into .ci/node); SFTP on Debian's
OpenSSH sshd (installed by .ci/run), with an ssh-agent holding the key. In CI (CI=true) a
component that cannot start fails the test run; it is never skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import pwd
import select
import shutil
import socket
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port where every connection is refused, for as long as the block runs:
    the port is bound (so no server can take it) but never listened on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block; put back what was there before."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


def start_listening(name: str, args: list[str], timeout: float = 30,
                    host: str = "127.0.0.1") -> tuple[subprocess.Popen[bytes], int]:
    """Start a server subprocess told to listen on port 0; return it and the port the
    system gave it (its listening socket, read from the process table).

    No port is chosen in advance, so none can be taken by another process between
    choosing it and binding it (a port "free" a moment ago is a race)."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = await_listener(name, process, timeout, host)
    if port is None:
        pytest.fail(f"{name} exited with {process.returncode}")
    return process, port


def start_on_a_free_port(name: str, make_args: Callable[[int], list[str]],
                         timeout: float = 30, host: str = "127.0.0.1",
                         attempts: int = 5) -> tuple[subprocess.Popen[bytes], int]:
    """For a server that cannot listen on port 0 (sshd): try a port free a moment ago;
    if another process took it meanwhile, the server cannot bind and exits, and the
    next port is tried. The port returned is the one this server listens on (its own
    socket, read from the process table), never another process's."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        process = subprocess.Popen(make_args(port), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        if await_listener(name, process, timeout, host) == port:
            return process, port
        stop_server(process)
    pytest.fail(f"{name} could not bind a free port in {attempts} attempts")


def await_listener(name: str, process: subprocess.Popen[bytes], timeout: float,
                   host: str) -> int | None:
    """The one port ``process`` (or a child) listens on, once it accepts a connection;
    None if it exited first."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        with contextlib.suppress(psutil.Error):
            main = psutil.Process(process.pid)
            ports = {c.laddr.port for p in (main, *main.children(recursive=True))
                     for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
            if len(ports) == 1:
                port = ports.pop()
                with contextlib.suppress(OSError):
                    socket.create_connection((host, port), timeout=0.5).close()
                    return port
            elif ports:
                stop_server(process)
                pytest.fail(f"{name} listens on several ports {sorted(ports)}; which one?")
        time.sleep(0.05)
    stop_server(process)
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
    """A moto_server subprocess on a loopback port of its own, stopped afterwards unless
    the test already killed it. The tests' AWS credentials are in the environment
    while it runs (those already set are kept), and taken out again afterwards."""
    missing = {key: value for key, value in AWS_ENV.items() if key not in os.environ}
    process, port = start_listening("moto_server", [
        require_tool("moto_server"), "-H", "127.0.0.1", "-p", "0"])
    try:
        with environment(**missing):
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


@pytest.fixture
def relay(moto_server: MotoServer) -> Iterator[Any]:
    """A relay in front of moto that counts requests in flight and bytes each way
    (tests/relay.py): what a test of parallel or in-store copies looks at."""
    from tests.relay import Relay

    relay = Relay(moto_server.port)
    yield relay
    relay.close()


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    # gcsfs would probe for hierarchical-namespace buckets, which the emulator lacks.
    unset = {} if "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT" in os.environ else {
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    process, port = start_listening("gcp-storage-emulator", [
        require_tool("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", "0",
        "--in-memory"])
    try:
        with environment(**unset):
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
    process, port = start_listening("azurite-blob", [
        require_tool("azurite-blob"), "--inMemoryPersistence", "--loose",
        "--skipApiVersionCheck", "--blobHost", "127.0.0.1", "--blobPort", "0"])
    server = Azurite(port)
    # Workers (threads here, processes in CLI tests) read it from the environment.
    try:
        with environment(**server.env):
            yield server
    finally:
        stop_server(process)


class SftpServer:
    """OpenSSH's sshd on a loopback port, serving SFTP (``internal-sftp``) from this
    machine's file system as the current user, who logs in with a key held by an
    ssh-agent: datamove gets no secret in the manifest (redact.py refuses inline
    keys, ``key_filename`` too), and paramiko finds the key through
    ``SSH_AUTH_SOCK`` in the environment, as a user's agent would serve it.
    """

    def __init__(self, port: int, root: Path, known_hosts: Path):
        self.port = port
        self.root = root  # where each test's directories are made
        self.known_hosts = known_hosts  # the server's host key, for a checking client
        self.username = pwd.getpwuid(os.getuid()).pw_name

    @property
    def options(self) -> dict[str, Any]:
        return {"username": self.username}

    def fs(self):  # type: ignore[no-untyped-def]
        """fsspec's own sftp filesystem, for raw access beside datamove's."""
        import fsspec

        return fsspec.filesystem("sftp", host="127.0.0.1", port=self.port, **self.options)

    def new_dir(self) -> str:
        path = self.root / f"s-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return str(path)

    def location(self, directory: str, prefix: str = "data/") -> dict:
        return {"url": f"sftp://127.0.0.1:{self.port}{directory}/{prefix}",
                "options": dict(self.options)}


def _generate_key(path: Path) -> Path:
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                    path.name, "-f", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    """sshd (Debian's openssh-server, installed by .ci/run) with a generated config,
    host key and authorized key, and an ssh-agent holding the client key; the
    agent's socket is put in SSH_AUTH_SOCK for the session and restored after."""
    sshd = shutil.which("sshd", path=f"{os.environ.get('PATH', '')}:/usr/sbin") \
        or require_tool("sshd")  # sbin is not on a non-root PATH; sshd needs its full path
    base = tmp_path_factory.mktemp("sftp")
    host_key, client_key = _generate_key(base / "host_key"), _generate_key(base / "client_key")
    (base / "authorized_keys").write_text((base / "client_key.pub").read_text())
    config = base / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"HostKey {host_key}", "PidFile none",
        f"AuthorizedKeysFile {base / 'authorized_keys'}", "StrictModes no",
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
        # Without PAM, a non-root sshd cannot read the shadow file and takes a user
        # without a password for a locked account; as root, PAM sessions would write
        # to /run (motd) and the login records, which a test server has no business doing.
        f"UsePAM {'no' if os.geteuid() == 0 else 'yes'}",
        # Many workers connect at once; sshd's default (10:30:100) drops unauthenticated
        # connections at random beyond 10, which a loaded test machine reaches.
        "MaxStartups 200", "UseDNS no",
        "Subsystem sftp internal-sftp", ""]))
    # As root, sshd separates privileges into an empty root-owned directory, which
    # the package's service unit makes at boot; made here when missing, removed after.
    privsep = Path("/run/sshd")
    made_privsep = os.geteuid() == 0 and not privsep.exists()
    if made_privsep:
        privsep.mkdir(mode=0o755)
    previous = os.environ.get("SSH_AUTH_SOCK")
    process = agent = None
    try:
        checked = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True,
                                 text=True)
        if checked.returncode:
            pytest.fail(f"sshd refuses its test config: {checked.stderr.strip()}")
        agent_socket = base / "agent.sock"
        agent = subprocess.Popen([require_tool("ssh-agent"), "-D", "-a", str(agent_socket)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        process, port = start_on_a_free_port("sshd", lambda port: [
            sshd, "-D", "-f", str(config), "-p", str(port), "-E", str(base / "sshd.log")])
        deadline = time.monotonic() + 10
        while not agent_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        subprocess.run([require_tool("ssh-add"), "-q", str(client_key)], check=True,
                       capture_output=True, env={**os.environ, "SSH_AUTH_SOCK": str(agent_socket)})
        os.environ["SSH_AUTH_SOCK"] = str(agent_socket)
        public = host_key.with_suffix(".pub").read_text().split()
        known_hosts = base / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
        root = base / "files"
        root.mkdir()
        yield SftpServer(port, root, known_hosts)
    finally:
        if previous is None:
            os.environ.pop("SSH_AUTH_SOCK", None)
        else:
            os.environ["SSH_AUTH_SOCK"] = previous
        for started in (process, agent):
            if started is not None:
                stop_server(started)
        if made_privsep:
            with contextlib.suppress(OSError):
                privsep.rmdir()


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


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON summary a ``--json`` command prints as its last line."""
    return json.loads(stdout.strip().splitlines()[-1])


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (key -> bytes) under ``root``, making directories as needed."""
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            cwd: Path | None = None, stdin: bytes | None = None,
            binary: bool = False) -> subprocess.CompletedProcess[Any]:
    """Run the real ``datamove`` command in a subprocess; ``binary``: bytes in and out.

    For what only a process shows: signals and kills, the console entry itself,
    what a fresh interpreter imports. Everything else calls :func:`cli`.
    """
    full_env = {**os.environ, **AWS_ENV, **(env or {})}
    return subprocess.run([sys.executable, "-m", "datamove.cli", *args], capture_output=True,
                          text=not binary, input=stdin, env=full_env, timeout=timeout, cwd=cwd)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float | None = None,
        cwd: Path | str | None = None, stdin: bytes | str | None = None,
        binary: bool = False) -> subprocess.CompletedProcess[Any]:
    """Run the ``datamove`` command in this process, as :func:`run_cli` runs it in a new one.

    Same arguments and the same answer (``returncode``, ``stdout``, ``stderr``; bytes
    with ``binary``), about a second faster a call: no interpreter to start, nothing
    to import again. The command is the console entry's ``main`` (exit codes from
    ``sys.exit``, errors as one line on stderr); an exception that escapes it ends
    like an uncaught one in a process: exit 1 and its traceback on stderr, so a
    test asserting "no traceback" still can fail. Output written to file
    descriptors 1 and 2 (threads, C libraries) is captured too.

    What a command changes in the process is put back afterwards, as if the
    process had ended: the environment, the working directory, the logging setup
    the CLI installs (root handlers and level, handler filters, the record
    factory, the scrubber's known secrets), signal handlers, the interrupt flags,
    and the per-process caches a fresh process would not have (identities,
    fsspec filesystem instances), which are also emptied before the call.
    ``timeout`` is accepted for symmetry; pytest-timeout bounds the test.
    """
    from click.testing import CliRunner

    # What these modules set when imported (stores.core: GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT)
    # every process running a command has; imported here, it stays after the call.
    import datamove.stores.core  # noqa: F401
    from datamove.cli import main

    with cli_process_state():
        os.environ.update({**AWS_ENV, **(env or {})})
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner(catch_exceptions=True, capture="fd").invoke(
            main, list(args), input=stdin, prog_name="datamove")
    stderr = result.stderr_bytes
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        stderr += "".join(traceback.format_exception(*result.exc_info)).encode()
    stdout = result.stdout_bytes
    if binary:
        return subprocess.CompletedProcess(["datamove", *args], result.exit_code, stdout, stderr)
    return subprocess.CompletedProcess(["datamove", *args], result.exit_code,
                                       stdout.decode("utf-8", "replace"),
                                       stderr.decode("utf-8", "replace"))


@contextlib.contextmanager
def cli_process_state() -> Iterator[None]:
    """Save the process-wide state a CLI call changes; restore it on the way out.

    The root logger's handlers are taken away during the call, so that the CLI's
    ``logging.basicConfig`` installs its stderr handler as in a fresh process
    (pytest's capture handlers would otherwise make it a no-op)."""
    import logging
    import signal

    from datamove import redact
    from datamove.crypto.identities import clear_identity_cache
    from datamove.pipeline import interrupt

    environ = dict(os.environ)
    cwd = os.getcwd()
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    loggers = [root, *(logger for logger in list(logging.Logger.manager.loggerDict.values())
                       if isinstance(logger, logging.Logger))]
    filters = {handler: list(handler.filters) for logger in loggers for handler in logger.handlers}
    factory = logging.getLogRecordFactory()
    known_secrets = list(redact._known_values)
    handlers = {signum: signal.getsignal(signum) for signum in interrupt.SIGNALS}
    interrupt_state = (interrupt._requested, interrupt._deferring)
    root.handlers = []
    clear_process_caches(clear_identity_cache)
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in root_handlers:
                handler.close()
        root.handlers, root.level = root_handlers, root_level
        for logger in [root, *(logger for logger in
                               list(logging.Logger.manager.loggerDict.values())
                               if isinstance(logger, logging.Logger))]:
            for handler in logger.handlers:
                if handler in filters:
                    handler.filters = filters[handler]
                else:
                    handler.filters = [f for f in handler.filters
                                       if type(f).__name__ != "_Scrub"]
        logging.setLogRecordFactory(factory)
        redact._known_values[:] = known_secrets
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        interrupt._requested, interrupt._deferring = interrupt_state
        clear_process_caches(clear_identity_cache)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)


def clear_process_caches(clear_identity_cache: Any) -> None:
    """Empty what a new process would start without: loaded identities and the
    filesystem instances fsspec keeps per class and options (their clients hold
    credentials and connections made under the environment of the call)."""
    import fsspec

    clear_identity_cache()
    for name in list(fsspec.registry):
        fsspec.registry[name].clear_instance_cache()
