"""Signed checkpoints: C2SP signed-note and tlog-checkpoint, with Ed25519 keys.

The formats are the ones Go's ``golang.org/x/mod/sumdb/note`` reads and writes,
so existing transparency-log tooling (and a dozen lines of any language) can
verify datamove's checkpoints:

    signer key    PRIVATE+KEY+<name>+<hex8 key hash>+<base64(0x01 || 32-byte seed)>
    verifier key  <name>+<hex8 key hash>+<base64(0x01 || 32-byte public key)>
    key hash      sha256(name || "\\n" || 0x01 || public key)[:4]
    note          <text ending in \\n>\\n— <name> <base64(key hash || signature)>\\n…
    checkpoint    <origin>\\n<tree size>\\n<base64 root>\\nhead <hex hash of the last event>\\n

The signer key is a secret: :class:`Signer` never shows it (repr, pickling) and
errors about a key file name the file, never its content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from datamove.errors import BadInput

ALG_ED25519 = 0x01
DASH = "\u2014"  # the em dash that starts a signature line
_NAME_RE = re.compile(r"^[^\s+]+$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


class NoteError(ValueError):
    """A key, note or checkpoint that does not parse or does not verify."""


def check_name(name: str) -> str:
    """Key names and origins: non-empty, no whitespace, no '+' (signed-note rules)."""
    if not _NAME_RE.match(name):
        raise NoteError(f"name {name!r} must be non-empty without spaces or '+'")
    return name


def b64decode(text: str) -> bytes:
    """Strict standard base64 (padded); anything else is an error, not a guess."""
    if not _B64_RE.match(text) or len(text) % 4:
        raise NoteError("not standard padded base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise NoteError("not standard padded base64") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def _raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A verifier key: who may sign, by name, key hash and Ed25519 public key."""

    name: str
    hash: bytes
    public: bytes

    @classmethod
    def parse(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)  # base64 may contain '+', names may not
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex8>+<base64 key>")
        name, hex8, b64 = parts
        check_name(name)
        data = b64decode(b64)
        if len(data) != 33 or data[0] != ALG_ED25519:
            raise NoteError("not an Ed25519 verifier key (algorithm byte 0x01, 32 bytes)")
        if hex8 != key_hash(name, data[1:]).hex():
            raise NoteError(f"key hash {hex8} does not match name and key (damaged?)")
        return cls(name, bytes.fromhex(hex8), data[1:])

    def __str__(self) -> str:
        return f"{self.name}+{self.hash.hex()}+{b64encode(bytes([ALG_ED25519]) + self.public)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Signer:
    """An Ed25519 signer key. Holds a secret: no repr of it, no pickling."""

    def __init__(self, name: str, private: Ed25519PrivateKey):
        self.name = check_name(name)
        self._private = private
        self.verifier = Verifier(name, key_hash(name, _raw_public(private)),
                                 _raw_public(private))

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> Signer:
        """Parse a signer key; errors describe the problem without echoing the key."""
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key is PRIVATE+KEY+<name>+<hex8>+<base64 seed>")
        name, hex8, b64 = parts[2:]
        check_name(name)
        data = b64decode(b64)
        if len(data) != 33 or data[0] != ALG_ED25519:
            raise NoteError("not an Ed25519 signer key (algorithm byte 0x01, 32-byte seed)")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(data[1:]))
        if hex8 != signer.verifier.hash.hex():
            raise NoteError(f"key hash {hex8} does not match name and key (damaged?)")
        return signer

    @classmethod
    def load(cls, path: str) -> Signer:
        """Read a signer key file; BadInput names the file and what to do."""
        text = read_text(path, "audit signing key",
                         f"make one with `datamove audit keygen -o {path}`")
        try:
            return cls.parse(text)
        except NoteError as exc:
            raise BadInput(f"audit signing key {path}: {exc}; expected a file written by "
                           "`datamove audit keygen`") from None

    def encode(self) -> str:
        """The key file text: the only place the secret is ever written out."""
        seed = self._private.private_bytes_raw()
        return (f"PRIVATE+KEY+{self.name}+{self.verifier.hash.hex()}+"
                f"{b64encode(bytes([ALG_ED25519]) + seed)}")

    def sign_bytes(self, message: bytes) -> bytes:
        """A bare Ed25519 signature of ``message``. The same key signs checkpoint
        notes, so callers must make their messages impossible to read as a note's
        checkpoint body (seal.py starts its messages with a line of its own)."""
        return self._private.sign(message)

    def sign(self, text: str) -> str:
        """A signed note of ``text`` (which must end in a newline)."""
        if not text.endswith("\n"):
            raise NoteError("note text must end with a newline")
        signature = self._private.sign(text.encode("utf-8"))
        return f"{text}\n{DASH} {self.name} {b64encode(self.verifier.hash + signature)}\n"

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, {self.verifier.hash.hex()})"

    def __reduce__(self) -> object:
        raise TypeError("a Signer holds a secret key and is never pickled")


