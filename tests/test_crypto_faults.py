"""Damaged or foreign ciphertext is refused, and nothing unauthenticated is released.

The decryptor writes into a BytesIO, so each test can check exactly which plaintext
left it before the error: only whole chunks that authenticated, never the bad one.
"""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from datamove.age.errors import (
    AgeError,
    HeaderError,
    HeaderMacError,
    InvalidKey,
    NoIdentityMatch,
    PayloadError,
)
from datamove.age.files import (
    AgeDecryptor,
    AgeEncryptor,
    decrypt,
    encrypt,
    rewrap,
    rewrap_header,
)
from datamove.age.header import parse_header, serialize_header, wrap_file_key
from datamove.age.keys import ScryptIdentity, ScryptRecipient, X25519Identity
from datamove.age.stream import CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, NONCE_SIZE, payload_key

ALICE = X25519Identity.generate()
BOB = X25519Identity.generate()
CAROL = X25519Identity.generate()
PLAIN = os.urandom(2 * CHUNK_SIZE + 100)  # chunks: full, full, 100 bytes (last)


def seal(data: bytes, *identities: X25519Identity, armor: bool = False) -> bytes:
    out = io.BytesIO()
    encrypt(io.BytesIO(data), out, [i.recipient for i in identities or (ALICE,)], armor=armor)
    return out.getvalue()


def payload_start(blob: bytes) -> int:
    parsed = parse_header(blob)
    assert parsed is not None
    return parsed[1] + NONCE_SIZE


def attempt(blob: bytes, identities: list | None = None) -> tuple[bytes, AgeError | None]:
    out = io.BytesIO()
    try:
        decrypt(io.BytesIO(blob), out, identities or [ALICE])
    except AgeError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def assert_no_secret(error: Exception, *secrets: str) -> None:
    for secret in secrets:
        assert secret.lower() not in str(error).lower()


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1,
                                  2 * CHUNK_SIZE, len(PLAIN)])
