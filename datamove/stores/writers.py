"""Atomic object writers: nothing is visible under the final name until it is complete.

Each writer takes bytes with ``write``, then either ``commit`` (publish under the
final name) or ``abort`` (leave nothing behind). Use :func:`atomic_writer`; it
picks the writer for the store:

* local: ``<name>.datamove-partial-<id>`` in the same directory, then
  ``os.replace`` (atomic on POSIX). The directory is reached one level at a
  time without following links (safepath.py), the temporary file is private
  (0600) while it is written, and the final file gets ``mode``.
* S3: one PUT when the object fits in a part; otherwise a multipart upload that is
  completed only after every part succeeded and aborted on any failure. A plain
  ``with s3fs.open(p, "wb")`` would publish a truncated object if an exception
  hits it, which is why this module talks to the S3 API directly.
* GCS (stores_gcs.GCSWriter): one multipart request, or a resumable session
  finalized only on commit.
* Azure Blob (stores_azure.AzureWriter): one Put Blob, or staged blocks whose
  list is committed only on commit.
* any other fsspec store: a hidden temporary name, then ``fs.mv``.

Writers record the plaintext sha256 as object metadata where the store has it, so
that later checks can be cheap (see transfer.verify_destination).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from datamove.checksum import b64, b64_sha256, chunk_buffer, composite_sha256
from datamove.errors import VerifyMismatch
from datamove.stores.azure import AzureWriter
from datamove.stores.core import (
    LOCAL_XATTR_SHA256,
    META_PART_SIZE,
    META_SHA256,
    PARTIAL_MARKER,
    Location,
)
from datamove.stores.gcs import GCSWriter
from datamove.stores.safepath import DEFAULT_FILE_MODE, PRIVATE_FILE_MODE, check_key, open_parent


@dataclass(frozen=True)
class Committed:
    """What the store reported when the object was published.

    ``native`` is a checksum the store computed over the bytes it received, as
    ``<algo>:<base64>`` (an S3 ETag that is an MD5, a ChecksumSHA256 whole or
    composite, a GCS crc32c, an Azure Content-MD5); ``expected`` is what it must
    equal, computed here from the bytes sent. A local read-back is a sha256 hex.
    """

    size: int
    native: str | None = None
    expected: str | None = None
    multipart: bool = False
    reread: bool = False  # ``native`` came from reading every stored byte back
    sent: int | None = None  # bytes sent to the store, if fewer than ``size`` may be


def _hash_fd(fd: int) -> str:
    """sha256 of a whole file through an open descriptor, in bounded chunks."""
    sha = hashlib.sha256()
    buffer = chunk_buffer()
    offset = 0
    while n := os.preadv(fd, [buffer], offset):
        sha.update(buffer[:n])
        offset += n
    return sha.hexdigest()


class AtomicWriter(Protocol):
    committed: bool

    def write(self, data: bytes | memoryview) -> None: ...
    def commit(self, sha256: str, mtime: float | None) -> Committed: ...
    def abort(self) -> None: ...


def partial_name(final_path: str, run_token: str = "") -> str:
    """``<final>.datamove-partial-<run token>-<random>``: the token lets the next run
    tell its own in-flight files from orphans of a killed run (cleanup.py)."""
    return f"{final_path}{PARTIAL_MARKER}{run_token or 'norun'}-{uuid.uuid4().hex[:8]}"


class LocalWriter:
    """Temporary file beside the final one, then rename.

    The directory is opened below ``root`` without following links, and every
    later step (create, rename, fsync) is relative to that descriptor, so a
    link planted in the destination tree cannot redirect the write. With
    ``readback`` the bytes are read back through the open descriptor and hashed
    *before* the rename, so a copy that does not verify is never visible under
    its final name (and verification costs no extra open or lookup). ``mode``:
    the final file's permission bits (default: 0666 less the umask).
    """

    def __init__(self, root: str, key: str, fsync: bool = False, readback: bool = False,
                 run_token: str = "", mode: int | None = None):
        self.final_path = os.path.join(root, key)
        self.fsync = fsync
        self.readback = readback
        self.mode = DEFAULT_FILE_MODE if mode is None else mode
        self._dir, self.name = open_parent(root, key, create=True)
        self.temp_name = partial_name(self.name, run_token)
        self.size = 0
        self.committed = False
        try:
            self._file = self._open(self.temp_name, "xb+")
        except BaseException:
            os.close(self._dir)
            raise

    def _open(self, name: str, mode: str) -> Any:
        """``open`` of a name in the writer's directory, never through a link."""
        def opener(path: str, flags: int) -> int:
            return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE,
                           dir_fd=self._dir)
        binary = "b" in mode
        return open(name, mode, buffering=0 if binary else -1, opener=opener,
                    **({} if binary else {"encoding": "ascii"}))

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self.size += len(data)

    def commit(self, sha256: str, mtime: float | None) -> Committed:
        fd = self._file.fileno()
        if self.fsync:
            os.fsync(fd)
        with contextlib.suppress(OSError):  # xattrs are an optimisation, not a requirement
            os.setxattr(fd, LOCAL_XATTR_SHA256, sha256.encode())
        os.fchmod(fd, self.mode)
        if mtime is not None:
            # Preserve the source's mtime: the planner compares it on the next run.
            os.utime(fd, (mtime, mtime))
        stored = _hash_fd(fd) if self.readback else None
        self._file.close()
        if stored is not None and stored != sha256:
            raise VerifyMismatch(f"{self.final_path}: bytes read back differ from the source "
                                 f"({stored[:16]}… ≠ {sha256[:16]}…)")
        os.replace(self.temp_name, self.name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
        if self.fsync:
            os.fsync(self._dir)
        self.committed = True
        self._close_dir()
        return Committed(size=self.size, native=stored, expected=sha256 if stored else None,
                         reread=stored is not None)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp_name, dir_fd=self._dir)
        self._close_dir()

    def _close_dir(self) -> None:
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1


