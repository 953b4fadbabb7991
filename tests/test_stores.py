"""Listings in UTF-8 byte order on every backend, filters, locations without secrets."""

from __future__ import annotations

import os
import pickle

import fsspec
import pytest

from datamove.stores import (
    Entry,
    KeyFilter,
    Location,
    glob_to_regex,
    list_entries,
    stat,
)

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
    ("train/*.bin", ["train/a.bin"], ["train/x/a.bin", "x/train/a.bin"]),
    ("train/**", ["train/a", "train/x/y"], ["val/a"]),
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
