"""Copies on every backend pair: sizes around chunk and part boundaries, awkward keys,
many small files, every verify mode, idempotent reruns. Real stores, real engine."""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from pathlib import Path

import fsspec
import pytest

from datamove import api
from datamove.checksum import READ_SIZE
from datamove.ledger.tables import Ledger
from datamove.manifest.model import parse_manifest
from tests.conftest import s3_location, write_manifest

PART = 5 * 1024 * 1024


class Side:
    """One end of a copy on a real backend: a manifest location plus raw access."""

    def __init__(self, kind: str, tmp_path: Path, moto=None):
        self.kind = kind
        self.tmp_path = tmp_path
        if kind == "local":
            self.root = tmp_path / f"local-{uuid.uuid4().hex[:6]}"
            self.location = {"url": str(self.root) + "/"}
            self.fs, self.prefix = fsspec.filesystem("file"), str(self.root)
        elif kind == "memory":
            self.prefix = f"/mem-{uuid.uuid4().hex[:8]}"
            self.location = {"url": f"memory://{self.prefix}/"}
            self.fs = fsspec.filesystem("memory")
        else:
            bucket = moto.new_bucket()
            self.location = s3_location(moto, bucket, "data/")
            self.fs = fsspec.filesystem("s3", endpoint_url=moto.endpoint,
                                        skip_instance_cache=True)
            self.prefix = f"{bucket}/data"

    def put(self, key: str, data: bytes) -> None:
        if self.kind == "local":
            path = Path(self.prefix) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self.fs.pipe(f"{self.prefix}/{key}", data)

    def get(self, key: str) -> bytes:
        if self.kind == "s3":
            self.fs.invalidate_cache()
        return self.fs.cat(f"{self.prefix}/{key}")

    def keys(self) -> list[str]:
        if self.kind == "s3":
            self.fs.invalidate_cache()
        if not self.fs.exists(self.prefix):
            return []
        found = self.fs.find(self.prefix)
        start = len(self.fs._strip_protocol(self.prefix).rstrip("/")) + 1
        return sorted(self.fs._strip_protocol(p)[start:] for p in found)


PAIRS = [("local", "local"), ("local", "s3"), ("s3", "local"), ("memory", "memory"),
         ("local", "memory"), ("memory", "s3")]


