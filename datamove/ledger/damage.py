"""A damaged ledger told apart from a missing one, and one message that says what to do.

delta-rs reads most damage to a Delta table as an error from deep inside its
kernel (a gap between commits, a commit or checkpoint that does not parse, a
data file that is gone), which would reach the user as a traceback or, worse,
as one failed "listing" per dataset. Some damage it reads silently: an empty
commit file (what a crash can leave on a filesystem that renames before it
writes) counts as a commit with nothing in it, and a table whose log vanished
looks like one never created. So every ledger table is checked once when a
command opens it (:func:`check_table`), and every read or write error becomes a
:class:`LedgerDamaged` or :class:`LedgerUnwritable` (exit 2) naming the table,
the damage and the way out (docs/FORMAT.md, "A damaged ledger").
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from typing import Any

from datamove.errors import BadInput
from datamove.stores.core import describe

RESTORE = ("Restore the ledger directory from a backup and run the command again "
           "(docs/FORMAT.md, \"A damaged ledger\", says how to go on without one)")
MIN_FREE = 1 << 20
"""A local ledger commit is refused below this much free space plus twice its data:
delta-rs reports a disk that fills mid-write with a Rust panic on stderr."""

PERMANENT = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large",
             errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.EDQUOT: "disk quota exceeded"}
_OS_ERROR = re.compile(r"os error (\d+)")
_DENIED = ("AccessDenied", "Forbidden", "403")


class LedgerDamaged(BadInput):
    """A ledger table exists but cannot be read as it was written."""


class LedgerUnwritable(BadInput):
    """A ledger table could not be written (full disk, permissions, store errors)."""


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def damaged(uri: str, what: str) -> LedgerDamaged:
    return LedgerDamaged(f"ledger table {shown(uri)} is damaged: {what}. {RESTORE}.")


def shown(uri: str) -> str:
    """A table's URI as people wrote it: a local path without ``file://``."""
    return local_path(uri).rstrip("/") if is_local(uri) else uri.rstrip("/")


def read_error(uri: str, exc: BaseException, table: Any = None) -> LedgerDamaged:
    """The error delta-rs or pyarrow raised while opening or reading a table, for
    people: the damaged commit or data file is named when it can be found."""
    found = log_problem(local_path(uri)) if is_local(uri) else None
    if found is None and table is not None:
        found = _unreadable_file(table)
    return damaged(uri, found or _summary(exc))


def _unreadable_file(table: Any) -> str | None:
    """The first data file of ``table`` that does not read back (only on the error
    path: it reads the files again)."""
    import pyarrow.parquet as pq

    try:
        dataset = table.to_pyarrow_dataset()
    except Exception:
        return None
    for path in dataset.files:
        try:
            with dataset.filesystem.open_input_file(path) as f:
                pq.read_table(f, use_threads=False)
        except Exception as exc:
            return f"data file {path.rsplit('/', 1)[-1]} cannot be read ({_summary(exc)})"
    return None


def _summary(exc: BaseException) -> str:
    """The first line of a delta-rs / pyarrow error, without Rust's struct dumps and
    without anything that looks like a credential (stores.describe)."""
    raw = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = describe(exc).removeprefix(f"{type(exc).__name__}: ")
    for prefix in ("Kernel error: ", "Generic delta kernel error: ", "Generic error: "):
        text = text.replace(prefix, "")
    if "found gap" in raw:
        versions = [int(v) for v in re.findall(r"version: (\d+)", raw)]
        if len(versions) >= 2:
            return (f"its log has a gap: commits {versions[0] + 1}..{versions[1] - 1} are "
                    f"missing between {versions[0]} and {versions[1]}")
        return "its log has a gap between commits"
    missing = re.search(r"Object at location (\S+) not found", raw)
    if missing:
        return f"a data file its log lists is missing ({os.path.basename(missing[1])})"
    if "No table metadata or protocol found" in raw:
        return "its log has no table metadata (its first commit or checkpoint is missing)"
    return f"{text} ({type(exc).__name__})"


