"""Errors raised by the age implementation.

The classes mirror the failure classes of the age test vectors (C2SP CCTV), so a
caller (and the vector tests) can tell *why* a file was refused:

    HeaderError      "header failure"   malformed header, unsupported version,
                                        bad stanza, work factor too high, missing nonce
    HeaderMacError   "HMAC failure"     the header was modified after it was written
    NoIdentityMatch  "no match"         none of the identities can unwrap the file key
    PayloadError     "payload failure"  a chunk failed to authenticate, the stream is
                                        truncated, has trailing data or an empty final chunk
    ArmorError       "armor failure"    the ASCII armor is not strictly canonical
    InvalidKey       (no vector class)  a recipient, identity or key file is malformed

Messages never contain key material: no identity string, passphrase, file key or
derived key is ever formatted into an error. Header lines are public, but we still
report only line numbers, so a mistaken paste of a secret into a header cannot leak.
"""

from __future__ import annotations


class AgeError(Exception):
    """Base class of every age error; catch this to handle any refusal."""


class InvalidKey(AgeError):
    """A recipient, identity or identity/recipient file could not be parsed."""


class HeaderError(AgeError):
    """The header (or the payload nonce right after it) is malformed or unsupported."""


class HeaderMacError(AgeError):
    """The header MAC does not match: the header was tampered with or corrupted."""


class NoIdentityMatch(AgeError):
    """None of the supplied identities can unwrap the file key."""

    def __init__(self, message: str = "no identity matches any of the file's recipients"):
        super().__init__(message)


class PayloadError(AgeError):
    """The encrypted payload failed to authenticate or is truncated / over-long."""


class ArmorError(AgeError):
    """ASCII-armored input is not a strictly valid age armor block."""


__all__ = [
    "AgeError",
    "ArmorError",
    "HeaderError",
    "HeaderMacError",
    "InvalidKey",
    "NoIdentityMatch",
    "PayloadError",
]
