"""Key rotation: headers re-wrapped, payload bytes untouched, resumable.

* After ``keys rotate`` the old identity no longer opens any object (Debian
  ``age`` says so) and the new one does; the bytes after each header are
  identical before and after (hashed here, independently of datamove); the
  ledger records old and new fingerprints; a second rotation is a no-op.
* A rotation that dies after rewriting objects but before recording them
  (the process is stopped at the ledger commit) resumes: the rerun records
  those objects from the journal without touching them, and rotates the rest.
* A rotation killed with SIGKILL mid-way, then rerun, leaves every object
  readable with the new key only.
* An object whose bytes differ from the ledger is refused, not rewritten; no
  identity, a wrong identity or an unencrypted dataset is a clear exit 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datamove import api
from datamove.age import X25519Identity, fingerprint, format_identity_file
from datamove.commands.rotate import rotate
from datamove.ledger.tables import Ledger, LedgerWriter
from tests.conftest import AWS_ENV, cli, require_tool, s3_location, write_manifest


def keypair(directory: Path, name: str) -> tuple[X25519Identity, Path, Path]:
    """An identity file and a recipients file."""
    identity = X25519Identity.generate()
    secret = directory / f"{name}.key"
    secret.write_text(format_identity_file(identity))
    public = directory / f"{name}.pub"
    public.write_text(f"{identity.recipient}\n")
    return identity, secret, public


def payload_sha(blob: bytes) -> str:
    mac_line = blob.index(b"\n--- ") + 1
    return hashlib.sha256(blob[blob.index(b"\n", mac_line) + 1:]).hexdigest()


def age_opens(path: Path, identity_file: Path) -> bytes | None:
    out = subprocess.run([require_tool("age"), "-d", "-i", str(identity_file), str(path)],
                         capture_output=True, timeout=60)
    return out.stdout if out.returncode == 0 else None


@pytest.fixture
def rotated_setup(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.mkdir()
    old, old_key, old_pub = keypair(keys, "old")
    new, new_key, new_pub = keypair(keys, "new")
    source = tmp_path / "src"
    files = {}
    for i, size in enumerate([0, 1, 65_536, 70_000, 300_000, 6 * 1024 * 1024]):
        data = os.urandom(size)
        key = f"d{i % 2}/f{i}.bin"
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_bytes(data)
        files[key] = data
    manifest = write_manifest(
        tmp_path / "m.yaml",
        [{"name": "models", "source": {"url": "src/"}, "destination": {"url": "dst/"},
          "encrypt": {"recipients_file": "keys/old.pub", "identity": {"file": "keys/old.key"}}}],
        engine={"threads": 2, "part_size": 5 * 1024 * 1024, "batch_objects": 2})
    assert api.run(api.load_manifest(manifest)).exit_code == 0
    dst = tmp_path / "dst"
    before = {k: payload_sha((dst / f"{k}.age").read_bytes()) for k in files}
    return {"manifest": manifest, "files": files, "dst": dst, "before": before,
            "old": (old, old_key, old_pub), "new": (new, new_key, new_pub), "tmp": tmp_path}


def assert_rotated(s) -> None:
    for key, data in s["files"].items():
        stored = s["dst"] / f"{key}.age"
        assert age_opens(stored, s["new"][1]) == data, key
        assert age_opens(stored, s["old"][1]) is None, key
        assert payload_sha(stored.read_bytes()) == s["before"][key], key
    leftovers = [p.name for p in s["dst"].rglob("*") if ".datamove-partial" in p.name]
    assert not leftovers


def test_rotate_rewraps_headers_and_keeps_payloads(rotated_setup):
    s = rotated_setup
    result = cli("keys", "rotate", str(s["manifest"]), "--recipients-file", str(s["new"][2]),
                 "--json", "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["datasets"]["models"]["rotated"] == len(s["files"])
    assert "still encrypts new objects" in result.stderr  # the manifest names the old keys
    assert_rotated(s)

    ledger = Ledger(str(s["tmp"] / ".datamove" / "ledger"))
    rows = [r for r in ledger.objects().to_pylist() if r["status"] == "rotated"]
    assert len(rows) == len(s["files"])
    old_fp, new_fp = fingerprint(s["old"][0].recipient), fingerprint(s["new"][0].recipient)
    for row in rows:
        blob = (s["dst"] / f"{row['key']}.age").read_bytes()
        assert row["key_fingerprints"] == [new_fp]
        assert row["previous_key_fingerprints"] == [old_fp]
        assert row["stored_sha256"] == hashlib.sha256(blob).hexdigest()
        assert row["payload_sha256"] == s["before"][row["key"]]
        assert row["sha256"] == hashlib.sha256(s["files"][row["key"]]).hexdigest()

    again = rotate(api.load_manifest(s["manifest"]), str(s["new"][2]))
    assert again.exit_code == 0
    assert again.datasets["models"].counts["skipped"] == len(s["files"])
    assert again.datasets["models"].counts["rotated"] == 0

    # A run afterwards skips everything: the rotated rows are the objects' latest.
    run = api.run(api.load_manifest(s["manifest"]))
    assert run.datasets["models"].counts["skipped"] == len(s["files"])
    # And `verify` with the new identity decrypts every object.
    checked = api.verify(api.load_manifest(s["manifest"]), identity=str(s["new"][1]))
    assert checked.exit_code == 0
    assert checked.datasets["models"].counts["matched"] == len(s["files"])


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it."""


