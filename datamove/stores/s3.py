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

from datamove.checksum import b64, b64_sha256, composite_sha256, same_checksum
from datamove.errors import LocationUnreachable, SourceChanged, VerifyMismatch
from datamove.stores.attributes import Attributes, confirm_sse, header_safe, s3_write_args
from datamove.stores.base import (
    META_PART_SIZE,
    META_SHA256,
    AtomicWriter,
    Backend,
    Committed,
    Entry,
    HashSource,
    Location,
    ObjectInfo,
    SourceHash,
    WriteOptions,
    transient_http_status,
)
from datamove.stores.inventory import check_inventory, inventory_entries
from datamove.stores.parts import PART_BUFFERS, PartSender
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
    client_modules = ("s3fs",)
    extra = "s3"
    native_checksums = ("md5", "crc32c", "crc32")
    sha256_on_write = True
    atomic_temp_names = False
    storage_classes = S3_TIERS
    archive_restore = True
    class_change_in_place = True
    server_side_copy = True
    can_host_ledger = True
    lease_lock = "conditional-write"
    region_source = "s3 GetBucketLocation"
    pins_reads = True
    keeps_attributes = True
    object_tags = "s3"
    server_side_encryption = True

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
                          composite="-" in head.get("ETag", ""),
                          content_type=head.get("ContentType"),
                          sse=head.get("ServerSideEncryption"),
                          sse_kms_key_id=head.get("SSEKMSKeyId"))

    def writer(self, location: Location, key: str, options: WriteOptions) -> AtomicWriter:
        return S3Writer(location, key, options.part_size, options.size_hint,
                        resume=options.resumable, storage_class=options.storage_class,
                        part_buffers=options.part_buffers, attributes=options.attributes)

    def copy_within(self, source: Location, entry: Entry, destination: Location, key: str,
                    options: WriteOptions, hash_source: HashSource,
                    check: Callable[[], None]) -> tuple[str, Committed]:
        """CopyObject, or UploadPartCopy in parallel parts, of the listed version.

        The source is pinned by its ETag (``CopySourceIfMatch``, after a HEAD
        that must show the listed ETag and size). Its sha256: the whole
        ChecksumSHA256 S3 keeps (verified by S3 when it was written), else one
        read of the source (``hash_source``). An object up to ``part_size``, or
        one whose sha256 S3 keeps (up to 5 GiB), is one CopyObject, and S3's
        ChecksumSHA256 of the copy must equal the source's; a larger one is
        copied in parts of ``part_size``, ``part_buffers`` at a time, completed
        only when every part is in, and S3's composite ChecksumSHA256 must equal
        the one computed from the source's parts. A copy that does not match is
        removed before this returns (VerifyMismatch).
        """
        src_bucket, src_prefix = source.bucket_and_prefix()
        copy_source = {"Bucket": src_bucket, "Key": src_prefix + entry.key}
        where = source.url_of(entry.key)
        try:
            head = source.fs.call_s3("head_object", **copy_source, ChecksumMode="ENABLED")
        except FileNotFoundError:
            raise SourceChanged(f"source changed: {where}: removed since it was listed; "
                                "nothing was copied") from None
        etag = head.get("ETag", "")
        if (entry.etag and etag.strip('"') != entry.etag) or head["ContentLength"] != entry.size:
            raise SourceChanged(f"source changed: {where}: not the listed version any more; "
                                "nothing was copied. Run again to copy the new version")
        target = _CopyTarget(destination, key, copy_source, etag, entry.size, options)
        whole = head.get("ChecksumSHA256") or ""
        if whole and "-" not in whole and head.get("ChecksumType", "FULL_OBJECT") == \
                "FULL_OBJECT" and entry.size <= COPY_OBJECT_MAX:
            sha256 = base64.b64decode(whole).hex()
            return sha256, target.copy_object(sha256)
        part_size = part_size_for(options.part_size, entry.size)
        if entry.size <= part_size:
            read = hash_source(None, ())
            return read.sha256, target.copy_object(read.sha256)
        read = hash_source(part_size, ())
        return read.sha256, target.copy_parts(read, part_size, check)

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


MAX_PARTS = 10_000  # S3's limit per multipart upload
COPY_OBJECT_MAX = 5 * 1024**3  # CopyObject's limit; larger objects are copied in parts