@pytest.fixture(params=PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def pair(request, tmp_path):
    moto = request.getfixturevalue("moto_server") if "s3" in request.param else None
    return Side(request.param[0], tmp_path, moto), Side(request.param[1], tmp_path, moto)


def manifest_for(src: Side, dst: Side, verify: str = "checksum", **engine: object):
    """A manifest copying src to dst, its ledger beside the destination's tmp dir."""
    doc = {
        "version": 1, "name": "t",
        "engine": {"threads": 4, "part_size": PART, "batch_objects": 64, **engine},
        "datasets": [{"name": "d", "source": src.location, "destination": dst.location,
                      "verify": verify}],
    }
    import yaml

    return parse_manifest(yaml.safe_dump(doc), "test.yaml", base_dir=src.tmp_path)


SIZES = [0, 1, READ_SIZE - 1, READ_SIZE, READ_SIZE + 1, PART - 1, PART, PART + 1, 2 * PART + 3]


def test_sizes_around_chunk_and_part_boundaries(pair):
    src, dst = pair
    rng = random.Random(7)
    expected = {f"size-{n}": rng.randbytes(n) for n in SIZES}
    for key, data in expected.items():
        src.put(key, data)
    report = api.run(manifest_for(src, dst))
    assert report.exit_code == 0, report.to_dict()["problems"]
    assert report.datasets["d"].counts["copied"] == len(SIZES)
    assert report.datasets["d"].bytes["copied"] == sum(SIZES)
    assert dst.keys() == sorted(expected)
    for key, data in expected.items():
        assert hashlib.sha256(dst.get(key)).digest() == hashlib.sha256(data).digest(), key

    rerun = api.run(manifest_for(src, dst))
    assert rerun.datasets["d"].counts["copied"] == 0
    assert rerun.datasets["d"].counts["skipped"] == len(SIZES)


AWKWARD = ["unicode/日本語/файл.bin", "spaces in/a name .txt", "a-c", "a/b", "plus+and=equals",
           "/".join(f"d{i}" for i in range(40)) + "/deep.bin", "percent%20not-encoded",
           "emoji-🦀.dat", "trailing.dot."]


def test_awkward_keys(pair):
    src, dst = pair
    for i, key in enumerate(AWKWARD):
        src.put(key, f"{i}:{key}".encode())
    report = api.run(manifest_for(src, dst))
    assert report.exit_code == 0, report.to_dict()["problems"]
    assert dst.keys() == sorted(AWKWARD)
    for i, key in enumerate(AWKWARD):
        assert dst.get(key) == f"{i}:{key}".encode()
    assert api.verify(manifest_for(src, dst)).exit_code == 0


@pytest.mark.parametrize("verify", ["size", "checksum", "full"])
def test_verify_modes_copy_and_check(pair, verify):
    src, dst = pair
    src.put("a.bin", random.Random(1).randbytes(PART + 10))
    src.put("b.txt", b"hello")
    report = api.run(manifest_for(src, dst, verify=verify))
    assert report.exit_code == 0, report.to_dict()["problems"]
    assert report.datasets["d"].counts["copied"] == 2
    check = api.verify(manifest_for(src, dst, verify=verify))
    assert check.exit_code == 0
    assert check.datasets["d"].counts["matched"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(("src_kind", "dst_kind", "n"), [
    ("local", "local", 5_000),
    # Fewer objects where the store, not datamove, sets the pace (moto answers a few hundred
    # requests a second; fsspec's memory store is O(n) a call): still many batches of 256.
    ("local", "s3", 2_000),
    ("memory", "memory", 1_200)])
def test_many_small_files(tmp_path, request, src_kind, dst_kind, n):
    moto = request.getfixturevalue("moto_server") if "s3" in (src_kind, dst_kind) else None
    src, dst = Side(src_kind, tmp_path, moto), Side(dst_kind, tmp_path, moto)
    for i in range(n):
        src.put(f"shard-{i % 50:02d}/item-{i:05d}.json", b'{"i": %d}' % i)
    report = api.run(manifest_for(src, dst, threads=8, batch_objects=256))
    assert report.exit_code == 0, report.to_dict()["problems"][:5]
    assert report.datasets["d"].counts["copied"] == n
    keys = dst.keys()
    assert len(keys) == n
    assert dst.get("shard-07/item-00957.json") == b'{"i": 957}'
    again = api.run(manifest_for(src, dst, threads=8, batch_objects=256))
    assert again.datasets["d"].counts["copied"] == 0
    assert again.datasets["d"].counts["skipped"] == n


def test_changed_source_is_copied_again(tmp_path):
    src, dst = Side("local", tmp_path), Side("local", tmp_path)
    src.put("k", b"v1")
    assert api.run(manifest_for(src, dst)).datasets["d"].counts["copied"] == 1
    path = Path(src.prefix) / "k"
    path.write_bytes(b"v2-longer")
    report = api.run(manifest_for(src, dst))
    assert report.datasets["d"].counts["copied"] == 1
    assert dst.get("k") == b"v2-longer"
    # same size, newer mtime
    path.write_bytes(b"v3-longer")
    import os

    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    assert api.run(manifest_for(src, dst)).datasets["d"].counts["copied"] == 1
    assert dst.get("k") == b"v3-longer"


def test_include_exclude_filters(tmp_path):
    src, dst = Side("local", tmp_path), Side("local", tmp_path)
    for key in ["a.jpg", "x/b.jpg", "x/c.txt", "tmp/d.jpg"]:
        src.put(key, key.encode())
    m = manifest_for(src, dst)
    ds = m.datasets[0].model_copy(update={"include": ["*.jpg"], "exclude": ["tmp/**"]})
    report = api.run(m.model_copy(update={"datasets": [ds]}))
    assert report.datasets["d"].counts["copied"] == 2
    assert dst.keys() == ["a.jpg", "x/b.jpg"]


def test_s3_destination_storage_class_is_applied_and_recorded(tmp_path, moto_server):
    """destination.storage_class: single PUTs and multipart uploads both land in it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.bin").write_bytes(b"s" * 1000)
    (src / "large.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    bucket = moto_server.new_bucket()
    destination = {**s3_location(moto_server, bucket, "ia/"), "storage_class": "STANDARD_IA"}
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(src)}, "destination": destination}],
        engine={"part_size": 5 * 1024 * 1024})
    assert api.run(api.load_manifest(manifest)).exit_code == 0
    client = moto_server.client()
    for key in ("small.bin", "large.bin"):
        assert client.head_object(Bucket=bucket, Key=f"ia/{key}")["StorageClass"] == \
            "STANDARD_IA"
    rows = Ledger(str(tmp_path / ".datamove" / "ledger")).objects().to_pylist()
    assert {r["storage_class"] for r in rows} == {"STANDARD_IA"}
