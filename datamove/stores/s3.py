"""Amazon S3 and S3-compatible stores, over s3fs (botocore underneath).

s3fs gives credentials (the provider chain of the process that uses the
location), the endpoint and botocore's own retries. This module speaks the S3
API through ``fs.call_s3`` where s3fs's file objects are not safe: ``with
s3fs.open(p, "wb")`` would publish a truncated object if an exception hits it,
so :class:`S3Writer` is one PUT when the object fits in a part and otherwise a
multipart upload completed only after every part succeeded (and adopted by a
later run if a killed one left it: S3 is the journal). Listings are
ListObjectsV2 pages, in UTF-8 byte order (S3's documented order).

Native checksums: the ETag of a single PUT is the MD5 S3 computed (not with
SSE-KMS or SSE-C); ChecksumSHA256 is kept with every object datamove writes
(whole, or a composite of the parts'); CRC32C when it covers the whole object.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, BinaryIO

from datamove.checksum import b64, b64_sha256, composite_sha256
from datamove.errors import LocationUnreachable
from datamove.stores.base import (
    META_PART_SIZE,
    META_SHA256,
    AtomicWriter,
    Backend,
    Committed,
    Entry,
    Location,
    ObjectInfo,
    WriteOptions,
    transient_http_status,
)
from datamove.stores.inventory import check_inventory, inventory_entries
from datamove.stores.prefixed import Page, Pages, list_by_prefix
from datamove.stores.timeouts import CONNECT_TIMEOUT, READ_TIMEOUT, S3_ATTEMPTS
from datamove.tiers import S3_TIERS

# GetBucketLocation's legacy answers (AWS S3 API reference, GetBucketLocation).
_LEGACY_CONSTRAINTS = {"": "us-east-1", "EU": "eu-west-1"}

TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
    "RequestLimitExceeded", "RequestTimeout", "RequestTimeoutException", "InternalError",
    "ServiceUnavailable", "OperationAborted", "BadDigest", "IncompleteBody"})
"""Error codes another attempt may get past: throttling, the store's own faults, a
body damaged on the way (BadDigest, IncompleteBody)."""


def s3_error_code(exc: BaseException) -> str:
    """The S3 error code behind an exception s3fs translated (it keeps the cause)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    response = getattr(cause, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _http_status(exc: BaseException) -> int | None:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    response = getattr(cause, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status else None


class S3Backend(Backend):
    """``s3://bucket/prefix`` (and ``s3a://``)."""

    name = "s3"
    native_checksums = ("md5", "crc32c")
    sha256_on_write = True
    atomic_temp_names = False
    storage_classes = S3_TIERS
    archive_restore = True
    server_side_copy = True
    can_host_ledger = True
    lease_lock = "conditional-write"
    region_source = "s3 GetBucketLocation"
    pins_reads = True

    def client_options(self, location: Location) -> dict[str, Any]:
        """Bounded waits (timeouts.py) unless ``config_kwargs`` sets its own."""
        out = super().client_options(location)
        config = {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT,
                  "retries": {"max_attempts": S3_ATTEMPTS, "mode": "standard"}}
        out["config_kwargs"] = {**config, **dict(out.get("config_kwargs") or {})}
        return out

    def list(self, location: Location, on_link: Callable[[str], None] | None = None
             ) -> Iterator[Entry]:
        """ListObjectsV2, or the location's S3 Inventory report (inventory.py)."""
        if location.inventory is not None:
            return inventory_entries(location)
        return _list_s3(location)

    def check_readable(self, location: Location) -> None:
        """The bucket answers a listing; an inventory report is read whole and checked
        (BadInput: exit 2 before anything moves)."""
        next(iter(_list_s3(location)), None)
        if location.inventory is not None:
            check_inventory(location)

    def open_read(self, location: Location, key: str) -> BinaryIO:
        try:
            return super().open_read(location, key)
        except FileNotFoundError as exc:
            if location.inventory is None:
                raise
            raise FileNotFoundError(
                f"{location.url_of(key)} is in the inventory report but not in the bucket "
                "(deleted since the report was written)") from exc

    def stat(self, location: Location, key: str) -> ObjectInfo | None:
        bucket, prefix = location.bucket_and_prefix()
        try:
            head = location.fs.call_s3("head_object", Bucket=bucket, Key=prefix + key,
                                       ChecksumMode="ENABLED")
        except FileNotFoundError:
            return None
        return ObjectInfo(size=int(head["ContentLength"]),
                          mtime=head["LastModified"].timestamp(),
                          etag=head.get("ETag", "").strip('"') or None,
                          metadata=dict(head.get("Metadata") or {}),
                          checksum_sha256=head.get("ChecksumSHA256"),
                          native=_s3_natives(head), storage_class=head.get("StorageClass"),
                          composite="-" in head.get("ETag", ""))

    def writer(self, location: Location, key: str, options: WriteOptions) -> AtomicWriter:
        return S3Writer(location, key, options.part_size, options.size_hint,
                        resume=options.resumable, storage_class=options.storage_class)

    def is_transient(self, exc: BaseException) -> bool:
        """Throttling, 5xx and dropped connections: yes. An answer that will not
        change (AccessDenied, NoSuchBucket, InvalidAccessKeyId, an invalid request)
        is final, whatever exception s3fs made of it."""
        code, status = s3_error_code(exc), _http_status(exc)
        if code or status:
            return code in TRANSIENT_CODES or transient_http_status(status)
        return super().is_transient(exc)

    def region(self, location: Location) -> str | None:
        bucket, _ = location.bucket_and_prefix()
        answer: dict[str, Any] = location.fs.call_s3("get_bucket_location", Bucket=bucket)
        constraint = answer.get("LocationConstraint") or ""
        return _LEGACY_CONSTRAINTS.get(constraint, constraint)

    def store_clock(self, location: Location) -> datetime | None:
        """The store's current time (the Date of a cheap request)."""
        bucket, prefix = location.bucket_and_prefix()
        page = location.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix,
                                   MaxUploads=1)
        return _response_date(page)

    def abort_orphan_uploads(self, location: Location, cutoff: Any = None) -> int:
        """Abort incomplete multipart uploads under the location begun before ``cutoff``.

        A run takes the cutoff from the store's clock (``store_clock``) before it
        uploads anything to the location, and sweeps after its copies are done: by
        then it has resumed and completed the uploads it could use (S3Writer), and
        whatever else a killed run left is aborted. Clock skew between this host
        and the store plays no part. Without a cutoff, the store's "now" is used.
        """
        fs = location.fs
        bucket, prefix = location.bucket_and_prefix()
        aborted = 0
        kwargs: dict[str, str] = {"Bucket": bucket, "Prefix": prefix}
        while True:
            page = fs.call_s3("list_multipart_uploads", **kwargs)
            if cutoff is None:
                cutoff = _response_date(page)
            for upload in page.get("Uploads", ()):
                if cutoff is not None and upload["Initiated"] >= cutoff:
                    continue  # begun by this run (or later): not an orphan
                with contextlib.suppress(FileNotFoundError):
                    fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"],
                               UploadId=upload["UploadId"])
                    aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            kwargs["KeyMarker"] = page["NextKeyMarker"]
            kwargs["UploadIdMarker"] = page["NextUploadIdMarker"]


