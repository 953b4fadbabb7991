"""Parts of one large object upload several at a time, in bounded memory (stores/parts.py).

The stores are real (moto_server, Azurite) and reached through a TCP relay that
counts the requests waiting for an answer at the same moment: more than one
during the upload of a single object means its parts travelled at once.
"""

from __future__ import annotations

import hashlib
import random
import tracemalloc

import pytest

from datamove.checksum import composite_sha256
from datamove.stores.core import META_PART_SIZE, Location, stat
from datamove.stores.writers import atomic_writer
from tests.relay import Relay

MiB = 1024 * 1024
PART = 5 * MiB


def _upload(location: Location, data: bytes, buffers: int) -> None:
    with atomic_writer(location, "big.bin", part_size=PART, size_hint=len(data),
                       part_buffers=buffers) as writer:
        for i in range(0, len(data), MiB):
            writer.write(data[i:i + MiB])
        writer.commit(hashlib.sha256(data).hexdigest(), None)


@pytest.mark.parametrize("buffers, parallel", [(1, False), (4, True)])
def test_s3_parts_of_one_object_travel_at_once(moto_server, relay, buffers, parallel):
    bucket = moto_server.new_bucket()
    # Its own endpoint (the relay), so a fresh client whose connections are all counted.
    location = Location.of(f"s3://{bucket}/p/",
                           {"endpoint_url": f"http://127.0.0.1:{relay.port}"})
    data = random.Random(buffers).randbytes(8 * PART + 123)
    _upload(location, data, buffers)
    assert (relay.most > 1) is parallel, relay.most
    client = moto_server.client()
    assert client.get_object(Bucket=bucket, Key="p/big.bin")["Body"].read() == data
    parts = [hashlib.sha256(data[i:i + PART]).digest() for i in range(0, len(data), PART)]
    info = stat(location, "big.bin")
    assert info is not None and info.metadata[META_PART_SIZE] == str(PART)
    assert info.checksum_sha256 is not None
    assert info.checksum_sha256.split("-")[0] == composite_sha256(parts).split("-")[0]


def test_azure_blocks_of_one_blob_travel_at_once(azurite):
    relay = Relay(azurite.port)
    try:
        endpoint = azurite.endpoint.replace(str(azurite.port), str(relay.port))
        container = azurite.new_container()
        location = Location.of(f"az://{container}/p/", {
            "connection_string": azurite.connection_string.replace(azurite.endpoint, endpoint)})
        data = random.Random(7).randbytes(6 * PART + 5)
        _upload(location, data, 4)
        assert relay.most > 1, relay.most
        with location.fs.open(location.path("big.bin"), "rb") as stored:
            assert hashlib.sha256(stored.read()).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        relay.close()


def test_memory_is_bounded_by_part_buffers_not_the_object(moto_server):
    """A 120 MiB object in 24 parts with 3 buffers: the writer's peak stays far
    below the object (each part on its way costs about two copies in the client
    stack), however fast the source fills the parts."""
    bucket = moto_server.new_bucket()
    location = Location.of(f"s3://{bucket}/p/", {"endpoint_url": moto_server.endpoint})
    chunk = random.Random(3).randbytes(MiB)
    parts = 24
    tracemalloc.start()
    try:
        with atomic_writer(location, "big.bin", part_size=PART, size_hint=parts * PART,
                           part_buffers=3) as writer:
            digest = hashlib.sha256()
            for _ in range(parts * 5):
                writer.write(chunk)
                digest.update(chunk)
            writer.commit(digest.hexdigest(), None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak {peak / MiB:.1f} MiB for a {parts * PART // MiB} MiB object in 5 MiB parts")
    assert peak < 12 * PART
    stored = moto_server.client().head_object(Bucket=bucket, Key="p/big.bin",
                                              ChecksumMode="ENABLED")
    assert stored["ContentLength"] == parts * PART
    expected = composite_sha256([hashlib.sha256(chunk * 5).digest()] * parts)
    assert stored["ChecksumSHA256"].split("-")[0] == expected.split("-")[0]
