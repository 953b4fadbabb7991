"""Errors and the exit codes they map to.

Every error a user can cause carries a message that says what was wrong, where,
and what to do, and maps to one documented exit code:

    0  all good
    1  some objects failed or did not verify
    2  bad input (manifest, arguments, keys, unreachable locations)
    3  refused by policy
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_OBJECTS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_POLICY_REFUSED = 3


class DatamoveError(Exception):
    """Base class for errors that end a command with a documented exit code."""

    exit_code = EXIT_BAD_INPUT


class BadInput(DatamoveError):
    """The user's input (manifest, arguments, keys) is wrong; nothing was touched."""

    exit_code = EXIT_BAD_INPUT


class ManifestError(BadInput):
    """A manifest failed to load or validate. ``problems`` lists each one."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        header = f"{path}: invalid manifest ({len(problems)} problem{'s' * (len(problems) != 1)})"
        super().__init__("\n".join([header, *(f"  {p}" for p in problems)]))


class LocationUnreachable(BadInput):
    """A source or destination cannot be listed or reached at all."""


class KeyProblem(BadInput):
    """A recipient or identity cannot be loaded or does not fit: a missing or
    malformed key file, a wrong passphrase, KMS refusing to unwrap, or no
    identity matching an object. The message names the key file or object,
    never a secret."""


class PolicyRefused(DatamoveError):
    exit_code = EXIT_POLICY_REFUSED


class TransferError(Exception):
    """One object could not be copied or verified. Never ends the run by itself."""

    transient = False


class TransientError(TransferError):
    """A failure worth retrying (throttling, timeouts, 5xx, dropped connections)."""

    transient = True


class VerifyMismatch(TransferError):
    """The destination does not hold the bytes the source had.

    Retried (the copy is redone) because corruption in flight is transient; a
    mismatch that survives every attempt is a permanent failure.
    """

    transient = True


class SourceChanged(TransferError):
    """The source object changed after it was listed or while it was read.

    Not retried: the plan was made from the listed version, and a copy of any
    other version would be recorded under that version's size and time. The
    next run lists the new version and copies it.
    """


class UnsafePath(TransferError):
    """A key that cannot be mapped safely under a root (``..``, an absolute or
    empty segment, a backslash), or a local path that runs through a symbolic
    link where none may be followed. Not retried: renaming is the fix."""


class IdentityMismatch(TransferError):
    """No identity we hold opens an encrypted object (wrong or rotated keys).

    Not retried, and counted as bad input (exit 2): the fix is another key, not
    another attempt.
    """
