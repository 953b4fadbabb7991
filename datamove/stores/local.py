"""Local directory trees: listing without following links, stat, reads, atomic writes.

Listings walk depth-first in key byte order, one directory in memory at a time.
Reads and writes below the root never follow a symbolic link unless the
location says ``links: follow`` (safepath.py, docs/SECURITY.md). A write is a
private temporary file beside the final name, renamed into place
(:class:`LocalWriter`); a large one may survive a killed run and be continued
(:class:`ResumableLocalWriter`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, BinaryIO

from datamove.checksum import chunk_buffer
from datamove.errors import LocationUnreachable, VerifyMismatch
from datamove.stores.base import (
    LINK_SUFFIX,
    LOCAL_TRANSIENT_ERRNOS,
    PARTIAL_MARKER,
    RESUME_TOKEN,
    AtomicWriter,
    Backend,
    Committed,
    Entry,
    Location,
    ObjectInfo,
    WriteOptions,
    expand_local,
    partial_name,
    sort_key,
)
from datamove.stores.safepath import (
    DEFAULT_FILE_MODE,
    PRIVATE_FILE_MODE,
    lstat_beneath,
    open_beneath,
    open_parent,
    unlink_beneath,
)


class LocalBackend(Backend):
    """A directory on this host (``/path``, ``file://``, ``local://``)."""

    name = "local"
    atomic_temp_names = True
    can_host_ledger = True
    lease_lock = "flock"
    region_is_host = True
    is_local = True

    def root_of(self, url: str) -> str:
        return expand_local(url)

    def list(self, location: Location, on_link: Callable[[str], None] | None = None
             ) -> Iterator[Entry]:
        return _walk_local(location.root, location.links, on_link)

    def stat(self, location: Location, key: str) -> ObjectInfo | None:
        path = location.path(key)
        st = os.stat(path) if location.links == "follow" else lstat_beneath(location.root, key)
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            return None  # a link (not followed) or a directory is not this object
        return ObjectInfo(size=st.st_size, mtime=st.st_mtime)

    def open_read(self, location: Location, key: str) -> BinaryIO:
        """Local files bypass fsspec for speed. Below the root no symbolic link is
        followed unless ``links: follow``; with ``copy-link`` the listed
        ``<name>.rclonelink`` reads as the target of the link ``<name>``."""
        path = location.path(key)
        if location.links == "follow":
            return open(path, "rb", buffering=0)
        try:
            return open(open_beneath(location.root, key), "rb", buffering=0)
        except FileNotFoundError:
            link = _link_target(location, key)
            if link is None:
                raise
            return io.BytesIO(link)

    def writer(self, location: Location, key: str, options: WriteOptions) -> AtomicWriter:
        if options.resume_id:
            return ResumableLocalWriter(location.root, key, options.resume_id,
                                        options.part_size, fsync=options.fsync,
                                        readback=options.readback, mode=options.mode)
        return LocalWriter(location.root, key, fsync=options.fsync, readback=options.readback,
                           run_token=options.run_token, mode=options.mode)

    def remove(self, location: Location, key: str) -> None:
        """Never through a link below the root."""
        unlink_beneath(location.root, key)

    def check_readable(self, location: Location) -> None:
        if not os.path.isdir(location.root):
            raise LocationUnreachable(
                f"{location.url}: source directory does not exist; check the path")

    def is_transient(self, exc: BaseException) -> bool:
        """An interrupted call or a busy/briefly unreachable mount; never a missing
        file, a permission, a full or read-only disk. OS errors a store library
        made from a remote answer (they carry that answer as the cause) are the
        store backend's to judge."""
        if isinstance(exc, OSError) and exc.__cause__ is None:
            return exc.errno in LOCAL_TRANSIENT_ERRNOS
        return False


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
        children.sort(key=lambda c: sort_key(c[0], c[1] is not None))
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


def _link_target(location: Location, key: str) -> bytes | None:
    """The target of the link a ``copy-link`` key stands for, or None."""
    if location.links != "copy-link" or not key.endswith(LINK_SUFFIX):
        return None
    link_key = key[:-len(LINK_SUFFIX)]
    st = lstat_beneath(location.root, link_key)
    if st is None or not stat_mod.S_ISLNK(st.st_mode):
        return None
    return os.fsencode(os.readlink(location.path(link_key)))



def _hash_fd(fd: int) -> str:
    """sha256 of a whole file through an open descriptor, in bounded chunks."""
    sha = hashlib.sha256()
    buffer = chunk_buffer()
    offset = 0
    while n := os.preadv(fd, [buffer], offset):
        sha.update(buffer[:n])
        offset += n
        if n < len(buffer):  # a regular file's short read is its end: no read of b""
            break
    return sha.hexdigest()


class _RawFile:
    """A file descriptor with the few file methods the writers use, without the
    ``io.FileIO`` that ``open()`` builds around it (which costs an ``fstat`` and
    an ``ioctl`` per file: a tenth of the system calls of a small local copy)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def write(self, data: bytes | memoryview) -> None:
        """All of ``data``: a short write (a disk filling up) is continued, so the
        disk's own error (ENOSPC) surfaces instead of bytes quietly left out."""
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            if written == 0:  # never for a regular file; never loop on it either
                raise OSError(errno.EIO, "the file system accepted no bytes")
            view = view[written:]

    def seek(self, offset: int) -> None:
        os.lseek(self.fd, offset, os.SEEK_SET)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


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
        """``open`` of a name in the writer's directory, never through a link: a
        :class:`_RawFile` for the binary modes, a text file for the journal."""
        flags = _OPEN_FLAGS.get(mode)
        if flags is not None:
            return _RawFile(os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC,
                                    PRIVATE_FILE_MODE, dir_fd=self._dir))

        def opener(path: str, flags: int) -> int:
            return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE,
                           dir_fd=self._dir)
        return open(name, mode, opener=opener, encoding="ascii")

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self.size += len(data)

    def commit(self, sha256: str, mtime: float | None) -> Committed:
        fd = self._file.fileno()
        if self.fsync:
            os.fsync(fd)
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


_OPEN_FLAGS = {"xb+": os.O_RDWR | os.O_CREAT | os.O_EXCL, "wb+": os.O_RDWR | os.O_CREAT |
               os.O_TRUNC, "r+b": os.O_RDWR}
"""``open()`` modes of the writers' binary files, as ``os.open`` flags."""

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
        opened = None
        try:
            self._journaled = self._load_journal()  # parts on disk from an earlier attempt
            if self._journaled:
                self._file = opened = self._open(self.temp_name, "r+b")
            else:
                self._file = opened = self._open(self.temp_name, "wb+")
                self._rewrite_journal(0)
        except BaseException:
            if opened is not None:  # a plain descriptor: nothing else would close it
                opened.close()
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
