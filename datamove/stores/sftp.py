"""SFTP servers (``sftp://user@host:port/path``), over fsspec's sftp (paramiko).

A store with no native checksums, no storage classes and no server-side copy;
a write is a temporary name beside the final one, renamed into place with the
``posix-rename@openssh.com`` extension (atomic, replaces the old file), as for
any fsspec store (fsspec_generic.FsspecWriter). Host, port and user come from
the URL by fsspec's rules; the manifest's ``options`` (``username``, ``port``...)
are paramiko's ``connect`` arguments and win. Credentials never sit in a
manifest (``password`` and ``key_filename`` are refused like every secret-like
option): paramiko takes the key from the SSH agent or the user's ``~/.ssh/id_*``.

Host keys: the server's key must be in the user's ``~/.ssh/known_hosts`` or
the file named by the ``known_hosts`` option. An unknown key is refused, as
``ssh`` does with ``StrictHostKeyChecking``, unless the host is this
machine's loopback interface (a test server) or the location opts in with
``allow_insecure: true`` (transport.py's rule for clear-text endpoints): fsspec's
own default would trust any key a man in the middle presents.
"""

from __future__ import annotations

import functools
import os
from typing import Any, ClassVar

from datamove.errors import LocationUnreachable
from datamove.stores.base import Location
from datamove.stores.fsspec_generic import FsspecBackend
from datamove.stores.transport import OPT_IN, is_loopback

KNOWN_HOSTS = "known_hosts"
"""Option: a known_hosts file to check the server's key against (besides ~/.ssh/known_hosts)."""

_TRANSIENT = {"SSHException", "NoValidConnectionsError", "ChannelException", "EOFError",
              "ProxyCommandFailure"}


class SFTPBackend(FsspecBackend):
    """An SFTP server: temporary name then rename, nothing else to declare."""

    name: ClassVar[str] = "sftp"
    client_modules = ("paramiko",)
    extra = "sftp"

    def filesystem(self, location: Location) -> Any:
        options = self.client_options(location)
        insecure = bool(dict(location.options).get(OPT_IN))
        policy = options.pop("host_key_policy", None)
        host = options.get("host")
        if policy not in (None, "reject") and not (insecure or is_loopback(host)):
            raise LocationUnreachable(
                f"{location.url}: host_key_policy {policy!r} would trust any host key; add "
                f"the server's key to known_hosts, or set {OPT_IN}: true beside it")
        if policy is None:
            policy = "auto_add" if insecure or is_loopback(host) else "reject"
        known = options.pop(KNOWN_HOSTS, None)
        return _filesystem_class()(host_key_policy=policy,
                                     known_hosts=os.path.expanduser(known) if known else None,
                                     **options)

    def is_transient(self, exc: BaseException) -> bool:
        """A dropped or refused SSH connection; an SFTP status answer (no such
        file, permission denied, failure) is final."""
        if type(exc).__name__ in _TRANSIENT:
            return True
        return super().is_transient(exc)


@functools.cache
def _filesystem_class() -> Any:
    """fsspec's SFTPFileSystem, checking host keys against known_hosts files
    (fsspec's loads none, so ``reject`` would refuse every server). Made on
    first use: paramiko is imported only when an sftp:// location is used."""
    from fsspec.implementations.sftp import SFTPFileSystem

    class CheckedSFTPFileSystem(SFTPFileSystem):  # type: ignore[misc]
        def __init__(self, host: str, known_hosts: str | None = None, **ssh_kwargs: Any):
            self._known_hosts = known_hosts
            super().__init__(host, **ssh_kwargs)

        def _connect(self) -> None:
            import paramiko

            self.client = paramiko.SSHClient()
            self.client.load_system_host_keys()  # ~/.ssh/known_hosts, if there is one
            if self._known_hosts:
                self.client.load_host_keys(self._known_hosts)
            self.client.set_missing_host_key_policy(self.host_key_policy)
            self.client.connect(self.host, **self.ssh_kwargs)
            self.ftp = self.client.open_sftp()

        def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
                  **kwargs: Any) -> Any:
            handle = super()._open(path, mode, block_size=block_size, **kwargs)
            if "r" not in mode:
                # paramiko waits for the answer to each 32 KiB write (about 1 MiB/s
                # here); pipelined, the SSH window bounds what is in flight and an
                # error surfaces at close(), which the writer calls before its rename.
                handle.set_pipelined(True)
            return handle

    return CheckedSFTPFileSystem
