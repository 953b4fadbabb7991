"""Keys that map to exactly one place under a root, and local paths that never
leave it.

Object-store keys are arbitrary strings: ``../../etc/x``, ``/abs``, ``a//b`` or
``a\\b`` are all valid S3 keys. Joined to a local root they would write outside
it, or alias another key (``a//b`` and ``a/./b`` are both ``a/b`` on disk). So
every key is checked before it becomes a path, on every store alike: a key is
safe when it is a '/'-separated sequence of non-empty segments, none of them
``.`` or ``..``, with no backslash (a separator on Windows and in some fsspec
path handling) and no NUL. An unsafe key fails its object (``UnsafePath``); it
is never renamed, because a renamed key could collide with a real one.

Local paths are then opened one directory at a time with ``O_NOFOLLOW``
relative to the directory above (``openat``), so a symbolic link planted inside
a destination (``dst/sub -> /etc``) is refused instead of written through, and
a link swapped in after a check cannot redirect the open (no check-then-use
race). The root itself may be a link: the user named it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
import threading
from collections.abc import Iterator

from datamove.errors import UnsafePath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be mapped safely under a root, or None if it can."""
    if not key:
        return "empty key"
    if "\0" in key:
        return "contains a NUL character"
    if "\\" in key:
        return "contains a backslash (a path separator on Windows)"
    if key.startswith("/"):
        return "is absolute (starts with '/')"
    for segment in key.split("/"):
        if segment == "":
            return "has an empty path segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"has a {segment!r} path segment"
    return None


def check_key(key: str) -> str:
    """``key`` unchanged if it is safe; raises UnsafePath naming the problem."""
    problem = key_problem(key)
    if problem is not None:
        raise UnsafePath(f"unsafe key {key!r}: {problem}; it cannot be mapped under a "
                         "destination root without leaving it or aliasing another key. "
                         "Rename the object at the source, or exclude it")
    return key


def _split(key: str) -> tuple[list[str], str]:
    check_key(key)
    *parents, name = key.split("/")
    return parents, name


def open_parent(root: str, key: str, *, create: bool) -> tuple[int, str]:
    """A descriptor of the directory that holds ``key`` under ``root``, and the
    key's last segment. No directory below the root may be a symbolic link.

    ``create``: make missing directories (a writer); otherwise a missing one
    raises FileNotFoundError. The caller closes the descriptor. Inside
    :func:`reused_dirs` a directory this thread already walked to is not walked
    again: the caller gets a duplicate of the descriptor opened then.
    """
    fd, name, owned = _parent(root, key, create)
    return (fd if owned else os.dup(fd)), name


def _parent(root: str, key: str, create: bool) -> tuple[int, str, bool]:
    """``open_parent``, and whether the caller owns the descriptor (False: it is
    held by :func:`reused_dirs` and must not be closed)."""
    parents, name = _split(key)
    held = _reused.dirs
    if held is not None:
        fd = held.get((root, *parents))
        if fd is not None:
            return fd, name, False
    if create:
        os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        walked = root
        for part in parents:
            walked = os.path.join(walked, part)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                child = _open_dir(part, fd, walked)
            except OSError as exc:
                raise _not_a_directory(walked, part, fd, exc) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    if held is None:
        return fd, name, True
    if len(held) >= REUSED_DIRS:  # the oldest goes: listings are in key order
        os.close(held.pop(next(iter(held))))
    held[(root, *parents)] = fd
    return fd, name, False


REUSED_DIRS = 32
"""Directory descriptors one thread keeps open inside :func:`reused_dirs`."""


class _Reused(threading.local):
    dirs: dict[tuple[str, ...], int] | None = None


_reused = _Reused()


@contextlib.contextmanager
def reused_dirs() -> Iterator[None]:
    """Within the block, directories reached by ``open_parent`` on this thread stay
    open and are not walked again (at most ``REUSED_DIRS``, closed at the end).

    A worker's batch of small objects is mostly one directory: without this,
    every object walks its source and destination directories again (an open
    from the root's absolute path, an ``openat`` per level, as many closes, and
    a ``makedirs`` of the destination root), about half the system calls of a
    100-byte copy. The walk is the same checked one (no link below the root);
    a held descriptor names the directory that was checked, as an open one
    does during any single copy. Workers hold it for one task (about a second,
    ``TransferSettings.task_seconds``).
    """
    if _reused.dirs is not None:  # nested: the outer block holds and closes them
        yield
        return
    _reused.dirs = {}
    try:
        yield
    finally:
        held, _reused.dirs = _reused.dirs, None
        for fd in held.values():
            os.close(fd)


def _open_dir(part: str, fd: int, walked: str) -> int:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise _not_a_directory(walked, part, fd, exc) from None


def _not_a_directory(walked: str, part: str, fd: int, exc: OSError) -> Exception:
    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
        return exc
    try:
        is_link = stat_mod.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    if is_link:
        return UnsafePath(f"{walked}: is a symbolic link inside the root; datamove never "
                          "reads or writes through one. Replace it with a directory")
    return NotADirectoryError(errno.ENOTDIR, "a file is in the way of a directory", walked)


@contextlib.contextmanager
def parent_dir(root: str, key: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """``open_parent`` as a context manager that closes the descriptor (unless
    :func:`reused_dirs` holds it)."""
    fd, name, owned = _parent(root, key, create)
    try:
        yield fd, name
    finally:
        if owned:
            os.close(fd)


def open_beneath(root: str, key: str) -> int:
    """A read-only descriptor of the regular file ``key`` under ``root``, opened
    without following any link below the root. Raises UnsafePath for a link."""
    with parent_dir(root, key) as (fd, name):
        try:
            return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"{os.path.join(root, key)}: is a symbolic link; "
                                 "datamove does not follow it (source.links)") from None
            raise


def lstat_beneath(root: str, key: str) -> os.stat_result | None:
    """``lstat`` of ``key`` under ``root`` (a link is reported as the link), or
    None if it or a directory above it does not exist."""
    try:
        with parent_dir(root, key) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def unlink_beneath(root: str, key: str) -> None:
    """Remove ``key`` under ``root`` (a link is removed, never its target)."""
    with parent_dir(root, key) as (fd, name):
        os.unlink(name, dir_fd=fd)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import, before any worker thread exists: os.umask can only be
# read by setting it, which would race with threads creating files.
UMASK = _current_umask()
DEFAULT_FILE_MODE = 0o666 & ~UMASK
PRIVATE_FILE_MODE = 0o600
