"""age v1 encryption and decryption: the API the rest of datamove uses.

Push-style classes (``AgeEncryptor``, ``AgeDecryptor``) for pipelines that see the
bytes go by, and file-object helpers (``encrypt``, ``decrypt``) on top of them.
``rewrap_header`` / ``rewrap`` re-encrypt only the header for new recipients, which
is how keys rotate without touching terabytes of payload: the file key and the
payload bytes stay, the stanzas and the header MAC change.

Decryption releases plaintext chunk by chunk, each only after it authenticated.
Success is only known when ``finalize`` (or ``decrypt``) returns: a caller that
writes plaintext somewhere durable must write to a temporary name and publish it
only then.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from typing import BinaryIO

from datamove.age.armor import BEGIN as ARMOR_BEGIN
from datamove.age.armor import ArmorDecoder, ArmorEncoder
from datamove.age.errors import AgeError, HeaderError
from datamove.age.header import (
    FILE_KEY_SIZE,
    MAX_HEADER_SIZE,
    Header,
    b64encode,
    check_recipients,
    parse_header,
    serialize_header,
    unwrap_file_key,
    verify_mac,
    wrap_file_key,
)
from datamove.age.keys import Identity, Recipient, ScryptIdentity, X25519Identity
from datamove.age.keys import parse_identities as _parse_identities
from datamove.age.stream import NONCE_SIZE, StreamDecryptor, StreamEncryptor

READ_SIZE = 1 << 20  # 16 chunks per read: big enough to amortise calls, small for memory
_BINARY_PREFIX = b"age-encryption.org/"


class AgeEncryptor:
    """Encrypt to ``recipients``; the first output carries the header and nonce."""

    def __init__(self, recipients: Sequence[Recipient], *, armor: bool = False):
        recipients = list(recipients)
        check_recipients(recipients)
        file_key = os.urandom(FILE_KEY_SIZE)
        nonce = os.urandom(NONCE_SIZE)
        stanzas = [wrap_file_key(file_key, r) for r in recipients]
        header = serialize_header(stanzas, file_key)
        self.header_size = len(header)  # binary output: the payload starts here (nonce first)
        self._head = header + nonce
        self._stream = StreamEncryptor(file_key, nonce)
        self._armor = ArmorEncoder() if armor else None

    def _out(self, pieces: list[bytes]) -> list[bytes]:
        if self._head:
            pieces, self._head = [self._head, *pieces], b""
        if self._armor is None:
            return pieces
        armored = self._armor.update(b"".join(pieces))
        return [armored] if armored else []

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        return b"".join(self.update_chunks(data))

    def update_chunks(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Like ``update``, as a list of pieces (no large join buffer on the hot path)."""
        return self._out(self._stream.update_chunks(data))

    def finalize(self) -> bytes:
        pieces = self._out([self._stream.finalize()])
        return b"".join(pieces) + (self._armor.finalize() if self._armor else b"")


def _armored(prefix: bytes) -> bool | None:
    """Binary age files start with the version line; anything else is taken as armor."""
    n = min(len(prefix), len(_BINARY_PREFIX))
    if prefix[:n] != _BINARY_PREFIX[:n]:
        return True
    return False if n == len(_BINARY_PREFIX) else None


