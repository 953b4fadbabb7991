"""Store access: locations, sorted streaming listings, object info.

A :class:`Location` is what travels to workers: a URL and non-secret options.
The filesystem is built where it is used (``Location.fs``), so credentials come
from that process's environment and provider chain and are never pickled.

Listings are generators that yield entries in the byte order of the key's UTF-8
encoding — the order S3 lists in — so that the planner can merge a source and a
destination listing in one pass with constant memory (see plan.py).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import os
import re
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, BinaryIO

import fsspec
from fsspec import AbstractFileSystem

from datamove.errors import LocationUnreachable
from datamove.redact import scrub
from datamove.stores.azure import AZURE_PROTOCOLS, list_azure, stat_azure
from datamove.stores.gcs import GCS_PROTOCOLS, list_gcs, stat_gcs
from datamove.stores.safepath import check_key, lstat_beneath, open_beneath, unlink_beneath

# gcsfs >= 2026 probes buckets for zonal/HNS features over gRPC unless told not
# to, which fails against emulators and costs a call per bucket. fsspec imports
# gcsfs only when a gs:// filesystem is first made, after this (an explicit
# setting in the environment wins).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

PARTIAL_MARKER = ".datamove-partial-"
"""Infix of temporary names; objects carrying it are never listed as data."""

META_SHA256 = "datamove-sha256"
META_PART_SIZE = "datamove-part-size"
LOCAL_XATTR_SHA256 = "user.datamove.sha256"
LINK_SUFFIX = ".rclonelink"
"""``links: copy-link`` stores a symbolic link as ``<name>.rclonelink`` holding its
target, the convention rclone's ``--links`` reads back."""
LINK_POLICIES = ("skip", "follow", "copy-link")

_S3_PROTOCOLS = ("s3", "s3a")
_BUCKET_PROTOCOLS = (*_S3_PROTOCOLS, *GCS_PROTOCOLS, *AZURE_PROTOCOLS)


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


@dataclass(frozen=True)
class Location:
    """A root under which a dataset's objects live. Picklable; holds no secrets.

    ``links``: what a local listing does with symbolic links (``skip``, the
    default, as rclone does; ``follow``; ``copy-link``). Reads and writes below
    a local root never follow a link unless ``links`` is ``follow``.
    """

    url: str
    options: tuple[tuple[str, Any], ...] = ()
    region: str | None = None
    links: str = "skip"

    @classmethod
    def of(cls, url: str, options: dict[str, Any] | None = None,
           region: str | None = None, links: str = "skip") -> Location:
        return cls(url=url, options=tuple(sorted((options or {}).items())), region=region,
                   links=links)

    @cached_property
    def protocol(self) -> str:
        if "://" not in self.url:
            return "file"
        scheme = self.url.split("://", 1)[0].lower()
        return "file" if scheme == "local" else scheme

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def is_s3(self) -> bool:
        return self.protocol in _S3_PROTOCOLS

    @property
    def is_gcs(self) -> bool:
        return self.protocol in GCS_PROTOCOLS

    @property
    def is_azure(self) -> bool:
        return self.protocol in AZURE_PROTOCOLS

    @cached_property
    def root(self) -> str:
        """The location's path in its filesystem's terms, without a trailing slash."""
        if self.is_local:
            path = self.url.removeprefix("file://").removeprefix("local://")
            return os.path.abspath(os.path.expanduser(path))
        rest = self.url.split("://", 1)[1].rstrip("/")
        if self.protocol == "memory":
            return "/" + rest.lstrip("/")
        cls = _fsspec_class(self.protocol)
        if self.protocol in _BUCKET_PROTOCOLS or cls is None:
            return rest
        # Any other scheme by its filesystem's own rules: sftp://host:port/x is path /x.
        return str(cls._strip_protocol(self.url)).rstrip("/") or "/"

    @property
    def fs(self) -> AbstractFileSystem:
        """This process's filesystem for the location (fsspec caches instances),
        with bounded connect and read timeouts unless the options set their own.
        ``allow_insecure`` is datamove's own option (transport.py), not the store's."""
        from datamove.stores.timeouts import bound_azure, client_options

        options = {k: v for k, v in self.options if k != "allow_insecure"}
        cls = _fsspec_class(self.protocol)
        if self.protocol not in (*_BUCKET_PROTOCOLS, "file", "memory") and cls is not None:
            # Host, port and user as the URL names them (fsspec's parsing); options win.
            options = {**cls._get_kwargs_from_urls(self.url), **options}
        fs = fsspec.filesystem(self.protocol, **client_options(self.protocol, options))
        if self.is_azure:
            bound_azure(fs, options)
        return fs

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


