"""Nothing partial is ever visible: writes that fail or are killed half-way leave nothing
under the final name, on a local disk and on S3 (a real moto_server), and a rerun
completes the copy with the source's exact bytes.

Faults are real: exceptions raised inside the writer block, ``SIGKILL`` sent to a
running ``datamove run`` process, bytes flipped on disk, a source that grows while
it is being copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from datamove.checksum import b64
from datamove.errors import SourceChanged, VerifyMismatch
from datamove.manifest.model import VerifyMode
from datamove.pipeline.march import Action, DatasetJob, PlanItem
from datamove.pipeline.transfer import (
    Batch,
    TransferSettings,
    copy_object,
    run_batch,
    verify_destination,
)
from datamove.stores.core import (
    META_PART_SIZE,
    META_SHA256,
    PARTIAL_MARKER,
    KeyFilter,
    Location,
    list_entries,
)
from datamove.stores.writers import atomic_writer
from tests.conftest import AWS_ENV, REPO, cli, file_sha, last_json, s3_location, write_manifest

MiB = 1024 * 1024
PART = 5 * MiB


# --- helpers -------------------------------------------------------------------------

def data_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_sha(client, bucket: str, key: str) -> str:  # type: ignore[no-untyped-def]
    digest = hashlib.sha256()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    while chunk := body.read(MiB):
        digest.update(chunk)
    return digest.hexdigest()


def partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if PARTIAL_MARKER in p.name]


def make_big_file(path: Path, size: int, seed: int) -> str:
    """Write ``size`` random bytes in 1 MiB chunks (flat memory); return their sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(MiB, left))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def assert_no_s3_object(client, bucket: str, key: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as err:
        client.head_object(Bucket=bucket, Key=key)
    assert err.value.response["Error"]["Code"] in ("404", "NoSuchKey"), err.value.response
    listed = client.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    assert [o["Key"] for o in listed if o["Key"] == key] == []


def uploads_for(client, bucket: str, key: str) -> list[dict]:  # type: ignore[no-untyped-def]
    found = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    return [u for u in found if u["Key"] == key]


def parts_of(client, bucket: str, key: str, upload_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", [])


def composite(data: bytes, part_size: int) -> str:
    """S3's composite SHA256 of a multipart object, computed independently here."""
    digests = [hashlib.sha256(data[i:i + part_size]).digest()
               for i in range(0, len(data), part_size)]
    return f"{b64(hashlib.sha256(b''.join(digests)).digest())}-{len(digests)}"


def base(checksum: str) -> str:
    return checksum.strip('"').split("-")[0]


class Boom(Exception):
    pass


# --- 1. exception half-way, local ----------------------------------------------------

@pytest.mark.parametrize("exc_type", [Boom, KeyboardInterrupt])
def test_local_exception_half_way_leaves_nothing(tmp_path, exc_type):
    data = data_of(3 * MiB + 17, seed=1)
    final = tmp_path / "sub" / "obj.bin"
    with pytest.raises(exc_type), \
            atomic_writer(Location.of(str(tmp_path)), "sub/obj.bin", part_size=PART) as writer:
        writer.write(data[: len(data) // 2])
        # Half the bytes are on disk, but only under a temporary name.
        written = partials(tmp_path)
        assert len(written) == 1 and written[0].stat().st_size == len(data) // 2
        assert not final.exists()
        raise exc_type("half-way")
    assert not final.exists()
    assert partials(tmp_path) == []
    assert list(list_entries(Location.of(str(tmp_path)))) == []


def test_local_exception_half_way_keeps_the_previous_version(tmp_path):
    final = tmp_path / "sub" / "obj.bin"
    final.parent.mkdir()
    old = data_of(MiB, seed=2)
    final.write_bytes(old)
    with pytest.raises(Boom), \
            atomic_writer(Location.of(str(tmp_path)), "sub/obj.bin", part_size=PART) as writer:
        writer.write(data_of(2 * MiB, seed=3))
        raise Boom
    assert final.read_bytes() == old
    assert partials(tmp_path) == []


def test_local_commit_publishes_exact_bytes_and_mtime(tmp_path):
    data = data_of(7 * MiB + 3, seed=4)
    final = tmp_path / "sub" / "obj.bin"
    mtime = 1_600_000_000.25
    with atomic_writer(Location.of(str(tmp_path)), "sub/obj.bin", part_size=PART) as writer:
        for i in range(0, len(data), MiB):
            writer.write(data[i:i + MiB])
        assert not final.exists()  # nothing visible before commit
        committed = writer.commit(sha(data), mtime)
    assert final.read_bytes() == data
    assert committed.size == len(data)
    assert final.stat().st_mtime == pytest.approx(mtime, abs=1e-3)
    assert partials(tmp_path) == []


def test_local_commit_without_mtime_leaves_the_write_time(tmp_path):
    before = time.time() - 5
    with atomic_writer(Location.of(str(tmp_path)), "a.bin", part_size=PART) as writer:
        writer.write(b"abc")
        writer.commit(sha(b"abc"), None)
    assert (tmp_path / "a.bin").read_bytes() == b"abc"
    assert (tmp_path / "a.bin").stat().st_mtime >= before


def test_local_readback_catches_bytes_damaged_before_commit(tmp_path):
    """Bytes that changed on disk after they were written never reach the final name."""
    old, data = data_of(MiB, seed=40), data_of(3 * MiB, seed=41)
    final = tmp_path / "obj.bin"
    final.write_bytes(old)
    with pytest.raises(VerifyMismatch, match="read back"), \
            atomic_writer(Location.of(str(tmp_path)), "obj.bin", part_size=PART,
                          readback=True) as writer:
        writer.write(data)
        (partial,) = partials(tmp_path)
        with open(partial, "r+b") as f:  # damage one byte of the temporary file
            f.seek(2 * MiB + 1)
            f.write(bytes([data[2 * MiB + 1] ^ 0x10]))
        writer.commit(sha(data), None)
    assert final.read_bytes() == old
    assert partials(tmp_path) == []


def test_local_readback_reports_the_hash_of_the_stored_bytes(tmp_path):
    data = data_of(3 * MiB + 1, seed=42)
    with atomic_writer(Location.of(str(tmp_path)), "obj.bin", part_size=PART,
                       readback=True) as writer:
        writer.write(data)
        committed = writer.commit(sha(data), None)
    assert committed.reread and committed.native == committed.expected == sha(data)
    assert (tmp_path / "obj.bin").read_bytes() == data


def test_local_readback_catches_bytes_appended_before_commit(tmp_path):
    """The read-back stops at the file's end, not at the size that was written."""
    data = data_of(4096, seed=43)
    with pytest.raises(VerifyMismatch, match="read back"), \
            atomic_writer(Location.of(str(tmp_path)), "obj.bin", part_size=PART,
                          readback=True) as writer:
        writer.write(data)
        (partial,) = partials(tmp_path)
        with open(partial, "ab") as f:
            f.write(b"x")
        writer.commit(sha(data), None)
    assert not (tmp_path / "obj.bin").exists()
    assert partials(tmp_path) == []


def test_local_copy_carries_no_extended_attribute(tmp_path):
    """docs/FORMAT.md: local copies carry no datamove metadata (the sha256 xattr cost
    a second 4 KiB block per small file on ext4)."""
    with atomic_writer(Location.of(str(tmp_path)), "a.bin", part_size=PART,
                       readback=True) as writer:
        writer.write(b"abc")
        writer.commit(sha(b"abc"), None)
    assert os.listxattr(tmp_path / "a.bin") == []
    assert (tmp_path / "a.bin").read_bytes() == b"abc"


# --- 2. exception half-way, S3 -------------------------------------------------------

SIZES = {"single-put": 3 * MiB + 5, "multipart": 4 * PART + 123_457}  # 5 parts


@pytest.fixture
def bucket(moto_server):
    return moto_server.new_bucket()


def s3_loc(moto_server, bucket: str) -> Location:
    return Location.of(f"s3://{bucket}/pre/", {"endpoint_url": moto_server.endpoint})


@pytest.mark.parametrize("kind", list(SIZES))
def test_s3_exception_half_way_leaves_nothing(moto_server, bucket, kind):
    client = moto_server.client()
    key = "pre/sub/obj.bin"
    data = data_of(SIZES[kind], seed=5)
    half = len(data) // 2  # single-put: under one part; multipart: two whole parts sent
    with pytest.raises(Boom), \
            atomic_writer(s3_loc(moto_server, bucket), "sub/obj.bin", part_size=PART) as writer:
        for i in range(0, half, MiB):
            writer.write(data[i:min(i + MiB, half)])
        open_uploads = uploads_for(client, bucket, key)
        if kind == "multipart":
            # The abort below must have something to abort: two parts are stored
            # (they upload on the writer's part threads, so wait for them).
            assert len(open_uploads) == 1
            deadline = time.monotonic() + 10
            while len(parts_of(client, bucket, key, open_uploads[0]["UploadId"])) < 2 \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(parts_of(client, bucket, key, open_uploads[0]["UploadId"])) == 2
        else:
            assert open_uploads == []
        assert_no_s3_object(client, bucket, key)
        raise Boom("half-way")
    assert_no_s3_object(client, bucket, key)
    assert uploads_for(client, bucket, key) == []


@pytest.mark.parametrize("kind", list(SIZES))
def test_s3_exception_half_way_keeps_the_previous_version(moto_server, bucket, kind):
    client = moto_server.client()
    key = "pre/obj.bin"
    old = data_of(MiB, seed=6)
    client.put_object(Bucket=bucket, Key=key, Body=old)
    data = data_of(SIZES[kind], seed=7)
    with pytest.raises(Boom), \
            atomic_writer(s3_loc(moto_server, bucket), "obj.bin", part_size=PART) as writer:
        writer.write(data[: len(data) // 2])
        raise Boom
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == old
    assert uploads_for(client, bucket, key) == []


@pytest.mark.parametrize("kind", list(SIZES))
def test_s3_commit_publishes_exact_bytes_with_checksums(moto_server, bucket, kind):
    client = moto_server.client()
    key = "pre/sub/obj.bin"
    data = data_of(SIZES[kind], seed=8)
    with atomic_writer(s3_loc(moto_server, bucket), "sub/obj.bin", part_size=PART) as writer:
        for i in range(0, len(data), MiB):
            writer.write(data[i:i + MiB])
        assert_no_s3_object(client, bucket, key)  # nothing visible before commit
        committed = writer.commit(sha(data), None)
    got = client.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert committed.size == len(data)
    assert uploads_for(client, bucket, key) == []
    metadata = got["Metadata"]
    if kind == "single-put":
        assert not committed.multipart
        assert metadata[META_SHA256] == sha(data)
        assert META_PART_SIZE not in metadata
        # native: the ETag S3 computed (MD5 of the bytes it stored); expected: ours.
        assert committed.native and committed.expected
        assert base(committed.native) == base(committed.expected)
        assert committed.expected == "md5:" + b64(hashlib.md5(data, usedforsecurity=False)
                                                  .digest())
    else:
        assert committed.multipart
        assert metadata[META_PART_SIZE] == str(PART)
        assert committed.expected == "sha256:" + composite(data, PART)
        # The store's own composite checksum of the parts it received. moto (5.2)
        # does not return it in the CompleteMultipartUpload response (native is None
        # then), but does report it on HEAD/GET with ChecksumMode.
        if committed.native is not None:
            assert base(committed.native) == base(committed.expected)
        assert got.get("ChecksumSHA256"), "moto stored no checksum for the multipart object"
        assert base("sha256:" + got["ChecksumSHA256"]) == base(committed.expected)


# --- 3. SIGKILL half-way -------------------------------------------------------------

LOCAL_BIG = 300 * MiB
S3_BIG = 64 * MiB  # 13 parts of 5 MiB: enough to kill before, in and after the middle


@pytest.fixture(scope="module")
def big_sources(tmp_path_factory):
    """One 300 MiB source (local kill tests) and one 64 MiB source (S3 kill tests)."""
    root = tmp_path_factory.mktemp("big-sources")
    local_sha = make_big_file(root / "local" / "big.bin", LOCAL_BIG, seed=10)
    s3_sha_ = make_big_file(root / "s3" / "big.bin", S3_BIG, seed=11)
    yield {"local": (root / "local", local_sha), "s3": (root / "s3", s3_sha_)}
    shutil.rmtree(root, ignore_errors=True)


def start_run(manifest: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    with open(tmp_path / "killed.out", "wb") as out, open(tmp_path / "killed.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "datamove.cli", "run", str(manifest), "--no-progress"],
            stdout=out, stderr=err, env={**os.environ, **AWS_ENV}, cwd=REPO)


def wait_then_kill(proc: subprocess.Popen[bytes], ready, tmp_path: Path,  # type: ignore[no-untyped-def]
                   timeout: float = 120, interval: float = 0.002):
    """Poll ``ready()`` until it returns something truthy, then SIGKILL the run."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            state = ready()
            if state:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                assert proc.returncode == -signal.SIGKILL
                return state
            if proc.poll() is not None:
                pytest.fail(f"datamove run ended (exit {proc.returncode}) before the kill point:"
                            f"\n{(tmp_path / 'killed.err').read_text()[-3000:]}")
            time.sleep(interval)
        pytest.fail("the write never reached the kill point")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9], ids=["early", "middle", "late"])
def test_sigkill_local_write_never_visible_and_rerun_completes(tmp_path, big_sources, fraction):
    source_dir, source_sha = big_sources["local"]
    dest = tmp_path / "dest"
    final = dest / "big.bin"
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "big", "source": {"url": str(source_dir)}, "destination": {"url": str(dest)},
         "verify": "checksum"}], engine={"threads": 2})
    threshold = int(LOCAL_BIG * fraction)

    def partial_past_threshold() -> Path | None:
        if not dest.is_dir():
            return None
        if final.exists():  # while the run writes, the final name must not show up at all
            size = final.stat().st_size
            pytest.fail(f"{final}: {size} of {LOCAL_BIG} bytes visible under the final name"
                        if size < LOCAL_BIG else "the copy finished before the kill point; "
                        "the source is too small to catch it on this machine")
        with os.scandir(dest) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                    if PARTIAL_MARKER in entry.name and entry.stat().st_size >= threshold:
                        return Path(entry.path)
        return None

    proc = start_run(manifest, tmp_path)
    try:
        partial = wait_then_kill(proc, partial_past_threshold, tmp_path)

        # Killed mid-write: the bytes so far sit under the temporary name only.
        assert not final.exists(), "a killed write is visible under the final name"
        assert partial.exists()
        assert threshold <= partial.stat().st_size <= LOCAL_BIG
        assert list(list_entries(Location.of(str(dest)))) == []  # a partial is never data

        rerun = cli("run", str(manifest), "--json", "--no-progress")
        assert rerun.returncode == 0, rerun.stderr
        summary = last_json(rerun.stdout)["datasets"]["big"]
        assert summary["copied"] == 1 and summary["failed"] == 0
        assert final.stat().st_size == LOCAL_BIG
        assert file_sha(final) == source_sha
        # The orphan may remain until orphan cleanup exists; it is still not data.
        assert [e.key for e in list_entries(Location.of(str(dest)))] == ["big.bin"]
    finally:  # up to 600 MiB per case: do not leave it in pytest's kept tmp dirs
        shutil.rmtree(dest, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("parts", [1, 3, 6], ids=["early", "middle", "late"])
def test_sigkill_s3_write_never_visible_and_rerun_completes(tmp_path, big_sources,
                                                            moto_server, parts):
    source_dir, source_sha = big_sources["s3"]
    client = moto_server.client()
    bucket = moto_server.new_bucket()
    key = "data/big.bin"
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "big", "source": {"url": str(source_dir)},
         "destination": s3_location(moto_server, bucket, "data/"), "verify": "checksum"}],
        # Parts one at a time, so that the kill lands after a given part (parallel
        # parts killed mid-way: test_resume_parts).
        engine={"threads": 2, "part_size": PART, "part_buffers": 1})

    def upload_with_parts() -> str | None:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        if listed:  # while the run uploads, the key must not show up at all
            size = listed[0]["Size"]
            pytest.fail(f"{key}: {size} of {S3_BIG} bytes visible under the final key"
                        if size < S3_BIG else "the upload finished before the kill point")
        for upload in uploads_for(client, bucket, key):
            if len(parts_of(client, bucket, key, upload["UploadId"])) >= parts:
                return upload["UploadId"]
        return None

    proc = start_run(manifest, tmp_path)
    try:
        upload_id = wait_then_kill(proc, upload_with_parts, tmp_path, interval=0.01)

        # Killed mid-upload: the upload stays open (nobody could abort it), nothing
        # is visible under the key.
        assert_no_s3_object(client, bucket, key)
        stored = parts_of(client, bucket, key, upload_id)
        assert parts <= len(stored) < S3_BIG // PART + 1

        rerun = cli("run", str(manifest), "--json", "--no-progress")
        assert rerun.returncode == 0, rerun.stderr
        summary = last_json(rerun.stdout)["datasets"]["big"]
        assert summary["copied"] == 1 and summary["failed"] == 0
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == S3_BIG
        assert s3_sha(client, bucket, key) == source_sha
    finally:  # moto keeps everything in memory: give it back
        for upload in uploads_for(client, bucket, key):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        client.delete_object(Bucket=bucket, Key=key)


# --- 4. failed verification and changed sources leave no bad object visible ----------

def test_verify_destination_detects_a_flipped_byte_locally(tmp_path):
    data = data_of(2 * MiB, seed=20)
    path = tmp_path / "obj.bin"
    path.write_bytes(data)
    loc = Location.of(str(tmp_path))
    for mode in VerifyMode:  # the good copy passes every mode
        verify_destination(loc, "obj.bin", sha(data), len(data), mode, None)

    corrupted = bytearray(data)
    corrupted[MiB + 7] ^= 0x01
    path.write_bytes(bytes(corrupted))
    for mode in (VerifyMode.checksum, VerifyMode.full):
        with pytest.raises(VerifyMismatch, match="sha256 of the stored bytes differs"):
            verify_destination(loc, "obj.bin", sha(data), len(data), mode, None)

    path.write_bytes(data[:-1])  # a truncated copy fails even the cheapest mode
    for mode in VerifyMode:
        with pytest.raises(VerifyMismatch, match="bytes stored"):
            verify_destination(loc, "obj.bin", sha(data), len(data), mode, None)
    path.unlink()
    with pytest.raises(VerifyMismatch, match="missing"):
        verify_destination(loc, "obj.bin", sha(data), len(data), VerifyMode.size, None)


@pytest.mark.parametrize("kind", list(SIZES))
def test_verify_destination_detects_a_flipped_byte_on_s3(moto_server, bucket, kind):
    client = moto_server.client()
    data = data_of(SIZES[kind], seed=21)
    loc = s3_loc(moto_server, bucket)
    with atomic_writer(loc, "obj.bin", part_size=PART) as writer:
        writer.write(data)
        committed = writer.commit(sha(data), None)
    verify_destination(loc, "obj.bin", sha(data), len(data), VerifyMode.checksum, committed)
    verify_destination(loc, "obj.bin", sha(data), len(data), VerifyMode.full, None)

    # Replace the object with same-size bytes, one bit flipped, written the same way.
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0x80
    with atomic_writer(loc, "obj.bin", part_size=PART) as writer:
        writer.write(bytes(corrupted))
        writer.commit(sha(bytes(corrupted)), None)
    for mode in (VerifyMode.checksum, VerifyMode.full):
        with pytest.raises(VerifyMismatch):
            verify_destination(loc, "obj.bin", sha(data), len(data), mode, None)
    assert client.head_object(Bucket=bucket, Key="pre/obj.bin")["ContentLength"] == len(data)


def _grown_source_item(source_dir: Path, size: int) -> PlanItem:
    """List the source, then let it grow before the copy reads it (a real race)."""
    path = source_dir / "grows.bin"
    data = data_of(size, seed=22)
    path.write_bytes(data)
    (entry,) = list(list_entries(Location.of(str(source_dir))))
    with open(path, "ab") as f:
        f.write(b"appended after listing")
    return PlanItem(Action.copy, entry.key, entry, None, "new")


@pytest.mark.parametrize("dest_kind", ["local", "s3-single-put", "s3-multipart"])
def test_source_changing_during_copy_publishes_nothing(tmp_path, request, dest_kind):
    size = SIZES["multipart"] if dest_kind == "s3-multipart" else 2 * MiB
    (tmp_path / "src").mkdir()
    item = _grown_source_item(tmp_path / "src", size)
    moto = request.getfixturevalue("moto_server") if dest_kind != "local" else None
    bucket_name = moto.new_bucket() if moto else ""
    dest = s3_loc(moto, bucket_name) if moto else Location.of(str(tmp_path / "dst"))
    job = DatasetJob("d", Location.of(str(tmp_path / "src")), dest, KeyFilter(),
                     VerifyMode.checksum)
    settings = TransferSettings(part_size=PART, retries=0)

    with pytest.raises(SourceChanged):
        copy_object(job, item, settings)
    (result,) = run_batch(Batch(job, (item,), settings))
    assert result.status == "failed" and "source changed" in (result.error or "")

    if moto is None:
        assert not (tmp_path / "dst" / "grows.bin").exists()
        assert partials(tmp_path / "dst") == []
    else:
        client = moto.client()
        assert_no_s3_object(client, bucket_name, "pre/grows.bin")
        assert uploads_for(client, bucket_name, "pre/grows.bin") == []


def test_full_verify_repairs_a_corrupted_copy_and_verify_reports_it(tmp_path):
    source, dest = tmp_path / "src", tmp_path / "dst"
    files = {"good.bin": data_of(3 * MiB, seed=30), "nested/bad.bin": data_of(3 * MiB, seed=31)}
    for key, data in files.items():
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_bytes(data)
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(source)}, "destination": {"url": str(dest)},
         "verify": "full"}], engine={"threads": 2})

    first = cli("run", str(manifest), "--json", "--no-progress")
    assert first.returncode == 0, first.stderr
    assert last_json(first.stdout)["datasets"]["d"]["copied"] == 2

    # Flip one byte; keep the size and the source's mtime so listings say "up to date".
    bad = dest / "nested" / "bad.bin"
    corrupted = bytearray(bad.read_bytes())
    corrupted[len(corrupted) // 3] ^= 0xFF
    bad.write_bytes(bytes(corrupted))
    src_mtime = (source / "nested" / "bad.bin").stat().st_mtime
    os.utime(bad, (src_mtime, src_mtime))
    plan = last_json(cli("plan", str(manifest), "--json").stdout)["datasets"]["d"]
    assert plan["copy"] == 0  # the planner cannot see it: only bytes can

    check = cli("verify", str(manifest), "--json", "--no-progress")
    assert check.returncode == 1, check.stdout + check.stderr
    report = last_json(check.stdout)
    assert [(p["key"], p["status"]) for p in report["problems"]] == [("nested/bad.bin", "differs")]
    assert report["datasets"]["d"]["matched"] == 1
    assert bad.read_bytes() == bytes(corrupted)  # verify never writes

    repair = cli("run", str(manifest), "--json", "--no-progress")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    report = last_json(repair.stdout)
    assert [(p["key"], p["status"]) for p in report["problems"]] == [("nested/bad.bin", "repaired")]
    assert report["datasets"]["d"]["verified"] == 1
    assert report["datasets"]["d"]["repaired"] == 1
    for key, data in files.items():
        assert (dest / key).read_bytes() == data
    assert partials(dest) == []

    after = cli("verify", str(manifest), "--json", "--no-progress")
    assert after.returncode == 0, after.stdout
    assert last_json(after.stdout)["datasets"]["d"]["matched"] == 2


def test_block_that_ends_without_commit_is_discarded(tmp_path):
    loc = Location.of(str(tmp_path))
    with pytest.raises(RuntimeError, match="without commit"), \
            atomic_writer(loc, "never.bin", part_size=5 * 1024 * 1024) as writer:
        writer.write(b"half an object")
    assert not (tmp_path / "never.bin").exists()
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_make_shared_parent_directories_over_sftp(sftp_server) -> None:
    """Workers writing under one new directory tree at once: each makes the parents it
    needs, and one that loses the race to make a shared ancestor still gets its own
    (a lost race used to leave ``a/b/`` unmade: FileNotFoundError, the object failed)."""
    import threading

    from datamove.stores.core import Location

    keys = ["k0", "a/k1", "a/b/k2", "a/b/c/k3", "a/b/c/d/k4", "a/x/k5", "a/b/y/k6", "z/k7"]
    for _round in range(6):
        location = Location.of(f"sftp://127.0.0.1:{sftp_server.port}"
                               f"{sftp_server.new_dir()}/new/", sftp_server.options)
        barrier, failures = threading.Barrier(len(keys)), []

        def write(key: str, location: Location = location,
                  barrier: threading.Barrier = barrier, failures: list = failures) -> None:
            barrier.wait()
            try:
                with atomic_writer(location, key, part_size=1 << 20) as writer:
                    writer.write(key.encode())
                    writer.commit(hashlib.sha256(key.encode()).hexdigest(), None)
            except Exception as exc:  # collected and asserted below
                failures.append((key, exc))

        threads = [threading.Thread(target=write, args=(key,)) for key in keys]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        for key in keys:
            assert (Path(location.root) / key).read_bytes() == key.encode()
