"""An S3 Inventory report as a dataset's source listing (stores/inventory.py).

Each test writes a report in AWS's format (manifest.json, manifest.checksum, data
files: CSV gzip'd without a header, keys URL-encoded; or Parquet) into a moto
bucket, next to a source bucket holding the objects, and runs the CLI.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from datetime import UTC, datetime
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli, last_json, write_manifest

SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"
OBJECTS = {  # hostile keys: byte order differs from naive orders, spaces, '+', non-ASCII
    "data/a.txt": b"a", "data/a/b": b"ab", "data/a-b": b"a-b", "data/a b+c.txt": b"space",
    "data/é/1": b"e1", "data/日本/語": b"jp", "data/z": b"z" * 1000, "data/deep/x/y/z": b"deep",
}


def _fill_source(moto_server, objects: dict[str, bytes]) -> tuple[str, dict[str, dict]]:
    client = moto_server.client()
    bucket = moto_server.new_bucket()
    heads = {}
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
        heads[key] = client.head_object(Bucket=bucket, Key=key)
    client.put_object(Bucket=bucket, Key="other/outside", Body=b"not under data/")
    return bucket, heads


def _rows(bucket: str, heads: dict[str, dict]) -> list[dict]:
    """The report's rows, not sorted (reversed), with the other prefix, a directory
    marker, an older version and a delete marker that must all be left out."""
    rows = []
    for key, head in reversed(list(heads.items())):
        rows.append({"bucket": bucket, "key": key, "version_id": "v2", "is_latest": True,
                     "is_delete_marker": False, "size": head["ContentLength"],
                     "last_modified_date": head["LastModified"],
                     "e_tag": head["ETag"].strip('"')})
    moment = datetime(2020, 1, 1, tzinfo=UTC)
    rows += [
        {"bucket": bucket, "key": "data/a.txt", "version_id": "v1", "is_latest": False,
         "is_delete_marker": False, "size": 5, "last_modified_date": moment, "e_tag": "0" * 32},
        {"bucket": bucket, "key": "data/gone", "version_id": "v3", "is_latest": True,
         "is_delete_marker": True, "size": None, "last_modified_date": moment, "e_tag": None},
        {"bucket": bucket, "key": "data/dir/", "version_id": "v1", "is_latest": True,
         "is_delete_marker": False, "size": 0, "last_modified_date": moment, "e_tag": "d" * 32},
        {"bucket": bucket, "key": "other/outside", "version_id": "v1", "is_latest": True,
         "is_delete_marker": False, "size": 15, "last_modified_date": moment, "e_tag": "e" * 32},
    ]
    return rows


def _csv_gz(rows: list[dict]) -> bytes:
    def cell(row: dict, name: str) -> str:
        value = row[name]
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, datetime):
            return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return quote_plus(value, safe="/") if name == "key" else str(value)

    names = ["bucket", "key", "version_id", "is_latest", "is_delete_marker", "size",
             "last_modified_date", "e_tag"]
    text = "".join(",".join(f'"{cell(r, n)}"' for n in names) + "\n" for r in rows)
    return gzip.compress(text.encode())


def _parquet(rows: list[dict]) -> bytes:
    table = pa.table({
        "bucket": pa.array([r["bucket"] for r in rows], pa.string()),
        "key": pa.array([r["key"] for r in rows], pa.string()),
        "version_id": pa.array([r["version_id"] for r in rows], pa.string()),
        "is_latest": pa.array([r["is_latest"] for r in rows], pa.bool_()),
        "is_delete_marker": pa.array([r["is_delete_marker"] for r in rows], pa.bool_()),
        "size": pa.array([r["size"] for r in rows], pa.int64()),
        "last_modified_date": pa.array([r["last_modified_date"] for r in rows],
                                       pa.timestamp("ms")),
        "e_tag": pa.array([r["e_tag"] for r in rows], pa.string()),
    })
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _write_report(moto_server, source_bucket: str, rows: list[dict], fmt: str,
                  files: int = 2) -> tuple[str, str, list[str]]:
    """The report in its own bucket, AWS's layout; returns (manifest URL, bucket, data keys)."""
    client = moto_server.client()
    bucket = moto_server.new_bucket()
    base = f"inv/{source_bucket}/daily"
    entries, keys = [], []
    for n in range(files):
        part = rows[n::files]
        body = _csv_gz(part) if fmt == "CSV" else _parquet(part)
        key = f"{base}/data/{n:04d}-file.{'csv.gz' if fmt == 'CSV' else 'parquet'}"
        client.put_object(Bucket=bucket, Key=key, Body=body)
        entries.append({"key": key, "size": len(body),
                        "MD5checksum": hashlib.md5(body).hexdigest()})
        keys.append(key)
    manifest = {
        "sourceBucket": source_bucket, "destinationBucket": f"arn:aws:s3:::{bucket}",
        "version": "2016-11-30", "creationTimestamp": "1700000000000", "fileFormat": fmt,
        "fileSchema": SCHEMA if fmt == "CSV" else
        "message s3.inventory { required binary bucket (STRING); required binary key (STRING); }",
        "files": entries}
    raw = json.dumps(manifest).encode()
    where = f"{base}/2026-12-01T01-00Z"
    client.put_object(Bucket=bucket, Key=f"{where}/manifest.json", Body=raw)
    client.put_object(Bucket=bucket, Key=f"{where}/manifest.checksum",
                      Body=hashlib.md5(raw).hexdigest().encode())
    return f"s3://{bucket}/{where}/manifest.json", bucket, keys