def _fsspec_class(protocol: str) -> Any:
    """fsspec's filesystem class for ``protocol``, or None when unknown or its library
    is missing (making the filesystem then fails with fsspec's message naming it)."""
    try:
        return fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError):
        return None


# --- filters -------------------------------------------------------------------------

def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob: ``*`` and ``?`` stay within a path segment, ``**`` spans
    segments, ``[...]`` is a class. A pattern without '/' matches the base name at
    any depth (like .gitignore); one with '/' is anchored at the dataset root."""
    anchored = "/" in pattern.strip("/")
    body = pattern.strip("/")
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = body.find("]", i + 2 if body[i + 1:i + 2] in ("!", "]") else i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                inner = body[i + 1:end]
                out.append("[" + ("^" + inner[1:] if inner.startswith("!") else inner) + "]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{''.join(out)}$", re.DOTALL)


@dataclass(frozen=True)
class KeyFilter:
    """include/exclude globs from the manifest. No include means everything."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @cached_property
    def _compiled(self) -> tuple[list[re.Pattern[str]], list[re.Pattern[str]]]:
        return [glob_to_regex(p) for p in self.include], [glob_to_regex(p) for p in self.exclude]

    def __call__(self, key: str) -> bool:
        includes, excludes = self._compiled
        if includes and not any(p.match(key) for p in includes):
            return False
        return not any(p.match(key) for p in excludes)


# --- listing -------------------------------------------------------------------------

def _sort_key(name: str, is_dir: bool) -> bytes:
    # A directory sorts as "name/" so that a depth-first walk yields full keys in
    # the same byte order as a flat object-store listing ("a-c" < "a/b").
    return (name + "/" if is_dir else name).encode("utf-8", "surrogateescape")


def list_entries(location: Location, key_filter: KeyFilter | None = None,
                 on_partial: Callable[[str], None] | None = None,
                 on_link: Callable[[str], None] | None = None) -> Iterator[Entry]:
    """Yield every object under ``location`` in UTF-8 byte order of its key.

    Memory stays bounded: object stores are read page by page; directory trees
    one directory at a time. Temporary objects (``PARTIAL_MARKER``) are skipped
    and handed to ``on_partial`` (cleanup.py removes those of killed runs);
    symbolic links skipped by ``location.links`` are handed to ``on_link``.
    Raises LocationUnreachable if the root cannot be listed at all.
    """
    if location.is_local:
        entries = _walk_local(location.root, location.links, on_link)
    elif location.is_s3:
        entries = _list_s3(location)
    elif location.is_gcs:
        entries = list_gcs(location)
    elif location.is_azure:
        entries = list_azure(location)
    else:
        entries = _walk_fs(location)
    for entry in entries:
        if PARTIAL_MARKER in entry.key:
            if on_partial is not None:
                on_partial(entry.key)
            continue
        if key_filter is None or key_filter(entry.key):
            yield entry


