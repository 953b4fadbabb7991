"""Parallel listing by prefix against the sequential listing, on moto_server.

Fills a bucket with ``--keys`` objects spread over ``--prefixes`` prefixes (plus a
few root-level keys), then lists it through datamove's S3 backend with
``list_threads: 1`` (one ListObjectsV2 page after another) and with
``list_threads: N``, and from an S3 Inventory report of the same keys (CSV gzip,
4 files, rows shuffled, written into a second bucket), taking the three in turn
``--repeat`` times, and prints the medians and the ratios to the sequential
listing. Every listing must return the same
keys in the same order. moto_server answers each request slowly (it is one
Python process), which is what a far-away or throttled store looks like too.

    /work/main/.venv/bin/python benchmarks/listing.py --keys 20000 --prefixes 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VENV_BIN = Path(sys.executable).parent


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p",
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return process, url
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)


def write_inventory(client, keys: list[str]) -> str:  # type: ignore[no-untyped-def]
    """An S3 Inventory report of the bench bucket (CSV gzip, 4 files, rows shuffled)."""
    import gzip
    import hashlib
    import json
    import random
    from urllib.parse import quote_plus

    client.create_bucket(Bucket="bench-inventory")
    rows = list(keys)
    random.Random(7).shuffle(rows)
    files = []
    for n in range(4):
        text = "".join(f'"bench","{quote_plus(k, safe="/")}","1","2026-12-01T00:00:00.000Z",'
                       f'"9dd4e461268c8034f5c8564e155c67a6"\n' for k in rows[n::4])
        body = gzip.compress(text.encode())
        key = f"bench/daily/data/{n}.csv.gz"
        client.put_object(Bucket="bench-inventory", Key=key, Body=body)
        files.append({"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()})
    manifest = {"sourceBucket": "bench", "destinationBucket": "arn:aws:s3:::bench-inventory",
                "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
                "files": files}
    client.put_object(Bucket="bench-inventory", Key="bench/daily/2026-12-01T01-00Z/manifest.json",
                      Body=json.dumps(manifest).encode())
    return "s3://bench-inventory/bench/daily/2026-12-01T01-00Z/manifest.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--prefixes", type=int, default=50)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)

    import boto3

    from datamove.stores.base import Location

    process, url = start_moto()
    try:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        keys = [f"p{i % args.prefixes:03d}/obj-{i:07d}" for i in range(args.keys - 10)]
        keys += [f"root-{i}" for i in range(10)]
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: client.put_object(Bucket="bench", Key=k, Body=b"x"), keys))
        print(f"filled {len(keys)} keys in {args.prefixes} prefixes in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        expected = sorted(keys, key=lambda k: k.encode())
        inventory = write_inventory(client, keys)
        times: dict[str, list[float]] = {"1": [], str(args.threads): [], "inventory": []}
        for _ in range(args.repeat):
            for how in times:
                location = Location.of(
                    "s3://bench/", {"endpoint_url": url, "skip_instance_cache": True},
                    list_threads=int(how) if how != "inventory" else 8,
                    inventory=inventory if how == "inventory" else None)
                started = time.monotonic()
                listed = [entry.key for entry in location.backend.list(location)]
                times[how].append(time.monotonic() - started)
                assert listed == expected, f"{how}: wrong listing"
        medians = {how: statistics.median(runs) for how, runs in times.items()}
        for how, runs in times.items():
            name = "inventory" if how == "inventory" else f"list_threads {how}"
            print(f"{name}: median {medians[how]:.2f} s  {[round(r, 2) for r in runs]}  "
                  f"sequential / this: {medians['1'] / medians[how]:.2f}x")
        print(f"({args.keys} keys, {args.prefixes} prefixes, {args.repeat} rounds in turn)")
    finally:
        process.kill()
        process.wait(10)


if __name__ == "__main__":
    main()