RESUME_TOKEN = "resume"  # token of temporary files that a later run may continue
_JOURNAL_HEADER = "datamove-journal 2 part_size="
_COMPARE_BLOCK = 1024 * 1024


class ResumableLocalWriter(LocalWriter):
    """A large local object whose progress survives a killed run.

    The temporary file's name comes from the source object's identity (key,
    size, mtime or ETag), and a journal beside it, ``<temporary>.journal``, gets
    one line per completed part, ``<index>``, after that part's bytes are written
    (fsynced first when ``engine.fsync`` is on). A later run copying the same
    source version re-reads the source and, for each journaled part whose bytes
    on disk equal the source's, skips the write; from the first part that
    differs or is missing it truncates and writes. Nothing is hashed for the
    journal on the way (the bytes are compared only when resuming), and the
    read-back before the rename still checks every byte. An exception discards
    everything (as for any writer); only a killed process leaves the pair
    behind to be continued.
    """

    def __init__(self, root: str, key: str, identity: str, part_size: int,
                 fsync: bool = False, readback: bool = False, mode: int | None = None):
        self.final_path = os.path.join(root, key)
        self.fsync = fsync
        self.readback = readback
        self.mode = DEFAULT_FILE_MODE if mode is None else mode
        self.part_size = part_size
        self._dir, self.name = open_parent(root, key, create=True)
        self.temp_name = f"{self.name}{PARTIAL_MARKER}{RESUME_TOKEN}-{identity}"
        self.journal_name = f"{self.temp_name}.journal"
        try:
            self._journaled = self._load_journal()  # parts on disk from an earlier attempt
            if self._journaled:
                self._file = self._open(self.temp_name, "r+b")
            else:
                self._file = self._open(self.temp_name, "wb+")
                self._rewrite_journal(0)
        except BaseException:
            self._close_dir()
            raise
        self._held = bytearray()  # a part's bytes while they may already be on disk
        self._index = 0
        self.size = 0
        self.written = 0
        self.reused_parts = 0
        self.committed = False

    def _load_journal(self) -> int:
        try:
            with self._open(self.journal_name, "r") as journal:
                lines = journal.read().split("\n")
            on_disk = os.stat(self.temp_name, dir_fd=self._dir, follow_symlinks=False).st_size
        except (OSError, UnicodeDecodeError):
            return 0
        if lines[0] != f"{_JOURNAL_HEADER}{self.part_size}":
            return 0
        parts = 0
        for line in lines[1:]:  # a torn last line simply ends the journal
            if line != str(parts):
                break
            parts += 1
        return min(parts, on_disk // self.part_size)

    def _rewrite_journal(self, parts: int) -> None:
        with self._open(self.journal_name, "w") as journal:
            journal.write(f"{_JOURNAL_HEADER}{self.part_size}\n")
            journal.writelines(f"{i}\n" for i in range(parts))

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.part_size - (self.size - self._index * self.part_size))
            chunk, view = view[:take], view[take:]
            self.size += take
            if self._index < self._journaled:
                self._held += chunk
            else:
                self._file.write(chunk)
                self.written += take
            if self.size == (self._index + 1) * self.part_size:
                self._end_part()

    def _end_part(self) -> None:
        if self._index < self._journaled:
            if self._on_disk_equals_held():
                self.reused_parts += 1
                self._held = bytearray()
                self._index += 1
                if self._index == self._journaled:  # continue after the reused prefix
                    self._file.seek(self._index * self.part_size)
                return
            self._diverge()
        if self.fsync:
            os.fsync(self._file.fileno())
        with self._open(self.journal_name, "a") as journal:
            journal.write(f"{self._index}\n")
            if self.fsync:
                journal.flush()
                os.fsync(journal.fileno())
        self._index += 1

    def _on_disk_equals_held(self) -> bool:
        """Compare the journaled part on disk with the source's bytes, a block at a time."""
        held = memoryview(self._held)
        offset = self._index * self.part_size
        for at in range(0, len(held), _COMPARE_BLOCK):
            want = held[at:at + _COMPARE_BLOCK]
            if os.pread(self._file.fileno(), len(want), offset + at) != want:
                return False
        return True

    def _diverge(self) -> None:
        """The source differs from the journal at this part: keep what matched only."""
        offset = self._index * self.part_size
        self._rewrite_journal(self._index)
        self._file.truncate(offset)
        self._file.seek(offset)
        self._file.write(self._held)
        self.written += len(self._held)
        self._held = bytearray()
        self._journaled = 0

    def commit(self, sha256: str, mtime: float | None) -> Committed:
        if self._held or self._index < self._journaled:
            self._diverge()  # the source ended inside the journaled prefix
        self._file.truncate(self.size)
        journal_dir = os.dup(self._dir)  # commit closes the writer's descriptor
        try:
            committed = super().commit(sha256, mtime)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.journal_name, dir_fd=journal_dir)
        finally:
            os.close(journal_dir)
        return replace(committed, sent=self.written)

    def abort(self) -> None:
        if self._dir >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.journal_name, dir_fd=self._dir)
        super().abort()