def _walk_local(root: str, links: str = "skip",
                on_link: Callable[[str], None] | None = None) -> Iterator[Entry]:
    """Depth-first walk in key byte order, one directory in memory at a time.

    Symbolic links (docs/SECURITY.md): ``skip`` hands them to ``on_link`` and
    lists nothing; ``copy-link`` lists ``<name>.rclonelink`` whose bytes are the
    link's target; ``follow`` lists what they point to, a directory loop or a
    dangling link becoming one entry with a ``problem``. A subdirectory that
    cannot be read is one entry with a problem too: one object fails, not the
    dataset.
    """
    if not os.path.exists(root):
        return  # an absent destination is empty; sources are checked by check_readable
    if not os.path.isdir(root):
        raise LocationUnreachable(f"{root}: is not a directory")

    def walk(directory: str, prefix: str, ancestors: frozenset[tuple[int, int]]
             ) -> Iterator[Entry]:
        try:
            with os.scandir(directory) as it:
                children = [_local_child(e, links, on_link, prefix) for e in it]
        except OSError as exc:
            if not prefix:
                raise LocationUnreachable(
                    f"{directory}: cannot be listed ({exc.strerror or exc})") from exc
            yield Entry(key=prefix, size=0,
                        problem=f"directory cannot be read: {exc.strerror or exc}")
            return
        children = [c for c in children if c is not None]
        children.sort(key=lambda c: _sort_key(c[0], c[1] is not None))
        for name, dir_id, entry in children:
            if dir_id is None:
                yield entry
            elif dir_id in ancestors:
                yield Entry(key=prefix + name + "/", size=0,
                            problem="symbolic link loop: leads back to a directory above it")
            else:
                yield from walk(os.path.join(directory, name), prefix + name + "/",
                                ancestors | {dir_id})

    top = os.stat(root)
    yield from walk(root, "", frozenset({(top.st_dev, top.st_ino)}))


def _local_child(e: os.DirEntry[str], links: str, on_link: Callable[[str], None] | None,
                 prefix: str) -> tuple[str, tuple[int, int] | None, Entry | None] | None:
    """One directory entry as (name, directory id or None, entry), or None to leave out."""
    key = prefix + e.name
    try:
        if e.is_symlink():
            if links == "skip":
                if on_link is not None:
                    on_link(key)
                return None
            if links == "copy-link":
                target = os.fsencode(os.readlink(e.path))
                st = e.stat(follow_symlinks=False)
                name = e.name + LINK_SUFFIX
                return name, None, Entry(key=prefix + name, size=len(target), mtime=st.st_mtime)
        st = e.stat()  # follows a link (links: follow)
    except FileNotFoundError:
        if not e.is_symlink():
            return None  # vanished between listing and stat
        return e.name, None, Entry(key=key, size=0, problem="dangling symbolic link")
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            return e.name, None, Entry(key=key, size=0, problem=f"cannot stat: {exc.strerror}")
        return e.name, None, Entry(key=key, size=0, problem="symbolic link loop")
    if stat_mod.S_ISDIR(st.st_mode):
        return e.name, (st.st_dev, st.st_ino), None
    if stat_mod.S_ISREG(st.st_mode):
        return e.name, None, Entry(key=key, size=st.st_size, mtime=st.st_mtime)
    return None  # sockets, FIFOs, devices: not data


def _list_s3(location: Location) -> Iterator[Entry]:
    fs = location.fs
    bucket, prefix = location.bucket_and_prefix()
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
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
            raise LocationUnreachable(f"{location.url}: access denied listing the bucket") from exc
        for obj in page.get("Contents", ()):
            key = obj["Key"][len(prefix):]
            if not key or key.endswith("/"):
                continue  # the prefix itself or a "directory marker"
            yield Entry(key=key, size=int(obj["Size"]), mtime=obj["LastModified"].timestamp(),
                        etag=obj.get("ETag", "").strip('"') or None)
        if not page.get("IsTruncated"):
            return
        token = page["NextContinuationToken"]


