"""Loading age identities for decrypting, verifying and rotating, in any of three forms.

Why a reference and not the identity: a Dask worker that decrypts or rotates must
hold the secret key, but a pickled key would sit in task graphs, spill files and
scheduler logs. Workers receive an :class:`IdentityRef` (where the identity file is
and how to open it, no secret) and call :func:`load_identities` themselves, with
their own environment (passphrase variable, AWS credentials). Identity objects
refuse to be pickled (``datamove.age.keys``) so a mistake fails loudly.

Identity file forms, told apart by content:

1. plaintext: the ``age-keygen`` format, ``AGE-SECRET-KEY-1…`` lines, ``#`` comments.
2. passphrase-protected: an age file (binary or ASCII-armored) encrypted with a
   passphrase (``age -p``, ``datamove keys generate -p``) whose plaintext is form 1.
   The passphrase is read from the environment variable ``IdentityRef.passphrase_env``
   (default ``DATAMOVE_PASSPHRASE``), never from an argument (argv is visible to
   every local user).
3. KMS-wrapped: form 1 encrypted by AWS KMS, in this text format::

       # datamove: age identity wrapped by AWS KMS. Decrypting needs kms:Decrypt on the key and the same encryption context.
       # recipient: age1...
       datamove-kms-identity-v1
       key-id: <KeyId returned by KMS Encrypt (the key ARN)>
       ciphertext: <standard base64 of CiphertextBlob, padded>

   Comment and blank lines are ignored except ``# recipient:``, which must match
   the unwrapped identity when present (it tells people which key this is without
   unwrapping). Unwrapping calls ``kms:Decrypt`` with ``KeyId`` and the encryption
   context of the ref; the region is the ref's, else the key ARN's, else the
   environment's; the endpoint is the ref's, else ``AWS_ENDPOINT_URL``.

Loading is cached per process (scrypt costs about a second, KMS a round trip);
:func:`clear_identity_cache` empties the cache. Every failure is a
:class:`~datamove.errors.KeyProblem` naming the file, never its content.
"""  # noqa: E501 (the format's first line is fixed)

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import io
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from datamove.age import (
    AgeError,
    HeaderMacError,
    InvalidKey,
    NoIdentityMatch,
    ScryptRecipient,
    X25519Identity,
    decrypt_identities,
    encrypt,
    format_identity_file,
    parse_identities,
)
from datamove.age.armor import BEGIN as ARMOR_BEGIN
from datamove.errors import KeyProblem
from datamove.stores.core import describe

PASSPHRASE_ENV = "DATAMOVE_PASSPHRASE"
KMS_MAGIC = "datamove-kms-identity-v1"
KMS_COMMENT = ("# datamove: age identity wrapped by AWS KMS. Decrypting needs kms:Decrypt "
               "on the key and the same encryption context.")
MAX_KEY_FILE_SIZE = 1 << 20  # key files are small; a bigger object is the wrong file
_AGE_BINARY = b"age-encryption.org/"
_ARN_REGION = re.compile(r"^arn:[^:]+:kms:([^:]+):")


@dataclass(frozen=True)
class IdentityRef:
    """Where an identity lives and how to open it. Holds no secret; picklable, hashable:
    Dask workers receive this and load the identity themselves (secrets never travel).

    A local path is made absolute and the KMS context sorted, so equal refs hash
    equal (the cache key) and a worker in another directory opens the same file.
    """

    file: str  # local path (absolute) or fsspec URL
    passphrase_env: str = PASSPHRASE_ENV  # read only if the file is passphrase-protected
    kms_context: tuple[tuple[str, str], ...] = ()  # for a KMS-wrapped file, sorted pairs
    kms_region: str | None = None
    kms_endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if "://" not in self.file:
            object.__setattr__(self, "file", os.path.abspath(os.path.expanduser(self.file)))
        object.__setattr__(self, "kms_context", tuple(sorted(dict(self.kms_context).items())))

    @classmethod
    def of(cls, file: str, *, passphrase_env: str = PASSPHRASE_ENV,
           kms_context: Mapping[str, str] | None = None, kms_region: str | None = None,
           kms_endpoint_url: str | None = None) -> IdentityRef:
        """From the context as a mapping, the form the CLI and the manifest give it in."""
        return cls(file, passphrase_env, tuple((kms_context or {}).items()), kms_region,
                   kms_endpoint_url)


