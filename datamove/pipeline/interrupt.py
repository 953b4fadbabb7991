"""SIGINT and SIGTERM: the first one finishes cleanly, a second one stops at once.

Python's default turns Ctrl-C into a KeyboardInterrupt wherever the main thread
happens to be, so a run dies half-way through accounting: the objects that were
copied are not recorded and the next run has to verify them again. Instead,
the CLI installs :func:`install`. While a command's driver loop runs
(:func:`defer`), the first signal only raises a flag: the loop stops
submitting, the workers stop at their next chunk, every finished object is
recorded, and the report says the run was interrupted (exit 128 + signal:
130 for SIGINT, 143 for SIGTERM). Before a driver loop starts, the first
signal raises :class:`Interrupted` at once (nothing is in flight to record). A
second signal always ends the process immediately with the same exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested: str | None = None
_deferring = False


class Interrupted(BaseException):
    """A signal ended a command before it had work in flight. A BaseException,
    like KeyboardInterrupt, so that ``except Exception`` clean-ups let it pass."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    @property
    def exit_code(self) -> int:
        return exit_code(self.name)


def exit_code(name: str) -> int:
    """The shell's convention: 128 + the signal's number (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signal.Signals[name])


def install() -> None:
    """Handle SIGINT and SIGTERM as described above (main thread only)."""
    for signum in SIGNALS:
        signal.signal(signum, _handler)


def defer() -> None:
    """From now on, the first signal only asks the driver loop to stop (it polls
    :func:`requested`). Stays on until the process ends: a signal that arrives
    while the run records its end must not tear that record."""
    global _deferring
    _deferring = True


def requested() -> str | None:
    """The first signal's name (``SIGINT``, ``SIGTERM``) once one arrived."""
    return _requested


def _handler(signum: int, frame: FrameType | None) -> None:
    global _requested
    name = signal.Signals(signum).name
    if _requested is not None:
        _say(f"datamove: {name} again: stopping now (exit {128 + signum})\n")
        os._exit(128 + signum)
    _requested = name
    if not _deferring:
        raise Interrupted(name)
    _say(f"datamove: {name}: stopping; recording the objects already done "
         f"({name} again stops at once)\n")


def _say(text: str) -> None:
    """Write to stderr without Python's buffered streams (safe in a handler)."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode())