@dataclass(frozen=True)
class Note:
    """A parsed signed note: its text and its signature lines (name, key hash, sig)."""

    text: str
    signatures: tuple[tuple[str, bytes, bytes], ...]

    @classmethod
    def parse(cls, note: str) -> Note:
        text, sep, sigs = note.rpartition("\n\n")
        if not sep or not sigs.endswith("\n"):
            raise NoteError("not a signed note (text, a blank line, signature lines)")
        signatures = []
        for line in sigs[:-1].split("\n"):
            dash, _, rest = line.partition(" ")
            name, _, b64 = rest.partition(" ")
            if dash != DASH or not name or not b64:
                raise NoteError(f"malformed signature line {line!r}")
            blob = b64decode(b64)
            if len(blob) < 5:
                raise NoteError(f"signature of {name!r} is too short")
            signatures.append((name, blob[:4], blob[4:]))
        return cls(text + "\n", tuple(signatures))

    def verified_by(self, verifier: Verifier) -> bool | None:
        """True if signed by ``verifier``; False if a signature line claims its name
        and key hash but fails; None if it has no signature of that key."""
        for name, hash4, signature in self.signatures:
            if name == verifier.name and hash4 == verifier.hash:
                return verifier.verify(self.text.encode("utf-8"), signature)
        return None


@dataclass(frozen=True)
class Checkpoint:
    """The body of a tlog checkpoint, with datamove's ``head`` extension line."""

    origin: str
    size: int
    root: bytes
    head: str  # hex sha256 of the last event's canonical bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{b64encode(self.root)}\nhead {self.head}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) != 5 or lines[-1] != "":
            raise NoteError("a checkpoint body has 4 lines: origin, size, root, head")
        origin, size, root, head_line = lines[:4]
        if not size.isdigit() or (size != "0" and size.startswith("0")):
            raise NoteError(f"tree size {size!r} is not a decimal number")
        root_bytes = b64decode(root)
        if len(root_bytes) != 32:
            raise NoteError("root hash is not 32 bytes")
        tag, _, head = head_line.partition(" ")
        if tag != "head" or not HEX64_RE.match(head):
            raise NoteError("the last line must be 'head <64 lowercase hex digits>'")
        return cls(check_name(origin), int(size), root_bytes, head)


def read_text(path: str, what: str, hint: str) -> str:
    """A small local text file, or BadInput saying which file, why, and what to do."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{what} {path}: file not found; {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BadInput(f"{what} {path}: cannot read: {reason}") from None


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint note as stored or exported: the text, its signatures, its body."""

    text: str
    note: Note
    body: Checkpoint

    @classmethod
    def parse(cls, text: str) -> SignedCheckpoint:
        note = Note.parse(text)
        return cls(text, note, Checkpoint.parse(note.text))


def read_note_file(path: str) -> SignedCheckpoint:
    """A checkpoint note held outside the ledger (by an auditor); BadInput if unusable."""
    text = read_text(path, "checkpoint file", "check the path")
    try:
        return SignedCheckpoint.parse(text)
    except NoteError as exc:
        raise BadInput(f"checkpoint file {path}: {exc}; expected a note written by "
                       "`datamove audit checkpoint -o FILE`") from None


def read_verifier_file(path: str) -> Verifier:
    text = read_text(path, "verifier key", "check the path")
    if text.lstrip().startswith("PRIVATE+KEY"):
        raise BadInput(f"verifier key {path}: this is a signer (secret) key; give the "
                       "verifier key that `datamove audit keygen` printed")
    try:
        return Verifier.parse(text)
    except NoteError as exc:
        raise BadInput(f"verifier key {path}: {exc}") from None