def load_identities(ref: IdentityRef) -> list[X25519Identity]:
    """The identities in ``ref``'s file (cached per process); KeyProblem on any failure.

    Returns a new list of the cached identity objects, so callers may change the list.
    """
    return list(_load_cached(ref))


def clear_identity_cache() -> None:
    """Forget loaded identities (tests; or after an identity file was replaced)."""
    _load_cached.cache_clear()


@functools.lru_cache(maxsize=32)
def _load_cached(ref: IdentityRef) -> tuple[X25519Identity, ...]:
    data = read_key_file(ref.file, "identity file")
    stripped = data.lstrip(b" \t\r\n")
    if stripped.startswith(_AGE_BINARY) or stripped.startswith(ARMOR_BEGIN):
        return tuple(_open_passphrase_file(ref, data))
    text = _text(data, ref.file)
    if KMS_MAGIC in (line.strip() for line in text.splitlines()):
        return tuple(_open_kms_file(ref, text))
    return tuple(_parse(text, ref.file))


def read_key_file(path: str, what: str) -> bytes:
    """A key or recipients file's bytes (local path or fsspec URL), at most 1 MiB."""
    try:
        if "://" in path:
            import fsspec  # only for a key file at a URL: a local run's start never pays it

            with fsspec.open(path, "rb") as f:
                data = f.read(MAX_KEY_FILE_SIZE + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_KEY_FILE_SIZE + 1)
    except OSError as exc:
        raise KeyProblem(f"{what} {path}: {open_failure(exc)}") from None
    if len(data) > MAX_KEY_FILE_SIZE:
        raise KeyProblem(f"{what} {path}: larger than {MAX_KEY_FILE_SIZE} bytes, so not a key "
                         "file; check the path")
    return data


def open_failure(exc: OSError) -> str:
    """Why a file or object could not be opened, in words that say what to check
    (for a message that already names it)."""
    if isinstance(exc, FileNotFoundError):
        return "not found; check the path"
    if isinstance(exc, IsADirectoryError):
        return "is a directory; give a file"
    if isinstance(exc, PermissionError):
        return "permission denied; check the file's mode or your access to it"
    return f"cannot be read ({describe(exc)})"


