"""Resume inside a large object: a killed multipart upload continues from its parts."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import AWS_ENV, file_sha, s3_location, write_manifest

MIB = 1024 * 1024
PART = 16 * MIB


def _write_random(path, size: int, seed: int) -> str:
    rng = random.Random(seed)
    sha = hashlib.sha256()
    with open(path, "wb") as out:
        for offset in range(0, size, MIB):
            chunk = rng.randbytes(min(MIB, size - offset))
            sha.update(chunk)
            out.write(chunk)
    return sha.hexdigest()


@pytest.mark.slow
def test_killed_upload_resumes_from_the_last_stored_part(tmp_path, moto_server):
    size = 300 * MIB
    (tmp_path / "src").mkdir()
    expected = _write_random(tmp_path / "src/weights.bin", size, seed=300)
    client = moto_server.client()
    bucket = moto_server.new_bucket()
    manifest = write_manifest(
        tmp_path / "m.yaml",
        [{"name": "d", "source": {"url": "src/"},
          "destination": s3_location(moto_server, bucket, "models/")}],
        engine={"threads": 2, "part_size": PART})
    env = {**os.environ, **AWS_ENV}
    command = [sys.executable, "-m", "datamove.cli", "run", str(manifest), "--no-progress",
               "--json"]

    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stored_parts: list[dict] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        if uploads:
            stored_parts = client.list_parts(Bucket=bucket, Key=uploads[0]["Key"],
                                             UploadId=uploads[0]["UploadId"]).get("Parts", [])
            if len(stored_parts) >= 6:
                os.kill(run.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    run.wait(30)
    assert run.returncode == -signal.SIGKILL, "the upload finished before it could be killed"
    uploads = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert len(uploads) == 1
    stored = client.list_parts(Bucket=bucket, Key=uploads[0]["Key"],
                               UploadId=uploads[0]["UploadId"])["Parts"]
    full_parts = [p for p in stored if p["Size"] == PART]
    assert len(full_parts) >= 6
    # Parts upload several at once (engine.part_buffers), so the stored ones may have
    # gaps; a rerun reuses the run of them from part 1 and sends the rest again.
    numbers = {p["PartNumber"] for p in full_parts}
    reusable = next(n for n in range(1, len(numbers) + 2) if n not in numbers) - 1
    with pytest.raises(client.exceptions.ClientError):
        client.head_object(Bucket=bucket, Key="models/weights.bin")  # nothing visible

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])["datasets"]["d"]
    assert summary["copied"] == 1
    # Only the parts that were not reusable travel again.
    print(f"killed after {len(full_parts)} of {-(-size // PART)} parts ({reusable} from "
          f"part 1); rerun sent {summary['bytes_sent'] / MIB:.0f} MiB of {size // MIB} MiB")
    assert reusable >= 3
    assert summary["bytes_sent"] == size - reusable * PART
    body = client.get_object(Bucket=bucket, Key="models/weights.bin")["Body"]
    sha = hashlib.sha256()
    for chunk in iter(lambda: body.read(MIB), b""):
        sha.update(chunk)
    assert sha.hexdigest() == expected
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)


def test_a_changed_source_does_not_reuse_stale_parts(tmp_path, moto_server):
    """Parts stored for other bytes are detected by checksum and sent again."""
    from datamove.stores.core import Location
    from datamove.stores.s3 import S3Writer

    client = moto_server.client()
    bucket = moto_server.new_bucket()
    part = 5 * MIB
    old = [bytes([1]) * part, bytes([2]) * part]
    upload = client.create_multipart_upload(Bucket=bucket, Key="k/obj")["UploadId"]
    for number, data in enumerate(old, 1):
        client.upload_part(Bucket=bucket, Key="k/obj", UploadId=upload, PartNumber=number,
                           Body=data)
    new = [old[0], bytes([9]) * part, bytes([3]) * 100]  # part 2 differs now
    loc = Location.of(f"s3://{bucket}/k/", {"endpoint_url": moto_server.endpoint})
    writer = S3Writer(loc, "obj", part, size_hint=sum(map(len, new)))
    for data in new:
        writer.write(data)
    whole = hashlib.sha256(b"".join(new)).hexdigest()
    writer.commit(whole, None)
    assert writer.sent == part + 100  # part 1 reused; part 2 and the tail sent
    got = client.get_object(Bucket=bucket, Key="k/obj")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == whole


@pytest.mark.slow
def test_killed_local_copy_resumes_from_its_journal(tmp_path):
    size = 300 * MIB
    (tmp_path / "src").mkdir()
    expected = _write_random(tmp_path / "src/weights.bin", size, seed=301)
    dst = tmp_path / "dst"
    manifest = write_manifest(
        tmp_path / "m.yaml",
        [{"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}],
        engine={"threads": 2, "part_size": PART})
    command = [sys.executable, "-m", "datamove.cli", "run", str(manifest), "--no-progress",
               "--json"]
    run = subprocess.Popen(command, env={**os.environ}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    journaled = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        journals = list(dst.glob("*.journal")) if dst.exists() else []
        if journals:
            journaled = len(journals[0].read_text().splitlines()) - 1
            if journaled >= 5:
                os.kill(run.pid, signal.SIGKILL)
                break
        time.sleep(0.01)
    run.wait(30)
    assert run.returncode == -signal.SIGKILL, "the copy finished before it could be killed"
    assert not (dst / "weights.bin").exists()
    journaled = len(next(dst.glob("*.journal")).read_text().splitlines()) - 1

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])["datasets"]["d"]
    print(f"killed after {journaled} journaled parts; rerun wrote "
          f"{summary['bytes_sent'] / MIB:.0f} MiB of {size // MIB} MiB")
    assert summary["copied"] == 1
    assert summary["bytes_sent"] == size - journaled * PART
    assert file_sha(dst / "weights.bin") == expected
    assert sorted(p.name for p in dst.iterdir()) == ["weights.bin"]


def test_local_journal_stops_reuse_where_the_source_differs(tmp_path):
    from datamove.stores.local import ResumableLocalWriter

    part = 1 * MIB
    first = ResumableLocalWriter(str(tmp_path), "obj", "id1", part, readback=True)
    for byte in (1, 2, 3):
        first.write(bytes([byte]) * part)
    first._file.close()  # "killed": the temporary file and its journal stay behind
    first._close_dir()

    new = [bytes([1]) * part, bytes([7]) * part, bytes([3]) * part, b"tail"]
    second = ResumableLocalWriter(str(tmp_path), "obj", "id1", part, readback=True)
    for data in new:
        second.write(data)
    committed = second.commit(hashlib.sha256(b"".join(new)).hexdigest(), None)
    assert second.reused_parts == 1
    assert committed.sent == 2 * part + 4  # part 2 differs: it and everything after it
    assert (tmp_path / "obj").read_bytes() == b"".join(new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj"]


def test_a_journal_that_cannot_be_written_leaves_no_descriptor_open(tmp_path, monkeypatch):
    """The temporary file is a plain descriptor (local._RawFile): a failure after it
    was opened must close it, as the garbage collector would have closed a file."""
    from datamove.stores.local import ResumableLocalWriter

    def full_disk(self, parts: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ResumableLocalWriter, "_rewrite_journal", full_disk)
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="No space"):
        ResumableLocalWriter(str(tmp_path), "obj", "id1", MIB)
    assert sorted(os.listdir("/proc/self/fd")) == before
