"""Any other fsspec filesystem (``memory://``, ``ftp://``, ``hdfs://``, ``webdav``...).

The URL is parsed by the filesystem class's own rules (``_strip_protocol`` for
the path, ``_get_kwargs_from_urls`` for host, port and user), never by cutting
the scheme off by hand: ``hdfs://nn:8020/x`` is path ``/x`` on name node
``nn:8020``. Options in the manifest win over what the URL says. Listings walk
depth-first, one directory at a time; writes go to a hidden temporary name and
are moved into place (:class:`FsspecWriter`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from datamove.errors import LocationUnreachable
from datamove.stores.base import (
    LOCAL_TRANSIENT_ERRNOS,
    AtomicWriter,
    Backend,
    Committed,
    Entry,
    Location,
    ObjectInfo,
    WriteOptions,
    partial_name,
    sort_key,
)
from datamove.stores.safepath import key_problem

_IN_PROCESS = ("memory",)  # lives in this process: the host's region applies


class FsspecBackend(Backend):
    """Whatever fsspec serves for the scheme: a temporary name then a move, no
    native checksums, no storage classes, no writer lock for a ledger."""

    name = "fsspec"

    def __init__(self, protocol: str):
        super().__init__(protocol)
        self.region_is_host = protocol in _IN_PROCESS  # type: ignore[misc]

    def _class(self) -> Any:
        """The filesystem class, or None when its library is not installed (using
        the location then fails with fsspec's own message naming it)."""
        import fsspec

        try:
            return fsspec.get_filesystem_class(self.protocol)
        except (ImportError, ValueError):
            return None

    def root_of(self, url: str) -> str:
        cls = self._class()
        if cls is not None:
            root = str(cls._strip_protocol(url))
        else:
            from fsspec.utils import infer_storage_options

            root = str(infer_storage_options(url)["path"])
        return root.rstrip("/") or "/"

    def url_options(self, url: str) -> dict[str, Any]:
        """What the URL itself names (host, port, user), parsed by fsspec."""
        cls = self._class()
        if cls is not None:
            return dict(cls._get_kwargs_from_urls(url))
        from fsspec.utils import infer_storage_options

        parsed = infer_storage_options(url)
        return {k: parsed[k] for k in ("host", "port", "username") if parsed.get(k)}

    def client_options(self, location: Location) -> dict[str, Any]:
        """What the URL names, then the manifest's options (which win)."""
        return {**self.url_options(location.url), **super().client_options(location)}

    def list(self, location: Location, on_link: Callable[[str], None] | None = None
             ) -> Iterator[Entry]:
        return _walk_fs(location)

    def stat(self, location: Location, key: str) -> ObjectInfo | None:
        try:
            info = location.fs.info(location.path(key))
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            return None
        return ObjectInfo(size=int(info.get("size") or 0), mtime=_info_mtime(info))

    def writer(self, location: Location, key: str, options: WriteOptions) -> AtomicWriter:
        return FsspecWriter(location, key, options.run_token)

    def check_readable(self, location: Location) -> None:
        if not location.fs.exists(location.root):
            raise LocationUnreachable(f"{location.url}: source does not exist; check the URL")

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, OSError) and exc.__cause__ is None and \
                exc.errno in LOCAL_TRANSIENT_ERRNOS:
            return True
        return super().is_transient(exc)


def _walk_fs(location: Location) -> Iterator[Entry]:
    """Any other fsspec filesystem: depth-first, one directory listed at a time."""
    fs = location.fs
    root = location.root
    if not fs.exists(root):
        return

    def walk(directory: str, prefix: str) -> Iterator[Entry]:
        children = []
        for info in fs.ls(directory, detail=True):
            path = info["name"].rstrip("/")
            # A key with "//" lists as the directory itself with a slash: an empty name.
            name = "" if path == directory.rstrip("/") else path.rsplit("/", 1)[-1]
            children.append((name, info["type"] == "directory", info))
        children.sort(key=lambda c: sort_key(c[0], c[1]))
        for name, is_dir, info in children:
            if is_dir:
                # A store may list a "directory" named "", "." or ".." (hostile keys
                # such as "a//x", "a/../../x"); descending would revisit one, forever.
                problem = key_problem(prefix + name)
                if problem:
                    yield Entry(key=prefix + name + "/", size=0,
                                problem=f"unsafe directory name: {problem}")
                    continue
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


class FsspecWriter:
    """Any fsspec store: write a hidden temporary object, then move it into place."""

    def __init__(self, location: Location, key: str, run_token: str = ""):
        self.fs = location.fs
        self.final_path = location.path(key)
        self.temp_path = partial_name(self.final_path, run_token)
        _make_parents(self.fs, self.final_path.rsplit("/", 1)[0])
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


def _make_parents(fs: Any, directory: str, attempts: int = 5) -> None:
    """``fs.makedirs(directory, exist_ok=True)``, safe against other writers making
    the same tree at once: fsspec's sftp checks each level then makes it, so a
    writer that loses the race for a shared ancestor raises there and leaves its
    own levels unmade; it tries again from the top. What still fails (a store
    without directories, no permission) is left for the open that follows to name."""
    for _ in range(attempts):
        try:
            fs.makedirs(directory, exist_ok=True)
            return
        except Exception:
            with contextlib.suppress(Exception):
                if fs.isdir(directory):
                    return
