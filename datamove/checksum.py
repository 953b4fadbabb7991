"""One-pass hashing of a byte stream.

The plaintext sha256 is the source of truth for every object (DESIGN: "checksums
are ours"). ``PartHasher`` additionally keeps a sha256 per fixed-size part, which
is what S3 multipart uploads report as a composite checksum, so a multipart
destination can be checked against the source without downloading it.

Stores' *native* checksums (GCS crc32c, Azure Content-MD5, S3 ChecksumSHA256)
are written ``<algo>:<base64>`` everywhere in datamove (ledger, results), so a
value always says what it is; ``NativeHasher`` computes the one a destination
reports while the bytes stream past, and ``same_checksum`` compares two.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import google_crc32c

READ_SIZE = 1024 * 1024
NATIVE_ALGOS = ("crc32c", "md5", "sha256", "crc32", "crc64nvme")
"""Algorithms of stores' native checksums, as named in ``<algo>:<base64>`` values."""


class Crc32c:
    """CRC32C (Castagnoli), the checksum GCS keeps for every object and S3 offers.

    The C implementation runs at several GB/s; a pure-Python CRC would be a
    thousand times slower, so google-crc32c (which gcsfs needs anyway) is a
    dependency. It takes only ``bytes``, hence the copy of each chunk.
    """

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = google_crc32c.extend(self.value, bytes(data))

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")  # GCS and S3: big-endian, then base64


class Crc32:
    """CRC32 (ISO-HDLC, zlib's), one of S3's checksum algorithms; zlib is C."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")  # S3: big-endian, then base64


COMPUTABLE = ("crc32c", "md5", "sha256", "crc32")
"""Native algorithms datamove computes. S3's CRC64NVME is read and recorded, not
computed: the one fast implementation is awscrt (not a dependency), and a
pure-Python CRC64 would be about a thousand times slower than the copy."""


def new_native_hasher(algo: str) -> Crc32c | Crc32 | hashlib._Hash:
    """A hasher for a native checksum algorithm (one of ``COMPUTABLE``)."""
    if algo == "crc32c":
        return Crc32c()
    if algo == "crc32":
        return Crc32()
    if algo == "md5":
        return hashlib.md5(usedforsecurity=False)
    if algo == "sha256":
        return hashlib.sha256()
    raise ValueError(f"cannot compute native checksum algorithm {algo!r}; one of {COMPUTABLE}")


class StreamHasher:
    """sha256 and byte count of everything fed to it, plus any native checksums
    named in ``natives`` (what the destination store reports, see ``native``)."""

    def __init__(self, natives: tuple[str, ...] = ()) -> None:
        self._sha256 = hashlib.sha256()
        self._natives = {algo: new_native_hasher(algo) for algo in natives if algo != "sha256"}
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._sha256.update(data)
        for hasher in self._natives.values():
            hasher.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def native(self, algo: str) -> str:
        """``<algo>:<base64>`` of everything so far, for an algorithm asked for."""
        if algo == "sha256":
            return native_value("sha256", self._sha256.digest())
        return native_value(algo, self._natives[algo].digest())


def native_value(algo: str, digest: bytes) -> str:
    """The ``<algo>:<base64>`` form datamove records native checksums in."""
    return f"{algo}:{b64(digest)}"


def native_algo(value: str | None) -> str | None:
    """The algorithm of a ``<algo>:<value>`` checksum (None for other forms)."""
    if not value or ":" not in value:
        return None
    algo = value.split(":", 1)[0]
    return algo if algo in NATIVE_ALGOS else None


def same_checksum(stored: str, expected: str) -> bool:
    """Do two checksums say the same? Quotes (ETags) and a composite's ``-N`` part
    count are ignored, since S3 may or may not suffix a composite with it; two
    values of different algorithms are never the same."""
    a, b = stored.strip('"'), expected.strip('"')
    if native_algo(a) != native_algo(b):
        return False
    return a.split("-")[0] == b.split("-")[0]


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


def hash_stream(stream: BinaryIO, natives: tuple[str, ...] = ()) -> StreamHasher:
    """Hash a readable stream to its end with bounded memory (sha256, plus the
    native checksums named in ``natives``)."""
    hasher = StreamHasher(natives)
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


class PartHasher:
    """The sha256 of each ``part_size`` part of a stream fed in chunks of any size
    (S3 multipart uploads and part copies checksum each part)."""

    def __init__(self, part_size: int):
        self.part_size = part_size
        self.digests: list[bytes] = []
        self._part = hashlib.sha256()
        self._filled = 0

    def update(self, chunk: bytes | memoryview) -> None:
        while chunk:
            take = min(len(chunk), self.part_size - self._filled)
            self._part.update(chunk[:take])
            self._filled, chunk = self._filled + take, chunk[take:]
            if self._filled == self.part_size:
                self.digests.append(self._part.digest())
                self._part, self._filled = hashlib.sha256(), 0

    def finish(self) -> list[bytes]:
        """Every part's digest, the last (shorter) one included."""
        if self._filled:
            self.digests.append(self._part.digest())
            self._part, self._filled = hashlib.sha256(), 0
        return self.digests


def composite_of_stream(stream: BinaryIO, part_size: int) -> tuple[str, str, int]:
    """Whole sha256, composite-of-parts checksum and size of a stream, in one pass."""
    whole, parts = StreamHasher(), PartHasher(part_size)
    for chunk in read_chunks(stream):
        whole.update(chunk)
        parts.update(chunk)
    return whole.sha256, composite_sha256(parts.finish()), whole.size
