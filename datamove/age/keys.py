"""age keys: X25519 recipients/identities and scrypt passphrase recipients/identities.

Recipients are public and may be logged, stored in the ledger and printed. Identities
hold secrets: their ``repr`` shows only the matching public recipient (or nothing,
for passphrases) so an identity that ends up in a log line or a traceback leaks
nothing. The only way to get the secret string out is the explicit ``encode()``.

Key strings follow the age spec: recipients are lowercase bech32 with hrp ``age``,
identities are uppercase bech32 with hrp ``AGE-SECRET-KEY-``; both carry exactly 32
bytes. Identity and recipient files are one key per line, ``#`` comments and blank
lines ignored (the ``age-keygen`` output format).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from datamove.age import bech32
from datamove.age.errors import InvalidKey

RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"
KEY_SIZE = 32
DEFAULT_SCRYPT_WORK_FACTOR = 18  # what the age CLI uses: ~1 s and 256 MiB per derivation
MAX_SCRYPT_WORK_FACTOR = 22  # refuse to decrypt above this: 2**22 * 1 KiB = 4 GiB of memory


@dataclass(frozen=True)
class X25519Recipient:
    """A public ``age1…`` key. Safe to print and store."""

    public: bytes

    def __post_init__(self) -> None:
        if len(self.public) != KEY_SIZE:
            raise InvalidKey("an X25519 recipient is 32 bytes")

    @classmethod
    def parse(cls, text: str) -> X25519Recipient:
        """Parse ``age1…``; refuses uppercase, other hrps and wrong lengths."""
        return cls(_decode_key(text, RECIPIENT_HRP, "recipient",
                               "expected a lowercase 'age1…' key"))

    def encode(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self.public)

    def __str__(self) -> str:
        return self.encode()


def _refuse_pickle(key: object) -> NoReturn:
    """Secrets must not travel: a pickled identity would end up in Dask task graphs,
    spill files and logs. Workers get an ``identities.IdentityRef`` and load it."""
    raise TypeError(f"{type(key).__name__}: identities hold secrets (keys, passphrases) and are "
                    "never pickled; send a datamove.crypto.identities.IdentityRef and load the "
                    "identity where it is used")


def _decode_key(text: str, hrp: str, what: str, expected: str) -> bytes:
    """The 32 key bytes of a bech32 age key, or InvalidKey (never echoing the key)."""
    try:
        found, data = bech32.decode(text)
    except ValueError as exc:
        raise InvalidKey(f"not a valid age {what} ({exc})") from None
    if found != hrp:
        raise InvalidKey(f"not an age {what}: {expected}")
    if len(data) != KEY_SIZE:
        raise InvalidKey(f"not an age {what}: wrong key length")
    return data


class X25519Identity:
    """A secret ``AGE-SECRET-KEY-1…`` key. Never printed: see ``encode()``."""

    __slots__ = ("_private", "_secret", "recipient")

    def __init__(self, secret: bytes):
        if len(secret) != KEY_SIZE:
            raise InvalidKey("an X25519 identity is 32 bytes")
        self._secret = bytes(secret)
        self._private = X25519PrivateKey.from_private_bytes(self._secret)
        public = self._private.public_key().public_bytes_raw()
        self.recipient = X25519Recipient(public)

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(os.urandom(KEY_SIZE))

    @classmethod
    def parse(cls, text: str) -> X25519Identity:
        """Parse ``AGE-SECRET-KEY-1…`` (uppercase only, as age writes it)."""
        return cls(_decode_key(text, IDENTITY_HRP, "identity",
                               "expected an uppercase 'AGE-SECRET-KEY-1…' key"))

    def encode(self) -> str:
        """The secret key string. Only for writing identity files; never log it."""
        return bech32.encode(IDENTITY_HRP, self._secret).upper()

    def exchange(self, peer_public: bytes) -> bytes:
        """X25519 shared secret with a peer share (32 bytes, may be all-zero)."""
        return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient.encode()})"

    def __reduce__(self) -> NoReturn:
        _refuse_pickle(self)


@dataclass(frozen=True)
class ScryptRecipient:
    """Encrypt to a passphrase. Must be the only recipient of a file (spec rule)."""

    passphrase: bytes = field(repr=False)
    work_factor: int = DEFAULT_SCRYPT_WORK_FACTOR

    def __post_init__(self) -> None:
        if not self.passphrase:
            raise InvalidKey("the passphrase is empty")
        if not 1 <= self.work_factor <= MAX_SCRYPT_WORK_FACTOR:
            raise InvalidKey(f"scrypt work factor must be 1..{MAX_SCRYPT_WORK_FACTOR}")

    @classmethod
    def from_str(
        cls, passphrase: str, work_factor: int = DEFAULT_SCRYPT_WORK_FACTOR
    ) -> ScryptRecipient:
        return cls(passphrase.encode("utf-8"), work_factor)

    def __reduce__(self) -> NoReturn:
        _refuse_pickle(self)


@dataclass(frozen=True)
class ScryptIdentity:
    """Decrypt with a passphrase; refuses work factors above ``max_work_factor``.

    The limit exists because the work factor comes from the (untrusted) file: an
    attacker could otherwise make us spend minutes and gigabytes on one header.
    """

    passphrase: bytes = field(repr=False)
    max_work_factor: int = MAX_SCRYPT_WORK_FACTOR

    @classmethod
    def from_str(
        cls, passphrase: str, max_work_factor: int = MAX_SCRYPT_WORK_FACTOR
    ) -> ScryptIdentity:
        return cls(passphrase.encode("utf-8"), max_work_factor)

    def __reduce__(self) -> NoReturn:
        _refuse_pickle(self)


Recipient = X25519Recipient | ScryptRecipient
Identity = X25519Identity | ScryptIdentity


def fingerprint(key: X25519Recipient | X25519Identity | ScryptRecipient | ScryptIdentity) -> str:
    """A short, stable, public id for a key, for ledgers and audit records.

    ``"sha256:" + first 16 hex digits of sha256(recipient string)``, where the
    recipient string is the canonical ``age1…`` form; an identity gets the
    fingerprint of its recipient, so encrypt-side and decrypt-side records join.
    64 bits tell keys apart; it is not meant as a security boundary. Passphrase
    keys all get the constant ``"scrypt"``: hashing the passphrase would hand out
    an offline-guessing oracle.
    """
    if isinstance(key, ScryptRecipient | ScryptIdentity):
        return "scrypt"
    recipient = key.recipient if isinstance(key, X25519Identity) else key
    return "sha256:" + hashlib.sha256(recipient.encode().encode("ascii")).hexdigest()[:16]


def _key_lines(text: str) -> list[tuple[int, str]]:
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append((number, line))
    return lines


def parse_identities(text: str, source: str = "identity file") -> list[X25519Identity]:
    """Parse an identity file (``age-keygen`` format); at least one key required.

    Errors name the line, never its content (it may be a mistyped secret key).
    """
    return _parse_key_file(text, source, X25519Identity.parse, "AGE-SECRET-KEY-1… identity")


def parse_recipients(text: str, source: str = "recipients file") -> list[X25519Recipient]:
    """Parse a recipients file: one ``age1…`` per line; at least one required."""
    return _parse_key_file(text, source, X25519Recipient.parse, "age1… recipient")


def _parse_key_file(text: str, source: str, parse: Callable[[str], K], what: str) -> list[K]:
    keys = []
    for number, line in _key_lines(text):
        try:
            keys.append(parse(line))
        except InvalidKey as exc:
            raise InvalidKey(f"{source}, line {number}: {exc}") from None
    if not keys:
        raise InvalidKey(f"{source}: no {what} found")
    return keys


K = TypeVar("K", X25519Identity, X25519Recipient)


def load_identities(path: str | os.PathLike[str]) -> list[X25519Identity]:
    """Read and parse a plaintext identity file."""
    return parse_identities(Path(path).read_text(encoding="utf-8"), source=str(path))


def load_recipients(path: str | os.PathLike[str]) -> list[X25519Recipient]:
    """Read and parse a recipients file."""
    return parse_recipients(Path(path).read_text(encoding="utf-8"), source=str(path))


def format_identity_file(identity: X25519Identity, created: str | None = None) -> str:
    """Render an identity in the ``age-keygen`` file format (comments + secret line)."""
    head = f"# created: {created}\n" if created else ""
    return f"{head}# public key: {identity.recipient.encode()}\n{identity.encode()}\n"
