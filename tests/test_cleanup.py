"""Orphans of killed runs are removed by the next run; a run's own work never is."""

from __future__ import annotations

import json
import time

from datamove.pipeline.cleanup import OrphanSweeper, abort_orphan_uploads
from datamove.stores.core import Location, list_entries
from tests.conftest import cli, s3_location, write_manifest


def test_sweeper_removes_other_runs_partials_and_keeps_its_own(tmp_path):
    (tmp_path / "keep.bin").write_bytes(b"data")
    (tmp_path / "a.bin.datamove-partial-deadbeef-00000001").write_bytes(b"orphan")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/b.bin.datamove-partial-norun-00000002").write_bytes(b"orphan")
    (tmp_path / "sub/c.bin.datamove-partial-cafe0123-00000003").write_bytes(b"in flight")
    sweeper = OrphanSweeper(Location.of(str(tmp_path)), run_token="cafe0123")
    keys = [e.key for e in list_entries(Location.of(str(tmp_path)), on_partial=sweeper)]
    assert keys == ["keep.bin"]
    assert sweeper.removed == 2
    left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["c.bin.datamove-partial-cafe0123-00000003", "keep.bin"]


def test_run_cleans_local_orphans_and_counts_them(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.bin").write_bytes(b"a" * 1000)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst/a.bin.datamove-partial-0badf00d-12345678").write_bytes(b"a" * 10)
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}])
    result = cli("run", str(manifest), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["datasets"]["d"]["orphan_files_removed"] == 1
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["a.bin"]


def test_a_run_whose_copies_all_ended_lists_its_destination_once(tmp_path, monkeypatch):
    """The end-of-run sweep for a dead worker's temporary files is a second listing of
    the whole destination: only a lost worker or a failed copy can leave one, so a run
    where every copy ended (the embedded threads, nothing failed) does not list again.
    A failed copy does (its clean-up may have failed too)."""
    import datamove.commands.copy as copy_command

    listed: list[str] = []
    real = copy_command.list_entries

    def counting(location, **kwargs):
        listed.append(location.url)
        return real(location, **kwargs)

    monkeypatch.setattr(copy_command, "list_entries", counting)
    (tmp_path / "src").mkdir()
    for i in range(5):
        (tmp_path / f"src/f{i}.bin").write_bytes(bytes([i]) * 100)
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}])
    result = cli("run", str(manifest), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["datasets"]["d"]["copied"] == 5
    assert listed == []

    (tmp_path / "src/new.bin").write_bytes(b"n" * 100)
    (tmp_path / "dst/new.bin").mkdir()  # the copy cannot publish over a directory
    result = cli("run", str(manifest), "--json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["datasets"]["d"]["failed"] == 1
    assert len(listed) == 1 and listed[0].endswith("/dst/")


def test_orphan_uploads_aborted_only_under_the_prefix_and_before_the_run(moto_server):
    client = moto_server.client()
    bucket = moto_server.new_bucket()
    old = client.create_multipart_upload(Bucket=bucket, Key="data/big.bin")["UploadId"]
    client.upload_part(Bucket=bucket, Key="data/big.bin", UploadId=old, PartNumber=1,
                       Body=b"x" * 1024)
    client.create_multipart_upload(Bucket=bucket, Key="elsewhere/big.bin")
    time.sleep(1.1)  # the store's clock has second resolution in its Date header
    loc = Location.of(f"s3://{bucket}/data/", {"endpoint_url": moto_server.endpoint})
    assert abort_orphan_uploads(loc) == 1
    remaining = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]]
    assert remaining == ["elsewhere/big.bin"]
    # A run sweeps a destination before it starts uploading there, so its own
    # uploads are never candidates; a second sweep finds nothing left.
    assert abort_orphan_uploads(loc) == 0


def test_run_aborts_orphan_uploads(tmp_path, moto_server):
    client = moto_server.client()
    bucket = moto_server.new_bucket()
    client.create_multipart_upload(Bucket=bucket, Key="data/x.bin")
    time.sleep(1.1)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/x.bin").write_bytes(b"x" * 100)
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"},
         "destination": s3_location(moto_server, bucket, "data/")}])
    result = cli("run", str(manifest), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["datasets"]["d"]["orphan_uploads_aborted"] == 1
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)
