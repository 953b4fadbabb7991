"""Azure Blob Storage: listing, stat and atomic writes, over adlfs.

adlfs builds the client from the worker's environment (for example
``AZURE_STORAGE_CONNECTION_STRING``, or ``account_name`` in the options and a
credential from the Azure identity chain), so no key travels with a Location.
This module uses adlfs's async client directly, through fsspec's loop:

* ``with fs.open(p, "wb")`` in adlfs commits the staged blocks on close, also
  when an exception is propagating, so a truncated blob would appear.
  :class:`AzureWriter` instead puts a small blob in one Put Blob request
  (atomic), and a large one as staged blocks that become visible only when
  ``commit`` commits the block list. Uncommitted blocks are invisible and the
  service discards them after a week.
* Listings are the service's pages (1,000 blobs each), never a whole-container
  ``find``; past one page, by prefix in parallel (prefixed.py).

Native checksum: Content-MD5. The service computes it for a blob written by
one Put Blob (and checks the one the client sends); for a blob committed from
blocks it is only whatever the client claimed, so it is not trusted then
(docs/BACKENDS.md). Azure has no region in the blob API: see policy/regions.py.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from fsspec.asyn import sync

from datamove.checksum import b64
from datamove.errors import LocationUnreachable, VerifyMismatch
from datamove.stores.attributes import Attributes, azure_metadata
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
from datamove.stores.parts import PART_BUFFERS, PartSender
from datamove.stores.prefixed import Page, Pages, list_by_prefix
from datamove.stores.timeouts import AZURE_BACKOFF, CONNECT_TIMEOUT, READ_TIMEOUT

SINGLE_PUT_MAX = 64 * 1024 * 1024  # the SDK's max_single_put_size: one Put Blob up to here
AZURE_SHA256 = "datamove_sha256"  # Azure metadata names must be C# identifiers: no '-'
AZURE_PART_SIZE = "datamove_part_size"


def _md5(settings: Any) -> str | None:
    digest = getattr(settings, "content_md5", None) if settings is not None else None
    return f"md5:{b64(bytes(digest))}" if digest else None


def _not_found(exc: BaseException) -> bool:
    return type(exc).__name__ in ("ResourceNotFoundError", "FileNotFoundError")


class AzureBackend(Backend):
    """``az://container/prefix`` (and ``abfs://``, ``abfss://``)."""

    name = "azure"
    client_modules = ("adlfs", "azure.storage.blob")
    extra = "azure"
    native_checksums = ("md5",)
    atomic_temp_names = False
    can_host_ledger = True
    keeps_attributes = True
    object_tags = "azure"

    def client_options(self, location: Location) -> dict[str, Any]:
        """Bounded waits (timeouts.py) unless the options set their own."""
        out = super().client_options(location)
        out.setdefault("connection_timeout", CONNECT_TIMEOUT)
        out.setdefault("read_timeout", READ_TIMEOUT)
        return out

    def filesystem(self, location: Location) -> Any:
        fs = super().filesystem(location)
        _bound_service_client(fs, dict(location.options))
        return fs

    def list(self, location: Location, on_link: Callable[[str], None] | None = None
             ) -> Iterator[Entry]:
        return list_azure(location)

    def stat(self, location: Location, key: str) -> ObjectInfo | None:
        return stat_azure(location, key)

    def writer(self, location: Location, key: str, options: WriteOptions) -> AtomicWriter:
        return AzureWriter(location, key, options.part_size, options.part_buffers,
                           attributes=options.attributes)

    def is_transient(self, exc: BaseException) -> bool:
        """408, 429 and 5xx answers and dropped connections; other answers
        (403 authentication or authorization, 404) are final."""
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and type(exc).__module__.startswith("azure."):
            return transient_http_status(status)
        return super().is_transient(exc)