class AgeDecryptor:
    """Decrypt with ``identities``; ``armor=None`` detects ASCII armor by itself.

    After the header is parsed, ``header`` holds it and ``payload_offset`` is the
    offset of the payload nonce in the binary (de-armored) file.
    """

    def __init__(self, identities: Iterable[Identity], *, armor: bool | None = None):
        self._identities = list(identities)
        self._mode = armor
        self._armor = ArmorDecoder() if armor else None
        self._buf = bytearray()  # input before the mode is known, then header + nonce bytes
        self._stream: StreamDecryptor | None = None
        self._file_key: bytes | None = None
        self._seen = 0
        self._error: AgeError | None = None
        self.header: Header | None = None
        self.payload_offset: int | None = None

    def _check(self) -> None:
        if self._error is not None:  # a refused file stays refused
            raise type(self._error)(str(self._error))

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        return b"".join(self.update_chunks(data))

    def update_chunks(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Like ``update``, as a list of pieces (no large join buffer on the hot path)."""
        self._check()
        try:
            return self._update(data)
        except AgeError as exc:
            self._error = exc
            raise

    def finalize(self) -> bytes:
        """Finish; returns the last plaintext, or raises the reason the file is refused."""
        self._check()
        try:
            return self._finalize()
        except AgeError as exc:
            self._error = exc
            raise

    def _update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        self._seen += len(data)
        if self._mode is None:
            self._buf += data
            self._mode = _armored(bytes(self._buf[: len(_BINARY_PREFIX)]))
            if self._mode is None:
                return []
            data, self._buf = bytes(self._buf), bytearray()
            self._armor = ArmorDecoder() if self._mode else None
        if self._armor is not None:
            data = self._armor.update(data)
        return self._feed(data)

    def _feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self._stream is not None:
            return self._stream.update_chunks(data)
        data = bytes(data)
        had_newline = self.header is None and b"\n" in data
        self._buf += data
        if self.header is None:
            parsed = parse_header(bytes(self._buf)) if had_newline else None
            if parsed is None:
                if len(self._buf) > MAX_HEADER_SIZE:
                    raise HeaderError(f"header is larger than {MAX_HEADER_SIZE} bytes")
                return []
            self.header, self.payload_offset = parsed
            self._file_key = unwrap_file_key(self.header, self._identities)
            verify_mac(self.header, self._file_key)
        assert self.payload_offset is not None and self._file_key is not None
        start = self.payload_offset + NONCE_SIZE
        if len(self._buf) < start:
            return []
        nonce = bytes(self._buf[self.payload_offset : start])
        rest = bytes(self._buf[start:])
        self._stream = StreamDecryptor(self._file_key, nonce)
        self._file_key, self._buf = None, bytearray()
        return self._stream.update_chunks(rest)

    def _finalize(self) -> bytes:
        if self._mode is None:
            self._mode = False
            data, self._buf = bytes(self._buf), bytearray()
            self._feed(data)
        if self._armor is not None:
            self._armor.finalize()
        if self._stream is None:
            if self.header is None:
                if not self._seen:
                    raise HeaderError("empty input: not an age file")
                if parse_header(bytes(self._buf)) is None:
                    raise HeaderError("age header is truncated")
            raise HeaderError("payload nonce is missing or truncated")
        return self._stream.finalize()


def _copy(src: BinaryIO, dst: BinaryIO, codec: AgeEncryptor | AgeDecryptor) -> int:
    written = 0
    while block := src.read(READ_SIZE):
        for out in codec.update_chunks(block):
            dst.write(out)
            written += len(out)
    if out := codec.finalize():
        dst.write(out)
        written += len(out)
    return written


def encrypt(src: BinaryIO, dst: BinaryIO, recipients: Sequence[Recipient],
            armor: bool = False) -> int:
    """Encrypt ``src`` to ``dst`` for ``recipients``; returns the bytes written."""
    return _copy(src, dst, AgeEncryptor(recipients, armor=armor))


def decrypt(src: BinaryIO, dst: BinaryIO, identities: Iterable[Identity],
            armor: bool | None = None) -> int:
    """Decrypt ``src`` to ``dst``; returns the plaintext size.

    If it raises, ``dst`` may hold a prefix of authenticated chunks: discard it.
    """
    return _copy(src, dst, AgeDecryptor(identities, armor=armor))


def read_header(src: BinaryIO) -> tuple[Header, bytes]:
    """Read a binary header from ``src``; returns it and the bytes read past it.

    The header's raw bytes are ``header.mac_input`` up to ``header.size``; see
    ``header_bytes``.
    """
    buf = bytearray()
    while True:
        block = src.read(64 * 1024)
        buf += block
        if _armored(bytes(buf[: len(_BINARY_PREFIX)])):
            raise HeaderError("key rotation needs a binary age file, not ASCII armor")
        parsed = parse_header(bytes(buf))
        if parsed is not None:
            return parsed[0], bytes(buf[parsed[1] :])
        if not block:
            raise HeaderError("age header is truncated" if buf else "empty input: not an age file")
        if len(buf) > MAX_HEADER_SIZE:
            raise HeaderError(f"header is larger than {MAX_HEADER_SIZE} bytes")


def header_bytes(header: Header) -> bytes:
    """The header exactly as it was read (what the MAC covers, plus the MAC line)."""
    return header.mac_input + b" " + b64encode(header.mac) + b"\n"


def new_header(header: Header, identities: Iterable[Identity],
               new_recipients: Sequence[Recipient]) -> bytes:
    """A header for ``new_recipients`` with the file key ``identities`` unwrap from
    ``header``; raises NoIdentityMatch (or HeaderMacError) like decryption would."""
    new_recipients = list(new_recipients)
    check_recipients(new_recipients)
    file_key = unwrap_file_key(header, identities)
    verify_mac(header, file_key)
    return serialize_header([wrap_file_key(file_key, r) for r in new_recipients], file_key)


def rewrap_header(src: BinaryIO, identities: Iterable[Identity],
                  new_recipients: Sequence[Recipient]) -> tuple[bytes, int]:
    """A new header for ``new_recipients`` with the same file key.

    Returns ``(new_header_bytes, payload_offset)``: the rotated file is
    ``new_header_bytes + old_file[payload_offset:]`` (nonce and payload unchanged).
    ``src`` is read from its current position; only the header is needed.
    """
    header, _ = read_header(src)
    return new_header(header, identities, new_recipients), header.size


def rewrap(src: BinaryIO, dst: BinaryIO, identities: Iterable[Identity],
           new_recipients: Sequence[Recipient]) -> int:
    """Write ``src`` re-wrapped for ``new_recipients`` to ``dst``; payload copied verbatim."""
    header, rest = read_header(src)
    out = new_header(header, identities, new_recipients)
    dst.write(out)
    dst.write(rest)
    written = len(out) + len(rest)
    while block := src.read(READ_SIZE):
        dst.write(block)
        written += len(block)
    return written


def decrypt_identities(data: bytes, passphrase: str | None = None,
                       source: str = "identity file") -> list[X25519Identity]:
    """Identities from a plaintext identity file, or a passphrase-encrypted one.

    The encrypted form is what ``age -p`` makes of an identity file (binary or armored).
    """
    stripped = data.lstrip(b" \t\r\n")
    if stripped.startswith(_BINARY_PREFIX) or stripped.startswith(ARMOR_BEGIN):
        if passphrase is None:
            raise HeaderError(f"{source} is encrypted: a passphrase is needed")
        plain = io.BytesIO()
        decrypt(io.BytesIO(data), plain, [ScryptIdentity.from_str(passphrase)])
        data = plain.getvalue()
    return _parse_identities(data.decode("utf-8", errors="replace"), source=source)
