"""Native checksums: what each store reports, when datamove trusts it, and what a
mismatch means. sha256 stays the truth; a native checksum is an extra, cheap check.

* CRC32C is the Castagnoli CRC (RFC 3720 check values), fast enough to stream.
* ``datamove verify`` in checksum mode settles an object by the store's own
  checksum when it is trustworthy (GCS crc32c/md5Hash, an Azure Content-MD5 the
  service computed, S3's sha256 and ETag MD5), without reading the destination;
  otherwise (an Azure blob committed from blocks, whose Content-MD5 is only a
  client's claim) it reads the bytes back.
* A native checksum that disagrees with the source is a failure, even if the
  stored bytes happen to be right.
* GCS composite objects have no md5Hash; their crc32c still covers the object.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from datamove.checksum import Crc32c, StreamHasher, native_algo, same_checksum
from datamove.manifest.model import VerifyMode
from datamove.pipeline.march import Action, DatasetJob, PlanItem
from datamove.pipeline.transfer import ObjectResult, TransferSettings, check_object, copy_object
from datamove.stores.core import Entry, KeyFilter, Location, stat

from .backends import Backend, backend_of

PART = 5 * 1024 * 1024


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


# --- the algorithms ------------------------------------------------------------------

def test_crc32c_check_values() -> None:
    crc = Crc32c()
    crc.update(b"123456789")
    assert crc.value == 0xE3069283  # the CRC-32C check value
    zeros = Crc32c()
    zeros.update(memoryview(bytearray(32)))  # RFC 3720 B.4: 32 bytes of zeros
    assert zeros.value == 0x8A9136AA
    split = Crc32c()
    for piece in (b"1234", b"", b"56789"):
        split.update(piece)
    assert split.value == crc.value
    assert StreamHasher(("crc32c",)).native("crc32c") == "crc32c:AAAAAA=="


def test_crc32c_is_the_c_implementation() -> None:
    """google-crc32c falls back to pure Python, a thousand times slower, when its C
    extension is missing; a checksum-verified GCS copy would crawl. A property of
    the install, asserted as one (speed itself is for benchmarks/)."""
    import google_crc32c

    assert google_crc32c.implementation == "c"
    data = os.urandom(1024 * 1024 + 3)
    crc = Crc32c()
    for at in range(0, len(data), 65_536):
        crc.update(memoryview(data)[at:at + 65_536])
    assert crc.value == google_crc32c.value(data)


def test_same_checksum_needs_the_same_algorithm() -> None:
    assert same_checksum("sha256:AAAA-3", '"sha256:AAAA"')  # a composite's -N is optional
    assert not same_checksum("md5:AAAA", "crc32c:AAAA")
    assert not same_checksum("md5:AAAA", "md5:AAAB")
    assert native_algo("crc32c:abc=") == "crc32c" and native_algo("0f" * 32) is None


# --- verify by native checksum, per store -----------------------------------------------

def job_for(tmp_path: Path, backend: Backend, mode: VerifyMode = VerifyMode.checksum
            ) -> DatasetJob:
    return DatasetJob("d", Location.of(str(tmp_path / "src")), backend.loc, KeyFilter(), mode)


def put_source(tmp_path: Path, key: str, data: bytes) -> PlanItem:
    path = tmp_path / "src" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return PlanItem(Action.copy, key, Entry(key, len(data), path.stat().st_mtime), None, "new")


def check(job: DatasetJob, item: PlanItem) -> ObjectResult:
    return check_object(job, PlanItem(Action.check, item.key, item.source, None, "check"))


@pytest.mark.parametrize(("kind", "size", "algo", "checked_by"), [
    ("gcs", 1000, "crc32c", "crc32c"), ("gcs", PART + 1, "crc32c", "crc32c"),
    ("azure", 1000, "md5", "md5"),
    ("s3", 1000, "md5", "md5"),  # the ETag S3 computed (moto keeps no single-PUT sha256)
    ("s3", PART + 1, "sha256", "sha256"),  # composite of the parts' sha256
])
def test_checksum_mode_settles_by_the_stores_checksum(
        tmp_path: Path, request: pytest.FixtureRequest, kind: str, size: int, algo: str,
        checked_by: str) -> None:
    backend = backend_of(request, kind, tmp_path)
    job = job_for(tmp_path, backend)
    data = os.urandom(size)
    item = put_source(tmp_path, "obj.bin", data)
    copied = copy_object(job, item, TransferSettings(part_size=PART, retries=0))
    assert copied.native_checksum and copied.native_checksum.startswith(f"{algo}:")
    result = check(job, item)
    assert result.status == "matched"
    assert result.native_checksum and result.native_checksum.startswith(f"{checked_by}:")
    if checked_by == algo:
        assert result.native_checksum == copied.native_checksum
    if algo == "crc32c":  # the store's value is the CRC of the bytes, as we compute it
        crc = Crc32c()
        crc.update(data)
        assert copied.native_checksum == f"crc32c:{b64(crc.digest())}"


def test_azure_block_blob_md5_is_a_claim_and_is_not_trusted(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A blob committed from blocks has only the Content-MD5 a client set: even a
    wrong one does not decide; the bytes are read back (and they are right)."""
    from azure.storage.blob import ContentSettings
    from fsspec.asyn import sync

    backend = backend_of(request, "azure", tmp_path)
    job = job_for(tmp_path, backend)
    item = put_source(tmp_path, "blocks.bin", os.urandom(PART + 1))
    copied = copy_object(job, item, TransferSettings(part_size=PART, retries=0))
    assert copied.native_checksum is None  # nothing the service computed to record
    client = backend.fs.service_client.get_blob_client(backend.bucket, "data/blocks.bin")
    sync(backend.fs.loop, client.set_http_headers,
         ContentSettings(content_md5=bytearray(hashlib.md5(b"a lie").digest())))
    info = stat(backend.loc, "blocks.bin")
    assert info is not None and "md5" in info.native and not info.native_trusted
    result = check(job, item)
    assert (result.status, result.native_checksum) == ("matched", None)  # read back