def part_size_for(part_size: int, size: int) -> int:
    """``part_size``, grown (in MiB) for an object that would need more than 10,000 parts."""
    mib = 1024 * 1024
    return max(part_size, -(-size // MAX_PARTS // mib) * mib)


class _CopyTarget:
    """Where a server-side copy goes, and the two ways of making it."""

    def __init__(self, destination: Location, key: str, copy_source: dict[str, str],
                 etag: str, size: int, options: WriteOptions):
        self.fs = destination.fs
        self.url = destination.url_of(key)
        bucket, prefix = destination.bucket_and_prefix()
        self.at = {"Bucket": bucket, "Key": prefix + key}
        self.source = {"CopySource": copy_source, "CopySourceIfMatch": etag}
        self.size = size
        self.options = options
        self._class = {"StorageClass": options.storage_class} if options.storage_class else {}
        self._attributes = options.attributes
        self._metadata = header_safe(dict(options.attributes.metadata)) \
            if options.attributes else {}

    def copy_object(self, sha256: str) -> Committed:
        """One CopyObject; S3 computes the copy's ChecksumSHA256 over its bytes."""
        try:
            copied = self.fs.call_s3(
                "copy_object", **self.at, **self.source, MetadataDirective="REPLACE",
                Metadata={**self._metadata, META_SHA256: sha256}, ChecksumAlgorithm="SHA256",
                **self._class, **s3_write_args(self._attributes, copy=True))
        except OSError as exc:
            self._raise_if_changed(exc)
            raise
        confirm_sse(self.fs, self.at, copied, self._attributes, self.url)
        stored = copied.get("CopyObjectResult", {}).get("ChecksumSHA256")
        return self._checked(f"sha256:{stored}" if stored else None,
                             f"sha256:{b64_sha256(sha256)}", multipart=False)

    def copy_parts(self, read: SourceHash, part_size: int,
                   check: Callable[[], None]) -> Committed:
        """UploadPartCopy of each ``part_size`` range, ``part_buffers`` at a time, then
        CompleteMultipartUpload; on any failure the upload is aborted."""
        created = self.fs.call_s3("create_multipart_upload", **self.at,
                                  ChecksumAlgorithm="SHA256",
                                  Metadata={**self._metadata, META_PART_SIZE: str(part_size)},
                                  **self._class, **s3_write_args(self._attributes))
        upload_id = created["UploadId"]
        parts: dict[int, dict[str, Any]] = {}
        # Nothing is buffered: every slot is a request on its way.
        sender = PartSender(self.options.part_buffers + 1)

        def send(number: int, first: int, last: int) -> None:
            answer = self.fs.call_s3("upload_part_copy", **self.at, **self.source,
                                     UploadId=upload_id, PartNumber=number,
                                     CopySourceRange=f"bytes={first}-{last}")
            result = answer.get("CopyPartResult", {})
            ours = b64(read.parts[number - 1])
            stored = result.get("ChecksumSHA256")
            if stored and stored != ours:
                raise VerifyMismatch(f"{self.url}: S3's sha256 of part {number} differs from "
                                     "the source's; nothing was published")
            parts[number] = {"PartNumber": number, "ETag": result["ETag"],
                             **({"ChecksumSHA256": stored} if stored else {})}

        try:
            for number, first in enumerate(range(0, read.size, part_size), 1):
                check()
                sender.submit(send, number, first, min(first + part_size, read.size) - 1)
            sender.drain()
            completed = self.fs.call_s3(
                "complete_multipart_upload", **self.at, UploadId=upload_id,
                MultipartUpload={"Parts": [parts[n] for n in sorted(parts)]})
        except BaseException as exc:
            sender.close()
            with contextlib.suppress(Exception):
                self.fs.call_s3("abort_multipart_upload", **self.at, UploadId=upload_id)
            if isinstance(exc, OSError):
                self._raise_if_changed(exc)
            raise
        confirm_sse(self.fs, self.at, completed, self._attributes, self.url)
        stored = completed.get("ChecksumSHA256")
        return self._checked(f"sha256:{stored}" if stored else None,
                             f"sha256:{composite_sha256(read.parts)}", multipart=True)

    def _checked(self, native: str | None, expected: str, multipart: bool) -> Committed:
        """A published copy whose S3 checksum is not the source's is removed at once."""
        if native is not None and not same_checksum(native, expected):
            with contextlib.suppress(Exception):
                self.fs.call_s3("delete_object", **self.at)
            raise VerifyMismatch(f"{self.url}: S3's sha256 of the copy differs from the "
                                 "source's; the copy was removed")
        # Without S3's answer here, the checksum on the copy (HEAD) is compared with
        # ``expected`` by transfer.verify_destination.
        return Committed(size=self.size, native=native, expected=expected, multipart=multipart,
                         sent=0)

    def _raise_if_changed(self, exc: OSError) -> None:
        if s3_error_code(exc) == "PreconditionFailed":  # CopySourceIfMatch
            raise SourceChanged(f"source changed during copy: {self.url}: its source is not "
                                "the listed version any more; nothing was published. Run "
                                "again to copy the new version") from None


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
    parts' with "-N"), ChecksumCRC32C, ChecksumCRC32 and ChecksumCRC64NVME when
    they cover the whole object (a composite CRC of parts cannot be compared
    without the part sizes), and the
    ETag when it is the MD5 S3 computed (one PUT, no SSE-KMS or SSE-C)."""
    out = {}
    etag = head.get("ETag", "").strip('"')
    if re.fullmatch(r"[0-9a-f]{32}", etag) and head.get("ServerSideEncryption") != "aws:kms" \
            and not head.get("SSECustomerAlgorithm"):
        out["md5"] = f"md5:{base64.b64encode(bytes.fromhex(etag)).decode()}"
    if head.get("ChecksumSHA256"):
        out["sha256"] = f"sha256:{head['ChecksumSHA256']}"
    whole = head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
    for algo in ("crc32c", "crc32", "crc64nvme"):  # CRC64NVME is always full-object
        crc = head.get(f"Checksum{algo.upper()}")
        if crc and "-" not in crc and whole:
            out[algo] = f"{algo}:{crc}"
    return out


def _response_date(response: dict) -> datetime | None:
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(header) if header else None
    except (TypeError, ValueError):
        return None


class S3Writer:
    """Single PUT for small objects, multipart upload for large ones.

    Memory: at most ``part_buffers`` parts of ``part_size``: the one being filled
    and the others uploading at once (parts.PartSender). Each part carries its
    sha256 so S3 checks it on arrival; the composite checksum of the parts is
    computed here from the bytes read at the source, so the destination's
    native checksum can be compared with it later without a download.
    """

    def __init__(self, location: Location, key: str, part_size: int, size_hint: int = 0,
                 resume: bool = True, storage_class: str | None = None,
                 part_buffers: int = PART_BUFFERS, attributes: Attributes | None = None):
        self.fs = location.fs
        self._class = {"StorageClass": storage_class} if storage_class else {}
        self._attributes = attributes
        self._metadata = header_safe(dict(attributes.metadata)) if attributes else {}
        self.url = location.url_of(key)
        self.bucket, prefix = location.bucket_and_prefix()
        self.key = prefix + key
        self.part_size = part_size_for(part_size, size_hint)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        # By part number: parts finish out of order when several upload at once.
        self._parts: dict[int, dict[str, Any]] = {}
        self._digests: dict[int, bytes] = {}
        self._sent: dict[int, int] = {}
        self._numbered = 0  # parts handed out so far
        self._sender = PartSender(part_buffers)
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
        self._parts[number] = {"PartNumber": number, "ETag": stored["ETag"],
                               "ChecksumSHA256": b64(digest)}
        self._digests[number] = digest
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
                ChecksumAlgorithm="SHA256",
                Metadata={**self._metadata, META_PART_SIZE: str(self.part_size)},
                **self._class, **s3_write_args(self._attributes))
            self._upload_id = created["UploadId"]
        self._numbered += 1
        number = self._numbered
        digest = None
        if number <= len(self._resumable):  # reuse is decided in order, here
            digest = hashlib.sha256(part).digest()
            if self._reuse(number, part, digest):
                return
        self._sender.submit(self._send_part, self._upload_id, number, part, digest)

    def _send_part(self, upload_id: str, number: int, part: bytes,
                   digest: bytes | None) -> None:
        """One UploadPart (on a PartSender thread); records only its own number."""
        digest = digest or hashlib.sha256(part).digest()  # hashing releases the GIL
        response = self.fs.call_s3(
            "upload_part", Bucket=self.bucket, Key=self.key, UploadId=upload_id,
            PartNumber=number, Body=part, ChecksumSHA256=b64(digest))
        self._parts[number] = {"PartNumber": number, "ETag": response["ETag"],
                               "ChecksumSHA256": b64(digest)}
        self._digests[number] = digest
        self._sent[number] = len(part)

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
                Metadata={**self._metadata, META_SHA256: sha256}, **self._class,
                **s3_write_args(self._attributes))
            self.committed = True
            confirm_sse(self.fs, {"Bucket": self.bucket, "Key": self.key}, response,
                        self._attributes, self.url)
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
        self._sender.drain()
        numbers = sorted(self._parts)
        if numbers != list(range(1, self._numbered + 1)):
            raise RuntimeError(f"s3://{self.bucket}/{self.key}: parts {numbers} of "
                               f"{self._numbered} uploaded; not completed")
        response = self.fs.call_s3(
            "complete_multipart_upload", Bucket=self.bucket, Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": [self._parts[n] for n in numbers]})
        self._upload_id = None
        self.committed = True
        confirm_sse(self.fs, {"Bucket": self.bucket, "Key": self.key}, response,
                    self._attributes, self.url)
        self.sent = sum(self._sent.values())
        stored = response.get("ChecksumSHA256")
        composite = composite_sha256([self._digests[n] for n in numbers])
        return Committed(size=self.size, native=f"sha256:{stored}" if stored else None,
                         expected=f"sha256:{composite}", multipart=True, sent=self.sent)

    def abort(self) -> None:
        self._buffer = bytearray()
        self._sender.close()  # before the abort: a part arriving after it may be kept
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