def _bound_service_client(fs: Any, options: dict[str, Any]) -> None:
    """adlfs applies its timeouts only to its own calls; this module also calls
    the SDK's service client directly. Give that client's transport and retry
    policy the same bounds (on fsspec's cached instance: idempotent)."""
    client = getattr(fs, "service_client", None)
    config = getattr(client, "_config", None)
    if config is None:
        return
    transport = getattr(config, "transport", None)
    connection = getattr(transport, "connection_config", None)
    if connection is not None:
        connection.timeout = options.get("connection_timeout", CONNECT_TIMEOUT)
        connection.read_timeout = options.get("read_timeout", READ_TIMEOUT)
    retry = getattr(config, "retry_policy", None)
    if retry is not None and hasattr(retry, "initial_backoff"):
        retry.initial_backoff, retry.increment_base = AZURE_BACKOFF


def list_azure(location: Location) -> Iterator[Entry]:
    """Every blob under the location, one service page at a time; more than a page
    is listed by prefix, several prefixes at once (prefixed.py, ``list_threads``)."""
    return list_by_prefix(azure_pages(location), location.list_threads)


def azure_pages(location: Location, page_blobs: int = 1000) -> Pages:
    """List Blobs pages of any prefix of the location (``walk_blobs`` with the
    delimiter '/', ``list_blobs`` without)."""
    from azure.storage.blob.aio import BlobPrefix

    fs = location.fs
    container, root = location.bucket_and_prefix()
    client = fs.service_client.get_container_client(container)

    async def page(prefix: str, delimited: bool, token: str | None
                   ) -> tuple[list[Any], str | None]:
        start = root + prefix or None
        listing = client.walk_blobs(name_starts_with=start, delimiter="/",
                                    results_per_page=page_blobs) if delimited else \
            client.list_blobs(name_starts_with=start, results_per_page=page_blobs)
        pager = listing.by_page(continuation_token=token)
        items = [blob async for blob in await pager.__anext__()]
        return items, pager.continuation_token

    def pages(prefix: str, delimited: bool) -> Iterator[Page]:
        token: str | None = None
        while True:
            try:
                items, token = sync(fs.loop, page, prefix, delimited, token)
            except Exception as exc:
                if _not_found(exc):
                    raise LocationUnreachable(
                        f"{location.url}: container {container!r} does not exist or is not "
                        "visible with these credentials") from exc
                raise
            entries, prefixes = [], []
            for blob in items:
                if isinstance(blob, BlobPrefix):
                    prefixes.append(blob.name[len(root):])
                    continue
                key = blob.name[len(root):]
                if not key or key.endswith("/"):
                    continue
                modified = blob.last_modified
                entries.append(Entry(key=key, size=int(blob.size or 0),
                                     mtime=modified.timestamp() if modified else None,
                                     etag=(blob.etag or "").strip('"') or None))
            yield Page(entries, prefixes, bool(token))
            if not token:
                return

    return pages


def stat_azure(location: Location, key: str) -> ObjectInfo | None:
    """Size, time, metadata, Content-MD5 and access tier of one blob."""
    fs = location.fs
    container, prefix = location.bucket_and_prefix()
    client = fs.service_client.get_blob_client(container, prefix + key)
    try:
        props = sync(fs.loop, client.get_blob_properties)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise
    metadata = dict(props.metadata or {})
    # Present the metadata under datamove's usual names (stores.META_*).
    for azure_name, name in ((AZURE_SHA256, META_SHA256), (AZURE_PART_SIZE, META_PART_SIZE)):
        if azure_name in metadata:
            metadata[name] = metadata.pop(azure_name)
    md5 = _md5(props.content_settings)
    return ObjectInfo(size=int(props.size or 0),
                      mtime=props.last_modified.timestamp() if props.last_modified else None,
                      etag=(props.etag or "").strip('"') or None, metadata=metadata,
                      native={"md5": md5} if md5 else {},
                      storage_class=str(props.blob_tier) if props.blob_tier else None,
                      content_type=getattr(props.content_settings, "content_type", None),
                      # A blob committed from blocks carries only a client's claim of an MD5.
                      native_trusted=META_PART_SIZE not in metadata and META_SHA256 in metadata)


