"""One destination on each real backend, for the conformance suite and cross-cloud tests.

A :class:`Backend` is a manifest location plus raw access through the store's own
fsspec filesystem (to plant, read, tamper with and list bytes without going
through datamove's code paths). Listing is the raw ``find`` of the prefix, so a
temporary or partial object would show up in it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest

from datamove.stores.core import Location

KINDS = ["local", "memory", "s3", "gcs", "azure", "sftp"]
SERVERS = {"s3": "moto_server", "gcs": "gcs_emulator", "azure": "azurite",
           "sftp": "sftp_server"}


def put_gcs(fs: Any, path: str, data: bytes) -> None:
    """Upload ``data`` to ``bucket/key`` in one ``uploadType=media`` request.

    Not ``fs.pipe``: gcsfs frames a small upload as multipart/related with bare
    LF before its boundary, and the emulator's MIME parser takes a CR that ends
    the data as part of a CRLF delimiter, so an object whose last byte is 0x0D
    loses it (1 random object in 256). A media upload has no framing to misread.
    """
    if not data:  # the emulator reads an empty media body as no body at all
        fs.pipe(path, data)
        return
    bucket, key = path.split("/", 1)
    fs.call("POST", f"{fs._location}/upload/storage/v1/b/{bucket}/o", uploadType="media",
            name=key, data=data, json_out=True,
            headers={"Content-Type": "application/octet-stream"})
    fs.invalidate_cache(path)


class Backend:
    def __init__(self, kind: str, tmp_path: Path, server: Any = None, prefix: str = "data/"):
        self.kind = kind
        self.server = server
        if kind == "local":
            root = tmp_path / f"local-{uuid.uuid4().hex[:6]}"
            self.location: dict[str, Any] = {"url": f"{root}/"}
            self.fs, self.prefix = fsspec.filesystem("file"), str(root)
            self.bucket = ""
        elif kind == "memory":
            self.prefix = f"/mem-{uuid.uuid4().hex[:8]}"
            self.location = {"url": f"memory://{self.prefix}/"}
            self.fs, self.bucket = fsspec.filesystem("memory"), ""
        elif kind == "sftp":  # OpenSSH's sshd (conftest.sftp_server), paths on its disk
            self.bucket = server.new_dir()
            self.location = server.location(self.bucket, prefix)
            self.fs = server.fs()
            self.prefix = f"{self.bucket}/{prefix.rstrip('/')}"
        else:
            if kind == "s3":
                self.bucket = server.new_bucket()
                self.location = {"url": f"s3://{self.bucket}/{prefix}",
                                 "options": {"endpoint_url": server.endpoint}}
            elif kind == "gcs":
                self.bucket = server.new_bucket()
                self.location = server.location(self.bucket, prefix)
            else:
                self.bucket = server.new_container()
                self.location = server.location(self.bucket, prefix)
            self.fs = Location.of(self.location["url"], self.location.get("options")).fs
            self.prefix = f"{self.bucket}/{prefix.rstrip('/')}"

    @property
    def loc(self) -> Location:
        return Location.of(self.location["url"], self.location.get("options"))

    def put(self, key: str, data: bytes) -> None:
        if self.kind == "local":
            path = Path(self.prefix) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            path = f"{self.prefix}/{key}"
            if self.kind == "sftp":  # a directory tree: the parents first
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            if self.kind == "gcs":
                put_gcs(self.fs, path, data)
            else:
                self.fs.pipe(path, data)

    def get(self, key: str) -> bytes:
        self.fs.invalidate_cache()
        return self.fs.cat(f"{self.prefix}/{key}")

    def tamper(self, key: str, at: int = 0) -> None:
        """Flip one byte, keeping the size: rewritten through the store's own client."""
        data = bytearray(self.get(key))
        data[at] ^= 0x01
        self.put(key, bytes(data))

    def keys(self) -> list[str]:
        """Every object under the prefix, temporary names included, sorted."""
        return self.keys_under(self.prefix)

    def keys_under(self, prefix: str, label: str = "") -> list[str]:
        """Every object under ``prefix`` (a path in this store), as ``label`` + key."""
        self.fs.invalidate_cache()
        if not self.fs.exists(prefix):
            return []
        start = len(self.fs._strip_protocol(prefix).rstrip("/")) + 1
        return sorted(label + self.fs._strip_protocol(p)[start:] for p in self.fs.find(prefix))

    def ledger(self) -> dict[str, Any] | None:
        """A ledger location on this store, where delta-rs can write there (docs/BACKENDS.md)."""
        if self.kind == "local":
            return {"ledger": f"{self.prefix}-ledger"}
        if self.kind == "s3":
            return {"ledger": f"s3://{self.bucket}/ledger",
                    "ledger_options": {"endpoint_url": self.server.endpoint}}
        if self.kind == "azure":
            return {"ledger": f"az://{self.bucket}/ledger"}
        # memory: not a delta-rs store; gcs: the emulator lacks the XML API; sftp: no
        # delta-rs object store for it.
        return None


def backend_of(request: pytest.FixtureRequest, kind: str, tmp_path: Path,
               prefix: str = "data/") -> Backend:
    server = request.getfixturevalue(SERVERS[kind]) if kind in SERVERS else None
    return Backend(kind, tmp_path, server, prefix)
