"""datamove archive on real components: moto_server S3 (GLACIER flow) and local cold
locations; idempotence, concurrency and crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.conftest import AWS_ENV, cli, last_json, write_manifest
from tests.lifecycle_helpers import audit_events, make_source, object_rows, per_key


def days_ahead(days: float) -> str:
    """``--now`` this many days after the real time (objects are copied at the real time)."""
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


LATER = days_ahead(400)  # every object the tests copy is more than 90 days old then


def s3_manifest(tmp_path: Path, moto_server, bucket: str, **dataset) -> Path:
    ds = {"name": "models", "source": {"url": str(tmp_path / "src") + "/"},
          "destination": {"url": f"s3://{bucket}/models/",
                          "options": {"endpoint_url": moto_server.endpoint}},
          "lifecycle": [{"after": "30d", "tier": "STANDARD_IA"},
                        {"after": "90d", "tier": "GLACIER"}], **dataset}
    return write_manifest(tmp_path / "m.yaml", [ds], ledger=str(tmp_path / "ledger"))


def test_glacier_flow_archive_is_idempotent_and_restore_reads_back(tmp_path, moto_server):
    files = make_source(tmp_path / "src", 9)
    bucket = moto_server.new_bucket()
    manifest = s3_manifest(tmp_path, moto_server, bucket)
    assert cli("run", str(manifest), "--json").returncode == 0
    s3 = moto_server.client()

    early = cli("archive", str(manifest), "--json")  # copied seconds ago: nothing due
    assert early.returncode == 0, early.stderr
    assert last_json(early.stdout)["datasets"]["models"]["not_due"] == 9

    first = cli("archive", str(manifest), "--now", LATER, "--json")
    assert first.returncode == 0, first.stderr
    assert last_json(first.stdout)["datasets"]["models"]["moved"] == 9
    for key in files:
        head = s3.head_object(Bucket=bucket, Key=f"models/{key}")
        assert head["StorageClass"] == "GLACIER"
        with pytest.raises(ClientError) as err:  # unreadable until restored
            s3.get_object(Bucket=bucket, Key=f"models/{key}")
        assert err.value.response["Error"]["Code"] == "InvalidObjectState"
    archived = object_rows(tmp_path / "ledger", "archived")
    assert per_key(archived) == dict.fromkeys(files, 1)
    assert {r["storage_class"] for r in archived} == {"GLACIER"}
    changes = audit_events(tmp_path / "ledger", "tier.change")
    assert per_key(changes) == dict.fromkeys(files, 1)
    assert all(e["details"]["to"] == "GLACIER" and e["details"]["server_checksum"]
               for e in changes)

    again = cli("archive", str(manifest), "--now", LATER, "--json")  # a no-op now
    assert again.returncode == 0
    assert last_json(again.stdout)["datasets"]["models"]["moved"] == 0
    assert last_json(again.stdout)["datasets"]["models"]["in_tier"] == 9
    assert len(object_rows(tmp_path / "ledger", "archived")) == 9
    assert len(audit_events(tmp_path / "ledger", "tier.change")) == 9

    rerun = cli("run", str(manifest), "--json")  # never reads or re-copies archives
    assert rerun.returncode == 0, rerun.stderr
    counts = last_json(rerun.stdout)["datasets"]["models"]
    assert counts["archived"] == 9 and counts["copied"] == 0
    assert cli("verify", str(manifest)).returncode == 0

    restored = cli("restore", str(manifest), "--dataset", "models", "--prefix", "sub/",
                   "--to", str(tmp_path / "back"), "--poll", "1s", "--json")
    assert restored.returncode == 0, restored.stderr
    wanted = {k: v for k, v in files.items() if k.startswith("sub/")}
    assert last_json(restored.stdout)["datasets"]["models"]["restored"] == len(wanted)
    for key, data in wanted.items():
        assert (tmp_path / "back" / key).read_bytes() == data
        assert 'ongoing-request="false"' in s3.head_object(Bucket=bucket,
                                                            Key=f"models/{key}")["Restore"]
    assert not (tmp_path / "back" / "part-0001.bin").exists()


def test_archive_warns_about_small_objects_and_refuses_corrupt_ones(tmp_path, moto_server):
    files = make_source(tmp_path / "src", 3)
    bucket = moto_server.new_bucket()
    manifest = s3_manifest(tmp_path, moto_server, bucket,
                           lifecycle=[{"after": "1d", "tier": "STANDARD_IA"},
                                      {"after": "10d", "tier": "GLACIER"}])
    assert cli("run", str(manifest)).returncode == 0
    s3 = moto_server.client()
    bad = "part-0001.bin"
    body = bytearray(files[bad])
    body[100] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=f"models/{bad}", Body=bytes(body))

    ia = cli("archive", str(manifest), "--now", days_ahead(5), "--json")
    report = last_json(ia.stdout)
    assert ia.returncode == 1
    assert report["datasets"]["models"]["moved"] == 2
    assert [p["key"] for p in report["problems"]] == [bad]
    assert "not the ledger's" in report["problems"][0]["error"]
    assert report["warning_count"] == 3  # 3 KB objects: billed as 128 KiB in STANDARD_IA
    assert all("128 KiB" in w for w in report["warnings"])

    glacier = cli("archive", str(manifest), "--now", days_ahead(12), "--json")
    assert glacier.returncode == 1
    problem = last_json(glacier.stdout)["problems"][0]
    assert problem["key"] == bad and "not archived" in problem["error"]
    assert s3.head_object(Bucket=bucket, Key=f"models/{bad}").get("StorageClass",
                                                                   "STANDARD") != "GLACIER"
    # Leaving STANDARD_IA after 12 days, not its 30: a warning names the charge.
    assert any("minimum storage duration" in w for w in last_json(glacier.stdout)["warnings"])


def cold_manifest(tmp_path: Path, *, encrypt: dict | None = None) -> Path:
    ds = {"name": "logs", "source": {"url": str(tmp_path / "src") + "/"},
          "destination": {"url": str(tmp_path / "hot") + "/"},
          "lifecycle": [{"after": "7d", "location": {"url": str(tmp_path / "cold") + "/"}}]}
    if encrypt:
        ds["encrypt"] = encrypt
    return write_manifest(tmp_path / "m.yaml", [ds], ledger=str(tmp_path / "ledger"))


def test_cold_location_move_deletes_hot_only_after_recording(tmp_path):
    files = make_source(tmp_path / "src", 12)
    manifest = cold_manifest(tmp_path)
    assert cli("run", str(manifest)).returncode == 0
    moved = cli("archive", str(manifest), "--now", LATER, "--json")
    assert moved.returncode == 0, moved.stderr
    assert last_json(moved.stdout)["datasets"]["logs"]["moved"] == 12
    assert not [p for p in (tmp_path / "hot").rglob("*") if p.is_file()]
    for key, data in files.items():
        assert (tmp_path / "cold" / key).read_bytes() == data
    rows = object_rows(tmp_path / "ledger", "archived")
    assert {r["archive_url"] for r in rows} == {str(tmp_path / "cold" / k) for k in files}
    rerun = cli("run", str(manifest), "--json")
    assert last_json(rerun.stdout)["datasets"]["logs"]["archived"] == 12
    assert not [p for p in (tmp_path / "hot").rglob("*") if p.is_file()]  # not copied back


def test_concurrent_archive_runs_move_each_object_once(tmp_path, moto_server):
    files = make_source(tmp_path / "src", 40, size=500)
    bucket = moto_server.new_bucket()
    manifest = s3_manifest(tmp_path, moto_server, bucket)
    assert cli("run", str(manifest)).returncode == 0
    env = {**os.environ, **AWS_ENV}
    runs = [subprocess.Popen([sys.executable, "-m", "datamove.cli", "archive", str(manifest),
                              "--now", LATER, "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    moved = sorted(last_json(out)["datasets"]["models"]["moved"] for out, _ in outputs)
    assert moved == [0, 40]
    assert per_key(object_rows(tmp_path / "ledger", "archived")) == dict.fromkeys(files, 1)
    assert per_key(audit_events(tmp_path / "ledger", "tier.change")) == dict.fromkeys(files, 1)
    assert cli("audit", "verify", str(manifest)).returncode == 0  # one unforked chain


def test_killed_archive_loses_nothing_and_a_rerun_finishes(tmp_path):
    files = make_source(tmp_path / "src", 1200, size=40_000)
    manifest = cold_manifest(tmp_path)
    assert cli("run", str(manifest)).returncode == 0
    env = {**os.environ, **AWS_ENV}
    midway = 0
    for moved_before_kill in (1, 400, 800):  # kill -9 at different points of the move
        run = subprocess.Popen([sys.executable, "-m", "datamove.cli", "archive",
                                str(manifest), "--now", LATER], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while run.poll() is None and \
                sum(1 for p in (tmp_path / "cold").rglob("*.bin")) < moved_before_kill:
            time.sleep(0.005)
        run.send_signal(signal.SIGKILL)
        run.wait()
        hot = [p for p in (tmp_path / "hot").rglob("*") if p.is_file()]
        cold = [p for p in (tmp_path / "cold").rglob("*") if p.is_file()]
        midway += bool(hot and cold)
    assert midway, "no kill landed during the move; the trial proves nothing"
    finish = cli("archive", str(manifest), "--now", LATER, "--json")
    assert finish.returncode == 0, finish.stderr
    assert not [p for p in (tmp_path / "hot").rglob("*") if p.is_file()]
    for key, data in files.items():  # every object exactly once, intact, in the cold place
        assert (tmp_path / "cold" / key).read_bytes() == data
    assert not [p for p in (tmp_path / "cold").rglob("*.partial*")]
    latest: dict[str, dict] = {}
    for row in sorted(object_rows(tmp_path / "ledger"), key=lambda r: r["recorded_at"]):
        latest[row["key"]] = row
    assert {k: r["status"] for k, r in latest.items()} == dict.fromkeys(files, "archived")
    again = cli("archive", str(manifest), "--now", LATER, "--json")
    assert last_json(again.stdout)["datasets"]["logs"]["moved"] == 0


def test_an_in_place_move_a_killed_run_did_not_record_is_recorded_not_redone(tmp_path,
                                                                             moto_server):
    files = make_source(tmp_path / "src", 4)
    bucket = moto_server.new_bucket()
    manifest = s3_manifest(tmp_path, moto_server, bucket)
    assert cli("run", str(manifest)).returncode == 0
    s3 = moto_server.client()
    key = "models/part-0001.bin"  # moved by a run killed before its ledger commit
    s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                   StorageClass="GLACIER", MetadataDirective="COPY", ChecksumAlgorithm="SHA256")
    before = s3.head_object(Bucket=bucket, Key=key)["LastModified"]
    result = cli("archive", str(manifest), "--now", LATER, "--json")
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout)["datasets"]["models"]["moved"] == 4
    assert s3.head_object(Bucket=bucket, Key=key)["LastModified"] == before  # not copied again
    assert per_key(object_rows(tmp_path / "ledger", "archived")) == dict.fromkeys(files, 1)


def test_restore_writes_to_s3_and_refuses_an_encrypted_dataset_without_identity(
        tmp_path, moto_server):
    from datamove.age import X25519Identity

    files = make_source(tmp_path / "src", 3)
    recipient = X25519Identity.generate().recipient.encode()
    manifest = cold_manifest(tmp_path, encrypt={"recipients": [recipient]})
    assert cli("run", str(manifest)).returncode == 0
    no_identity = cli("restore", str(manifest), "--dataset", "logs", "--to",
                      str(tmp_path / "back"))
    assert no_identity.returncode == 2 and "identity" in no_identity.stderr
    assert not (tmp_path / "back").exists()

    plain = make_source(tmp_path / "plain-src", 3)
    plain_manifest = write_manifest(tmp_path / "p.yaml", [{
        "name": "p", "source": {"url": str(tmp_path / "plain-src") + "/"},
        "destination": {"url": str(tmp_path / "plain-dst") + "/"}}],
        ledger=str(tmp_path / "ledger2"))
    assert cli("run", str(plain_manifest)).returncode == 0
    bucket = moto_server.new_bucket()
    to = cli("restore", str(plain_manifest), "--dataset", "p", "--to", f"s3://{bucket}/r/",
             env={"AWS_ENDPOINT_URL": moto_server.endpoint})
    assert to.returncode == 0, to.stderr
    s3 = moto_server.client()
    for key, data in plain.items():
        assert s3.get_object(Bucket=bucket, Key=f"r/{key}")["Body"].read() == data
    assert files  # the encrypted dataset's files were never restored


def test_glacier_moves_on_to_deep_archive_and_dry_run_moves_nothing(tmp_path, moto_server):
    files = make_source(tmp_path / "src", 3)
    bucket = moto_server.new_bucket()
    manifest = s3_manifest(tmp_path, moto_server, bucket,
                           lifecycle=[{"after": "90d", "tier": "GLACIER"},
                                      {"after": "180d", "tier": "DEEP_ARCHIVE"}])
    assert cli("run", str(manifest)).returncode == 0
    s3 = moto_server.client()
    assert cli("archive", str(manifest), "--now", days_ahead(100)).returncode == 0
    planned = cli("archive", str(manifest), "--now", days_ahead(200), "--dry-run",
                  "--json")
    assert planned.returncode == 0
    assert last_json(planned.stdout)["datasets"]["models"]["due"] == 3
    assert {s3.head_object(Bucket=bucket, Key=f"models/{k}")["StorageClass"]
            for k in files} == {"GLACIER"}
    human = cli("archive", str(manifest), "--now", days_ahead(200), "--dry-run")
    assert "3 due to move" in human.stdout
    deep = cli("archive", str(manifest), "--now", days_ahead(200), "--json")
    assert deep.returncode == 0, deep.stdout
    assert last_json(deep.stdout)["datasets"]["models"]["moved"] == 3
    assert {s3.head_object(Bucket=bucket, Key=f"models/{k}")["StorageClass"]
            for k in files} == {"DEEP_ARCHIVE"}
    assert [e["details"]["from"] for e in audit_events(tmp_path / "ledger", "tier.change")
            if e["details"]["to"] == "DEEP_ARCHIVE"] == ["GLACIER"] * 3


def test_a_cold_location_on_s3_is_written_in_its_storage_class(tmp_path, moto_server):
    files = make_source(tmp_path / "src", 3)
    bucket = moto_server.new_bucket()
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "logs", "source": {"url": str(tmp_path / "src") + "/"},
        "destination": {"url": str(tmp_path / "hot") + "/"},
        "lifecycle": [{"after": "7d", "location": {
            "url": f"s3://{bucket}/cold/", "storage_class": "STANDARD_IA",
            "options": {"endpoint_url": moto_server.endpoint}}}]}],
        ledger=str(tmp_path / "ledger"))
    assert cli("run", str(manifest)).returncode == 0
    assert cli("archive", str(manifest), "--now", LATER).returncode == 0
    s3 = moto_server.client()
    for key, data in files.items():
        head = s3.head_object(Bucket=bucket, Key=f"cold/{key}")
        assert head["StorageClass"] == "STANDARD_IA"
        assert s3.get_object(Bucket=bucket, Key=f"cold/{key}")["Body"].read() == data
    assert {r["storage_class"] for r in object_rows(tmp_path / "ledger", "archived")} == {
        "STANDARD_IA"}
    drilled = cli("drill", str(manifest), "--sample", "100", "--json")
    assert drilled.returncode == 0, drilled.stderr
    [event] = audit_events(tmp_path / "ledger", "drill.completed")
    assert event["details"]["selection"]["sample_percent"] == "100"
    assert event["details"]["totals"]["logs"]["coverage_objects_ppm"] == 1_000_000


def test_gcs_objects_move_to_colder_classes_verified(tmp_path, gcs_emulator):
    files = make_source(tmp_path / "src", 4)
    bucket = gcs_emulator.new_bucket()
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "eu", "source": {"url": str(tmp_path / "src") + "/"},
        "destination": {"url": f"gs://{bucket}/eu/", "options": gcs_emulator.options},
        "lifecycle": [{"after": "30d", "tier": "NEARLINE"},
                      {"after": "365d", "tier": "ARCHIVE"}]}], ledger=str(tmp_path / "ledger"))
    assert cli("run", str(manifest)).returncode == 0
    fs = gcs_emulator.fs()

    def classes() -> set[str]:
        return {fs.info(f"{bucket}/eu/{k}")["storageClass"] for k in files}

    assert classes() == {"STANDARD"}
    nearline = cli("archive", str(manifest), "--now", days_ahead(40), "--json")
    assert nearline.returncode == 0, nearline.stdout + nearline.stderr
    assert classes() == {"NEARLINE"}
    archive = cli("archive", str(manifest), "--now", LATER, "--json")
    assert last_json(archive.stdout)["datasets"]["eu"]["moved"] == 4
    assert classes() == {"ARCHIVE"}
    for key, data in files.items():  # GCS classes read without a restore
        assert fs.cat_file(f"{bucket}/eu/{key}") == data
    assert cli("archive", str(manifest), "--now", LATER).returncode == 0
    assert per_key(audit_events(tmp_path / "ledger", "tier.change")) == dict.fromkeys(files, 2)
    drilled = cli("drill", str(manifest), "--json")
    assert drilled.returncode == 0, drilled.stderr
    assert {o["tier"] for o in last_json(drilled.stdout)["objects"]} == {"ARCHIVE"}


def test_archive_moves_due_partitions_of_a_delta_dataset(tmp_path):
    from tests.test_tabular_tiering import DUE, days, loaded

    path, _ = loaded(tmp_path)
    moved = cli("archive", str(path), "--now", "2024-01-10T12:00:00Z", "--json")
    assert moved.returncode == 0, moved.stderr
    counts = last_json(moved.stdout)["datasets"]["feat"]
    assert (counts["partitions_moved"], counts["rows_moved"]) == (5, 1_000)
    assert days(tmp_path / "cold") == DUE and not days(tmp_path / "hot") & DUE
    again = cli("archive", str(path), "--now", "2024-01-10T12:00:00Z", "--json")
    assert last_json(again.stdout)["datasets"]["feat"].get("partitions_moved", 0) == 0
    assert cli("audit", "verify", str(path)).returncode == 0
