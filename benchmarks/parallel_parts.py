"""One large object to S3 with its parts one at a time or several at once (issue 17).

moto_server on loopback answers as fast as its one Python process can hash, so
nothing there limits a single connection the way a real network does (a TCP
stream to a store far away tops out well below the link). This puts a relay in
front of moto that caps each connection at ``--rate`` MiB/s, then uploads the
same object through datamove's S3 writer with ``engine.part_buffers`` 1 and 4,
taking turns (``--repeat`` pairs, medians). The cap is simulated; the
requests, the parts, their checksums and moto are real.

Usage:
    PYTHONPATH=$PWD /work/main/.venv/bin/python benchmarks/parallel_parts.py \
        [--mib 256] [--rate 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3

from datamove.stores.core import Location
from datamove.stores.writers import atomic_writer

MIB = 1024 * 1024
PART = 16 * MIB  # engine.part_size's default


class CappedRelay:
    """Forwards connections to ``port``, each client→server stream at most ``rate`` B/s."""

    def __init__(self, port: int, rate: float):
        self.target, self.rate = port, rate
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b, capped in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, capped), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, capped: bool) -> None:
        started, sent = time.monotonic(), 0
        with contextlib.suppress(OSError):
            while data := src.recv(256 * 1024):
                dst.sendall(data)
                sent += len(data)
                ahead = sent / self.rate - (time.monotonic() - started)
                if capped and ahead > 0:
                    time.sleep(ahead)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="object size")
    parser.add_argument("--rate", type=float, default=32, help="MiB/s per connection")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint)
        for _ in range(100):
            with contextlib.suppress(Exception):
                client.list_buckets()
                break
            time.sleep(0.1)
        relay = CappedRelay(port, args.rate * MIB)
        bucket = f"parts-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        data = os.urandom(args.mib * MIB)
        sha256 = hashlib.sha256(data).hexdigest()
        location = Location.of(f"s3://{bucket}/x/",
                               {"endpoint_url": f"http://127.0.0.1:{relay.port}"})
        times: dict[int, list[float]] = {1: [], 4: []}
        for round_ in range(args.repeat):
            for buffers in times:
                key = f"o-{round_}-{buffers}"
                started = time.monotonic()
                with atomic_writer(location, key, part_size=PART, size_hint=len(data),
                                   part_buffers=buffers) as writer:
                    for i in range(0, len(data), MIB):
                        writer.write(data[i:i + MIB])
                    writer.commit(sha256, None)
                times[buffers].append(time.monotonic() - started)
                client.delete_object(Bucket=bucket, Key=f"x/{key}")
                print(f"round {round_ + 1}: part_buffers {buffers}: "
                      f"{times[buffers][-1]:.2f} s", flush=True)
        one, four = (statistics.median(times[b]) for b in (1, 4))
        print(f"{args.mib} MiB, {args.rate:g} MiB/s per connection, medians of "
              f"{args.repeat}: part_buffers 1 {one:.2f} s, 4 {four:.2f} s "
              f"({four / one:.2f}×); load average {os.getloadavg()[0]:.1f}")
    finally:
        moto.terminate()
        moto.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
