"""Parallel listing by prefix against the sequential listing, on moto_server.

Fills a bucket with ``--keys`` objects spread over ``--prefixes`` prefixes (plus a
few root-level keys), then lists it through datamove's S3 backend with
``list_threads: 1`` (one ListObjectsV2 page after another) and with
``list_threads: N``, taking the two in turn ``--repeat`` times, and prints the
medians and the ratio sequential / parallel. Every listing must return the same
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
        times: dict[int, list[float]] = {1: [], args.threads: []}
        for _ in range(args.repeat):
            for threads in times:
                location = Location.of("s3://bench/", {"endpoint_url": url,
                                                       "skip_instance_cache": True},
                                       list_threads=threads)
                started = time.monotonic()
                listed = [entry.key for entry in location.backend.list(location)]
                times[threads].append(time.monotonic() - started)
                assert listed == expected, f"list_threads {threads}: wrong listing"
        sequential = statistics.median(times[1])
        parallel = statistics.median(times[args.threads])
        print(f"list_threads 1: median {sequential:.2f} s  {times[1]}")
        print(f"list_threads {args.threads}: median {parallel:.2f} s  {times[args.threads]}")
        print(f"sequential / parallel: {sequential / parallel:.2f}x "
              f"({args.keys} keys, {args.prefixes} prefixes, {args.repeat} pairs in turn)")
    finally:
        process.kill()
        process.wait(10)


if __name__ == "__main__":
    main()