def test_rotation_stopped_before_recording_resumes_from_the_journal(rotated_setup,
                                                                     monkeypatch):
    s = rotated_setup
    real_add = LedgerWriter.add
    seen: list[str] = []

    def add(self, row):
        if row["status"] == "rotated":
            seen.append(row["key"])
            if len(seen) == 3:
                raise Crash()  # three objects rewritten; the driver dies before their rows land
        return real_add(self, row)

    monkeypatch.setattr(LedgerWriter, "add", add)
    with pytest.raises(Crash):
        rotate(api.load_manifest(s["manifest"]), str(s["new"][2]))
    monkeypatch.setattr(LedgerWriter, "add", real_add)

    # Rows still buffered died with the process: every rewritten object is unrecorded.
    ledger = Ledger(str(s["tmp"] / ".datamove" / "ledger"))
    assert not [r for r in ledger.objects().to_pylist() if r["status"] == "rotated"]
    journaled = [r["key"] for r in ledger.objects().to_pylist() if r["status"] == "rotating"]
    assert sorted(journaled) == sorted(s["files"])
    rewritten = {k: (s["dst"] / f"{k}.age").stat().st_ino for k in s["files"]
                 if age_opens(s["dst"] / f"{k}.age", s["new"][1]) is not None}
    assert len(rewritten) >= 3, "the crash should leave rewritten objects without their rows"

    report = rotate(api.load_manifest(s["manifest"]), str(s["new"][2]))
    assert report.exit_code == 0, report.to_json()
    assert report.datasets["models"].counts["rotated"] == len(s["files"])
    assert_rotated(s)
    for key, inode in rewritten.items():  # recorded from the journal, not rewritten again
        assert (s["dst"] / f"{key}.age").stat().st_ino == inode, key