class AzureWriter:
    """One Put Blob for a small object; staged blocks committed only by ``commit``.

    Memory: at most ``part_buffers`` blocks, all but one of them staging at once
    (parts.PartSender; the block list fixes their order, not their arrival).
    Each request carries a transactional MD5 (``validate_content``) that the
    service checks, so damaged bytes are refused on arrival; a single Put
    Blob's Content-MD5, which the service computed, is compared with ours
    before ``commit`` returns.
    """

    def __init__(self, location: Location, key: str, part_size: int,
                 part_buffers: int = PART_BUFFERS, attributes: Attributes | None = None):
        self.fs = location.fs
        self._attributes = attributes
        self.url = location.url_of(key)
        container, prefix = location.bucket_and_prefix()
        self.client = self.fs.service_client.get_blob_client(container, prefix + key)
        self.part_size = part_size
        self._buffer = bytearray()
        self._nonce = uuid.uuid4().hex[:16]
        self._blocks: list[str] = []
        self._sender = PartSender(part_buffers)
        self._staged: dict[str, int] = {}  # block id -> bytes, once the service has it
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.sent = 0
        self.committed = False

    def write(self, data: bytes | memoryview) -> None:
        self._buffer += data
        self._md5.update(data)
        self.size += len(data)
        while len(self._buffer) > self.part_size:
            block = bytes(memoryview(self._buffer)[:self.part_size])
            del self._buffer[:self.part_size]
            self._stage(block)

    def _stage(self, block: bytes) -> None:
        # Block ids of one blob must all have the same length.
        block_id = base64.b64encode(f"{self._nonce}-{len(self._blocks):08d}".encode()).decode()
        self._blocks.append(block_id)
        self._sender.submit(self._send_block, block_id, block)

    def _send_block(self, block_id: str, block: bytes) -> None:
        sync(self.fs.loop, self.client.stage_block, block_id, block, length=len(block),
             validate_content=True)
        self._staged[block_id] = len(block)

    def commit(self, sha256: str, mtime: float | None) -> Committed:
        from azure.storage.blob import BlobBlock

        expected = f"md5:{b64(self._md5.digest())}"
        extra = self._blob_settings()
        metadata = {**extra.pop("metadata"), AZURE_SHA256: sha256}
        if not self._blocks and self.size <= SINGLE_PUT_MAX:
            body = bytes(self._buffer)
            self._buffer = bytearray()
            response = sync(self.fs.loop, self.client.upload_blob, body, overwrite=True,
                            metadata=metadata, validate_content=True, length=len(body),
                            **extra)
            self.sent = len(body)
            self.committed = True
            stored = f"md5:{b64(bytes(response['content_md5']))}" \
                if response.get("content_md5") else None
            if stored is not None and stored != expected:
                raise VerifyMismatch(f"{self.url}: the store's Content-MD5 differs from the "
                                     "bytes sent")
            return Committed(size=self.size, native=stored, expected=expected if stored else None,
                             sent=self.sent)
        if self._buffer or not self._blocks:
            self._stage(bytes(self._buffer))
            self._buffer = bytearray()
        self._sender.drain()
        self.sent = sum(self._staged.values())
        if len(self._staged) != len(self._blocks):
            raise RuntimeError(f"{self.url}: {len(self._staged)} of {len(self._blocks)} blocks "
                               "staged; not committed")
        metadata[AZURE_PART_SIZE] = str(self.part_size)
        sync(self.fs.loop, self.client.commit_block_list,
             [BlobBlock(block_id=b) for b in self._blocks], metadata=metadata, **extra)
        self.committed = True
        return Committed(size=self.size, sent=self.sent, multipart=True)

    def _blob_settings(self) -> dict[str, Any]:
        """Content-Type, metadata (under names Azure accepts) and blob index tags."""
        from azure.storage.blob import ContentSettings

        attributes = self._attributes
        if attributes is None:
            return {"metadata": {}}
        out: dict[str, Any] = {"metadata": azure_metadata(dict(attributes.metadata))}
        if attributes.content_type:
            out["content_settings"] = ContentSettings(content_type=attributes.content_type)
        if attributes.tags:
            out["tags"] = dict(attributes.tags)
        return out

    def abort(self) -> None:
        # Staged blocks are invisible without a commit, and expire; nothing to undo.
        self._buffer = bytearray()
        self._sender.close()
        self._blocks = []
