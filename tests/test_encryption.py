"""Encrypted datasets end to end: age files at the destination, never plaintext.

* The destination listing maps back to source keys in source order, whatever
  the suffix does to byte order (a randomized check against sorting).
* A run stores each object as ``key.age``; the Debian ``age`` CLI decrypts every
  one with either recipient's identity (operational and recovery key); the
  writer never sees a plaintext byte; the ledger records the plaintext sha256,
  the stored sha256, the payload sha256 and both key fingerprints.
* Verification: with an identity by decryption, without one against the
  ledger; a flipped byte, a truncation and a dropped last chunk are caught and
  named; the wrong identity is exit 2; ``verify: full`` repairs a corrupted copy.
* The same on moto S3, with a multipart object.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from pathlib import Path

import pytest
import yaml

from datamove import api
from datamove.age import X25519Identity, fingerprint, format_identity_file
from datamove.crypto.dataset import stored_listing
from datamove.ledger.tables import Ledger
from datamove.pipeline import transfer
from datamove.stores.core import Entry, KeyFilter
from tests.conftest import cli, file_sha, require_tool, s3_location, write_manifest

SIZES = [0, 1, 65_535, 65_536, 65_537, 131_072, 5 * 1024 * 1024 + 1]
MARKER = b"PLAINTEXT-MARKER-7f3a"  # repeated through every source file


# --- the destination listing ---------------------------------------------------------

def test_stored_listing_restores_source_order_for_any_keys() -> None:
    rng = random.Random(11)
    alphabet = ["a", "b", "-", ".", "/", " ", "!", "~", "é", "age", ".ag", "0"]
    for trial in range(300):
        keys = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
                for _ in range(rng.randint(1, 40))}
        keys = {k for k in keys if not k.startswith("/") and not k.endswith("/")
                and "//" not in k}
        suffix = rng.choice([".age", ".enc", ".a"])
        stored = sorted((k + suffix for k in keys), key=lambda k: k.encode())
        extras = sorted({rng.choice(sorted(keys)) + ".plain" for _ in range(3)} if keys else [])
        listing = sorted(stored + extras, key=lambda k: k.encode())
        got = [e.key for e in stored_listing((Entry(k, 1) for k in listing), suffix)]
        want = sorted(keys, key=lambda k: k.encode())
        assert got == want, (trial, suffix, listing)


def test_stored_listing_filters_on_the_source_key() -> None:
    listing = [Entry(k, 1) for k in ["a.bin.age", "b.txt.age", "c.bin.age", "notes.txt"]]
    only_bin = KeyFilter(include=("*.bin",))
    assert [e.key for e in stored_listing(listing, ".age", only_bin)] == ["a.bin", "c.bin"]


# --- helpers -------------------------------------------------------------------------

def keypair(directory: Path, name: str) -> tuple[X25519Identity, Path]:
    identity = X25519Identity.generate()
    path = directory / f"{name}.txt"
    path.write_text(format_identity_file(identity))
    return identity, path


def make_source(root: Path, sizes: list[int] = SIZES, seed: int = 3) -> dict[str, bytes]:
    """Files whose plaintext is easy to spot: MARKER every 4 KiB in random bytes."""
    rng = random.Random(seed)
    files = {}
    for i, size in enumerate(sizes):
        data = bytearray(rng.randbytes(size))
        for at in range(0, max(0, size - len(MARKER)), 4096):
            data[at:at + len(MARKER)] = MARKER
        key = f"part-{i}/obj-{size}.bin" if i % 2 else f"obj-{size}.bin"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(bytes(data))
        files[key] = bytes(data)
    return files


@pytest.fixture
def encrypted_setup(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.mkdir()
    ops, ops_file = keypair(keys, "ops")
    recovery, recovery_file = keypair(keys, "recovery")
    (keys / "recipients.txt").write_text(
        f"# operational\n{ops.recipient}\n# recovery (offline)\n{recovery.recipient}\n")
    source = tmp_path / "src"
    source.mkdir()
    files = make_source(source)
    manifest = write_manifest(
        tmp_path / "m.yaml",
        [{"name": "weights", "source": {"url": "src/"}, "destination": {"url": "dst/"},
          "verify": "checksum", "encrypt": True}],
        keys={"recipients_file": "keys/recipients.txt", "identity": {"file": "keys/ops.txt"}},
        engine={"threads": 4, "part_size": 5 * 1024 * 1024})
    return {"manifest": manifest, "files": files, "dst": tmp_path / "dst",
            "ops": (ops, ops_file), "recovery": (recovery, recovery_file), "tmp": tmp_path}


def age_decrypt(path: Path, identity_file: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([require_tool("age"), "-d", "-i", str(identity_file), str(path)],
                          capture_output=True, timeout=60)


def payload_of(stored: bytes) -> bytes:
    """The bytes after the age header (found independently: the '--- ' MAC line)."""
    mac_line = stored.index(b"\n--- ") + 1
    return stored[stored.index(b"\n", mac_line) + 1:]


# --- runs ----------------------------------------------------------------------------

def test_encrypted_run_stores_age_files_any_recipient_decrypts(encrypted_setup, monkeypatch):
    s = encrypted_setup
    written = bytearray()
    tail = b""
    real_writer = transfer.atomic_writer

    def watching_writer(*args, **kwargs):  # sees every byte a worker hands to a writer
        context = real_writer(*args, **kwargs)

        class Tee:
            def __enter__(self):
                self.inner = context.__enter__()
                original = self.inner.write

                def write(data):
                    nonlocal tail
                    chunk = tail + bytes(data)
                    if MARKER in chunk:
                        written.extend(b"!")
                    tail = chunk[-len(MARKER):]
                    return original(data)

                self.inner.write = write
                return self.inner

            def __exit__(self, *exc):
                return context.__exit__(*exc)

        return Tee()

    monkeypatch.setattr(transfer, "atomic_writer", watching_writer)
    report = api.run(api.load_manifest(s["manifest"]))
    assert report.exit_code == 0, report.to_json()
    assert report.datasets["weights"].counts["copied"] == len(SIZES)
    assert not written, "plaintext reached a writer"

    stored = sorted(p.relative_to(s["dst"]).as_posix() for p in s["dst"].rglob("*")
                    if p.is_file())
    assert stored == sorted(key + ".age" for key in s["files"])
    for key, data in s["files"].items():
        blob = (s["dst"] / (key + ".age")).read_bytes()
        assert MARKER not in blob
        for _, identity_file in (s["ops"], s["recovery"]):
            out = age_decrypt(s["dst"] / (key + ".age"), identity_file)
            assert out.returncode == 0, out.stderr
            assert out.stdout == data

    rows = Ledger(str(s["tmp"] / ".datamove" / "ledger")).objects().to_pylist()
    want_fps = sorted(fingerprint(k.recipient) for k in (s["ops"][0], s["recovery"][0]))
    assert len(rows) == len(SIZES)
    for row in rows:
        data = s["files"][row["key"]]
        blob = (s["dst"] / (row["key"] + ".age")).read_bytes()
        assert row["encrypted"] is True
        assert sorted(row["key_fingerprints"]) == want_fps
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert row["stored_sha256"] == hashlib.sha256(blob).hexdigest()
        assert row["payload_sha256"] == hashlib.sha256(payload_of(blob)).hexdigest()
        assert row["stored_size"] == len(blob) and row["size"] == len(data)
        assert row["destination_url"].endswith(row["key"] + ".age")

    again = api.run(api.load_manifest(s["manifest"]))
    assert again.datasets["weights"].counts["skipped"] == len(SIZES)
    assert again.datasets["weights"].counts["copied"] == 0


def test_changed_source_is_encrypted_again(encrypted_setup):
    s = encrypted_setup
    assert api.run(api.load_manifest(s["manifest"])).exit_code == 0
    key = "obj-0.bin"
    source = s["tmp"] / "src" / key
    source.write_bytes(b"new contents")
    report = api.run(api.load_manifest(s["manifest"]))
    assert report.datasets["weights"].counts["copied"] == 1
    assert age_decrypt(s["dst"] / (key + ".age"), s["ops"][1]).stdout == b"new contents"


# --- verification --------------------------------------------------------------------

def flip_byte(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip-middle-chunk", "truncate", "drop-last-chunk"])
@pytest.mark.parametrize("with_identity", [True, False])
def test_verify_catches_damage_and_names_the_object(encrypted_setup, damage, with_identity):
    s = encrypted_setup
    assert api.run(api.load_manifest(s["manifest"])).exit_code == 0
    key = "part-5/obj-131072.bin"  # two full chunks
    stored = s["dst"] / (key + ".age")
    blob = stored.read_bytes()
    if damage == "flip-middle-chunk":
        flip_byte(stored, 65_536 + 100)
    elif damage == "truncate":
        stored.write_bytes(blob[:-1000])
    else:  # the last chunk is the full second one: 64 KiB + tag
        stored.write_bytes(blob[:-(65_536 + 16)])
    args = ["verify", str(s["manifest"]), "--json", "--no-progress"]
    if not with_identity:  # the manifest names one; verify against the ledger instead
        doc = yaml.safe_load(s["manifest"].read_text())
        del doc["keys"]["identity"]
        s["manifest"].write_text(yaml.safe_dump(doc))
    result = cli(*args)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 1, result.stdout + result.stderr
    assert summary["datasets"]["weights"]["differs"] == 1
    assert summary["datasets"]["weights"]["matched"] == len(SIZES) - 1
    [problem] = summary["problems"]
    assert problem["key"] == key
    assert key + ".age" in problem["error"]
    assert ("does not decrypt" if with_identity else "differs from the ledger") in \
        problem["error"]


def test_verify_with_the_wrong_identity_is_exit_2_naming_the_object(encrypted_setup):
    s = encrypted_setup
    assert api.run(api.load_manifest(s["manifest"])).exit_code == 0
    _, stranger = keypair(s["tmp"] / "keys", "stranger")
    result = cli("verify", str(s["manifest"]), "--json", "--no-progress",
                 "--identity", str(stranger))
    assert result.returncode == 2, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    errors = " ".join(p["error"] for p in summary["problems"])
    assert "no identity matches" in errors
    assert "obj-1.bin.age" in errors


def test_full_verify_with_identity_repairs_a_corrupted_copy(encrypted_setup):
    s = encrypted_setup
    assert api.run(api.load_manifest(s["manifest"])).exit_code == 0
    key = "obj-65537.bin"
    stored = s["dst"] / (key + ".age")
    flip_byte(stored, 50)
    report = api.run(api.load_manifest(s["manifest"]), reverify=True)
    assert report.exit_code == 0, report.to_json()
    counts = report.datasets["weights"].counts
    assert counts["repaired"] == 1 and counts["verified"] == len(SIZES) - 1
    assert age_decrypt(stored, s["ops"][1]).stdout == s["files"][key]


# --- S3 ------------------------------------------------------------------------------

def test_encrypted_to_s3_multipart_decrypts_with_age(tmp_path, moto_server):
    identity, identity_file = keypair(tmp_path, "id")
    source = tmp_path / "src"
    source.mkdir()
    files = make_source(source, sizes=[0, 65_537, 12 * 1024 * 1024 + 3])
    bucket = moto_server.new_bucket()
    manifest = write_manifest(
        tmp_path / "m.yaml",
        [{"name": "s3", "source": {"url": "src/"},
          "destination": s3_location(moto_server, bucket, "enc/"), "verify": "full",
          "encrypt": {"recipients": [str(identity.recipient)],
                      "identity": {"file": "id.txt"}}}],
        engine={"threads": 2, "part_size": 5 * 1024 * 1024})
    report = api.run(api.load_manifest(manifest))
    assert report.exit_code == 0, report.to_json()
    client = moto_server.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="enc/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"enc/{k}.age" for k in files)
    for key, data in files.items():
        blob = client.get_object(Bucket=bucket, Key=f"enc/{key}.age")["Body"].read()
        assert MARKER not in blob
        local = tmp_path / "fetched.age"
        local.write_bytes(blob)
        assert age_decrypt(local, identity_file).stdout == data
    assert file_sha(source / "obj-0.bin") == hashlib.sha256(b"").hexdigest()
    checked = api.verify(api.load_manifest(manifest))
    assert checked.exit_code == 0 and checked.datasets["s3"].counts["matched"] == len(files)
