"""Google Cloud Storage: listing, stat, atomic writes and bucket location, over gcsfs.

gcsfs gives credentials (``GOOGLE_APPLICATION_CREDENTIALS``, metadata server, or
``token: anon`` for an emulator), retries and the endpoint
(``endpoint_url`` option or ``STORAGE_EMULATOR_HOST``). This module speaks the
JSON API through ``fs.call`` itself where gcsfs's file objects are not safe:

* ``with fs.open(p, "wb")`` publishes a truncated object when an exception hits
  it, and ``discard()`` of a resumable session is not implemented by every
  endpoint. :class:`GCSWriter` never finalizes an upload it did not finish: an
  object that fits in one part is one multipart request (atomic); a larger one
  is a resumable session whose last chunk, sent only by ``commit``, is what
  makes the object exist. An abandoned session is invisible and expires.
* Listings are the objects API's pages (1,000 names each, in UTF-8 byte order,
  GCS's documented order), never ``fs.find`` of a whole bucket.

Native checksums: GCS computes crc32c for every object (composite ones too) and
md5Hash for objects that were not composed; both are server-side and validated
against any value a client sends, so they are trusted (docs/BACKENDS.md).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fsspec.asyn import sync

from datamove.checksum import Crc32c, native_value
from datamove.errors import LocationUnreachable, SourceChanged, VerifyMismatch
from datamove.stores.attributes import Attributes
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
    WriteOptions,
    transient_http_status,
)
from datamove.stores.timeouts import CONNECT_TIMEOUT, READ_TIMEOUT
from datamove.tiers import GCS_TIERS

MIN_CHUNK = 256 * 1024  # non-final resumable chunks must be multiples of this


class GCSBackend(Backend):
    """``gs://bucket/prefix`` (and ``gcs://``)."""

    name = "gcs"
    client_modules = ("gcsfs",)
    extra = "gcs"
    native_checksums = ("crc32c", "md5")
    atomic_temp_names = False
    storage_classes = GCS_TIERS
    server_side_copy = True
    can_host_ledger = True
    region_source = "gcs bucket location"
    keeps_attributes = True
    object_tags = "gcs"

    def client_options(self, location: Location) -> dict[str, Any]:
        """Bounded waits (timeouts.py) unless ``requests_timeout`` is set."""
        import aiohttp  # gcsfs's HTTP client: the [gcs] extra, never imported by the core

        out = super().client_options(location)
        if "requests_timeout" not in out:
            out["requests_timeout"] = aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
        return out

    def list(self, location: Location, on_link: Callable[[str], None] | None = None
             ) -> Iterator[Entry]:
        return list_gcs(location)

    def stat(self, location: Location, key: str) -> ObjectInfo | None:
        return stat_gcs(location, key)

    def writer(self, location: Location, key: str, options: WriteOptions) -> AtomicWriter:
        return GCSWriter(location, key, options.part_size, storage_class=options.storage_class,
                         attributes=options.attributes)

    def copy_within(self, source: Location, entry: Entry, destination: Location, key: str,
                    options: WriteOptions, hash_source: HashSource,
                    check: Callable[[], None]) -> tuple[str, Committed]:
        """objects.rewrite of the listed generation, after one read of the source.

        GCS keeps no sha256, so the source is read once (sha256 and crc32c; the
        read is checked against the listed ETag after its last byte). The
        rewrite is pinned to the generation seen before the read
        (``ifSourceGenerationMatch``), and the crc32c GCS computed for the copy
        must equal the one computed from the bytes read; a copy that does not
        match is removed at once (VerifyMismatch). A large rewrite takes several
        calls (``rewriteToken``); the object appears only when it is done.
        """
        fs = source.fs
        src_bucket, src_prefix = source.bucket_and_prefix()
        dst_bucket, dst_prefix = destination.bucket_and_prefix()
        where = source.url_of(entry.key)
        changed = SourceChanged(f"source changed: {where}: not the listed version any more; "
                                "nothing was published. Run again to copy the new version")
        try:
            resource = fs.call("GET", "b/{}/o/{}", src_bucket, src_prefix + entry.key,
                               json_out=True)
        except FileNotFoundError:
            raise changed from None
        if (entry.etag and resource.get("etag") != entry.etag) or \
                int(resource.get("size") or 0) != entry.size:
            raise changed
        read = hash_source(None, ("crc32c",))
        attributes = options.attributes
        carried = gcs_attributes(attributes) if attributes is not None else \
            {"metadata": dict(resource.get("metadata") or {})}
        body: dict[str, Any] = {**carried,
                                "metadata": {**carried["metadata"], META_SHA256: read.sha256}}
        if options.storage_class:
            body["storageClass"] = options.storage_class
        params: dict[str, Any] = {"ifSourceGenerationMatch": resource["generation"]}
        while True:
            check()
            try:
                answer = fs.call("POST", "b/{}/o/{}/rewriteTo/b/{}/o/{}", src_bucket,
                                 src_prefix + entry.key, dst_bucket, dst_prefix + key,
                                 json=body, json_out=True, **params)
            except Exception as exc:
                if getattr(exc, "code", None) == 412:
                    raise changed from None
                raise
            if answer.get("done"):
                break
            params["rewriteToken"] = answer["rewriteToken"]
        copied = answer.get("resource") or {}
        stored, expected = natives_of(copied).get("crc32c"), read.natives["crc32c"]
        if stored is not None and stored != expected:
            with contextlib.suppress(Exception):
                fs.call("DELETE", "b/{}/o/{}", dst_bucket, dst_prefix + key)
            raise VerifyMismatch(f"{destination.url_of(key)}: the crc32c GCS computed for the "
                                 "copy differs from the source's; the copy was removed")
        return read.sha256, Committed(size=int(copied.get("size") or read.size), native=stored,
                                      expected=expected if stored else None, sent=0)

    def is_transient(self, exc: BaseException) -> bool:
        """429 and 5xx answers (after gcsfs's own retries) and dropped connections;
        a 4xx answer is final."""
        code = getattr(exc, "code", None)
        if type(exc).__name__ == "HttpError" and isinstance(code, int):
            return transient_http_status(code)
        return super().is_transient(exc)

    def region(self, location: Location) -> str | None:
        return bucket_location(location)


