"""The age STREAM payload: 64 KiB ChaCha20-Poly1305 chunks with a last-chunk flag.

After the header comes a 16-byte random nonce; the payload key is
HKDF-SHA256(file key, salt = nonce, info "payload"). Plaintext is cut into 64 KiB
chunks, each sealed with the 12-byte nonce ``counter (11 bytes, big-endian) ||
flag`` where the flag is 1 only on the last chunk. The flag is what makes
truncation detectable: a stream that ends without a flagged chunk was cut short.
The last chunk may be full (so the encryptor must see one byte past a full chunk
before it knows whether that chunk is the last) and is empty only when the whole
payload is empty.

Both sides are push-style (``update``/``finalize``) so they fit any pipeline, and
hold at most one chunk of input besides what the caller passes in: memory does not
grow with the size of the object. ``update_chunks`` returns the output as a list of
per-chunk pieces: joining them into one large buffer per call costs more than the
cipher on some allocator states (glibc returning and re-faulting pages), so hot
paths write the pieces as they are.

The decryptor never returns plaintext of a chunk that has not authenticated, and its
output does not depend on how the input is split. What it releases before failing
matches the reference implementation (and the ``payload`` hashes of the test
vectors): every chunk that authenticated, in order. If a failure is detected after
some chunks of the same ``update`` call already authenticated, that plaintext is
returned and the error is raised by the next call (``update`` or ``finalize``); a
caller must therefore always call ``finalize`` before trusting the result.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from datamove.age.errors import PayloadError
from datamove.age.header import hkdf

NONCE_SIZE = 16
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
_MAX_COUNTER = (1 << 88) - 1


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return hkdf(file_key, nonce, b"payload")


def _nonce(counter: int, last: bool) -> bytes:
    if counter > _MAX_COUNTER:
        raise PayloadError("payload too large: STREAM counter overflow")
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class StreamEncryptor:
    """Encrypt a payload; ``update`` returns ciphertext as soon as chunks are sealed."""

    def __init__(self, file_key: bytes, nonce: bytes):
        if len(nonce) != NONCE_SIZE:
            raise ValueError("the payload nonce is 16 bytes")
        self._aead = ChaCha20Poly1305(payload_key(file_key, nonce))
        self._counter = 0
        self._pending = bytearray()  # at most one chunk: it might turn out to be the last
        self._done = False

    def _seal(self, chunk: bytes | memoryview, last: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._counter, last), chunk, None)
        self._counter += 1
        return sealed

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        return b"".join(self.update_chunks(data))

    def update_chunks(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Like ``update`` but one piece per sealed chunk: no large join buffer."""
        if self._done:
            raise ValueError("update() after finalize()")
        view = memoryview(data).cast("B")
        if len(self._pending) + len(view) <= CHUNK_SIZE:
            self._pending += view
            return []
        out = []
        take = CHUNK_SIZE - len(self._pending)
        self._pending += view[:take]
        out.append(self._seal(self._pending, last=False))  # more data follows: not last
        pos = take
        while len(view) - pos > CHUNK_SIZE:
            out.append(self._seal(view[pos : pos + CHUNK_SIZE], last=False))
            pos += CHUNK_SIZE
        self._pending = bytearray(view[pos:])
        return out

    def finalize(self) -> bytes:
        """Seal the last (flagged) chunk: full, partial, or empty for an empty payload."""
        if self._done:
            raise ValueError("finalize() called twice")
        self._done = True
        sealed = self._seal(self._pending, last=True)
        self._pending = bytearray()
        return sealed


class StreamDecryptor:
    """Decrypt a payload, releasing each chunk's plaintext only once it authenticates."""

    def __init__(self, file_key: bytes, nonce: bytes):
        if len(nonce) != NONCE_SIZE:
            raise ValueError("the payload nonce is 16 bytes")
        self._aead = ChaCha20Poly1305(payload_key(file_key, nonce))
        self._counter = 0
        self._pending = bytearray()  # a partial chunk, or a full one that failed as non-last
        self._held_full = False  # pending is a full chunk that only a last flag could open
        self._error: PayloadError | None = None
        self._finished = False

    def _open(self, chunk: bytes | bytearray | memoryview, last: bool) -> bytes | None:
        try:
            return self._aead.decrypt(_nonce(self._counter, last), chunk, None)
        except InvalidTag:
            return None

    def _fail(self, message: str) -> PayloadError:
        self._error = PayloadError(message)
        return self._error

    def _check(self) -> None:
        if self._error is not None:
            raise PayloadError(str(self._error))
        if self._finished:
            raise ValueError("the decryptor is finished")

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        return b"".join(self.update_chunks(data))

    def update_chunks(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Like ``update`` but one piece per authenticated chunk: no large join buffer."""
        self._check()
        out: list[bytes] = []
        try:
            self._consume(memoryview(data).cast("B"), out)
        except PayloadError:
            if not out:
                raise
        return out

    def _consume(self, view: memoryview, out: list[bytes]) -> None:
        # Chunks are opened straight from the caller's buffer; only a partial chunk is
        # copied aside. (Growing and shrinking a 1 MiB buffer per call made glibc hand
        # memory back and forth to the kernel, which cost more than the crypto.)
        if self._held_full:
            if view:  # bytes follow a full chunk that did not open as a non-last one
                plain = self._open(self._pending, last=True)
                if plain is None:
                    raise self._fail("payload chunk failed to authenticate")
                out.append(plain)
                raise self._fail("trailing data after the final payload chunk")
            return
        pos = 0
        if self._pending:
            need = ENCRYPTED_CHUNK_SIZE - len(self._pending)
            if len(view) < need:
                self._pending += view
                return
            self._pending += view[:need]
            pos = need
            if not self._full_chunk(bytes(self._pending), out):
                return self._consume(view[pos:], out)
        while len(view) - pos >= ENCRYPTED_CHUNK_SIZE:
            chunk = view[pos : pos + ENCRYPTED_CHUNK_SIZE]
            pos += ENCRYPTED_CHUNK_SIZE
            if not self._full_chunk(chunk, out):
                return self._consume(view[pos:], out)
        self._pending = bytearray(view[pos:])
        return None

    def _full_chunk(self, chunk: bytes | memoryview, out: list[bytes]) -> bool:
        """Open a full chunk as a non-last one; if it will not, hold it (maybe the last)."""
        plain = self._open(chunk, last=False)
        if plain is None:
            self._pending = bytearray(chunk)
            self._held_full = True
            return False
        out.append(plain)
        self._counter += 1
        return True

    def finalize(self) -> bytes:
        """Open the last chunk; raise ``PayloadError`` if the stream is not complete."""
        self._check()
        self._finished = True
        pending, self._pending = bytes(self._pending), bytearray()
        if not pending:
            raise self._fail("payload is truncated: no final chunk")
        if len(pending) == TAG_SIZE and self._counter > 0:
            raise self._fail("final payload chunk is empty")
        plain = self._open(pending, last=True)
        if plain is None:
            raise self._fail("final payload chunk failed to authenticate or is truncated")
        return plain