class S3Writer:
    """Single PUT for small objects, multipart upload for large ones.

    Memory: one part buffer (``part_size``). Each part carries its sha256 so S3
    checks it on arrival; the composite checksum of the parts is computed here
    from the bytes read at the source, so the destination's native checksum can
    be compared with it later without a download.
    """

    MAX_PARTS = 10_000  # S3's limit per multipart upload

    def __init__(self, location: Location, key: str, part_size: int, size_hint: int = 0,
                 resume: bool = True, storage_class: str | None = None):
        self.fs = location.fs
        self._class = {"StorageClass": storage_class} if storage_class else {}
        self.bucket, prefix = location.bucket_and_prefix()
        self.key = prefix + key
        # Grow the part for objects that would otherwise need more than 10,000 parts.
        mib = 1024 * 1024
        self.part_size = max(part_size, -(-size_hint // self.MAX_PARTS // mib) * mib)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._digests: list[bytes] = []
        self._resumable: list[dict[str, Any]] = []
        self.size = 0
        self.sent = 0  # bytes actually sent; less than size when parts were reused
        self.committed = False
        if resume and size_hint > self.part_size:
            self._adopt_incomplete_upload()

    def _adopt_incomplete_upload(self) -> None:
        """Continue an upload of this key that a killed run left incomplete.

        S3 itself is the journal: ListMultipartUploads finds the upload id and
        ListParts each stored part with its size and checksum. A stored part is
        reused only if the bytes read from the source for it hash to the part's
        recorded checksum (ChecksumSHA256, else the part's MD5 ETag), so the
        source prefix is re-read but never re-sent; the first part that differs
        ends the reuse and everything from there is uploaded again.
        """
        page = self.fs.call_s3("list_multipart_uploads", Bucket=self.bucket, Prefix=self.key)
        uploads = sorted((u for u in page.get("Uploads", ()) if u["Key"] == self.key),
                         key=lambda u: u["Initiated"])
        if not uploads:
            return
        upload_id = uploads[-1]["UploadId"]
        parts: list[dict[str, Any]] = []
        marker = 0
        while True:
            listed = self.fs.call_s3("list_parts", Bucket=self.bucket, Key=self.key,
                                     UploadId=upload_id, PartNumberMarker=marker)
            parts.extend(listed.get("Parts", ()))
            if not listed.get("IsTruncated"):
                break
            marker = listed["NextPartNumberMarker"]
        for number, part in enumerate(sorted(parts, key=lambda p: p["PartNumber"]), 1):
            if part["PartNumber"] != number or part["Size"] != self.part_size:
                break
            self._resumable.append(part)
        if self._resumable:  # otherwise the end-of-run sweep aborts it
            self._upload_id = upload_id

    def _reuse(self, number: int, part: bytes, digest: bytes) -> bool:
        if number > len(self._resumable):
            return False
        stored = self._resumable[number - 1]
        if stored.get("ChecksumSHA256"):
            same = stored["ChecksumSHA256"] == b64(digest)
        else:
            same = stored["ETag"].strip('"') == hashlib.md5(part, usedforsecurity=False).hexdigest()
        if not same:
            self._resumable = []  # the source differs from here on: upload the rest
            return False
        self._parts.append({"PartNumber": number, "ETag": stored["ETag"],
                            "ChecksumSHA256": b64(digest)})
        self._digests.append(digest)
        return True

    def write(self, data: bytes | memoryview) -> None:
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= self.part_size:
            part = bytes(memoryview(self._buffer)[: self.part_size])  # one copy, not two
            del self._buffer[: self.part_size]
            self._upload_part(part)

    def _upload_part(self, part: bytes) -> None:
        if self._upload_id is None:
            created = self.fs.call_s3(
                "create_multipart_upload", Bucket=self.bucket, Key=self.key,
                ChecksumAlgorithm="SHA256", Metadata={META_PART_SIZE: str(self.part_size)},
                **self._class)
            self._upload_id = created["UploadId"]
        digest = hashlib.sha256(part).digest()
        number = len(self._parts) + 1
        if self._reuse(number, part, digest):
            return
        self.sent += len(part)
        response = self.fs.call_s3(
            "upload_part", Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
            PartNumber=number, Body=part, ChecksumSHA256=b64(digest))
        self._parts.append({"PartNumber": number, "ETag": response["ETag"],
                            "ChecksumSHA256": b64(digest)})
        self._digests.append(digest)

    def commit(self, sha256: str, mtime: float | None) -> Committed:
        if self._upload_id is None:
            body = bytes(self._buffer)
            self._buffer = bytearray()
            md5 = hashlib.md5(body, usedforsecurity=False).digest()
            # Content-MD5 makes S3 reject bytes damaged on the way; the ETag S3
            # returns is the MD5 it computed itself, unless SSE-KMS/SSE-C is used.
            response = self.fs.call_s3(
                "put_object", Bucket=self.bucket, Key=self.key, Body=body,
                ContentMD5=b64(md5), ChecksumSHA256=b64_sha256(sha256),
                Metadata={META_SHA256: sha256}, **self._class)
            self.committed = True
            self.sent = len(body)
            etag_is_md5 = response.get("ServerSideEncryption", "AES256") == "AES256" \
                and not response.get("SSECustomerAlgorithm")
            etag = response.get("ETag", "").strip('"')
            native = f"md5:{b64(bytes.fromhex(etag))}" if etag_is_md5 and _is_hex(etag) else None
            return Committed(size=self.size, native=native,
                             expected=f"md5:{b64(md5)}" if native else None, sent=self.sent)
        if self._buffer:
            self._upload_part(bytes(self._buffer))
            self._buffer = bytearray()
        response = self.fs.call_s3(
            "complete_multipart_upload", Bucket=self.bucket, Key=self.key,
            UploadId=self._upload_id, MultipartUpload={"Parts": self._parts})
        self._upload_id = None
        self.committed = True
        stored = response.get("ChecksumSHA256")
        return Committed(size=self.size, native=f"sha256:{stored}" if stored else None,
                         expected=f"sha256:{composite_sha256(self._digests)}", multipart=True,
                         sent=self.sent)

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                self.fs.call_s3("abort_multipart_upload", Bucket=self.bucket, Key=self.key,
                                UploadId=self._upload_id)
            self._upload_id = None


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return len(text) == 32


class FsspecWriter:
    """Any fsspec store: write a hidden temporary object, then move it into place."""

    def __init__(self, location: Location, key: str, run_token: str = ""):
        self.fs = location.fs
        self.final_path = location.path(key)
        self.temp_path = partial_name(self.final_path, run_token)
        parent = self.final_path.rsplit("/", 1)[0]
        with contextlib.suppress(Exception):
            self.fs.makedirs(parent, exist_ok=True)
        self._file = self.fs.open(self.temp_path, "wb")
        self.size = 0
        self.committed = False

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self.size += len(data)

    def commit(self, sha256: str, mtime: float | None) -> Committed:
        self._file.close()
        self.fs.mv(self.temp_path, self.final_path)
        self.committed = True
        return Committed(size=self.size)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(Exception):
            self.fs.rm(self.temp_path)


@contextlib.contextmanager
def atomic_writer(location: Location, key: str, *, part_size: int, size_hint: int = 0,
                  fsync: bool = False, readback: bool = False, run_token: str = "",
                  resume_id: str | None = None, resumable: bool = True,
                  storage_class: str | None = None,
                  mode: int | None = None) -> Iterator[AtomicWriter]:
    """Yield a writer; abort it if the block raises or ends without ``commit``.

    ``resumable=False``: never continue an earlier attempt's upload (the bytes
    will differ, as with encryption under a fresh file key). ``storage_class``:
    the S3 or GCS class new objects are written in (manifest ``destination.storage_class``).
    ``mode``: a local file's permission bits (default 0666 less the umask).
    Raises UnsafePath before anything is written if ``key`` could leave the root.
    """
    check_key(key)
    writer: AtomicWriter
    if location.is_local and resume_id:
        writer = ResumableLocalWriter(location.root, key, resume_id, part_size, fsync=fsync,
                                      readback=readback, mode=mode)
    elif location.is_local:
        writer = LocalWriter(location.root, key, fsync=fsync, readback=readback,
                             run_token=run_token, mode=mode)
    elif location.is_s3:
        writer = S3Writer(location, key, part_size, size_hint, resume=resumable,
                          storage_class=storage_class)
    elif location.is_gcs:
        writer = GCSWriter(location, key, part_size, storage_class=storage_class)
    elif location.is_azure:
        writer = AzureWriter(location, key, part_size)
    else:
        writer = FsspecWriter(location, key, run_token)
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
    if not writer.committed:
        writer.abort()
        raise RuntimeError(f"{location.url_of(key)}: writer closed without commit; discarded")
