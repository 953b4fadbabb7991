"""Conformance: every store-facing behaviour on every backend, against real stores.

Backends: local disk, memory://, S3 (moto_server), GCS (gcp-storage-emulator),
Azure Blob (Azurite) and SFTP (OpenSSH's sshd). Each test runs the Python API the
CLI wraps (api.run and api.verify) with the backend as destination, and reads the
results back through the store's own client:

* copy, verify, rerun skips; the copy read back from the backend as a source
  (awkward names, and bytes that upload framing could misread, among them);
* a flipped destination byte is caught by verify (checksum, full) and repaired
  by ``run --reverify``; what ``size`` mode does and does not see;
* native checksums recorded in the ledger as ``<algo>:<base64>``, per backend;
* encryption (age files at the destination, verified by decryption);
* the ledger on the store itself where delta-rs can write there;
* storage classes where the store has them (S3, GCS), refused where not.

Atomic commit under failure is in test_conformance_atomic.py.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from datamove import api
from datamove.age import X25519Identity, format_identity_file
from datamove.errors import ManifestError
from datamove.ledger.tables import Ledger
from datamove.manifest.model import Manifest, parse_manifest
from datamove.stores.core import list_entries, stat

from .backends import KINDS, Backend, backend_of

PART = 5 * 1024 * 1024  # S3's minimum part; GCS chunks and Azure blocks use it too
SIZES = {"empty": 0, "one": 1, "small": 300 * 1024 + 5, "multi/part.bin": PART + 7}
AWKWARD = {"a-c": b"dash", "a/b": b"slash", "unicode/日本語.bin": b"u", "sp ace.txt": b"s"}
# Bytes a one-request upload's MIME framing could misread: a final CR (taken for
# the start of a CRLF delimiter) and lines that look like gcsfs's own boundary.
FRAMING = {"framing/ends-in-cr.bin": b"the last byte is a CR\r",
           "framing/boundary.bin": b"\n--==0==\r\n\r\n--==0==--\r\n--\r"}


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return backend_of(request, request.param, tmp_path)


def source_files(root: Path, seed: int = 5) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {key: rng.randbytes(size) for key, size in SIZES.items()} | AWKWARD | FRAMING
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def manifest(tmp_path: Path, source: dict[str, Any], destination: dict[str, Any],
             verify: str = "checksum", **top: Any) -> Manifest:
    dataset = top.pop("dataset", {})
    doc = {"version": 1, "name": "conformance",
           "engine": {"threads": 4, "part_size": PART, "batch_objects": 16}, **top,
           "datasets": [{"name": "d", "source": source, "destination": destination,
                         "verify": verify, **dataset}]}
    return parse_manifest(yaml.safe_dump(doc, allow_unicode=True), str(tmp_path / "m.yaml"),
                          base_dir=tmp_path)


def ledger_rows(m: Manifest) -> list[dict[str, Any]]:
    return api.ledger_of(m).objects().to_pylist()


def copied(tmp_path: Path, backend: Backend, verify: str = "checksum",
           **top: Any) -> tuple[Manifest, dict[str, bytes]]:
    src = tmp_path / "src"
    files = source_files(src)
    m = manifest(tmp_path, {"url": f"{src}/"}, backend.location, verify, **top)
    report = api.run(m)
    assert report.exit_code == 0, report.to_dict()["problems"]
    assert report.datasets["d"].counts["copied"] == len(files)
    return m, files


# --- copy, verify, rerun ---------------------------------------------------------------

def test_copy_verify_rerun_and_read_back(tmp_path: Path, backend: Backend) -> None:
    m, files = copied(tmp_path, backend)
    assert backend.keys() == sorted(files)  # nothing else: no temporary names left
    for key, data in files.items():
        assert backend.get(key) == data, key
    # The backend lists in UTF-8 byte order, like every other listing.
    assert [e.key for e in list_entries(backend.loc)] == sorted(files, key=str.encode)

    check = api.verify(m)
    assert check.exit_code == 0, check.to_dict()["problems"]
    assert check.datasets["d"].counts["matched"] == len(files)
    rerun = api.run(m)
    assert rerun.datasets["d"].counts["copied"] == 0
    assert rerun.datasets["d"].counts["skipped"] == len(files)

    # The backend as a source: back to a local directory, verified.
    back = tmp_path / "back"
    m2 = manifest(tmp_path, backend.location, {"url": f"{back}/"}, "full",
                  ledger=str(tmp_path / "ledger-back"))
    assert api.run(m2).exit_code == 0
    assert {str(p.relative_to(back)): p.read_bytes() for p in back.rglob("*")
            if p.is_file()} == files
    assert api.verify(m2).exit_code == 0


# What each backend's copy records as its native checksum (docs/BACKENDS.md).
NATIVE_ALGO = {
    "local": {"small": None, "multi/part.bin": None},       # a read-back, not a store checksum
    "memory": {"small": None, "multi/part.bin": None},
    "s3": {"small": "md5", "multi/part.bin": "sha256"},     # ETag of a PUT; composite sha256
    "gcs": {"small": "crc32c", "multi/part.bin": "crc32c"},  # GCS computes it for all
    "azure": {"small": "md5", "multi/part.bin": None},      # Put Blob MD5; blocks have none
    "sftp": {"small": None, "multi/part.bin": None},        # SFTP has no checksum request
}


def test_native_checksums_recorded_per_backend(tmp_path: Path, backend: Backend) -> None:
    m, _files = copied(tmp_path, backend)
    rows = {r["key"]: r for r in ledger_rows(m)}
    for key, algo in NATIVE_ALGO[backend.kind].items():
        native = rows[key]["native_checksum"]
        if algo is None:
            assert native is None or ":" not in native, (key, native)
        else:
            assert native and native.startswith(f"{algo}:"), (key, native)
            if algo != "sha256":  # a composite is of the parts; whole ones are checked below
                info = stat(backend.loc, key)
                assert info is not None and info.native[algo] == native


@pytest.mark.parametrize("mode", ["size", "checksum", "full"])
def test_verify_modes(tmp_path: Path, backend: Backend, mode: str) -> None:
    m, _files = copied(tmp_path, backend, verify=mode)
    assert api.verify(m).exit_code == 0
    backend.tamper("small", at=1000)  # same size, other bytes
    check = api.verify(m)
    problems = check.to_dict()["problems"]
    if mode == "size":  # sizes only: a same-size change is not seen (docs/BACKENDS.md)
        assert check.exit_code == 0, problems
    else:
        assert check.exit_code == 1
        assert [(p["key"], p["status"]) for p in problems] == [("small", "differs")]
    backend.put("one", b"")  # a different size is seen in every mode
    again = api.verify(m)
    assert again.exit_code == 1
    assert ("one", "differs") in [(p["key"], p["status"]) for p in again.to_dict()["problems"]]


def test_corrupted_byte_caught_and_repaired_by_reverify(tmp_path: Path,
                                                        backend: Backend) -> None:
    m, files = copied(tmp_path, backend)
    backend.tamper("multi/part.bin", at=PART + 3)  # in the second part
    check = api.verify(m)
    assert check.exit_code == 1
    assert [(p["key"], p["status"]) for p in check.to_dict()["problems"]] == [
        ("multi/part.bin", "differs")]
    assert api.run(m).datasets["d"].counts["copied"] == 0  # a plain rerun trusts the ledger
    repaired = api.run(m, reverify=True)
    assert repaired.exit_code == 0, repaired.to_dict()["problems"]
    assert repaired.datasets["d"].counts["repaired"] == 1
    assert backend.get("multi/part.bin") == files["multi/part.bin"]
    assert api.verify(m).exit_code == 0


# --- encryption ------------------------------------------------------------------------

def test_encrypted_copy_is_age_at_rest_and_verifies_by_decryption(tmp_path: Path,
                                                                  backend: Backend) -> None:
    identity = X25519Identity.generate()
    (tmp_path / "id.txt").write_text(format_identity_file(identity))
    m, files = copied(tmp_path, backend, verify="full",
                      dataset={"encrypt": {"recipients": [str(identity.recipient)],
                                           "identity": {"file": "id.txt"}}})
    assert backend.keys() == sorted(f"{k}.age" for k in files)
    stored = backend.get("multi/part.bin.age")
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert files["multi/part.bin"][:4096] not in stored
    assert api.verify(m).exit_code == 0
    backend.tamper("small.age", at=len(backend.get("small.age")) - 20)
    check = api.verify(m)
    assert check.exit_code == 1
    assert [(p["key"], p["status"]) for p in check.to_dict()["problems"]] == [
        ("small", "differs")]


# --- the ledger on the store -----------------------------------------------------------

# memory, sftp: no delta-rs store; gcs: docs/BACKENDS.md
LEDGER_KINDS = ["local", "s3", "azure"]


@pytest.mark.parametrize("kind", LEDGER_KINDS)
def test_ledger_on_the_store(tmp_path: Path, request: pytest.FixtureRequest, kind: str) -> None:
    backend = backend_of(request, kind, tmp_path)
    ledger = backend.ledger()
    assert ledger is not None
    m, files = copied(tmp_path, backend, **ledger)
    rows = ledger_rows(m)
    assert sorted(r["key"] for r in rows) == sorted(files)
    assert Ledger(ledger["ledger"], ledger.get("ledger_options")).table("objects") is not None
    if kind != "local":  # the tables are in the store itself, not on this disk
        assert not (tmp_path / ".datamove").exists()
        assert any(k.startswith("ledger/objects/_delta_log/") for k in
                   backend.keys_under(f"{backend.bucket}/ledger", "ledger/"))
    rerun = api.run(m)  # the plan reads the ledger back from the store
    assert rerun.datasets["d"].counts["skipped"] == len(files)


# --- storage classes -------------------------------------------------------------------

STORAGE_CLASS = {"s3": "STANDARD_IA", "gcs": "NEARLINE"}


def test_storage_class_where_the_store_has_them(tmp_path: Path, backend: Backend) -> None:
    wanted = STORAGE_CLASS.get(backend.kind)
    destination = {**backend.location, "storage_class": wanted or "COLDLINE"}
    if wanted is None:
        with pytest.raises(ManifestError, match="only S3 destinations have storage classes, "
                                                "and GCS destinations too"):
            manifest(tmp_path, {"url": "src/"}, destination)
        return
    with pytest.raises(ManifestError, match=f"unknown {'S3' if backend.kind == 's3' else 'GCS'} "
                                            "storage class 'FROZEN'"):
        manifest(tmp_path, {"url": "src/"}, {**destination, "storage_class": "FROZEN"})
    src = tmp_path / "src"
    files = source_files(src)
    m = manifest(tmp_path, {"url": f"{src}/"}, destination)
    report = api.run(m)
    assert report.exit_code == 0, report.to_dict()["problems"]
    for key in ("small", "multi/part.bin"):  # one request and multi-part both
        info = stat(backend.loc, key)
        assert info is not None and info.storage_class == wanted, key
    assert {r["storage_class"] for r in ledger_rows(m)} == {wanted}  # and recorded
    assert len(files) == len(backend.keys())