def test_rotation_killed_mid_way_then_rerun(rotated_setup):
    s = rotated_setup
    for i in range(120):  # enough objects for the kill to land mid-way
        (s["tmp"] / "src" / "many" / f"{i:03d}.bin").parent.mkdir(exist_ok=True)
        data = os.urandom(20_000)
        (s["tmp"] / "src" / "many" / f"{i:03d}.bin").write_bytes(data)
        s["files"][f"many/{i:03d}.bin"] = data
    assert api.run(api.load_manifest(s["manifest"])).exit_code == 0
    s["before"] = {k: payload_sha((s["dst"] / f"{k}.age").read_bytes()) for k in s["files"]}
    inodes = {k: (s["dst"] / f"{k}.age").stat().st_ino for k in s["files"]}

    process = subprocess.Popen(
        [sys.executable, "-m", "datamove.cli", "keys", "rotate", str(s["manifest"]),
         "--recipients-file", str(s["new"][2]), "--no-progress"],
        env={**os.environ, **AWS_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    changed = 0
    while time.monotonic() < deadline and process.poll() is None:
        changed = sum((s["dst"] / f"{k}.age").stat().st_ino != inode
                      for k, inode in inodes.items())
        if changed >= 10:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL, "the rotation finished before the kill"
    assert 0 < changed < len(inodes)

    result = cli("keys", "rotate", str(s["manifest"]), "--recipients-file", str(s["new"][2]),
                 "--json", "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_rotated(s)
    final = rotate(api.load_manifest(s["manifest"]), str(s["new"][2]))
    assert final.datasets["models"].counts["skipped"] == len(s["files"])


def test_rotation_refuses_an_object_that_differs_from_the_ledger(rotated_setup):
    s = rotated_setup
    key = "d0/f4.bin"
    stored = s["dst"] / f"{key}.age"
    blob = bytearray(stored.read_bytes())
    blob[-10] ^= 0x80
    stored.write_bytes(bytes(blob))
    report = rotate(api.load_manifest(s["manifest"]), str(s["new"][2]))
    assert report.exit_code == 1
    [problem] = report.problems
    assert problem.key == key and "differ from the ledger" in problem.error
    assert stored.read_bytes() == bytes(blob)  # left exactly as it was
    assert report.datasets["models"].counts["rotated"] == len(s["files"]) - 1


def test_rotation_errors_are_clear_and_exit_2(rotated_setup):
    s = rotated_setup
    manifest = str(s["manifest"])
    _, stranger, _ = keypair(s["tmp"] / "keys", "stranger")
    wrong = cli("keys", "rotate", manifest, "--recipients-file", str(s["new"][2]),
                "--identity", str(stranger), "--json", "--no-progress")
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert "no identity matches" in wrong.stdout
    missing = cli("keys", "rotate", manifest, "-R", str(s["tmp"] / "nope.pub"))
    assert missing.returncode == 2 and "nope.pub" in missing.stderr
    # the old spelling still works (hidden, deprecated)
    old = cli("keys", "rotate", manifest, "--recipients", str(s["tmp"] / "nope.pub"))
    assert old.returncode == 2 and "nope.pub" in old.stderr
    assert "--recipients is deprecated; use -R/--recipients-file" in old.stderr
    unnamed = cli("keys", "rotate", manifest)
    assert unnamed.returncode == 2 and "--recipients-file" in unnamed.stderr
    plain = write_manifest(s["tmp"] / "plain.yaml", [
        {"name": "p", "source": {"url": "src/"}, "destination": {"url": "out/"}}])
    refused = cli("keys", "rotate", str(plain), "--recipients-file", str(s["new"][2]))
    assert refused.returncode == 2 and "no encrypted dataset" in refused.stderr
    for key in s["files"]:  # nothing was rewritten by any of these
        assert age_opens(s["dst"] / f"{key}.age", s["old"][1]) == s["files"][key]


def test_rotate_on_s3_multipart_keeps_payloads(tmp_path, moto_server):
    _, old_key, _ = keypair(tmp_path, "old")
    _, new_key, new_pub = keypair(tmp_path, "new")
    source = tmp_path / "src"
    source.mkdir()
    files = {"big.bin": os.urandom(11 * 1024 * 1024 + 5), "small.bin": os.urandom(777)}
    for key, data in files.items():
        (source / key).write_bytes(data)
    bucket = moto_server.new_bucket()
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "s3", "source": {"url": "src/"},
         "destination": {**s3_location(moto_server, bucket, "enc/"), "sse": "aws:kms"},
         "tags": {"owner": "ml"},
         "encrypt": {"recipients_file": "old.pub", "identity": {"file": "old.key"}}}],
        engine={"threads": 2, "part_size": 5 * 1024 * 1024})
    assert api.run(api.load_manifest(manifest)).exit_code == 0
    client = moto_server.client()

    def fetch(key: str) -> Path:
        path = tmp_path / f"{key}.fetched.age"
        path.write_bytes(client.get_object(Bucket=bucket, Key=f"enc/{key}.age")["Body"].read())
        return path

    before = {k: payload_sha(fetch(k).read_bytes()) for k in files}
    report = rotate(api.load_manifest(manifest), str(new_pub))
    assert report.exit_code == 0, report.to_json()
    assert report.datasets["s3"].counts["rotated"] == 2
    for key, data in files.items():
        stored = fetch(key)
        assert payload_sha(stored.read_bytes()) == before[key]
        assert age_opens(stored, new_key) == data
        assert age_opens(stored, old_key) is None
        # The rewritten object keeps its SSE-KMS, tags and type (stores/attributes.py).
        head = client.head_object(Bucket=bucket, Key=f"enc/{key}.age")
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["ContentType"] == "application/octet-stream"
        assert client.get_object_tagging(Bucket=bucket, Key=f"enc/{key}.age")["TagSet"] == \
            [{"Key": "owner", "Value": "ml"}]
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
