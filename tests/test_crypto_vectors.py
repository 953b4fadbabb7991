"""Every age test vector (C2SP CCTV, tests/data/age-vectors) gives the expected result.

For each vector: the error class matches ``expect``; on success the plaintext hash
matches ``payload``; on failure the plaintext released before the error hashes to
``payload`` (the chunks that authenticated, as the reference releases them) or is
empty when the vector has no ``payload``. Each vector is fed whole, in odd-sized
pieces and (when small) byte by byte, with armor given and auto-detected, so the
result cannot depend on how the input is split.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from datamove.age import errors
from datamove.age.files import AgeDecryptor, decrypt
from datamove.age.header import parse_header, unwrap_file_key
from datamove.age.keys import Identity, ScryptIdentity, X25519Identity

VECTOR_DIR = Path(__file__).resolve().parent / "data" / "age-vectors"
VECTOR_COUNT = 100  # the files in VECTOR_DIR (SOURCE.md, LICENSE aside): none may go missing
NOT_VECTORS = {"SOURCE.md", "LICENSE"}
EXPECT = {
    "success": None,
    "no match": errors.NoIdentityMatch,
    "HMAC failure": errors.HeaderMacError,
    "header failure": errors.HeaderError,
    "payload failure": errors.PayloadError,
    "armor failure": errors.ArmorError,
}
KNOWN_KEYS = {"expect", "payload", "identity", "passphrase", "armored", "file key", "comment",
              "compressed"}


@dataclass
class Vector:
    name: str
    expect: str
    body: bytes
    payload: str | None = None
    armored: bool = False
    file_key: str | None = None
    identities: list[Identity] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def load(path: Path) -> Vector:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    vector = Vector(path.name, "", body)
    compressed = False
    for line in head.decode("utf-8").splitlines():
        key, _, value = line.partition(": ")
        if key not in KNOWN_KEYS:
            vector.unknown.append(key)
        elif key == "expect":
            vector.expect = value
        elif key == "payload":
            vector.payload = value
        elif key == "armored":
            vector.armored = value == "yes"
        elif key == "file key":
            vector.file_key = value
            vector.secrets.append(value)
        elif key == "identity":
            vector.identities.append(X25519Identity.parse(value))
            vector.secrets.append(value)
        elif key == "passphrase":
            vector.identities.append(ScryptIdentity.from_str(value))
            vector.secrets.append(value)
        elif key == "compressed":
            compressed = value == "zlib"
    if compressed:
        vector.body = zlib.decompress(vector.body)
    return vector


def vector_files() -> list[Path]:
    if not VECTOR_DIR.is_dir():
        return []
    return sorted(p for p in VECTOR_DIR.iterdir() if p.is_file() and p.name not in NOT_VECTORS)


def test_vectors_present() -> None:
    """The vectors are part of the repository: missing ones fail, never skip."""
    found = len(vector_files())
    assert found == VECTOR_COUNT, (
        f"{found} age test vectors at {VECTOR_DIR}, expected {VECTOR_COUNT}: restore "
        "tests/data/age-vectors from git (see its SOURCE.md)")


def run(vector: Vector, pieces: int | None, armor: bool | None) -> tuple[bytes, Exception | None]:
    """Decrypt feeding ``pieces``-byte slices (None: all at once); return released bytes."""
    released = bytearray()
    decryptor = AgeDecryptor(vector.identities, armor=armor)
    step = pieces or max(len(vector.body), 1)
    try:
        for i in range(0, len(vector.body), step):
            released += decryptor.update(vector.body[i : i + step])
        released += decryptor.finalize()
    except errors.AgeError as exc:
        return bytes(released), exc
    return bytes(released), None


def check(vector: Vector, released: bytes, error: Exception | None, how: str) -> None:
    expected = EXPECT[vector.expect]
    if expected is None:
        assert error is None, f"{vector.name} [{how}]: unexpected {error!r}"
    else:
        assert type(error) is expected, (
            f"{vector.name} [{how}]: expected {expected.__name__}, got {error!r}")
        for secret in vector.secrets:
            assert secret.lower() not in str(error).lower(), f"{vector.name}: secret in message"
    if vector.payload is not None:
        assert hashlib.sha256(released).hexdigest() == vector.payload, (
            f"{vector.name} [{how}]: released plaintext ({len(released)} bytes) does not match "
            "the payload hash")
    else:
        assert released == b"", f"{vector.name} [{how}]: released {len(released)} bytes"


# With no vectors the parameter list holds one None, which fails, instead of the
# empty parameter set pytest would report as skipped.
@pytest.mark.parametrize("path", vector_files() or [None],
                         ids=lambda p: p.name if p else "no-vectors")
def test_vector(path: Path | None) -> None:
    assert path is not None, f"no age test vectors at {VECTOR_DIR}"
    vector = load(path)
    if vector.unknown:
        pytest.skip(f"unknown keys {vector.unknown}: the vector format says to ignore the file")
    assert vector.expect in EXPECT, f"unknown expectation {vector.expect!r}"
    splits: list[int | None] = [None, 4093, 65_553]
    if len(vector.body) <= 4096:
        splits.append(1)
    for armor in (vector.armored, None):
        for pieces in splits:
            released, error = run(vector, pieces, armor)
            check(vector, released, error, f"armor={armor} pieces={pieces}")
    # The file-object API behaves the same.
    out = io.BytesIO()
    try:
        decrypt(io.BytesIO(vector.body), out, vector.identities)
        error = None
    except errors.AgeError as exc:
        error = exc
    check(vector, out.getvalue(), error, "decrypt()")
    # Where the header is valid for us, the unwrapped file key is the declared one.
    if vector.expect in ("success", "payload failure", "HMAC failure") and not vector.armored:
        parsed = parse_header(vector.body)
        assert parsed is not None
        assert unwrap_file_key(parsed[0], vector.identities).hex() == vector.file_key
