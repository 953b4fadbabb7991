"""What every store is: the value types, the Backend interface, and the registry.

A :class:`Location` is what travels to workers: a URL and non-secret options.
Its :attr:`Location.backend` is the :class:`Backend` registered for its
scheme, which knows everything store-specific: how to list, stat, read, write
atomically and remove, which native checksums the store computes, whether
writes use a temporary name, which storage classes exist, how the ledger is
locked there, and which errors are worth a retry. Callers ask the backend's
declared features instead of testing the scheme.

Adding a store is one module with a Backend subclass plus one line in
``BACKENDS``; the registry imports that module the first time a location of
its scheme is used, so importing datamove.stores imports no store SDK. This
module imports no backend module; backends import it.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Protocol

from datamove.errors import BadInput
from datamove.stores.parts import PART_BUFFERS
from datamove.stores.safepath import check_key

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from datamove.stores.attributes import Attributes
    from datamove.tiers import Tier

PARTIAL_MARKER = ".datamove-partial-"
"""Infix of temporary names; objects carrying it are never listed as data."""

RESUME_TOKEN = "resume"
"""Run token of temporary files that a later run may continue (local.ResumableLocalWriter)."""

META_SHA256 = "datamove-sha256"
META_PART_SIZE = "datamove-part-size"
LINK_SUFFIX = ".rclonelink"
"""``links: copy-link`` stores a symbolic link as ``<name>.rclonelink`` holding its
target, the convention rclone's ``--links`` reads back."""
LINK_POLICIES = ("skip", "follow", "copy-link")


@dataclass(frozen=True)
class Entry:
    """One object in a listing. ``key`` is relative to the location, '/'-separated."""

    key: str
    size: int
    mtime: float | None = None
    etag: str | None = None
    # Listed but not copyable (a symbolic link loop, a dangling link followed, an
    # unreadable directory): that object fails with this reason, the rest go on.
    problem: str | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """What a store says about one object (``stat``)."""

    size: int
    mtime: float | None = None
    etag: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    checksum_sha256: str | None = None  # S3 ChecksumSHA256 (base64, maybe "-N" composite)
    # Native checksums the store reports, algo -> "<algo>:<base64>" (checksum.py).
    native: dict[str, str] = field(default_factory=dict)
    # False when ``native`` is a claim some client made rather than what the
    # store computed (an Azure blob committed from blocks): never proof then.
    native_trusted: bool = True
    composite: bool = False  # composed/multipart: no whole-object MD5
    storage_class: str | None = None
    content_type: str | None = None  # where the store keeps one (attributes.py)
    sse: str | None = None  # S3: ServerSideEncryption (AES256, aws:kms)
    sse_kms_key_id: str | None = None  # S3: the KMS key of an aws:kms object


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


@dataclass(frozen=True)
class SourceHash:
    """What one read of a source object gave: its sha256 (hex) and size, and, when
    asked for, the sha256 of each ``part_size`` part and native checksums."""

    sha256: str
    size: int
    parts: tuple[bytes, ...] = ()
    natives: dict[str, str] = field(default_factory=dict)


HashSource = Callable[[int | None, tuple[str, ...]], SourceHash]
"""Reads the listed version of a source once and hashes it: ``(part_size or None,
natives) -> SourceHash``. Given by the pipeline (cancellable, SourceGuard-checked);
a server-side copy calls it only when the store has no SHA-256 of the source."""


class AtomicWriter(Protocol):
    """Bytes in with ``write``; ``commit`` publishes under the final name, ``abort``
    leaves nothing behind. Nothing is visible under the final name before commit."""

    committed: bool

    def write(self, data: bytes | memoryview) -> None: ...
    def commit(self, sha256: str, mtime: float | None) -> Committed: ...
    def abort(self) -> None: ...


@dataclass(frozen=True)
class WriteOptions:
    """How one object is written (writers.atomic_writer's keywords, for a backend)."""

    part_size: int
    size_hint: int = 0
    fsync: bool = False
    readback: bool = False
    run_token: str = ""
    resume_id: str | None = None
    resumable: bool = True
    storage_class: str | None = None
    mode: int | None = None
    part_buffers: int = PART_BUFFERS  # parts of one object in memory while it uploads
    # Content-Type, user metadata, tags, S3 SSE (attributes.py); None: the store's defaults.
    attributes: Attributes | None = None


