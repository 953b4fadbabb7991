"""Encrypted datasets: how age v1 fits around the copy engine.

An encrypted dataset stores each object under its key plus a suffix (``.age``)
as a standard age file, so any ``age`` or ``rage`` binary decrypts it. Plaintext
never reaches the destination, not even a temporary file: workers encrypt while
they stream, and write ciphertext through the same atomic writers as plain copies.

Three hashes describe an encrypted object (docs/FORMAT.md, "Encryption"):

* ``sha256``: the plaintext, as read at the source;
* ``stored_sha256``: the bytes stored, which ``sha256sum`` of the object gives;
* ``payload_sha256``: the stored bytes after the age header (the nonce and the
  STREAM chunks). Rotation rewrites only the header, so this one must not change.

Everything here that a worker receives is public: recipients are public keys,
and the identity travels as an :class:`~datamove.crypto.identities.IdentityRef` (where
the key lives), which each worker opens itself.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from datamove.age import (
    AgeDecryptor,
    AgeEncryptor,
    AgeError,
    NoIdentityMatch,
    X25519Identity,
    X25519Recipient,
    fingerprint,
    load_recipients,
)
from datamove.checksum import read_chunks
from datamove.errors import IdentityMismatch, VerifyMismatch
from datamove.stores.core import Entry, Location, open_read

if TYPE_CHECKING:
    from datamove.crypto.identities import IdentityRef
    from datamove.manifest.model import EncryptSpec


@dataclass(frozen=True)
class Encryption:
    """A dataset's encryption, as workers see it. Picklable; public keys only."""

    recipients: tuple[str, ...]  # canonical age1… strings
    suffix: str = ".age"
    identity: IdentityRef | None = None

    @classmethod
    def from_spec(cls, spec: EncryptSpec) -> Encryption:
        """Resolve recipients (inline and from the file) on the driver."""
        from datamove.crypto.identities import IdentityRef

        keys = [X25519Recipient.parse(r.strip()) for r in spec.recipients]
        if spec.recipients_file:
            keys += load_recipients(spec.recipients_file)
        unique = tuple(dict.fromkeys(k.encode() for k in keys))
        identity = None
        if spec.identity is not None:
            identity = IdentityRef(
                file=spec.identity.file, passphrase_env=spec.identity.passphrase_env,
                kms_context=tuple(sorted(spec.identity.kms_context.items())),
                kms_region=spec.identity.kms_region,
                kms_endpoint_url=spec.identity.kms_endpoint_url)
        return cls(recipients=unique, suffix=spec.suffix, identity=identity)

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return fingerprints_of(self.recipients)

    def parsed_recipients(self) -> list[X25519Recipient]:
        return list(_parsed(self.recipients))

    def stored_key(self, key: str) -> str:
        return key + self.suffix

    def identities(self) -> list[X25519Identity]:
        """Open the identity (on the worker, cached per process); KeyProblem if absent."""
        from datamove.crypto.identities import load_identities
        from datamove.errors import KeyProblem

        if self.identity is None:
            raise KeyProblem("this dataset has no identity to decrypt with: set "
                             "encrypt.identity (or keys.identity) in the manifest, or pass "
                             "--identity")
        return load_identities(self.identity)