def _walk_fs(location: Location) -> Iterator[Entry]:
    """Any other fsspec filesystem: depth-first, one directory listed at a time."""
    fs = location.fs
    root = location.root
    if not fs.exists(root):
        return

    def walk(directory: str, prefix: str) -> Iterator[Entry]:
        children = []
        for info in fs.ls(directory, detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            children.append((name, info["type"] == "directory", info))
        children.sort(key=lambda c: _sort_key(c[0], c[1]))
        for name, is_dir, info in children:
            if is_dir:
                yield from walk(info["name"], prefix + name + "/")
            else:
                yield Entry(key=prefix + name, size=int(info.get("size") or 0),
                            mtime=_info_mtime(info))

    yield from walk(root, "")


def _info_mtime(info: dict[str, Any]) -> float | None:
    for field_name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(field_name)
        if value is None:
            continue
        if isinstance(value, int | float):
            return float(value)
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
    return None


# --- single objects ------------------------------------------------------------------

def stat(location: Location, key: str) -> ObjectInfo | None:
    """What the store knows about one object, or None if it does not exist."""
    path = location.path(key)
    if location.is_local:
        st = os.stat(path) if location.links == "follow" else lstat_beneath(location.root, key)
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            return None  # a link (not followed) or a directory is not this object
        metadata = {}
        with contextlib.suppress(OSError):
            metadata[META_SHA256] = os.getxattr(path, LOCAL_XATTR_SHA256,
                                                follow_symlinks=False).decode()
        return ObjectInfo(size=st.st_size, mtime=st.st_mtime, metadata=metadata)
    if location.is_s3:
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
    if location.is_gcs:
        return stat_gcs(location, key)
    if location.is_azure:
        return stat_azure(location, key)
    fs = location.fs
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    if info.get("type") == "directory":
        return None
    return ObjectInfo(size=int(info.get("size") or 0), mtime=_info_mtime(info))


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


def open_read(location: Location, key: str) -> BinaryIO:
    """A binary stream over one object; local files bypass fsspec for speed.

    Below a local root no symbolic link is followed unless ``links: follow``;
    with ``copy-link`` the listed ``<name>.rclonelink`` reads as the target of
    the link ``<name>``.
    """
    path = location.path(key)
    if location.is_local:
        if location.links == "follow":
            return open(path, "rb", buffering=0)
        try:
            return open(open_beneath(location.root, key), "rb", buffering=0)
        except FileNotFoundError:
            link = _link_target(location, key)
            if link is None:
                raise
            return io.BytesIO(link)
    return location.fs.open(path, "rb", block_size=4 * 1024 * 1024, cache_type="readahead")


def _link_target(location: Location, key: str) -> bytes | None:
    """The target of the link a ``copy-link`` key stands for, or None."""
    if location.links != "copy-link" or not key.endswith(LINK_SUFFIX):
        return None
    link_key = key[:-len(LINK_SUFFIX)]
    st = lstat_beneath(location.root, link_key)
    if st is None or not stat_mod.S_ISLNK(st.st_mode):
        return None
    return os.fsencode(os.readlink(location.path(link_key)))


def remove(location: Location, key: str) -> None:
    """Delete one object; locally, never through a link below the root."""
    if location.is_local:
        unlink_beneath(location.root, key)
    else:
        location.fs.rm_file(location.path(key))


def check_readable(location: Location) -> None:
    """Fail fast, with a clear message, if a source location cannot be read at all."""
    try:
        if location.is_local:
            if not os.path.isdir(location.root):
                raise LocationUnreachable(
                    f"{location.url}: source directory does not exist; check the path")
            return
        if location.is_s3 or location.is_gcs or location.is_azure:
            next(iter(list_entries(location)), None)
            return
        if not location.fs.exists(location.root):
            raise LocationUnreachable(f"{location.url}: source does not exist; check the URL")
    except LocationUnreachable:
        raise
    except Exception as exc:
        raise LocationUnreachable(f"{location.url}: cannot reach the store: {describe(exc)}") \
            from exc


def describe(exc: BaseException) -> str:
    """One line about an exception, free of request signatures and credentials."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = scrub(text)
    # An Azure Authorization header: "SharedKey <account>:<signature>".
    text = re.sub(r"(SharedKey(?:Lite)? [^:\s]+:)\S+", r"\1…", text)
    text = re.sub(r"(Signature|Credential|X-Amz-[A-Za-z-]+|token)=[^&\s'\"]+", r"\1=…", text)
    return text.splitlines()[0][:500] if text else type(exc).__name__