@pytest.mark.parametrize("armor", [False, True])
def test_roundtrip(size: int, armor: bool) -> None:
    data = PLAIN[:size]
    blob = seal(data, ALICE, BOB, armor=armor)
    for identity in (ALICE, BOB):
        released, error = attempt(blob, [CAROL, identity])
        assert error is None and released == data
    if not armor:  # chunk count: the last chunk is full when size is a multiple, never empty
        chunks = max(1, -(-size // CHUNK_SIZE))
        assert len(blob) - payload_start(blob) == size + 16 * chunks


def test_wrong_identity() -> None:
    released, error = attempt(seal(PLAIN), [BOB, CAROL])
    assert isinstance(error, NoIdentityMatch) and released == b""
    assert str(error).startswith("no identity matches")
    assert_no_secret(error, BOB.encode(), CAROL.encode())
    _, error = attempt(seal(PLAIN), [ScryptIdentity.from_str("hunter2")])
    assert isinstance(error, NoIdentityMatch)
    assert_no_secret(error, "hunter2")


@pytest.mark.parametrize("chunk", [0, 1, 2])
@pytest.mark.parametrize("where", ["first", "middle", "tag"])
def test_flipped_byte_in_any_chunk(chunk: int, where: str) -> None:
    blob = bytearray(seal(PLAIN))
    start = payload_start(bytes(blob)) + chunk * ENCRYPTED_CHUNK_SIZE
    end = min(start + ENCRYPTED_CHUNK_SIZE, len(blob))
    blob[{"first": start, "middle": (start + end) // 2, "tag": end - 1}[where]] ^= 0x01
    released, error = attempt(bytes(blob))
    assert isinstance(error, PayloadError)
    assert released == PLAIN[: chunk * CHUNK_SIZE]  # the chunks before it, nothing of it


def test_flipped_payload_nonce() -> None:
    blob = bytearray(seal(PLAIN))
    blob[payload_start(bytes(blob)) - 1] ^= 0x80
    released, error = attempt(bytes(blob))
    assert isinstance(error, PayloadError) and released == b""


@pytest.mark.parametrize("cut", [1, 17, 100, ENCRYPTED_CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE + 1,
                                 2 * ENCRYPTED_CHUNK_SIZE - 1])
def test_truncated(cut: int) -> None:
    blob = seal(PLAIN)
    released, error = attempt(blob[: payload_start(blob) + cut])
    assert isinstance(error, PayloadError)
    whole = cut // ENCRYPTED_CHUNK_SIZE
    assert released == PLAIN[: whole * CHUNK_SIZE]


@pytest.mark.parametrize("size", [len(PLAIN), 2 * CHUNK_SIZE])
def test_dropped_last_chunk(size: int) -> None:
    blob = seal(PLAIN[:size])
    chunks = -(-size // CHUNK_SIZE)
    last = payload_start(blob) + (chunks - 1) * ENCRYPTED_CHUNK_SIZE
    released, error = attempt(blob[:last])
    assert isinstance(error, PayloadError)
    assert released == PLAIN[: (chunks - 1) * CHUNK_SIZE]  # authenticated, never the end
    assert "truncated" in str(error)


def test_trailing_data_and_reordered_chunks() -> None:
    blob = seal(PLAIN)
    released, error = attempt(blob + b"\x00")
    assert isinstance(error, PayloadError) and released == PLAIN[: 2 * CHUNK_SIZE]
    start = payload_start(blob)
    c0 = blob[start : start + ENCRYPTED_CHUNK_SIZE]
    c1 = blob[start + ENCRYPTED_CHUNK_SIZE : start + 2 * ENCRYPTED_CHUNK_SIZE]
    swapped = blob[:start] + c1 + c0 + blob[start + 2 * ENCRYPTED_CHUNK_SIZE :]
    released, error = attempt(swapped)
    assert isinstance(error, PayloadError) and released == b""


def handmade(chunks: list[tuple[bytes, bool]]) -> bytes:
    """An age file for ALICE whose payload chunks (plaintext, last flag) we choose freely."""
    file_key, nonce = os.urandom(16), os.urandom(NONCE_SIZE)
    aead = ChaCha20Poly1305(payload_key(file_key, nonce))
    body = b"".join(aead.encrypt(i.to_bytes(11, "big") + bytes([last]), plain, None)
                    for i, (plain, last) in enumerate(chunks))
    return serialize_header([wrap_file_key(file_key, ALICE.recipient)], file_key) + nonce + body


def test_empty_final_chunk_after_data_is_refused() -> None:
    first = PLAIN[:CHUNK_SIZE]
    released, error = attempt(handmade([(first, False), (b"", True)]))
    assert isinstance(error, PayloadError) and "empty" in str(error)
    assert released == first
    assert attempt(handmade([(b"", True)])) == (b"", None)  # only an empty payload may
    assert attempt(handmade([(first, False), (b"x", True)])) == (first + b"x", None)


def test_header_tampering() -> None:
    blob = seal(PLAIN, ALICE, BOB)
    mac_line = blob.index(b"\n--- ") + 5
    tampered = bytearray(blob)
    tampered[mac_line] = ord("A") if blob[mac_line] != ord("A") else ord("B")
    released, error = attempt(bytes(tampered))
    assert isinstance(error, (HeaderMacError, HeaderError)) and released == b""
    grease = blob.replace(b"\n--- ", b"\n-> grease\n\n--- ", 1)
    released, error = attempt(grease)
    assert isinstance(error, HeaderMacError) and released == b""
    released, error = attempt(b"age-encryption.org/v2\n" + blob[22:])
    assert isinstance(error, HeaderError)


def test_sticky_failure_and_split_independence() -> None:
    blob = bytearray(seal(PLAIN))
    blob[payload_start(bytes(blob)) + ENCRYPTED_CHUNK_SIZE + 10] ^= 1
    for step in (1 << 20, 7_777, ENCRYPTED_CHUNK_SIZE):
        decryptor = AgeDecryptor([ALICE])
        released = bytearray()
        with pytest.raises(PayloadError):
            for i in range(0, len(blob), step):
                released += decryptor.update(blob[i : i + step])
            decryptor.finalize()
        assert released == PLAIN[:CHUNK_SIZE]
        with pytest.raises(PayloadError):
            decryptor.finalize()


def test_rewrap_header_rotates_keys_without_touching_the_payload() -> None:
    old = seal(PLAIN, ALICE)
    new_header, offset = rewrap_header(io.BytesIO(old), [ALICE], [BOB.recipient, CAROL.recipient])
    rotated = new_header + old[offset:]
    assert hashlib.sha256(rotated[len(new_header) :]).digest() == \
        hashlib.sha256(old[offset:]).digest()
    _, error = attempt(rotated, [ALICE])
    assert isinstance(error, NoIdentityMatch)
    for identity in (BOB, CAROL):
        released, error = attempt(rotated, [identity])
        assert error is None and released == PLAIN
    streamed = io.BytesIO()
    rewrap(io.BytesIO(rotated), streamed, [CAROL], [ALICE.recipient])
    back = streamed.getvalue()
    assert back[payload_start(back) - NONCE_SIZE :] == old[offset:]
    assert attempt(back, [ALICE]) == (PLAIN, None)
    _, error = attempt(back, [BOB])
    assert isinstance(error, NoIdentityMatch)


def test_rewrap_refusals() -> None:
    blob = seal(PLAIN, ALICE)
    with pytest.raises(NoIdentityMatch):
        rewrap_header(io.BytesIO(blob), [BOB], [CAROL.recipient])
    with pytest.raises(InvalidKey):
        rewrap_header(io.BytesIO(blob), [ALICE], [CAROL.recipient, ScryptRecipient.from_str("x")])
    with pytest.raises(InvalidKey):
        rewrap_header(io.BytesIO(blob), [ALICE], [])
    with pytest.raises(HeaderError):
        rewrap_header(io.BytesIO(seal(PLAIN, ALICE, armor=True)), [ALICE], [BOB.recipient])


def test_memory_is_bounded() -> None:
    """32 MiB through encrypt and decrypt in 1 MiB pieces: peak allocation stays small."""
    piece = bytes(1 << 20)
    tracemalloc.start()
    try:
        encryptor = AgeEncryptor([ALICE.recipient])
        decryptor = AgeDecryptor([ALICE])
        digest = hashlib.sha256()
        for _ in range(32):
            digest.update(decryptor.update(encryptor.update(piece)))
        digest.update(decryptor.update(encryptor.finalize()))
        digest.update(decryptor.finalize())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.digest() == hashlib.sha256(piece * 32).digest()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"