def partial_name(final_path: str, run_token: str = "") -> str:
    """``<final>.datamove-partial-<run token>-<random>``: the token lets the next run
    tell its own in-flight files from orphans of a killed run (cleanup.py)."""
    # random's generator, not the OS's: no system call per name, and reseeded in a
    # forked child. A name someone guessed only fails the create (O_EXCL, O_NOFOLLOW).
    return f"{final_path}{PARTIAL_MARKER}{run_token or 'norun'}-{random.getrandbits(32):08x}"


def sort_key(name: str, is_dir: bool) -> bytes:
    """A directory sorts as "name/" so that a depth-first walk yields full keys in
    the same byte order as a flat object-store listing ("a-c" < "a/b")."""
    return (name + "/" if is_dir else name).encode("utf-8", "surrogateescape")


# Connection trouble every networked store shares (cause chains are walked by
# connection.connection_endpoint); aiohttp's payload error is a dropped stream.
def transient_http_status(status: int | None) -> bool:
    """An HTTP answer another attempt may change: timeout (408), throttling (429), 5xx."""
    return status is not None and (status in (408, 429) or status >= 500)


_NETWORK_ERRORS = {"ClientPayloadError", "ServerDisconnectedError", "ClientConnectionError",
                   "ClientOSError", "EndpointConnectionError", "ConnectionClosedError",
                   "ReadTimeoutError", "ConnectTimeoutError", "ServiceRequestError",
                   "ServiceResponseError", "IncompleteReadError"}
LOCAL_TRANSIENT_ERRNOS = frozenset({errno.EINTR, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT,
                                    errno.EIO, errno.ESTALE})
"""OS errors that may pass (an interrupted call, a busy or briefly unreachable mount)."""


