"""Which filesystem a local path lives on: a disk in this machine, or a network mount.

The copy engine runs small local-to-local copies one batch at a time per process
(pipeline/local_gate.py): on a local disk such a copy is a few microseconds of
system calls around Python work, and threads only contend for the interpreter
lock. On a network mount (NFS, SMB, a FUSE store) each create and rename waits
for a round trip, and parallel copies hide that wait, so those keep their
threads. Linux tells the two apart in ``/proc/self/mountinfo``; elsewhere, or for
a filesystem type not listed here, the path counts as not on a local disk.
"""

from __future__ import annotations

import functools
import os

LOCAL_DISK_TYPES = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "bcachefs", "jfs", "reiserfs",
    "tmpfs", "ramfs", "overlay", "vfat", "exfat", "ntfs3", "hfsplus",
})
"""Filesystem types on block devices or memory of this machine (``overlay``: a
container's root, over one of these)."""

MOUNTINFO = "/proc/self/mountinfo"


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem mounted deepest above ``path`` (``ext4``, ``nfs4``,
    ``fuse.sshfs`` …), or None where mount points cannot be read."""
    real = os.path.realpath(path)
    best, kind = "", None
    for point, fstype in _mounts():
        if (real == point or real.startswith(point.rstrip("/") + "/")) and \
                len(point) >= len(best):
            best, kind = point, fstype
    return kind


def on_local_disk(path: str) -> bool:
    """True if ``path`` is on a filesystem of this machine's disks or memory."""
    return filesystem_type(path) in LOCAL_DISK_TYPES


@functools.lru_cache(maxsize=1)
def _mounts() -> tuple[tuple[str, str], ...]:
    """(mount point, filesystem type) of every mount, read once per process
    (a mount made during a run is not seen; it only loses the batching)."""
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return ()
    mounts = []
    for line in lines:
        # id parent major:minor root mount-point options [optional…] - type source super
        fields, _, tail = line.partition(" - ")
        parts, kinds = fields.split(), tail.split()
        if len(parts) >= 5 and kinds:
            mounts.append((_unescape(parts[4]), kinds[0]))
    return tuple(mounts)


def _unescape(field: str) -> str:
    """Mount points escape space, tab, newline and backslash as octal (``\\040``)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
