"""One writer per ledger: a lock that commands which write the ledger hold.

The ledger's tables and the audit log's hash chain assume a single writer
(DESIGN.md, "The driver is the only ledger writer"): two ``datamove archive``
runs started by overlapping cron jobs would both move the same due objects and
fork the audit chain. So every writing command takes this lock first and waits
for it, then reads the ledger fresh: the second of two concurrent runs finds
the work already done.

* Local ledgers: ``flock`` on ``<ledger>/_locks/writer.lock``; the kernel drops
  it when the holder dies, even by SIGKILL.
* S3 ledgers: a lease object ``<ledger>/_locks/writer.json`` created with
  ``If-None-Match: *`` and renewed with ``If-Match`` (compare-and-swap). A lease
  whose holder stopped renewing expires after ``ttl`` seconds; a holder on this
  host whose process is gone is taken over at once.
* Other stores have no lock yet: a warning says so, and the user must run one
  writer at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from datamove.errors import DatamoveError
from datamove.stores.base import backend_for, protocol_of
from datamove.stores.s3 import s3_error_code

log = logging.getLogger(__name__)

LOCK_DIR = "_locks"


class LockTimeout(DatamoveError):
    """Another datamove process held the ledger for longer than we would wait."""

    exit_code = 1


@contextlib.contextmanager
def ledger_lock(ledger_url: str, options: dict[str, Any] | None = None, *,
                command: str, wait: float = 3600.0, ttl: float = 60.0) -> Iterator[None]:
    """Hold the ledger's writer lock for the ``with`` block, waiting up to ``wait`` s."""
    url = ledger_url.rstrip("/")
    how = backend_for(protocol_of(url)).lease_lock
    if how == "flock":
        path = url.split("://", 1)[1] if "://" in url else url
        existed = os.path.exists(path)
        try:
            with _flock(os.path.join(path, LOCK_DIR, "writer.lock"), command, wait):
                yield
        finally:
            if not existed and os.listdir(path) == [LOCK_DIR]:
                # The command failed before writing anything: leave no trace of it.
                shutil.rmtree(path, ignore_errors=True)
    elif how == "conditional-write":
        lease = _S3Lease(url, options or {}, command, ttl)
        lease.acquire(wait)
        try:
            yield
        finally:
            lease.release()
    else:
        log.warning("ledger %s: no writer lock on this store; run one datamove writer at a "
                    "time", url)
        yield


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


@contextlib.contextmanager
def _flock(path: str, command: str, wait: float) -> Iterator[None]:
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                held_by = _who_in(os.pread(fd, 4096, 0))
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"the ledger is busy: held by {held_by} for more than "
                                      f"{wait:g} s ({path}); wait for it to finish") from None
                if not told:
                    log.warning("waiting for the ledger: held by %s", held_by)
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**_holder(), "command": command}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _S3Lease:
    """A renewable lease object on S3, changed only by conditional writes."""

    def __init__(self, ledger_url: str, options: dict[str, Any], command: str, ttl: float):
        from datamove.stores.core import Location

        location = Location.of(f"{ledger_url}/{LOCK_DIR}/", options)
        self.bucket, prefix = location.bucket_and_prefix()
        self.key = f"{prefix}writer.json"
        self.fs = location.fs
        self.call = location.fs.call_s3
        self.command, self.ttl = command, ttl
        self.owner = uuid.uuid4().hex
        self.etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({**_holder(), "command": self.command, "owner": self.owner,
                           "expires_at": time.time() + self.ttl}).encode()

    def acquire(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        told = False
        while True:
            current = self._read()
            try:
                if current is None:
                    response = self.call("put_object", Bucket=self.bucket, Key=self.key,
                                         Body=self._body(), IfNoneMatch="*")
                elif _stale(current[0]):
                    log.warning("taking over a stale ledger lock from %s", _who(current[0]))
                    response = self.call("put_object", Bucket=self.bucket, Key=self.key,
                                         Body=self._body(), IfMatch=current[1])
                else:
                    response = None
            except OSError as exc:
                if s3_error_code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise
                response = None  # someone else won the race; look again
            if response is not None:
                self.etag = response["ETag"]
                self._renewer = threading.Thread(target=self._renew, daemon=True,
                                                 name="datamove-ledger-lease")
                self._renewer.start()
                return
            if time.monotonic() >= deadline:
                raise LockTimeout(f"the ledger is busy: held by "
                                  f"{_who(current[0]) if current else 'another process'} for "
                                  f"more than {wait:g} s; wait for it to finish")
            if not told and current is not None:
                log.warning("waiting for the ledger: held by %s", _who(current[0]))
                told = True
            time.sleep(0.5)

    def _read(self) -> tuple[dict[str, Any], str] | None:
        from fsspec.asyn import sync

        async def get() -> tuple[bytes, str]:  # body and ETag of one and the same version
            got = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            async with got["Body"] as stream:
                return await stream.read(), got["ETag"]

        try:
            raw, etag = sync(self.fs.loop, get)
        except FileNotFoundError:
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"expires_at": 0}  # unreadable: treat as stale, CAS decides
        return body, etag

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                response = self.call("put_object", Bucket=self.bucket, Key=self.key,
                                     Body=self._body(), IfMatch=self.etag)
                self.etag = response["ETag"]
            except Exception as exc:  # lost the lease: say so loudly, the work goes on
                log.error("ledger lock lease could not be renewed (%s); another writer may "
                          "take over", type(exc).__name__)
                return

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self.call("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except Exception as exc:  # expired and taken over, or the store is gone
            log.warning("could not release the ledger lock (%s)", type(exc).__name__)


def _stale(body: dict[str, Any]) -> bool:
    if float(body.get("expires_at", 0)) < time.time():
        return True
    if body.get("host") == socket.gethostname() and isinstance(body.get("pid"), int):
        try:
            os.kill(body["pid"], 0)
        except ProcessLookupError:
            return True  # its process on this host is gone (killed)
        except PermissionError:
            return False
    return False


def _who(body: dict[str, Any]) -> str:
    return f"`datamove {body.get('command', '?')}` (pid {body.get('pid', '?')} on " \
           f"{body.get('host', '?')})"


def _who_in(raw: bytes) -> str:
    try:
        return _who(json.loads(raw))
    except ValueError:
        return "another datamove process"
