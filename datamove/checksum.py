"""One-pass hashing of a byte stream.

The plaintext sha256 is the source of truth for every object (DESIGN: "checksums
are ours"). ``PartHasher`` additionally keeps a sha256 per fixed-size part, which
is what S3 multipart uploads report as a composite checksum, so a multipart
destination can be checked against the source without downloading it.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterable, Iterator
from typing import BinaryIO

READ_SIZE = 1024 * 1024


class StreamHasher:
    """sha256 and byte count of everything fed to it."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._sha256.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


_buffers = threading.local()


def chunk_buffer() -> memoryview:
    """This thread's reusable read buffer: no allocation (and no 1 MiB mmap and
    munmap) per read, which dominates the cost of copying many small files."""
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = memoryview(bytearray(READ_SIZE))
    return buffer


def read_chunks(stream: BinaryIO) -> Iterator[memoryview]:
    """Chunks of a stream as views of one reused buffer; each is valid only until
    the next one is produced, so consumers must copy what they keep."""
    buffer = chunk_buffer()
    while n := stream.readinto(buffer):
        yield buffer[:n]


def hash_stream(stream: BinaryIO) -> StreamHasher:
    """Hash a readable stream to its end with bounded memory."""
    hasher = StreamHasher()
    for chunk in read_chunks(stream):
        hasher.update(chunk)
    return hasher


def composite_sha256(part_digests: Iterable[bytes]) -> str:
    """S3's composite checksum of a multipart object: sha256 over the parts' raw
    sha256 digests, base64, suffixed with ``-<parts>``."""
    digests = list(part_digests)
    combined = hashlib.sha256(b"".join(digests)).digest()
    return f"{b64(combined)}-{len(digests)}"


def b64(digest: bytes) -> str:
    """The base64 form S3 uses for checksum headers."""
    return base64.b64encode(digest).decode()


def b64_sha256(hex_digest: str) -> str:
    return b64(bytes.fromhex(hex_digest))


def composite_of_stream(stream: BinaryIO, part_size: int) -> tuple[str, str, int]:
    """Whole sha256, composite-of-parts checksum and size of a stream, in one pass."""
    whole = StreamHasher()
    parts: list[bytes] = []
    while True:
        part = hashlib.sha256()
        filled = 0
        while filled < part_size:
            chunk = stream.read(min(READ_SIZE, part_size - filled))
            if not chunk:
                break
            part.update(chunk)
            whole.update(chunk)
            filled += len(chunk)
        if filled:
            parts.append(part.digest())
        if filled < part_size:
            break
    return whole.sha256, composite_sha256(parts), whole.size
