"""Writing a small non-secret text file (a report, a checkpoint note, a metrics file)
whole or not at all.

A reader (a browser, an auditor's script, a monitoring agent) must never see half a
file: the text goes to a temporary name in the same directory, is flushed to disk,
and is renamed over the target, which POSIX makes atomic.
"""

from __future__ import annotations

import os

from datamove.errors import BadInput


def write_atomic(path: str | os.PathLike[str], text: str, *, what: str = "") -> str:
    """Write ``text`` to ``path`` atomically and return the path as a string.

    A failure removes the temporary file and raises BadInput naming the file (and
    ``what`` it is, e.g. "report"), so callers turn it into exit 2 or a warning.
    """
    target = os.fspath(path)
    temp = f"{target}.datamove-partial-{os.urandom(4).hex()}"
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except OSError as exc:
        if os.path.exists(temp):
            os.unlink(temp)
        label = f"{what} " if what else ""
        raise BadInput(f"cannot write {label}{target}: {exc.strerror or exc}") from None
    return target