def _text(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyProblem(f"identity file {path}: not UTF-8 text, so neither an age identity "
                         "file nor an age-encrypted one; check the path") from None


def _parse(text: str, path: str) -> list[X25519Identity]:
    try:
        return parse_identities(text, source=f"identity file {path}")
    except InvalidKey as exc:  # names the line, never its content
        raise KeyProblem(f"{exc}; expected age-keygen output (AGE-SECRET-KEY-1… lines)") \
            from None


def passphrase_from_env(variable: str, purpose: str) -> str:
    """The passphrase in environment ``variable``; KeyProblem naming it when unset/empty."""
    value = os.environ.get(variable)
    if not value:
        raise KeyProblem(f"{purpose} needs a passphrase: set the environment variable "
                         f"{variable} (it is never taken as an argument)")
    return value


def _open_passphrase_file(ref: IdentityRef, data: bytes) -> list[X25519Identity]:
    passphrase = passphrase_from_env(
        ref.passphrase_env, f"identity file {ref.file} is passphrase-protected and")
    try:
        return decrypt_identities(data, passphrase, source=f"identity file {ref.file}")
    except (NoIdentityMatch, HeaderMacError):
        raise KeyProblem(f"wrong passphrase for identity file {ref.file} (taken from "
                         f"{ref.passphrase_env}); or the file is encrypted to a key, not a "
                         "passphrase") from None
    except InvalidKey as exc:
        raise KeyProblem(f"{exc}; the decrypted file is not an age identity file") from None
    except AgeError as exc:
        raise KeyProblem(f"identity file {ref.file}: not a valid passphrase-protected age "
                         f"file ({exc})") from None


# --- KMS ------------------------------------------------------------------------------

def _kms_client(key_id: str, region: str | None, endpoint_url: str | None) -> Any:
    from botocore.config import Config
    from botocore.session import get_session

    match = _ARN_REGION.match(key_id)
    region = region or (match.group(1) if match else None)
    # A few quick retries, unless the user configured them (AWS_MAX_ATTEMPTS): an
    # unreachable endpoint should fail in seconds, not after botocore's legacy backoff.
    retries = None if os.environ.get("AWS_MAX_ATTEMPTS") else {"mode": "standard",
                                                                "max_attempts": 3}
    config = Config(retries=retries, connect_timeout=10, read_timeout=30)
    # A session per call: botocore sessions are not safe to share between threads, and
    # identities are loaded once per process, so the credential lookup is not repeated often.
    return get_session().create_client("kms", region_name=region, endpoint_url=endpoint_url,
                                       config=config)


_BODY_LOGGERS = ("botocore", "botocore.endpoint", "botocore.parsers", "urllib3")
_BODY_LOGGERS_LOCK = threading.Lock()


@contextlib.contextmanager
def _bodies_unlogged() -> Iterator[None]:
    """At DEBUG (``datamove -vv``) botocore logs request and response bodies, and a
    KMS body holds the identity file in base64: keep those loggers at INFO for the
    call. Serialised, so concurrent loads cannot restore each other's levels."""
    with _BODY_LOGGERS_LOCK:
        loggers = [logging.getLogger(name) for name in _BODY_LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(max(level, logging.INFO))
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _kms_call(what: str, key_id: str, call: str, region: str | None,
              endpoint_url: str | None, **kwargs: Any) -> dict[str, Any]:
    """One KMS call; every failure becomes a KeyProblem naming ``what`` and the key."""
    try:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            NoRegionError,
        )
    except ModuleNotFoundError:  # the core installs without AWS's SDK
        raise KeyProblem(f"{what} is wrapped by AWS KMS, which needs botocore; it is not "
                         "installed: pip install 'datamove[s3]'") from None
    try:
        with _bodies_unlogged():
            client = _kms_client(key_id, region, endpoint_url)
            return getattr(client, call)(KeyId=key_id, **kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "unknown")
        if code == "InvalidCiphertextException":
            context = dict(kwargs.get("EncryptionContext", {}))
            raise KeyProblem(
                f"KMS refused to unwrap {what} with key {key_id}: the encryption context "
                f"{context} does not match the one it was wrapped with, or the file was "
                "wrapped with another key; pass the same --kms-context pairs") from None
        raise KeyProblem(f"KMS {call} failed for {what} with key {key_id}: AWS error {code}; "
                         "check the key id, its region and your kms permissions") from None
    except NoRegionError:
        raise KeyProblem(f"KMS {call} for {what}: no AWS region; pass --kms-region, use a key "
                         "ARN or set AWS_DEFAULT_REGION") from None
    except NoCredentialsError:
        raise KeyProblem(f"KMS {call} for {what}: no AWS credentials found in the "
                         "environment, config files or instance profile") from None
    except BotoCoreError as exc:  # unreachable endpoint, timeouts, bad endpoint URL
        raise KeyProblem(f"KMS {call} for {what} with key {key_id}: cannot reach KMS "
                         f"({type(exc).__name__}); check --kms-endpoint-url / "
                         "AWS_ENDPOINT_URL and the network") from None


def wrap_identity_with_kms(identity: X25519Identity, key_id: str, context: dict[str, str],
                           region: str | None = None, endpoint_url: str | None = None) -> str:
    """The KMS-wrapped identity file text (format in the module docstring).

    The identity file text is the KMS plaintext, so unwrapping yields a file that
    age itself could read; the context is bound to the ciphertext by KMS and is
    not stored (pass it again to unwrap).
    """
    plain = format_identity_file(identity).encode("utf-8")
    response = _kms_call("a new identity", key_id, "encrypt", Plaintext=plain,
                         EncryptionContext=dict(context), region=region,
                         endpoint_url=endpoint_url)
    blob = base64.b64encode(response["CiphertextBlob"]).decode("ascii")
    return (f"{KMS_COMMENT}\n# recipient: {identity.recipient}\n{KMS_MAGIC}\n"
            f"key-id: {response['KeyId']}\nciphertext: {blob}\n")


def _kms_fields(text: str, path: str) -> tuple[dict[str, str], str | None]:
    fields: dict[str, str] = {}
    recipient = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("# recipient:"):
            recipient = line.removeprefix("# recipient:").strip()
        if not line or line.startswith("#") or line == KMS_MAGIC:
            continue
        name, sep, value = line.partition(":")
        if not sep or name.strip() not in ("key-id", "ciphertext") or name.strip() in fields:
            raise KeyProblem(f"KMS identity file {path}, line {number}: expected 'key-id: …' "
                             "or 'ciphertext: …' once each (datamove-kms-identity-v1)")
        fields[name.strip()] = value.strip()
    for name in ("key-id", "ciphertext"):
        if not fields.get(name):
            raise KeyProblem(f"KMS identity file {path}: the '{name}:' line is missing or "
                             "empty; the file is damaged, re-create it with keys generate")
    return fields, recipient


def _open_kms_file(ref: IdentityRef, text: str) -> list[X25519Identity]:
    fields, recipient = _kms_fields(text, ref.file)
    try:
        blob = base64.b64decode(fields["ciphertext"], validate=True)
    except binascii.Error:
        raise KeyProblem(f"KMS identity file {ref.file}: 'ciphertext:' is not valid base64; "
                         "the file is damaged") from None
    response = _kms_call(f"identity file {ref.file}", fields["key-id"], "decrypt",
                         CiphertextBlob=blob, EncryptionContext=dict(ref.kms_context),
                         region=ref.kms_region, endpoint_url=ref.kms_endpoint_url)
    identities = _parse(_text(response["Plaintext"], ref.file), ref.file)
    if recipient and recipient not in {str(i.recipient) for i in identities}:
        raise KeyProblem(f"KMS identity file {ref.file}: its '# recipient:' line does not "
                         "match the wrapped identity; the file was edited, re-create it")
    return identities


# --- writing identity files -------------------------------------------------------------

def protect_with_passphrase(identity: X25519Identity, passphrase: str) -> str:
    """The identity file encrypted with a passphrase: ASCII-armored age, so it stays a
    text file that can be pasted; ``age -d`` opens it as well as we do."""
    out = io.BytesIO()
    encrypt(io.BytesIO(format_identity_file(identity).encode("utf-8")), out,
            [ScryptRecipient.from_str(passphrase)], armor=True)
    return out.getvalue().decode("ascii")


def generate_identity_file(*, passphrase: bool = False, kms_key: str | None = None,
                           kms_context: Mapping[str, str] | None = None,
                           kms_region: str | None = None,
                           kms_endpoint_url: str | None = None) -> tuple[str, str]:
    """A new X25519 identity as ``(recipient, identity file text)``, in one of the three
    forms: plaintext (age-keygen's), passphrase-protected (DATAMOVE_PASSPHRASE) or
    KMS-wrapped (``kms_key`` and ``kms_context``)."""
    if passphrase and kms_key:
        raise KeyProblem("-p and --kms-key are exclusive: protect the identity file with a "
                         "passphrase or with KMS, not both")
    if kms_context and not kms_key:
        raise KeyProblem("--kms-context needs --kms-key (the context binds a KMS wrapping)")
    identity = X25519Identity.generate()
    if passphrase:
        secret = passphrase_from_env(PASSPHRASE_ENV, "a passphrase-protected identity file")
        text = protect_with_passphrase(identity, secret)
    elif kms_key:
        text = wrap_identity_with_kms(identity, kms_key, dict(kms_context or {}), kms_region,
                                      kms_endpoint_url)
    else:
        created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        text = format_identity_file(identity, created=created)
    return str(identity.recipient), text


def write_secret_file(path: str, text: str) -> None:
    """Write ``text`` to a new local file with mode 0600; never overwrite one.

    The bytes go to a private temporary file first, which is then hard-linked to
    ``path``: the link fails if ``path`` exists (even if created meanwhile), and a
    crash never leaves a half-written key under the final name.
    """
    if os.path.lexists(path):
        raise KeyProblem(f"{path} already exists; not overwriting a key file (choose "
                         "another name or move the old one away)")
    temp = f"{path}.datamove-partial-key-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(fd, 0o600)  # the umask may only remove bits; make sure of 0600
            f.write(text)
            f.flush()
            os.fsync(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            raise KeyProblem(f"{path} already exists; not overwriting a key file") from None
    except OSError as exc:
        raise KeyProblem(f"cannot write key file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
