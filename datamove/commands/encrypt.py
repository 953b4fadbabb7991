"""The API behind ``datamove encrypt`` and ``datamove decrypt``: one object, streamed.

Why this exists next to ``age``: it reads and writes any store datamove knows
(local paths, ``s3://`` and other fsspec URLs, ``-`` for stdin/stdout), publishes
atomically through ``writers.atomic_writer``, and opens identity files in every
form ``identities`` supports (plaintext, passphrase-protected, KMS-wrapped).

Memory is bounded: input is read 1 MiB at a time and age works in 64 KiB chunks;
an S3 destination buffers one 16 MiB part.

Nothing unauthenticated is ever published. Decryption releases a chunk only after
it authenticated, and a file destination is a temporary name renamed (or an S3
multipart upload completed) only after the final chunk authenticated: on any
failure nothing is left under the final name and the temporary is removed.
Standard output (``-``) cannot be retracted: it receives authenticated chunks as
they come, and a failure (a truncated or damaged file) ends the command with a
non-zero exit code after some plaintext may already have been written; consumers
of stdout must check the exit code before trusting it.

Passphrases come from the environment variable ``DATAMOVE_PASSPHRASE``, never
from an argument (argv is visible to every local user).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from datamove.age import (
    AgeDecryptor,
    AgeEncryptor,
    ArmorError,
    HeaderError,
    HeaderMacError,
    Identity,
    InvalidKey,
    NoIdentityMatch,
    PayloadError,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Recipient,
    parse_recipients,
)
from datamove.crypto.identities import (
    PASSPHRASE_ENV,
    IdentityRef,
    load_identities,
    open_failure,
    passphrase_from_env,
    read_key_file,
)
from datamove.errors import (
    EXIT_OBJECTS_FAILED,
    BadInput,
    DatamoveError,
    KeyProblem,
    LocationUnreachable,
)
from datamove.stores.core import Location, describe, open_read
from datamove.stores.safepath import PRIVATE_FILE_MODE
from datamove.stores.writers import atomic_writer

STDIO = "-"
READ_SIZE = 1 << 20
PART_SIZE = 16 << 20


class ObjectFailed(DatamoveError):
    """This object could not be encrypted or decrypted; nothing was published."""

    exit_code = EXIT_OBJECTS_FAILED


class CorruptObject(ObjectFailed):
    """The input is not an intact age file: damaged, truncated, or edited."""


@dataclass(frozen=True)
class FileResult:
    """What one encrypt/decrypt did. Public values only (recipients, sizes)."""

    src: str
    dst: str
    bytes_read: int
    bytes_written: int
    recipients: tuple[str, ...] = ()  # encrypt: the age1… recipients ("scrypt" for -p)


def encrypt_file(src: str, dst: str, recipients: Sequence[str], recipients_files: Sequence[str],
                 passphrase: bool, armor: bool = False) -> FileResult:
    """Encrypt ``src`` to ``dst`` for every recipient given, or for a passphrase.

    ``recipients`` are ``age1…`` strings, ``recipients_files`` files of them (one a
    line); ``passphrase`` uses DATAMOVE_PASSPHRASE and excludes the others (age
    allows a passphrase only as the sole recipient).
    """
    keys = _recipients(recipients, recipients_files, passphrase)
    if dst == STDIO and not armor and sys.stdout.isatty():
        raise BadInput("refusing to write binary ciphertext to a terminal; give an OUT file, "
                       "use --armor, or redirect stdout")
    try:
        codec = AgeEncryptor(keys, armor=armor)
    except InvalidKey as exc:  # e.g. a low-order point: a valid encoding, an unusable key
        raise KeyProblem(f"cannot encrypt to these recipients: {exc}") from None
    bytes_read, written = _transform(src, dst, codec, "encrypt")
    shown = tuple("scrypt" if isinstance(k, ScryptRecipient) else str(k) for k in keys)
    return FileResult(src, dst, bytes_read, written, shown)


def decrypt_file(src: str, dst: str, identity_files: Sequence[str], passphrase: bool, *,
                 kms_context: Mapping[str, str] | None = None, kms_region: str | None = None,
                 kms_endpoint_url: str | None = None) -> FileResult:
    """Decrypt ``src`` to ``dst`` with the identities in ``identity_files`` (any form
    ``identities`` reads) and, with ``passphrase``, the one in DATAMOVE_PASSPHRASE.

    KeyProblem (exit 2) when no identity matches; CorruptObject (exit 1) when the
    file is damaged, truncated or edited, in which case nothing is published.
    """
    keys: list[Identity] = []
    for path in identity_files:
        keys.extend(load_identities(IdentityRef.of(
            path, kms_context=kms_context, kms_region=kms_region,
            kms_endpoint_url=kms_endpoint_url)))
    if passphrase:
        keys.append(ScryptIdentity.from_str(passphrase_from_env(PASSPHRASE_ENV, "decrypt -p")))
    if not keys:
        raise KeyProblem("no identities: give -i IDENTITY_FILE (repeatable) or -p")
    codec = AgeDecryptor(keys)
    try:
        bytes_read, written = _transform(src, dst, codec, "decrypt")
    except NoIdentityMatch:
        from_files = len(keys) - (1 if passphrase else 0)
        tried = [f"{from_files} identit{'y' if from_files == 1 else 'ies'} from "
                 f"{', '.join(identity_files)}"] if identity_files else []
        tried += [f"the passphrase in {PASSPHRASE_ENV}"] if passphrase else []
        raise KeyProblem(f"{_name(src)}: no identity matches (tried {' and '.join(tried)})"
                         f"{_stanza_hint(codec, passphrase)}") from None
    return FileResult(src, dst, bytes_read, written)


def _recipients(texts: Sequence[str], files: Sequence[str], passphrase: bool) -> list[Recipient]:
    if passphrase and (texts or files):
        raise KeyProblem("-p encrypts to a passphrase, which must be the only recipient of a "
                         "file (age rule): drop -r/-R, or drop -p")
    if passphrase:
        return [ScryptRecipient.from_str(passphrase_from_env(PASSPHRASE_ENV, "encrypt -p"))]
    keys: list[Recipient] = []
    for number, text in enumerate(texts, start=1):
        try:
            keys.append(X25519Recipient.parse(text.strip()))
        except InvalidKey as exc:  # never echo it: it may be a pasted secret key
            hint = (" — that is a secret identity; `datamove keys recipient -i FILE` prints "
                    "its recipient") if text.strip().upper().startswith("AGE-SECRET-KEY-") else ""
            raise KeyProblem(f"-r recipient #{number}: {exc}{hint}") from None
    for path in files:
        data = read_key_file(path, "recipients file")
        try:
            keys.extend(parse_recipients(data.decode("utf-8", "replace"),
                                         source=f"recipients file {path}"))
        except InvalidKey as exc:
            raise KeyProblem(f"{exc}; expected one age1… recipient a line") from None
    if not keys:
        raise KeyProblem("no recipients: give -r age1… or -R FILE (repeatable), or -p")
    return keys


def _stanza_hint(codec: AgeDecryptor, passphrase: bool) -> str:
    """Why nothing matched, from the header's public stanza types."""
    if codec.header is None:
        return ""
    types = [s.type for s in codec.header.stanzas]
    if types == ["scrypt"]:
        return ("; wrong passphrase" if passphrase else
                f"; the file is encrypted with a passphrase: use -p with {PASSPHRASE_ENV} set")
    kinds = ", ".join(sorted(set(types)))
    return (f"; the file is for {len(types)} recipient(s) ({kinds}) and none of these "
            "identities opens it")