def log_problem(table_dir: str) -> str | None:
    """What is wrong with a local table's ``_delta_log``, naming the file, or None.

    Looks at the commits after the last checkpoint (the only ones a reader needs):
    gaps, empty files and lines that do not parse; and at the checkpoint itself.
    """
    log_dir = os.path.join(table_dir, "_delta_log")
    try:
        names = os.listdir(log_dir)
    except OSError:
        return None
    commits = sorted(int(n[:20]) for n in names if re.fullmatch(r"\d{20}\.json", n))
    checkpoints = [int(n[:20]) for n in names if re.fullmatch(r"\d{20}\.checkpoint.*", n)]
    checkpoint = _last_checkpoint_version(log_dir)
    if checkpoint is not None and checkpoint not in checkpoints:
        return f"its checkpoint {checkpoint:020d}.checkpoint.parquet is missing"
    if checkpoint is None and checkpoints:
        checkpoint = max(checkpoints)
    if checkpoint is not None:
        problem = _checkpoint_problem(log_dir, checkpoint, names)
        if problem:
            return problem
    after = [v for v in commits if checkpoint is None or v > checkpoint]
    expected = (checkpoint + 1) if checkpoint is not None else 0
    for version in after:
        if version != expected:
            return (f"its log has a gap: commit {expected:020d}.json is missing (found "
                    f"{version:020d}.json after it)")
        path = os.path.join(log_dir, f"{version:020d}.json")
        problem = _commit_problem(path)
        if problem:
            return f"commit {version:020d}.json {problem}"
        expected += 1
    return None