def stored_size_bound(plaintext_size: int) -> int:
    """At least the stored size of an age file of ``plaintext_size`` bytes: the
    payload's nonce and tags exactly, and 64 KiB for the header (a few hundred
    bytes per recipient). Sizes multipart uploads."""
    return plaintext_size + 16 * (plaintext_size // 65536 + 1) + 16 + 65536


@functools.lru_cache(maxsize=64)
def _parsed(recipients: tuple[str, ...]) -> tuple[X25519Recipient, ...]:
    # Parsed once per process, not once per object: bech32 in pure Python costs
    # about 50 µs a key, as much as a small object's copy.
    return tuple(X25519Recipient.parse(r) for r in recipients)


@functools.lru_cache(maxsize=64)
def fingerprints_of(recipients: tuple[str, ...]) -> tuple[str, ...]:
    """Sorted fingerprints: the set of keys an object is encrypted for."""
    return tuple(sorted(fingerprint(r) for r in _parsed(recipients)))


# --- writing -------------------------------------------------------------------------

class _Sink(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...


class Sealer:
    """Encrypt plaintext into ``sink`` as it arrives, hashing what gets stored."""

    def __init__(self, sink: _Sink, recipients: Sequence[X25519Recipient]):
        self._sink = sink
        self._encryptor = AgeEncryptor(recipients)
        self._stored = hashlib.sha256()
        self._payload = hashlib.sha256()
        self.size = 0  # stored bytes so far

    def write(self, data: bytes | memoryview) -> None:
        for piece in self._encryptor.update_chunks(data):
            self._out(piece)

    def finish(self) -> tuple[int, str, str]:
        """Write the last chunk; returns (stored size, stored sha256, payload sha256)."""
        self._out(self._encryptor.finalize())
        return self.size, self._stored.hexdigest(), self._payload.hexdigest()

    def _out(self, piece: bytes) -> None:
        if not piece:
            return
        head = self._encryptor.header_size
        self._stored.update(piece)
        if self.size >= head:
            self._payload.update(piece)
        elif self.size + len(piece) > head:
            self._payload.update(memoryview(piece)[head - self.size:])
        self._sink.write(piece)
        self.size += len(piece)


# --- reading back --------------------------------------------------------------------

@dataclass(frozen=True)
class Opened:
    """What reading an encrypted object back found out."""

    sha256: str  # of the plaintext
    size: int  # plaintext bytes


def decrypt_digest(location: Location, stored_key: str,
                   identities: Sequence[X25519Identity]) -> Opened:
    """Stream-decrypt an object and hash its plaintext; nothing is written anywhere.

    Raises IdentityMismatch when no identity opens it, VerifyMismatch when it
    does not decrypt (a changed byte, a truncation, a dropped last chunk).
    """
    url = location.url_of(stored_key)
    decryptor = AgeDecryptor(identities, armor=False)
    sha = hashlib.sha256()
    size = 0
    try:
        with contextlib.closing(open_read(location, stored_key)) as reader:
            for chunk in read_chunks(reader):
                for piece in decryptor.update_chunks(chunk):
                    sha.update(piece)
                    size += len(piece)
            last = decryptor.finalize()
    except NoIdentityMatch:
        raise IdentityMismatch(f"{url}: no identity matches (tried {len(identities)}); "
                               "is this the identity for the keys it was encrypted to?") from None
    except AgeError as exc:
        raise VerifyMismatch(f"{url}: does not decrypt: {type(exc).__name__}: {exc}") from None
    sha.update(last)
    return Opened(sha.hexdigest(), size + len(last))


# --- listing -------------------------------------------------------------------------

def stored_listing(entries: Iterable[Entry], suffix: str,
                   key_filter: Callable[[str], bool] | None = None) -> Iterator[Entry]:
    """Destination entries of an encrypted dataset under their source keys, in order.

    The store lists ``key + suffix`` in byte order, which is not always the order
    of ``key`` ("a-b.age" < "a.age", but "a" < "a-b"). A key can only come out of
    order after keys it is a prefix of, so entries wait in a small heap until the
    listing has passed every place an earlier key could still appear (the
    watermark). Memory: the keys that share such prefixes, typically a handful.
    Objects without the suffix are not this dataset's and are left out.
    """
    raw_suffix = suffix.encode("utf-8")
    early = re.compile(b"[\\x00-" + re.escape(raw_suffix[:1]) + b"]")
    pending: list[tuple[bytes, int, Entry]] = []
    for order, entry in enumerate(entries):
        raw = entry.key.encode("utf-8", "surrogateescape")
        if raw.endswith(raw_suffix) and len(raw) > len(raw_suffix):
            name = raw[: -len(raw_suffix)]
            key = name.decode("utf-8", "surrogateescape")
            if key_filter is None or key_filter(key):
                heapq.heappush(pending, (name, order, replace(entry, key=key)))
        mark = _watermark(raw, raw_suffix, early)
        while pending and pending[0][0] < mark:
            yield heapq.heappop(pending)[2]
    while pending:
        yield heapq.heappop(pending)[2]


def _watermark(raw: bytes, suffix: bytes, early: re.Pattern[bytes]) -> bytes:
    """The smallest source key a listing that has reached ``raw`` can still produce.

    A later stored key ``name + suffix`` (>= raw) has ``name`` >= raw, or ``name``
    is a prefix ``raw[:j]`` with ``raw[:j] + suffix >= raw``; only positions whose
    byte is at most the suffix's first byte can satisfy that.
    """
    for match in early.finditer(raw, 1):
        j = match.start()
        if raw[:j] + suffix >= raw:
            return raw[:j]
    return raw