def _name(path: str) -> str:
    return "stdin" if path == STDIO else path


def _transform(src: str, dst: str, codec: AgeEncryptor | AgeDecryptor,
               verb: str) -> tuple[int, int]:
    """Stream ``src`` through ``codec`` into ``dst``; publish only on success."""
    undo = (f"nothing was written to {dst}" if dst != STDIO else
            "the output already written to stdout is incomplete: discard it")
    with _open_source(src) as reader:
        try:
            # Plaintext written by decrypt is private (0600); ciphertext gets the default.
            with _sink(dst, PRIVATE_FILE_MODE if verb == "decrypt" else None) as sink:
                bytes_read = 0
                while block := reader.read(READ_SIZE):
                    bytes_read += len(block)
                    for piece in codec.update_chunks(block):
                        sink.write(piece)
                sink.write(codec.finalize())
            return bytes_read, sink.size
        except InvalidKey as exc:
            raise KeyProblem(f"{_name(src)}: {exc}") from None
        except (HeaderMacError, PayloadError, ArmorError, HeaderError) as exc:
            kind = {HeaderMacError: "header MAC", PayloadError: "payload",
                    ArmorError: "armor"}.get(type(exc), "header")
            raise CorruptObject(f"{_name(src)}: {kind} error: {exc} (damaged, truncated or "
                                f"modified: fetch it again from where it came); {undo}") from None
        except OSError as exc:
            raise ObjectFailed(f"{_name(src)} → {_name(dst)}: {verb} failed "
                               f"({describe(exc)}); {undo}") from None


def _split(url: str) -> tuple[Location, str]:
    """A store location and the object's key in it (a local path is a Location too).
    A local file the user names may be a link: it is followed."""
    if "://" not in url:
        path = os.path.abspath(os.path.expanduser(url))
        return Location.of(os.path.dirname(path), links="follow"), os.path.basename(path)
    parent, _, key = url.rstrip("/").rpartition("/")
    if not key or parent.endswith(":/"):
        raise BadInput(f"{url}: not an object URL (expected scheme://bucket/key)")
    return Location.of(parent), key


@contextlib.contextmanager
def _open_source(src: str) -> Iterator[BinaryIO]:
    if src == STDIO:
        yield sys.stdin.buffer
        return
    try:
        if "://" not in src and os.path.isdir(src):
            raise IsADirectoryError(src)
        reader = open_read(*_split(src))
    except OSError as exc:
        error = BadInput if isinstance(exc, IsADirectoryError) else LocationUnreachable
        raise error(f"{src}: {open_failure(exc)}") from None
    with reader:
        yield reader


class _Writable(Protocol):
    def write(self, data: bytes) -> Any: ...


class _Sink:
    """Counts and hashes what is written (the sha256 the writer records is of these
    bytes), so the store's checksum metadata describes the object it holds."""

    def __init__(self, out: _Writable):
        self.out = out
        self.size = 0
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.sha.update(data)
            self.size += len(data)


@contextlib.contextmanager
def _sink(dst: str, mode: int | None = None) -> Iterator[_Sink]:
    """Where the output goes: stdout, or an atomic writer committed on a clean exit."""
    if dst == STDIO:
        sink = _Sink(sys.stdout.buffer)
        yield sink
        sys.stdout.buffer.flush()
        return
    if "://" not in dst and os.path.isdir(dst):
        raise BadInput(f"{dst}: is a directory; give a file name for the output")
    location, key = _split(dst)
    with atomic_writer(location, key, part_size=PART_SIZE, mode=mode) as writer:
        sink = _Sink(writer)
        yield sink
        writer.commit(sink.sha.hexdigest(), None)