def _last_checkpoint_version(log_dir: str) -> int | None:
    try:
        with open(os.path.join(log_dir, "_last_checkpoint"), encoding="utf-8") as f:
            return int(json.load(f)["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _checkpoint_problem(log_dir: str, version: int, names: list[str]) -> str | None:
    import pyarrow.parquet as pq

    for name in sorted(n for n in names if n.startswith(f"{version:020d}.checkpoint")):
        try:
            pq.read_metadata(os.path.join(log_dir, name))
        except Exception as exc:
            return f"its checkpoint {name} cannot be read ({_summary(exc)})"
    return None


def _commit_problem(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot be read ({exc})"
    if not lines:
        return "is empty"
    for number, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except ValueError:
            return f"is cut short or corrupt (line {number} is not JSON)"
    if '"commitInfo"' not in lines[0]:
        return "does not start with its commit information"
    return None


def check_table(table: Any, uri: str) -> None:
    """Raise LedgerDamaged unless every data file the table's log lists is there with
    the size the log records, and every commit since the last checkpoint holds one.

    One listing of the table's directory and one read of its recent commits: cheap
    enough for every command that opens the ledger.
    """
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        adds = pa.table(table.get_add_actions(flatten=True)).select(["path", "size_bytes"])
        filesystem = table.to_pyarrow_dataset().filesystem
        listed = {info.path.rsplit("/", 1)[-1]: info.size for info in
                  filesystem.get_file_info(pafs.FileSelector("", recursive=False))
                  if info.type == pafs.FileType.File}
    except Exception as exc:
        raise read_error(uri, exc) from None
    missing, wrong = [], []
    for path, size in zip(adds["path"].to_pylist(), adds["size_bytes"].to_pylist(),
                          strict=True):
        name = path.rsplit("/", 1)[-1]
        if "/" in path:
            continue  # partitioned layouts are not the ledger's; nothing to compare with
        if name not in listed:
            missing.append(name)
        elif size is not None and listed[name] != size:
            wrong.append(f"{name}: {listed[name]} bytes, {size} in the log")
    if missing:
        raise damaged(uri, f"{_count(missing, 'data file')} its log lists "
                      f"{'is' if len(missing) == 1 else 'are'} missing "
                      f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})")
    if wrong:
        raise damaged(uri, f"{_count(wrong, 'data file')} cut short or changed "
                      f"({'; '.join(wrong[:3])}{'; …' if len(wrong) > 3 else ''})")
    _check_recent_commits(table, filesystem, uri)


def _check_recent_commits(table: Any, filesystem: Any, uri: str) -> None:
    """Every commit after the last checkpoint must hold its commit information:
    delta-rs reads an empty commit file as a commit that changed nothing."""
    try:
        with filesystem.open_input_file("_delta_log/_last_checkpoint") as f:
            checkpoint = int(json.loads(f.read())["version"])
    except FileNotFoundError:
        checkpoint = _newest_checkpoint(filesystem)
    except Exception:
        return  # an unreadable hint: delta-rs lists the log instead, and so do we not
    try:
        recent = table.version() - checkpoint
        found = len(table.history(recent)) if recent > 0 else 0
    except Exception as exc:
        raise read_error(uri, exc) from None
    if found < recent:
        found_problem = log_problem(local_path(uri)) if is_local(uri) else None
        raise damaged(uri, found_problem or
                      f"{recent - found} of its last {recent} commits hold nothing "
                      "(an empty or cut-short commit file)")


def _newest_checkpoint(filesystem: Any) -> int:
    """The version of the newest checkpoint file in the log (-1 if none), for a log
    without its ``_last_checkpoint`` hint."""
    import pyarrow.fs as pafs

    names = [info.path.rsplit("/", 1)[-1] for info in
             filesystem.get_file_info(pafs.FileSelector("_delta_log", allow_not_found=True))]
    versions = [int(n[:20]) for n in names if re.fullmatch(r"\d{20}\.checkpoint.*", n)]
    return max(versions, default=-1)


def check_not_orphaned(uri: str) -> None:
    """A local table directory with data files but no log lost its ``_delta_log``:
    damage, not a table that was never created."""
    if not is_local(uri):
        return
    path = local_path(uri)
    try:
        data = [n for n in os.listdir(path) if n.endswith(".parquet")]
    except OSError:
        return
    if data:
        raise damaged(uri, f"it holds {_count(data, 'data file')} but its log "
                      "(_delta_log) is missing or empty")


def _count(items: list[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'s' * (len(items) != 1)}"


# --- writing -----------------------------------------------------------------------


def is_permanent(exc: BaseException) -> bool:
    """A write error that retrying cannot fix (full disk, permissions, read-only)."""
    return _errno_of(exc) in PERMANENT or any(word in str(exc) for word in _DENIED)


def _errno_of(exc: BaseException) -> int | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    found = _OS_ERROR.search(str(exc))
    return int(found[1]) if found else None


FIXES = {errno.ENOSPC: "free space on the disk that holds it (or point `ledger:` elsewhere)",
         errno.EDQUOT: "free space within the quota (or point `ledger:` elsewhere)",
         errno.EFBIG: "raise the file size limit (`ulimit -f`)"}


def write_error(uri: str, exc: BaseException) -> LedgerUnwritable:
    """The failure of a ledger write, with what to do about it."""
    number = _errno_of(exc)
    return unwritable(uri, PERMANENT.get(number or -1) or _summary(exc),
                      FIXES.get(number or -1, "make it writable (permissions, credentials, "
                                "the store itself)"))


def unwritable(uri: str, what: str, fix: str) -> LedgerUnwritable:
    return LedgerUnwritable(
        f"ledger table {shown(uri)} cannot be written: {what}. Nothing of this commit was "
        f"recorded and the ledger is intact; {fix}, then run the command again: objects "
        "this run copied or moved but could not record are found and recorded by the "
        "next run, not copied again.")


def check_free_space(uri: str, data_bytes: int) -> None:
    """Refuse a local commit the disk cannot hold, before delta-rs starts writing it."""
    if not is_local(uri):
        return
    path = local_path(uri)
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        free = shutil.disk_usage(path or ".").free
    except OSError:
        return
    need = MIN_FREE + 2 * data_bytes
    if free < need:
        raise unwritable(uri, f"no space left on the device ({free:,} bytes free, a "
                         f"commit needs about {need:,})", FIXES[errno.ENOSPC])
