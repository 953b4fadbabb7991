"""The age v1 header: parsing, serialising, the header MAC, and stanza (un)wrapping.

::

    age-encryption.org/v1
    -> X25519 <base64 ephemeral share>
    <base64 body, 64-column lines, always ending with a line shorter than 64>
    --- <base64 HMAC-SHA256 of everything up to and including "---">

Parsing is strict on purpose: every byte of the header is covered by the MAC, but
the MAC can only be checked after a stanza was unwrapped, so a lenient parser
would let an attacker feed variants of a header to the unwrapping code. Base64 is
canonical and unpadded (trailing bits zero), arguments are non-empty runs of
printable ASCII separated by single spaces, lines end in LF only.

The file key is 16 random bytes. X25519 wraps it with ChaCha20-Poly1305 (zero
nonce) under HKDF-SHA256(shared secret, salt = share || recipient,
info "age-encryption.org/v1/X25519"); scrypt under scrypt(passphrase,
salt = "age-encryption.org/v1/scrypt" || 16-byte salt, N = 2**logN, r=8, p=1).
"""

from __future__ import annotations

import base64
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from datamove.age.errors import HeaderError, HeaderMacError, InvalidKey, NoIdentityMatch
from datamove.age.keys import (
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
)

INTRO = b"age-encryption.org/v1\n"
FILE_KEY_SIZE = 16
MAX_HEADER_SIZE = 1 << 20  # a header larger than this is refused, not buffered
_COLUMNS = 64
_BODY_LINE_BYTES = 48
_X25519_INFO = b"age-encryption.org/v1/X25519"
_SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
_ZERO_NONCE = bytes(12)
_B64_RE = re.compile(rb"[A-Za-z0-9+/]*")
_DECIMAL_RE = re.compile(r"[1-9][0-9]{0,2}")


def b64encode(data: bytes) -> bytes:
    """Standard base64 without padding, as everywhere in the age header."""
    return base64.b64encode(data).rstrip(b"=")


def b64decode(text: bytes) -> bytes:
    """Strict inverse of ``b64encode``: rejects padding, whitespace and non-zero tail bits."""
    if not _B64_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("invalid base64")
    data = base64.b64decode(text + b"=" * (-len(text) % 4))
    if b64encode(data) != text:
        raise ValueError("non-canonical base64")
    return data


def hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: ``-> type args…`` plus a binary body."""

    type: str
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        text = b64encode(self.body)
        lines = [text[i : i + _COLUMNS] for i in range(0, len(text), _COLUMNS)]
        if not lines or len(lines[-1]) == _COLUMNS:
            lines.append(b"")  # the body always ends with a short (maybe empty) line
        head = " ".join(("->", self.type, *self.args)).encode("ascii")
        return b"\n".join([head, *lines]) + b"\n"


@dataclass(frozen=True)
class Header:
    """A parsed header. ``mac_input`` is the raw bytes the MAC covers."""

    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes
    size: int  # bytes from the start of the file to the end of the MAC line


def _is_arg(arg: bytes) -> bool:
    return bool(arg) and all(33 <= c <= 126 for c in arg)


def _next_line(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    end = buf.find(b"\n", pos)
    return None if end < 0 else (buf[pos:end], end + 1)


def parse_header(buf: bytes) -> tuple[Header, int] | None:
    """Parse a header from the start of ``buf``.

    Returns ``(header, payload_offset)``; ``None`` if ``buf`` is a valid but incomplete
    prefix (feed more bytes); raises ``HeaderError`` as soon as a line is wrong.
    """
    first = _next_line(buf, 0)
    if first is None:
        if buf[: len(INTRO)] != INTRO[: len(buf)]:
            raise HeaderError("not an age file (expected 'age-encryption.org/v1')")
        return None
    if buf[: first[1]] != INTRO:
        if buf[: first[1]] == INTRO[:-1] + b"\r\n":
            raise HeaderError("header lines end in CRLF: the file was mangled by a text-mode copy")
        if buf.startswith(b"age-encryption.org/"):
            raise HeaderError("unsupported age format version (only v1 is supported)")
        raise HeaderError("not an age file (expected 'age-encryption.org/v1')")
    pos, number, stanzas = first[1], 1, []
    while (item := _next_line(buf, pos)) is not None:
        line, after = item
        number += 1
        if line.startswith(b"---"):
            parts = line.split(b" ")
            if parts[0] != b"---" or len(parts) != 2:
                raise HeaderError(f"header line {number}: malformed MAC line")
            try:
                mac = b64decode(parts[1])
            except ValueError:
                raise HeaderError(f"header line {number}: MAC is not canonical base64") from None
            if len(mac) != 32:
                raise HeaderError(f"header line {number}: MAC has the wrong length")
            return Header(tuple(stanzas), mac, buf[: pos + 3], after), after
        if not line.startswith(b"->"):
            raise HeaderError(f"header line {number}: expected a '-> ' stanza or the '---' line")
        parts = line.split(b" ")
        if parts[0] != b"->" or len(parts) < 2 or not all(_is_arg(p) for p in parts[1:]):
            raise HeaderError(f"header line {number}: malformed stanza line")
        body = bytearray()
        while True:
            item = _next_line(buf, after)
            if item is None:
                return None
            text, after = item
            number += 1
            try:
                if len(text) > _COLUMNS:
                    raise ValueError("body line longer than 64 columns")
                chunk = b64decode(text)
            except ValueError as exc:
                raise HeaderError(f"header line {number}: bad stanza body ({exc})") from None
            body += chunk
            if len(chunk) < _BODY_LINE_BYTES:
                break
        args = tuple(p.decode("ascii") for p in parts[2:])
        stanzas.append(Stanza(parts[1].decode("ascii"), args, bytes(body)))
        pos = after
    return None


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    """HMAC-SHA256 keyed with HKDF(file key, info "header") over the header bytes."""
    return hmac.new(hkdf(file_key, None, b"header"), mac_input, sha256).digest()


def verify_mac(header: Header, file_key: bytes) -> None:
    if not hmac.compare_digest(header_mac(file_key, header.mac_input), header.mac):
        raise HeaderMacError("header MAC mismatch: the header was modified or corrupted")


def serialize_header(stanzas: Iterable[Stanza], file_key: bytes) -> bytes:
    """Canonical header bytes, MAC line included."""
    out = bytearray(INTRO)
    for stanza in stanzas:
        out += stanza.encode()
    out += b"---"
    return bytes(out + b" " + b64encode(header_mac(file_key, bytes(out))) + b"\n")


def check_recipients(recipients: Sequence[Recipient]) -> None:
    """Refuse recipient sets the spec forbids (none at all; scrypt mixed with others)."""
    if not recipients:
        raise InvalidKey("no recipients given")
    if any(isinstance(r, ScryptRecipient) for r in recipients) and len(recipients) != 1:
        raise InvalidKey("a passphrase must be the only recipient of a file")


def _aead_wrap(key: bytes, file_key: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)


def _scrypt_key(passphrase: bytes, salt: bytes, log_n: int) -> bytes:
    kdf = Scrypt(salt=_SCRYPT_LABEL + salt, length=32, n=1 << log_n, r=8, p=1)
    return kdf.derive(passphrase)


def wrap_file_key(file_key: bytes, recipient: Recipient) -> Stanza:
    """Produce the stanza that lets ``recipient`` recover ``file_key``."""
    if isinstance(recipient, X25519Recipient):
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        try:
            shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient.public))
        except ValueError:
            raise InvalidKey("recipient is a low-order X25519 point") from None
        key = hkdf(shared, share + recipient.public, _X25519_INFO)
        return Stanza("X25519", (b64encode(share).decode(),), _aead_wrap(key, file_key))
    salt = os.urandom(16)
    key = _scrypt_key(recipient.passphrase, salt, recipient.work_factor)
    args = (b64encode(salt).decode(), str(recipient.work_factor))
    return Stanza("scrypt", args, _aead_wrap(key, file_key))


def _open(key: bytes, body: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None


def _decode_arg(arg: str, size: int, what: str) -> bytes:
    try:
        value = b64decode(arg.encode("ascii"))
    except ValueError:
        raise HeaderError(f"{what} is not canonical base64") from None
    if len(value) != size:
        raise HeaderError(f"{what} has the wrong length")
    return value


def _unwrap_x25519(stanza: Stanza, identity: X25519Identity) -> bytes | None:
    if stanza.type != "X25519":
        return None
    if len(stanza.args) != 1:
        raise HeaderError("invalid X25519 stanza: expected exactly one argument")
    share = _decode_arg(stanza.args[0], 32, "X25519 share")
    if len(stanza.body) != FILE_KEY_SIZE + 16:
        raise HeaderError("invalid X25519 stanza: wrapped file key has the wrong length")
    try:
        shared = identity.exchange(share)
    except ValueError:
        shared = bytes(32)
    if not any(shared):
        raise HeaderError("invalid X25519 stanza: low-order share")
    key = hkdf(shared, share + identity.recipient.public, _X25519_INFO)
    return _open(key, stanza.body)


def _unwrap_scrypt(stanza: Stanza, identity: ScryptIdentity) -> bytes | None:
    if stanza.type != "scrypt":
        return None
    if len(stanza.args) != 2:
        raise HeaderError("invalid scrypt stanza: expected exactly two arguments")
    salt = _decode_arg(stanza.args[0], 16, "scrypt salt")
    if not _DECIMAL_RE.fullmatch(stanza.args[1]):
        raise HeaderError("invalid scrypt stanza: work factor is not a small positive decimal")
    log_n = int(stanza.args[1])
    if log_n > identity.max_work_factor:
        raise HeaderError(f"scrypt work factor {log_n} is above the limit "
                          f"{identity.max_work_factor}")
    if len(stanza.body) != FILE_KEY_SIZE + 16:
        raise HeaderError("invalid scrypt stanza: wrapped file key has the wrong length")
    return _open(_scrypt_key(identity.passphrase, salt, log_n), stanza.body)


def unwrap_file_key(header: Header, identities: Iterable[Identity]) -> bytes:
    """Recover the file key with the first identity that opens a stanza.

    Stanzas of unknown types are skipped (they may be for other people's plugins).
    A stanza of a known type that is malformed is a ``HeaderError`` even if another
    identity could have matched: the file is broken, not merely not ours.
    """
    stanzas = header.stanzas
    if any(s.type == "scrypt" for s in stanzas) and len(stanzas) != 1:
        raise HeaderError("an scrypt stanza must be the only stanza in the header")
    for identity in identities:
        for stanza in stanzas:
            if isinstance(identity, X25519Identity):
                file_key = _unwrap_x25519(stanza, identity)
            else:
                file_key = _unwrap_scrypt(stanza, identity)
            if file_key is not None:
                return file_key
    raise NoIdentityMatch()
