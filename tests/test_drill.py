"""Restore drills: deterministic sampling, rotation coverage, faults caught and recorded
(a flipped byte, a missing object) on moto_server GLACIER and on a cold location."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from datamove.age import X25519Identity, format_identity_file
from datamove.api import load_manifest
from datamove.commands.drill import Selection, drill
from datamove.errors import BadInput
from tests.conftest import cli, write_manifest
from tests.lifecycle_helpers import audit_events, make_source
from tests.test_tiering import LATER, last_json


def local_manifest(tmp_path: Path, count: int = 40) -> tuple[Path, dict[str, bytes]]:
    files = make_source(tmp_path / "src", count, size=200)
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "shards", "source": {"url": str(tmp_path / "src") + "/"},
        "destination": {"url": str(tmp_path / "dst") + "/"}}], ledger=str(tmp_path / "ledger"))
    assert cli("run", str(manifest)).returncode == 0
    return manifest, files


def keys_of(report) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.key for r in report.objects]


def test_rotation_drills_cover_every_object_exactly_once(tmp_path):
    manifest_path, files = local_manifest(tmp_path, 40)
    manifest = load_manifest(manifest_path)
    drilled = []
    for n in range(1, 5):
        report = drill(manifest, Selection(rotate=(n, 4), seed="2026-Q4"))
        assert report.exit_code == 0 and all(r.ok for r in report.objects)
        drilled.append(keys_of(report))
    assert sorted(k for keys in drilled for k in keys) == sorted(files)  # all, none twice
    assert all(drilled)  # 40 objects over 4 buckets: none empty
    again = drill(manifest, Selection(rotate=(2, 4), seed="2026-Q4"))
    assert keys_of(again) == drilled[1]  # deterministic
    other_seed = drill(manifest, Selection(rotate=(2, 4), seed="2027-Q1"))
    assert keys_of(other_seed) != drilled[1]


def test_count_and_sample_pick_the_lowest_scores(tmp_path):
    manifest_path, files = local_manifest(tmp_path, 30)
    manifest = load_manifest(manifest_path)

    def score(key: str) -> int:  # the documented rule, computed independently
        return int.from_bytes(hashlib.sha256(f"s\0shards\0{key}".encode()).digest()[:8], "big")

    by_score = sorted(files, key=score)
    counted = drill(manifest, Selection(count=7, seed="s"))
    assert sorted(keys_of(counted)) == sorted(by_score[:7])
    sampled = drill(manifest, Selection(sample=50, seed="s"))
    assert sorted(keys_of(sampled)) == sorted(k for k in files if score(k) < 2**63)
    totals = counted.totals()["shards"]
    assert totals["objects"] == 30 and totals["drilled"] == 7
    assert totals["coverage_objects"] == round(7 / 30, 6)
    assert totals["estimated_full_recovery_seconds"] is not None


@pytest.mark.parametrize("args, message", [
    (("--sample", "0"), "--sample"), (("--count", "0"), "--count"),
    (("--rotate", "5/4"), "--rotate"), (("--rotate", "x"), "--rotate"),
    (("--sample", "10", "--count", "3"), "not both"),
])
def test_bad_selection_is_exit_2_and_drills_nothing(tmp_path, args, message):
    manifest, _ = local_manifest(tmp_path, 3)
    result = cli("drill", str(manifest), *args, "--json")
    assert result.returncode == 2 and message in result.stderr
    assert not audit_events(tmp_path / "ledger", "drill.completed")


def encrypted_glacier_manifest(tmp_path: Path, moto_server, bucket: str) -> Path:
    identity = X25519Identity.generate()
    (tmp_path / "id.key").write_text(format_identity_file(identity))
    return write_manifest(tmp_path / "m.yaml", [{
        "name": "weights", "source": {"url": str(tmp_path / "src") + "/"},
        "destination": {"url": f"s3://{bucket}/w/",
                        "options": {"endpoint_url": moto_server.endpoint}},
        "encrypt": {"recipients": [identity.recipient.encode()],
                    "identity": {"file": str(tmp_path / "id.key")}},
        "lifecycle": [{"after": "90d", "tier": "GLACIER"}]}], ledger=str(tmp_path / "ledger"))


def test_drill_catches_flipped_byte_and_missing_object_in_glacier(tmp_path, moto_server):
    files = make_source(tmp_path / "src", 8, size=70_000)  # two age chunks each
    bucket = moto_server.new_bucket()
    manifest = encrypted_glacier_manifest(tmp_path, moto_server, bucket)
    assert cli("run", str(manifest)).returncode == 0
    assert cli("archive", str(manifest), "--now", LATER).returncode == 0
    s3 = moto_server.client()
    flipped, missing = "part-0001.bin", "sub/part-0003.bin"
    # GLACIER objects are unreadable: restore one to read it, then put it back damaged.
    s3.restore_object(Bucket=bucket, Key=f"w/{flipped}.age", RestoreRequest={"Days": 1})
    stored = bytearray(s3.get_object(Bucket=bucket, Key=f"w/{flipped}.age")["Body"].read())
    stored[len(stored) // 2] ^= 0x01
    s3.put_object(Bucket=bucket, Key=f"w/{flipped}.age", Body=bytes(stored),
                  StorageClass="GLACIER")
    s3.delete_object(Bucket=bucket, Key=f"w/{missing}.age")
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    result = cli("drill", str(manifest), "--scratch", str(scratch), "--poll", "1s",
                 "--report", str(tmp_path / "evidence"), "--json")
    assert result.returncode == 1, result.stderr
    report = last_json(result.stdout)
    failed = {o["key"]: o["error"] for o in report["objects"] if not o["ok"]}
    assert set(failed) == {flipped, missing}
    assert "does not decrypt" in failed[flipped] or "differ" in failed[flipped]
    assert "missing" in failed[missing]
    ok = [o for o in report["objects"] if o["ok"]]
    assert len(ok) == len(files) - 2
    assert all(o["tier"] == "GLACIER" and o["first_byte_seconds"] is not None for o in ok)
    assert report["totals"]["weights"]["failed"] == 2
    assert not [p for p in scratch.rglob("*") if p.is_file()]  # cleaned up
    evidence = json.loads((tmp_path / "evidence.json").read_text())
    assert evidence["failed"] == 2
    markdown = (tmp_path / "evidence.md").read_text()
    assert "FAILED" in markdown and flipped in markdown and missing in markdown
    [event] = audit_events(tmp_path / "ledger", "drill.completed")
    assert event["details"]["failed"] == 2
    assert {f["key"] for f in event["details"]["failures"]} == {flipped, missing}
    assert cli("audit", "verify", str(manifest)).returncode == 0


def test_drill_on_a_cold_location_catches_damage_and_restore_writes_nothing_bad(tmp_path):
    files = make_source(tmp_path / "src", 10, size=5000)
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "logs", "source": {"url": str(tmp_path / "src") + "/"},
        "destination": {"url": str(tmp_path / "hot") + "/"},
        "lifecycle": [{"after": "7d", "location": {"url": str(tmp_path / "cold") + "/"}}]}],
        ledger=str(tmp_path / "ledger"))
    assert cli("run", str(manifest)).returncode == 0
    assert cli("archive", str(manifest), "--now", LATER).returncode == 0
    damaged = tmp_path / "cold" / "part-0002.bin"
    data = bytearray(damaged.read_bytes())
    data[7] ^= 0x80
    damaged.write_bytes(bytes(data))
    (tmp_path / "cold" / "part-0004.bin").unlink()

    result = cli("drill", str(manifest), "--json")
    assert result.returncode == 1
    failed = {o["key"] for o in last_json(result.stdout)["objects"] if not o["ok"]}
    assert failed == {"part-0002.bin", "part-0004.bin"}

    back = cli("restore", str(manifest), "--dataset", "logs", "--to",
               str(tmp_path / "back"), "--json")
    assert back.returncode == 1
    restored = {str(p.relative_to(tmp_path / "back")) for p in (tmp_path / "back").rglob("*")
                if p.is_file()}
    assert restored == set(files) - failed  # nothing wrong or partial was written
    for key in restored:
        assert (tmp_path / "back" / key).read_bytes() == files[key]


def test_restore_refuses_overlapping_targets_and_unknown_datasets(tmp_path):
    manifest, _ = local_manifest(tmp_path, 2)
    for to in (tmp_path / "src" / "x", tmp_path / "dst", tmp_path):
        result = cli("restore", str(manifest), "--dataset", "shards", "--to", str(to))
        assert result.returncode == 2 and "overlaps" in result.stderr
    unknown = cli("restore", str(manifest), "--dataset", "nope", "--to",
                  str(tmp_path / "elsewhere"))
    assert unknown.returncode == 2 and "no dataset named 'nope'" in unknown.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_selection_rejects_bad_values():
    with pytest.raises(BadInput):
        Selection(sample=150)
    with pytest.raises(BadInput):
        Selection(rotate=(0, 3))


def test_a_drill_no_identity_opens_is_exit_2(tmp_path):
    make_source(tmp_path / "src", 3)
    owner, stranger = X25519Identity.generate(), X25519Identity.generate()
    (tmp_path / "stranger.key").write_text(format_identity_file(stranger))
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "sealed", "source": {"url": str(tmp_path / "src") + "/"},
        "destination": {"url": str(tmp_path / "dst") + "/"},
        "encrypt": {"recipients": [owner.recipient.encode()]}}], ledger=str(tmp_path / "ledger"))
    assert cli("run", str(manifest)).returncode == 0
    result = cli("drill", str(manifest), "--identity", str(tmp_path / "stranger.key"),
                 "--json")
    assert result.returncode == 2
    assert all("no identity matches" in o["error"] for o in last_json(result.stdout)["objects"])