def _manifest(tmp_path, moto_server, source_bucket: str, inventory: str, **extra) -> str:
    options = {"endpoint_url": moto_server.endpoint}
    return str(write_manifest(tmp_path / "m.yaml", [{
        "name": "d", **extra,
        "source": {"url": f"s3://{source_bucket}/data/", "options": options,
                   "inventory": inventory},
        "destination": {"url": str(tmp_path / "dst")}}], ledger=str(tmp_path / "ledger")))


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_a_run_lists_its_source_from_an_inventory(tmp_path, moto_server, fmt):
    bucket, heads = _fill_source(moto_server, OBJECTS)
    inventory, _, _ = _write_report(moto_server, bucket, _rows(bucket, heads), fmt)
    manifest = _manifest(tmp_path, moto_server, bucket, inventory, exclude=["deep/**"])
    moto_server.client().put_object(Bucket=bucket, Key="data/not-in-report", Body=b"new")

    result = cli("run", manifest, "--json")
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)["datasets"]["d"]
    expected = {k.removeprefix("data/"): v for k, v in OBJECTS.items() if "deep" not in k}
    assert summary["copied"] == len(expected)
    copied = {str(p.relative_to(tmp_path / "dst")): p.read_bytes()
              for p in (tmp_path / "dst").rglob("*") if p.is_file()}
    assert copied == expected  # not the old version, marker, delete marker, other prefix
    again = cli("run", manifest, "--json")
    assert last_json(again.stdout)["datasets"]["d"]["skipped"] == len(expected)


def test_an_object_gone_from_the_bucket_fails_alone(tmp_path, moto_server):
    bucket, heads = _fill_source(moto_server, OBJECTS)
    inventory, _, _ = _write_report(moto_server, bucket, _rows(bucket, heads), "CSV")
    moto_server.client().delete_object(Bucket=bucket, Key="data/z")
    result = cli("run", _manifest(tmp_path, moto_server, bucket, inventory), "--json")
    assert result.returncode == 1, result.stderr
    summary = last_json(result.stdout)["datasets"]["d"]
    assert summary["failed"] == 1 and summary["copied"] == len(OBJECTS) - 1
    problems = " ".join(p["error"] for p in last_json(result.stdout)["problems"])
    assert f"s3://{bucket}/data/z is in the inventory report but not in the bucket" in problems
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "dst" / "z").exists()


@pytest.fixture(scope="module")
def shared_source(moto_server) -> tuple[str, dict[str, dict]]:
    """A source bucket the tests only read."""
    return _fill_source(moto_server, OBJECTS)


def _damage(moto_server, bucket: str, key: str) -> None:
    client = moto_server.client()
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))


@pytest.mark.parametrize("damage", ["data-byte", "manifest-byte", "missing-file",
                                    "missing-manifest", "not-json", "orc", "other-bucket"])
