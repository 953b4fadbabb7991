"""Listings in UTF-8 byte order on every backend (local, memory, S3, GCS, Azure Blob),
filters, locations without secrets."""

from __future__ import annotations

import os
import pickle
from typing import Any

import fsspec
import pytest

from datamove.errors import LocationUnreachable
from datamove.stores.core import (
    Entry,
    KeyFilter,
    Location,
    check_readable,
    describe,
    glob_to_regex,
    list_entries,
    stat,
)

from .conftest import AZURITE_KEY

# Keys chosen so that a naive sort of directory names gives the wrong order:
# "a-c" < "a/b" in bytes ('-' is 0x2d, '/' is 0x2f), and non-ASCII sorts last.
KEYS = ["a-c", "a/b", "a/b c/d", "a0", "deep/" + "/".join(f"l{i}" for i in range(12)) + "/leaf",
        "sp ace.txt", "z", "Ä/ü.bin", "é"]


def _populate_local(root) -> None:
    for key in KEYS:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())


def test_local_walk_yields_utf8_byte_order(tmp_path):
    _populate_local(tmp_path)
    keys = [e.key for e in list_entries(Location.of(str(tmp_path)))]
    assert keys == sorted(KEYS, key=lambda k: k.encode())
    assert keys.index("a-c") < keys.index("a/b")


def test_memory_walk_matches_local_order(tmp_path):
    fs = fsspec.filesystem("memory")
    root = f"/order-{os.getpid()}"
    for key in KEYS:
        fs.pipe(f"{root}/{key}", key.encode())
    keys = [e.key for e in list_entries(Location.of(f"memory://{root}"))]
    assert keys == sorted(KEYS, key=lambda k: k.encode())


def test_s3_listing_matches_local_order_and_pages(moto_server):
    bucket = moto_server.new_bucket()
    client = moto_server.client()
    for key in KEYS:
        client.put_object(Bucket=bucket, Key=f"p/{key}", Body=key.encode())
    for i in range(1_100):  # more than one 1,000-key page
        client.put_object(Bucket=bucket, Key=f"p/many/{i:05d}", Body=b"x")
    loc = Location.of(f"s3://{bucket}/p/", {"endpoint_url": moto_server.endpoint})
    keys = [e.key for e in list_entries(loc)]
    expected = sorted([*KEYS, *(f"many/{i:05d}" for i in range(1_100))], key=str.encode)
    assert keys == expected


def test_listing_skips_partial_objects(tmp_path):
    (tmp_path / "x").write_bytes(b"1")
    (tmp_path / "x.datamove-partial-abc123").write_bytes(b"12")
    assert [e.key for e in list_entries(Location.of(str(tmp_path)))] == ["x"]


@pytest.mark.parametrize(("pattern", "matches", "rejects"), [
    ("*.jpg", ["a.jpg", "x/y/b.jpg"], ["a.jpeg", "a.jpg/c"]),
    ("**/*.JPEG", ["a.JPEG", "n/m/b.JPEG"], ["a.jpeg"]),
    # rclone's meaning (issue 18): a pattern with '/' matches the key's tail; a
    # leading '/' anchors it at the root (until then both were anchored).
    ("train/*.bin", ["train/a.bin", "x/train/a.bin"], ["train/x/a.bin", "xtrain/a.bin"]),
    ("/train/*.bin", ["train/a.bin"], ["train/x/a.bin", "x/train/a.bin"]),
    ("/train/**", ["train/a", "train/x/y"], ["val/a", "x/train/a"]),
    ("img-?.png", ["img-1.png"], ["img-10.png"]),
    ("[!.]*", ["a", "d/b"], [".hidden", "d/.h"]),
    ("data[0-9].csv", ["data1.csv"], ["dataa.csv"]),
])
def test_glob_semantics(pattern, matches, rejects):
    regex = glob_to_regex(pattern)
    for key in matches:
        assert regex.match(key), (pattern, key)
    for key in rejects:
        assert not regex.match(key), (pattern, key)


def test_key_filter_include_and_exclude():
    f = KeyFilter(include=("**/*.bin",), exclude=("tmp/**",))
    assert f("a/b.bin")
    assert not f("tmp/b.bin")
    assert not f("a/b.txt")
    assert KeyFilter()("anything/at/all")


def test_location_pickles_without_filesystem_or_secrets(monkeypatch):
    secret = "wJalrXUtnFEMI-not-a-real-secret-K7MDENG"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    loc = Location.of("s3://bucket/prefix/", {"endpoint_url": "http://127.0.0.1:1"})
    _ = loc.fs  # building the filesystem must not attach it to the location
    blob = pickle.dumps(loc)
    assert secret.encode() not in blob
    assert b"S3FileSystem" not in blob
    assert pickle.loads(blob) == loc