class Backend:
    """One kind of store. Subclasses declare their features and implement the methods.

    Features (class attributes; docs in /docs/BACKENDS.md and ARCHITECTURE.md):

    ``native_checksums``: checksums the store computes itself, in the order worth
    computing from a source (``md5``, ``crc32c``, ``sha256``); ``sha256_on_write``:
    datamove sends a SHA-256 the store keeps with each object, so nothing else
    needs computing for it; ``atomic_temp_names``: writes go to a temporary name
    then a rename (True), or one PUT / an upload committed at the end (False);
    ``storage_classes``: its tiers (tiers.py) or None; ``archive_restore``: some
    classes need a restore before a read; ``class_change_in_place``: datamove
    changes a class by a copy of the object onto itself; ``server_side_copy``:
    ``copy_within`` copies an object between two locations of the same store
    without its bytes passing through datamove; ``can_host_ledger``: Delta Lake works
    there; ``lease_lock``: how ledger/lock.py keeps one writer (``flock``,
    ``conditional-write``, ``none``); ``region_source``: how the region is
    discovered, or None; ``region_is_host``: the bytes live on this host (the
    host's configured region applies); ``pins_reads``: an open reader fails if the
    object changes (source_guard.py); ``is_local``: a local directory tree.
    ``keeps_attributes``: the store keeps a Content-Type and user metadata per
    object (attributes.py); ``object_tags``: how it keeps a dataset's ``tags``
    (attributes.TAG_STORES key), or None; ``server_side_encryption``: S3's SSE
    settings apply.

    ``client_modules`` and ``extra``: the store's client libraries (top-level module
    names) and the datamove extra that installs them (``pip install 'datamove[s3]'``).
    The core needs no cloud SDK, so a backend module imports its SDK only inside its
    methods: its features can be read (manifest checks) where the SDK is absent, and
    using the store says which extra to install (``missing_client``).
    """

    name: ClassVar[str] = "fsspec"
    native_checksums: ClassVar[tuple[str, ...]] = ()
    sha256_on_write: ClassVar[bool] = False
    atomic_temp_names: ClassVar[bool] = True
    storage_classes: ClassVar[dict[str, Tier] | None] = None
    archive_restore: ClassVar[bool] = False
    class_change_in_place: ClassVar[bool] = False
    server_side_copy: ClassVar[bool] = False
    can_host_ledger: ClassVar[bool] = False
    lease_lock: ClassVar[str] = "none"
    region_source: ClassVar[str | None] = None
    region_is_host: ClassVar[bool] = False
    pins_reads: ClassVar[bool] = False
    is_local: ClassVar[bool] = False
    client_modules: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    keeps_attributes: ClassVar[bool] = False
    object_tags: ClassVar[str | None] = None
    server_side_encryption: ClassVar[bool] = False

    def __init__(self, protocol: str):
        self.protocol = protocol
        self._client_found = False

    def missing_client(self) -> str | None:
        """Why this store cannot be used in this Python (its client library is not
        installed, and which extra installs it), or None. Looks for the modules
        without importing them."""
        if self._client_found:
            return None
        missing = [name for name in self.client_modules if not _installed(name)]
        if not missing:
            self._client_found = True
            return None
        verb = "is" if len(missing) == 1 else "are"
        return (f"{self.protocol}:// needs {', '.join(missing)}, which {verb} not installed: "
                f"pip install 'datamove[{self.extra}]'")

    # --- addressing ---------------------------------------------------------------

    def root_of(self, url: str) -> str:
        """The location's path in its filesystem's terms, without a trailing slash."""
        return url.split("://", 1)[1].rstrip("/")

    def filesystem(self, location: Location) -> AbstractFileSystem:
        """This process's filesystem for the location (fsspec caches instances)."""
        import fsspec

        return fsspec.filesystem(self.protocol, **self.client_options(location))

    def client_options(self, location: Location) -> dict[str, Any]:
        """The location's options for the store's client; ``allow_insecure`` is
        datamove's own (transport.py), not the store's."""
        return {k: v for k, v in location.options if k != "allow_insecure"}

    # --- objects ------------------------------------------------------------------

    def list(self, location: Location, on_link: Callable[[str], None] | None = None
             ) -> Iterator[Entry]:
        """Every object under the location in UTF-8 byte order of its key, partial
        objects included (core.list_entries filters them)."""
        raise NotImplementedError

    def stat(self, location: Location, key: str) -> ObjectInfo | None:
        raise NotImplementedError

    def open_read(self, location: Location, key: str) -> BinaryIO:
        return location.fs.open(location.path(key), "rb", block_size=4 * 1024 * 1024,
                                cache_type="readahead")

    def writer(self, location: Location, key: str, options: WriteOptions) -> AtomicWriter:
        raise NotImplementedError

    def remove(self, location: Location, key: str) -> None:
        location.fs.rm_file(location.path(key))

    def check_readable(self, location: Location) -> None:
        """Raise if a source location cannot be read at all (core.check_readable
        turns other exceptions into LocationUnreachable)."""
        next(iter(self.list(location)), None)

    def copy_within(self, source: Location, entry: Entry, destination: Location, key: str,
                    options: WriteOptions, hash_source: HashSource,
                    check: Callable[[], None]) -> tuple[str, Committed]:
        """Copy the listed version of ``entry`` to ``key`` under ``destination`` (a
        location of the same store, same client options) inside the store
        (``server_side_copy``); nothing partial is ever visible.

        Returns the source's sha256 (hex: the store's own when it keeps one,
        else ``hash_source``'s) and what the store reported of the copy, for
        transfer.verify_destination. Raises SourceChanged when the source is
        no longer the listed version (nothing is published then). ``check`` is
        called between requests of a long copy (it raises to stop it).
        """
        raise NotImplementedError

    # --- errors -------------------------------------------------------------------

    def is_transient(self, exc: BaseException) -> bool:
        """Whether another attempt may succeed: by default dropped connections and
        timeouts only. Backends add the store's throttling and server errors."""
        from datamove.stores.connection import connection_endpoint

        if isinstance(exc, TimeoutError | ConnectionError):
            return True
        if type(exc).__name__ in _NETWORK_ERRORS:
            return True
        return connection_endpoint(exc) is not None

    # --- optional capabilities ----------------------------------------------------

    def region(self, location: Location) -> str | None:
        """The region the store reports (``region_source``); raises if it will not say."""
        return None

    def store_clock(self, location: Location) -> Any:
        """The store's current time, for a store whose incomplete uploads outlive a
        run (cleanup.py); None elsewhere."""
        return None

    def abort_orphan_uploads(self, location: Location, cutoff: Any = None) -> int:
        """Abort incomplete uploads begun before ``cutoff``; how many were aborted."""
        return 0


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (find_spec imports the
    parents of a dotted name, and raises when one is missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


BACKENDS: dict[str, str] = {
    "file": "datamove.stores.local:LocalBackend",
    "s3": "datamove.stores.s3:S3Backend",
    "s3a": "datamove.stores.s3:S3Backend",
    "gs": "datamove.stores.gcs:GCSBackend",
    "gcs": "datamove.stores.gcs:GCSBackend",
    "az": "datamove.stores.azure:AzureBackend",
    "abfs": "datamove.stores.azure:AzureBackend",
    "abfss": "datamove.stores.azure:AzureBackend",
    "sftp": "datamove.stores.sftp:SFTPBackend",
}
"""Scheme -> ``module:Class``, imported on first use. Any other scheme is served by
the generic fsspec backend (fsspec's own URL parsing and filesystem)."""
GENERIC = "datamove.stores.fsspec_generic:FsspecBackend"

_instances: dict[str, Backend] = {}
_lock = threading.Lock()


def register(scheme: str, target: str) -> None:
    """Serve ``scheme://`` URLs with ``target`` (``module:Class``), e.g. for a plug-in."""
    with _lock:
        BACKENDS[scheme.lower()] = target
        _instances.pop(scheme.lower(), None)


def backend_for(protocol: str) -> Backend:
    """The backend registered for a scheme (imported on first use), one per process."""
    found = _instances.get(protocol)
    if found is not None:
        return found
    with _lock:
        if protocol not in _instances:
            module, _, name = BACKENDS.get(protocol, GENERIC).partition(":")
            cls = getattr(importlib.import_module(module), name)
            _instances[protocol] = cls(protocol)
        return _instances[protocol]


def protocol_of(url: str) -> str:
    """A URL's scheme, lower case; a plain path and ``local://`` are ``file``."""
    if "://" not in url:
        return "file"
    scheme = url.split("://", 1)[0].lower()
    return "file" if scheme == "local" else scheme


@dataclass(frozen=True)
class Location:
    """A root under which a dataset's objects live. Picklable; holds no secrets.

    The filesystem is built where it is used (``fs``), so credentials come from
    that process's environment and provider chain and are never pickled.
    ``links``: what a local listing does with symbolic links (``skip``, the
    default, as rclone does; ``follow``; ``copy-link``). Reads and writes below
    a local root never follow a link unless ``links`` is ``follow``.
    ``list_threads``: prefixes an object store lists at once (stores/prefixed.py).
    ``inventory``: an S3 Inventory manifest.json that lists the objects instead of
    the store (stores/inventory.py).
    """

    url: str
    options: tuple[tuple[str, Any], ...] = ()
    region: str | None = None
    links: str = "skip"
    list_threads: int = 8
    inventory: str | None = None

    @classmethod
    def of(cls, url: str, options: dict[str, Any] | None = None,
           region: str | None = None, links: str = "skip", list_threads: int = 8,
           inventory: str | None = None) -> Location:
        return cls(url=url, options=tuple(sorted((options or {}).items())), region=region,
                   links=links, list_threads=list_threads, inventory=inventory)

    @cached_property
    def protocol(self) -> str:
        return protocol_of(self.url)

    @property
    def backend(self) -> Backend:
        """The store's backend: its features and operations."""
        return backend_for(self.protocol)

    @property
    def is_local(self) -> bool:
        """A directory tree on this host (paths, not URLs, are handed to os.*)."""
        return self.backend.is_local

    @cached_property
    def root(self) -> str:
        """The location's path in its filesystem's terms, without a trailing slash."""
        return self.backend.root_of(self.url)

    @property
    def fs(self) -> AbstractFileSystem:
        """This process's filesystem for the location (fsspec caches instances),
        with bounded connect and read timeouts unless the options set their own.
        Raises BadInput naming the extra to install when the store's client is not."""
        missing = self.backend.missing_client()
        if missing:
            raise BadInput(missing)
        return self.backend.filesystem(self)

    def path(self, key: str) -> str:
        """The store path of ``key``; raises UnsafePath for a key that would leave
        the root or alias another (safepath.key_problem)."""
        return f"{self.root}/{check_key(key)}" if key else self.root

    def url_of(self, key: str) -> str:
        base = self.url if "://" in self.url else self.root
        return f"{base.rstrip('/')}/{key}"

    def bucket_and_prefix(self) -> tuple[str, str]:
        """For object stores: the bucket and the key prefix ('' or ending in '/')."""
        bucket, _, prefix = self.root.partition("/")
        return bucket, (prefix.strip("/") + "/") if prefix.strip("/") else ""

    def __str__(self) -> str:
        return self.url


def expand_local(url: str) -> str:
    """A local URL or path as an absolute path."""
    path = url.removeprefix("file://").removeprefix("local://")
    return os.path.abspath(os.path.expanduser(path))