def _list_s3(location: Location) -> Iterator[Entry]:
    """ListObjectsV2 pages; more than a page of keys is listed by prefix, several
    prefixes at once (prefixed.py, ``list_threads``)."""
    return list_by_prefix(_s3_pages(location), location.list_threads)


def _s3_pages(location: Location, page_keys: int = 1000) -> Pages:
    """The ListObjectsV2 pages of any prefix of the location (``page_keys`` per
    page: S3's maximum is 1000)."""
    fs = location.fs  # one client for every thread: s3fs runs requests on its own loop
    bucket, root = location.bucket_and_prefix()

    def pages(prefix: str, delimited: bool) -> Iterator[Page]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": root + prefix,
                                      "MaxKeys": page_keys}
            if delimited:
                kwargs["Delimiter"] = "/"
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = fs.call_s3("list_objects_v2", **kwargs)
            except FileNotFoundError as exc:
                raise LocationUnreachable(
                    f"{location.url}: bucket {bucket!r} does not exist or is not visible with "
                    "these credentials"
                ) from exc
            except PermissionError as exc:
                raise LocationUnreachable(
                    f"{location.url}: access denied listing the bucket") from exc
            entries = []
            for obj in page.get("Contents", ()):
                key = obj["Key"][len(root):]
                if not key or key.endswith("/"):
                    continue  # the prefix itself or a "directory marker"
                entries.append(Entry(key=key, size=int(obj["Size"]),
                                     mtime=obj["LastModified"].timestamp(),
                                     etag=obj.get("ETag", "").strip('"') or None))
            prefixes = [p["Prefix"][len(root):] for p in page.get("CommonPrefixes", ())]
            more = bool(page.get("IsTruncated"))
            yield Page(entries, prefixes, more)
            if not more:
                return
            token = page["NextContinuationToken"]

    return pages


def _s3_natives(head: dict[str, Any]) -> dict[str, str]:
    """S3's checksums of one object: ChecksumSHA256 (whole, or a composite of the
    parts' with "-N"), ChecksumCRC32C when it covers the whole object (a
    composite CRC32C of parts cannot be compared without the part sizes), and the
    ETag when it is the MD5 S3 computed (one PUT, no SSE-KMS or SSE-C)."""
    out = {}
    etag = head.get("ETag", "").strip('"')
    if re.fullmatch(r"[0-9a-f]{32}", etag) and head.get("ServerSideEncryption") != "aws:kms" \
            and not head.get("SSECustomerAlgorithm"):
        out["md5"] = f"md5:{base64.b64encode(bytes.fromhex(etag)).decode()}"
    if head.get("ChecksumSHA256"):
        out["sha256"] = f"sha256:{head['ChecksumSHA256']}"
    crc = head.get("ChecksumCRC32C")
    if crc and "-" not in crc and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
        out["crc32c"] = f"crc32c:{crc}"
    return out


def _response_date(response: dict) -> datetime | None:
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(header) if header else None
    except (TypeError, ValueError):
        return None


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