def test_stat_local_and_missing(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    loc = Location.of(str(tmp_path))
    info = stat(loc, "f")
    assert info is not None and info.size == 3
    assert stat(loc, "nope") is None


def test_location_roots():
    assert Location.of("s3://b/p/q/").bucket_and_prefix() == ("b", "p/q/")
    assert Location.of("s3://b").bucket_and_prefix() == ("b", "")
    assert Location.of("memory://x/y").root == "/x/y"
    assert Location.of("/tmp/x/").root == "/tmp/x"
    assert Entry("k", 1) == Entry("k", 1)


# --- GCS (gcp-storage-emulator) and Azure Blob (Azurite) -------------------------------

def _cloud(kind: str, request: pytest.FixtureRequest) -> tuple[Location, Any]:
    if kind == "gcs":
        emulator = request.getfixturevalue("gcs_emulator")
        bucket = emulator.new_bucket()
        return Location.of(f"gs://{bucket}/p/", emulator.options), (emulator.fs(), bucket)
    azurite = request.getfixturevalue("azurite")
    container = azurite.new_container()
    return Location.of(f"az://{container}/p/"), (azurite.fs(), container)


@pytest.mark.parametrize("kind", ["gcs", "azure"])
def test_cloud_listing_matches_local_order(kind: str, request: pytest.FixtureRequest) -> None:
    loc, (fs, bucket) = _cloud(kind, request)
    keys = [*KEYS, "emoji-🦀", "ｆｕｌｌｗｉｄｔｈ", "x.datamove-partial-run-1234"]
    for key in keys:
        fs.pipe(f"{bucket}/p/{key}", key.encode())
    fs.pipe(f"{bucket}/outside", b"not under the prefix")
    partials: list[str] = []
    entries = list(list_entries(loc, on_partial=partials.append))
    expected = sorted((k for k in keys if "partial" not in k), key=str.encode)
    assert [e.key for e in entries] == expected
    assert partials == ["x.datamove-partial-run-1234"]
    assert all(e.mtime and e.etag for e in entries)
    assert {e.key: e.size for e in entries}["a-c"] == 3
    info = stat(loc, "a/b c/d")
    assert info is not None and info.size == len(b"a/b c/d") and info.mtime
    assert stat(loc, "nope") is None


def test_azure_listing_pages(request: pytest.FixtureRequest) -> None:
    """More than one 1,000-blob page. (The GCS emulator answers a listing in one
    page whatever maxResults says, so GCS paging is only exercised on real GCS.)"""
    loc, (fs, container) = _cloud("azure", request)
    fs.pipe({f"{container}/p/many/{i:05d}": b"x" for i in range(1_100)})
    keys = [e.key for e in list_entries(loc)]
    assert keys == [f"many/{i:05d}" for i in range(1_100)]


@pytest.mark.parametrize("kind", ["gcs", "azure"])
def test_missing_bucket_or_container_is_unreachable(kind: str,
                                                    request: pytest.FixtureRequest) -> None:
    if kind == "gcs":
        emulator = request.getfixturevalue("gcs_emulator")
        loc = Location.of("gs://no-such-bucket-here/p/", emulator.options)
        what = "bucket 'no-such-bucket-here' does not exist"
    else:
        request.getfixturevalue("azurite")
        loc = Location.of("az://no-such-container/p/")
        what = "container 'no-such-container' does not exist"
    with pytest.raises(LocationUnreachable, match=what):
        list(list_entries(loc))
    with pytest.raises(LocationUnreachable, match=what):
        check_readable(loc)


def test_azure_credentials_never_reach_a_message(request: pytest.FixtureRequest) -> None:
    """The connection string lives in the environment; describe() scrubs one that an
    exception echoes, and an Azure Location pickles without it."""
    azurite = request.getfixturevalue("azurite")
    _ = Location.of("az://c/p/").fs
    assert AZURITE_KEY.encode() not in pickle.dumps(Location.of("az://c/p/"))
    text = describe(ValueError(f"unable to connect: {azurite.connection_string}"))
    assert AZURITE_KEY not in text and "<redacted>" in text  # the key, or the whole string
    header = describe(RuntimeError("Authorization: SharedKey devstoreaccount1:c2lnbmF0dXJl/x+="))
    assert "c2lnbmF0dXJl" not in header