def test_a_native_checksum_that_disagrees_is_a_failure(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A single Put Blob's Content-MD5 is trusted, so one that disagrees with the
    source fails verification, even though the stored bytes are the source's."""
    from azure.storage.blob import ContentSettings
    from fsspec.asyn import sync

    backend = backend_of(request, "azure", tmp_path)
    job = job_for(tmp_path, backend)
    data = os.urandom(2000)
    item = put_source(tmp_path, "one.bin", data)
    copy_object(job, item, TransferSettings(part_size=PART, retries=0))
    client = backend.fs.service_client.get_blob_client(backend.bucket, "data/one.bin")
    sync(backend.fs.loop, client.set_http_headers,
         ContentSettings(content_md5=bytearray(hashlib.md5(b"other").digest())))
    assert backend.get("one.bin") == data
    result = check(job, item)
    assert result.status == "differs" and "md5 differs" in (result.error or "")
    # full mode reads the bytes and does not look at native checksums
    full = check_object(job_for(tmp_path, backend, VerifyMode.full),
                        PlanItem(Action.check, "one.bin", item.source, None, "check"))
    assert full.status == "matched"


def test_gcs_composed_objects_verify_by_crc32c(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    backend = backend_of(request, "gcs", tmp_path)
    first, second = os.urandom(300_000), os.urandom(200_001)
    backend.put("p1", first)
    backend.put("p2", second)
    backend.fs.merge(f"{backend.prefix}/whole.bin", [f"{backend.prefix}/p1",
                                                     f"{backend.prefix}/p2"])
    info = stat(backend.loc, "whole.bin")
    # Real GCS keeps no md5Hash for a composed object and sets componentCount; the
    # emulator computes an MD5 anyway, so only the crc32c path is proven here.
    assert info is not None and "crc32c" in info.native
    job = DatasetJob("d", Location.of(str(tmp_path / "src")), backend.loc, KeyFilter(),
                     VerifyMode.checksum)
    item = put_source(tmp_path, "whole.bin", first + second)
    result = check(job, item)
    assert result.status == "matched" and result.native_checksum == info.native["crc32c"]
    bad = put_source(tmp_path, "whole.bin", first + bytes([second[0] ^ 1]) + second[1:])
    assert check(job, bad).status == "differs"


def test_s3_etag_md5_of_a_third_party_upload_is_used(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """An object some other tool uploaded in one PUT, with no ChecksumSHA256: its
    ETag is the MD5 S3 computed. (moto 5.2 drops a client's ChecksumCRC32C, so
    the CRC32C path is not proven against it: docs/BACKENDS.md.)"""
    backend = backend_of(request, "s3", tmp_path)
    data = os.urandom(70_000)
    backend.server.client().put_object(Bucket=backend.bucket, Key="data/third.bin", Body=data)
    info = stat(backend.loc, "third.bin")
    assert info is not None and info.checksum_sha256 is None
    assert info.native["md5"] == f"md5:{b64(hashlib.md5(data).digest())}"
    job = job_for(tmp_path, backend)
    result = check(job, put_source(tmp_path, "third.bin", data))
    assert result.status == "matched" and result.native_checksum == info.native["md5"]
    other = put_source(tmp_path, "third.bin", bytes([data[0] ^ 1]) + data[1:])
    assert check(job, other).status == "differs"