def _time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def gcs_attributes(attributes: Attributes | None) -> dict[str, Any]:
    """An object resource's ``contentType`` and ``metadata`` for the attributes.

    GCS objects have no labels or tags (buckets do): a dataset's ``tags`` become
    object metadata, under the manifest's names, below its own ``metadata``.
    """
    if attributes is None:
        return {"metadata": {}}
    out: dict[str, Any] = {"metadata": {**dict(attributes.tags), **dict(attributes.metadata)}}
    if attributes.content_type:
        out["contentType"] = attributes.content_type
    return out


def natives_of(resource: dict[str, Any]) -> dict[str, str]:
    """The native checksums of an object resource, ``algo`` → ``<algo>:<base64>``."""
    out = {}
    if resource.get("crc32c"):
        out["crc32c"] = f"crc32c:{resource['crc32c']}"
    if resource.get("md5Hash"):  # absent for composite objects
        out["md5"] = f"md5:{resource['md5Hash']}"
    return out


def list_gcs(location: Location) -> Iterator[Entry]:
    """Every object under the location, one API page at a time, in byte order."""
    fs = location.fs
    bucket, prefix = location.bucket_and_prefix()
    token: str | None = None
    while True:
        params: dict[str, Any] = {"prefix": prefix or None, "maxResults": 1000,
                                  "pageToken": token,
                                  "fields": "items(name,size,updated,etag),nextPageToken"}
        try:
            page = fs.call("GET", "b/{}/o", bucket, json_out=True, **params)
        except FileNotFoundError as exc:
            raise LocationUnreachable(
                f"{location.url}: bucket {bucket!r} does not exist or is not visible with "
                "these credentials") from exc
        except PermissionError as exc:
            raise LocationUnreachable(f"{location.url}: access denied listing the bucket") from exc
        for obj in page.get("items") or ():
            key = obj["name"][len(prefix):]
            if not key or key.endswith("/"):
                continue  # the prefix itself or a "directory" placeholder
            yield Entry(key=key, size=int(obj.get("size") or 0), mtime=_time(obj.get("updated")),
                        etag=obj.get("etag"))
        token = page.get("nextPageToken")
        if not token:
            return


def stat_gcs(location: Location, key: str) -> ObjectInfo | None:
    """The object's resource: size, update time, metadata, crc32c/md5Hash, class."""
    bucket, prefix = location.bucket_and_prefix()
    try:
        resource = location.fs.call("GET", "b/{}/o/{}", bucket, prefix + key, json_out=True)
    except FileNotFoundError:
        return None
    return ObjectInfo(size=int(resource.get("size") or 0), mtime=_time(resource.get("updated")),
                      etag=resource.get("etag"), metadata=dict(resource.get("metadata") or {}),
                      native=natives_of(resource), storage_class=resource.get("storageClass"),
                      composite=bool(resource.get("componentCount")),
                      content_type=resource.get("contentType"))


def bucket_location(location: Location) -> str | None:
    """The bucket's location (``EUROPE-WEST4``, or a multi-region such as ``EU``), lower case."""
    bucket, _ = location.bucket_and_prefix()
    resource = location.fs.call("GET", "b/{}", bucket, json_out=True)
    return str(resource.get("location") or "").lower() or None