def test_a_bad_inventory_is_exit_2_before_anything_moves(tmp_path, moto_server, shared_source,
                                                         damage):
    bucket, heads = shared_source
    inventory, inv_bucket, data_keys = _write_report(
        moto_server, bucket, _rows(bucket, heads), "CSV")
    client = moto_server.client()
    manifest_key = inventory.split("/", 3)[3]
    doc = json.loads(client.get_object(Bucket=inv_bucket, Key=manifest_key)["Body"].read())
    phrase = {"data-byte": "is damaged", "manifest-byte": "does not match its checksum",
              "missing-file": "is missing", "missing-manifest": "no such manifest",
              "not-json": "not JSON", "orc": "ORC reports are not supported",
              "other-bucket": "a report of bucket 'elsewhere'"}[damage]
    if damage == "data-byte":
        _damage(moto_server, inv_bucket, data_keys[1])
    elif damage == "manifest-byte":
        _damage(moto_server, inv_bucket, manifest_key)
    elif damage == "missing-file":
        client.delete_object(Bucket=inv_bucket, Key=data_keys[0])
    elif damage == "missing-manifest":
        inventory = inventory.replace("manifest.json", "nothing.json")
    else:
        body = b"{not json" if damage == "not-json" else json.dumps(
            {**doc, "fileFormat": "ORC"} if damage == "orc" else
            {**doc, "sourceBucket": "elsewhere"}).encode()
        client.put_object(Bucket=inv_bucket, Key=manifest_key, Body=body)
        client.delete_object(Bucket=inv_bucket, Key=manifest_key.replace(".json", ".checksum"))
    manifest = _manifest(tmp_path, moto_server, bucket, inventory)
    result = cli("run" if damage == "data-byte" else "plan", manifest, "--json")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert phrase in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "dst").exists() or not any((tmp_path / "dst").rglob("*"))


def test_a_local_report_and_a_key_listed_twice(tmp_path, moto_server):
    """A report synced to a local directory (aws s3 sync) is read from there, its path
    relative to the manifest; a key listed twice as the latest version is refused."""
    bucket, heads = _fill_source(moto_server, {"data/one": b"1", "data/two": b"22"})
    rows = _rows(bucket, heads)
    inventory, inv_bucket, data_keys = _write_report(moto_server, bucket, rows, "CSV", files=1)
    client = moto_server.client()
    local = tmp_path / "report"
    manifest_key = inventory.split("/", 3)[3]
    for key in [*data_keys, manifest_key, manifest_key.replace(".json", ".checksum")]:
        path = local / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.get_object(Bucket=inv_bucket, Key=key)["Body"].read())
    relative = f"report/{manifest_key}"  # resolved against the manifest's directory
    result = cli("run", _manifest(tmp_path, moto_server, bucket, relative), "--json")
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout)["datasets"]["d"]["copied"] == 2

    twice, _, _ = _write_report(moto_server, bucket, rows + rows[:1], "Parquet", files=2)
    (tmp_path / "m.yaml").unlink()
    result = cli("run", _manifest(tmp_path, moto_server, bucket, twice), "--json")
    assert result.returncode == 2 and "is listed twice" in result.stderr, result.stderr


def test_inventory_is_for_s3_sources_only(tmp_path):
    manifest = write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": {"url": str(tmp_path / "src"), "inventory": "x/manifest.json"},
        "destination": {"url": str(tmp_path / "dst"), "inventory": "y/manifest.json"}}])
    result = cli("plan", str(manifest))
    assert result.returncode == 2
    assert "needs an s3:// source" in result.stderr and "is for sources only" in result.stderr


def test_a_report_naming_keys_that_leave_the_root_fails_them_alone(tmp_path, moto_server):
    """A report is input like any listing: a key that would map outside the destination
    (``..`` segments, S3 keys that exist in the bucket too) fails alone, nothing is
    written outside, and the other objects are copied."""
    hostile = {"data/../escape.txt": b"out", "data/ok/../../../../escape2.txt": b"out2"}
    bucket, heads = _fill_source(moto_server, {"data/fine.txt": b"fine", **hostile})
    inventory, _, _ = _write_report(moto_server, bucket, _rows(bucket, heads), "CSV")
    (tmp_path / "work").mkdir()

    result = cli("run", _manifest(tmp_path / "work", moto_server, bucket, inventory), "--json")

    assert result.returncode == 1, result.stderr
    summary = last_json(result.stdout)
    assert (summary["datasets"]["d"]["copied"], summary["datasets"]["d"]["failed"]) == (1, 2)
    assert all("unsafe key" in p["error"] for p in summary["problems"]), summary["problems"]
    assert "Traceback" not in result.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
                     and "ledger" not in p.parts)
    assert written == ["work/dst/fine.txt", "work/m.yaml"], written