class GCSWriter:
    """One multipart request for an object that fits in a part; otherwise a
    resumable session finalized only by ``commit``.

    Memory: one part buffer. The crc32c of the bytes sent is computed here; the
    one-request upload sends it (and the store refuses bytes that do not match),
    and after a resumable upload the crc32c GCS computed is compared with it
    before ``commit`` returns.
    """

    def __init__(self, location: Location, key: str, part_size: int,
                 storage_class: str | None = None, metadata: dict[str, str] | None = None,
                 attributes: Attributes | None = None):
        self.fs = location.fs
        self.url = location.url_of(key)
        self.bucket, prefix = location.bucket_and_prefix()
        self.key = prefix + key
        self.part_size = max(MIN_CHUNK, part_size // MIN_CHUNK * MIN_CHUNK)
        carried = gcs_attributes(attributes)
        self._resource: dict[str, Any] = {
            "name": self.key, **carried, "metadata": {**carried["metadata"], **(metadata or {})}}
        self._type = carried.get("contentType", "application/octet-stream")
        if storage_class:
            self._resource["storageClass"] = storage_class
        self._buffer = bytearray()
        self._session: str | None = None
        self._offset = 0  # bytes the session holds
        self._crc = Crc32c()
        self.size = 0
        self.sent = 0
        self.committed = False

    def write(self, data: bytes | memoryview) -> None:
        self._buffer += data
        self._crc.update(data)
        self.size += len(data)
        # Strictly more than a part: the last chunk (sent by commit) is never empty.
        while len(self._buffer) > self.part_size:
            self._send(self.part_size, final=False)

    def _upload_base(self) -> str:
        return f"{self.fs._location}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"

    def _send(self, n: int, final: bool) -> dict[str, Any] | None:
        if self._session is None:
            self._resource["metadata"][META_PART_SIZE] = str(self.part_size)
            headers, _ = self.fs.call(
                "POST", self._upload_base(), uploadType="resumable", json=self._resource,
                headers={"X-Upload-Content-Type": self._type})
            location = headers["Location"]
            self._session = location[0] if isinstance(location, list) else location
        chunk = bytes(memoryview(self._buffer)[:n])
        total = str(self._offset + n) if final else "*"
        headers, contents = self.fs.call(
            "POST", self._session, data=chunk,
            headers={"Content-Range": f"bytes {self._offset}-{self._offset + n - 1}/{total}",
                     "Content-Type": "application/octet-stream", "Content-Length": str(n)})
        received = n
        if "Range" in headers:  # 308: the session holds bytes 0..end
            received = int(headers["Range"].split("-")[1]) + 1 - self._offset
        del self._buffer[:received]
        self._offset += received
        self.sent += received
        if final and received == n:
            return json.loads(contents) if contents else None
        return None

    def commit(self, sha256: str, mtime: float | None) -> Committed:
        crc = native_value("crc32c", self._crc.digest())
        if self._session is None:
            # Known only now: a resumable session's metadata was sent when it began.
            self._resource["metadata"][META_SHA256] = sha256
            resource = self._simple_upload(crc)
        else:
            resource = None
            while self._buffer:  # a short write by the store: send the rest again
                resource = self._send(len(self._buffer), final=True) or resource
            self._session = None
        if not resource:
            raise VerifyMismatch(f"{self.url}: the store did not confirm the upload")
        self.committed = True
        stored = natives_of(resource).get("crc32c")
        if int(resource.get("size") or 0) != self.size:
            raise VerifyMismatch(f"{self.url}: the store holds {resource.get('size')} bytes, "
                                 f"{self.size} were sent")
        return Committed(size=self.size, native=stored, expected=crc, sent=self.sent,
                         multipart=False)

    def _simple_upload(self, crc: str) -> dict[str, Any]:
        body = bytes(self._buffer)
        self._buffer = bytearray()
        # Sent so GCS refuses bytes damaged on the way (the emulator checks it too).
        self._resource["crc32c"] = crc.split(":", 1)[1]
        boundary = f"datamove-{uuid.uuid4().hex}"
        payload = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                   f"{json.dumps(self._resource)}\r\n--{boundary}\r\n"
                   f"Content-Type: {self._type}\r\n\r\n").encode() + body + \
            f"\r\n--{boundary}--".encode()
        resource: dict[str, Any] = self.fs.call(
            "POST", self._upload_base(), uploadType="multipart", data=payload, json_out=True,
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'})
        self.sent = len(body)
        return resource

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._session is not None:
            # Cancelling frees the session at once; were it refused (the emulator
            # does not implement it), an unfinished session is still invisible and
            # GCS expires it within a week. One request, without gcsfs's retries.
            with contextlib.suppress(Exception):
                sync(self.fs.loop, _cancel, self.fs, self._session)
            self._session = None


async def _cancel(fs: Any, session: str) -> int:
    import aiohttp

    await fs._set_session()
    async with fs.session.delete(session, headers=fs._get_headers(None),
                                 timeout=aiohttp.ClientTimeout(total=30)) as response:
        return int(response.status)
