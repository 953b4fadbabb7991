"""Copies inside the store (pipeline/in_store.py, S3Backend.copy_within).

Source and destination on the same moto_server, reached through a relay that
counts the bytes each way: a copy inside the store sends no object bytes and,
when S3 keeps the source's sha256, reads none either. Each copy is verified by
S3's checksum of the copy against the source's, and recorded with the
source's sha256.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import replace

import pytest

from datamove.age import X25519Identity
from datamove.checksum import composite_sha256
from datamove.crypto.dataset import Encryption
from datamove.errors import SourceChanged
from datamove.manifest.model import VerifyMode
from datamove.pipeline import cancel, in_store
from datamove.pipeline.march import Action, DatasetJob, PlanItem
from datamove.pipeline.transfer import TransferSettings, check_object, copy_object
from datamove.stores.core import META_PART_SIZE, META_SHA256, KeyFilter, Location, list_entries
from tests.conftest import cli, s3_location, write_manifest
from tests.relay import Relay

MiB = 1024 * 1024
PART = 5 * MiB


def job_on(relay: Relay, src_bucket: str, dst_bucket: str, **dst_options: object) -> DatasetJob:
    endpoint = f"http://127.0.0.1:{relay.port}"
    return DatasetJob("d", Location.of(f"s3://{src_bucket}/src/", {"endpoint_url": endpoint}),
                      Location.of(f"s3://{dst_bucket}/dst/",
                                  {"endpoint_url": endpoint, **dst_options}),
                      KeyFilter(), VerifyMode.checksum)


def listed(job: DatasetJob, key: str) -> PlanItem:
    entry = next(e for e in list_entries(job.source) if e.key == key)
    return PlanItem(Action.copy, key, entry, None, "new")


SETTINGS = TransferSettings(part_size=PART, retries=0)


@pytest.mark.parametrize("size, parts", [(MiB + 7, 0), (3 * PART + 11, 4)],
                         ids=["copy-object", "part-copies"])
def test_same_store_copies_inside_the_store(moto_server, relay, size, parts):
    client = moto_server.client()
    src, dst = moto_server.new_bucket(), moto_server.new_bucket()
    data = random.Random(size).randbytes(size)
    client.put_object(Bucket=src, Key="src/obj.bin", Body=data)  # no sha256 kept: read once
    job = job_on(relay, src, dst)
    assert in_store.applies(job)
    item = listed(job, "obj.bin")
    before = relay.sent
    result = copy_object(job, item, SETTINGS)
    assert result.status == "copied"
    assert result.sha256 == hashlib.sha256(data).hexdigest()  # what the ledger records
    assert result.bytes_written == 0
    assert relay.sent - before < 256 * 1024, "object bytes went through the client"
    assert client.get_object(Bucket=dst, Key="dst/obj.bin")["Body"].read() == data
    head = client.head_object(Bucket=dst, Key="dst/obj.bin", ChecksumMode="ENABLED")
    digests = [hashlib.sha256(data[i:i + PART]).digest() for i in range(0, size, PART)]
    if parts:  # S3's composite of the copied parts, laid out like datamove's uploads
        assert head["Metadata"][META_PART_SIZE] == str(PART)
        assert head["ChecksumSHA256"].split("-")[0] == composite_sha256(digests).split("-")[0]
    else:
        assert head["Metadata"][META_SHA256] == result.sha256
        assert base64.b64decode(head["ChecksumSHA256"]).hex() == result.sha256
    assert result.native_checksum == f"sha256:{head['ChecksumSHA256']}"
    # datamove verify settles it by S3's checksum, as for a streamed copy.
    checked = check_object(job, PlanItem(Action.check, "obj.bin", item.source, None, "check"))
    assert checked.status == "matched" and checked.sha256 == result.sha256


def test_a_source_whose_sha256_s3_keeps_is_not_even_read(moto_server, relay):
    client = moto_server.client()
    src, dst = moto_server.new_bucket(), moto_server.new_bucket()
    data = random.Random(1).randbytes(4 * MiB)
    client.put_object(Bucket=src, Key="src/staging.bin", Body=data)
    # A copy made with ChecksumAlgorithm: S3 computed and keeps the whole sha256.
    client.copy_object(Bucket=src, Key="src/obj.bin", ChecksumAlgorithm="SHA256",
                       CopySource={"Bucket": src, "Key": "src/staging.bin"})
    job = job_on(relay, src, dst)
    before = relay.received
    result = copy_object(job, listed(job, "obj.bin"), SETTINGS)
    assert relay.received - before < 256 * 1024, "the source was read"
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert client.get_object(Bucket=dst, Key="dst/obj.bin")["Body"].read() == data


@pytest.mark.parametrize("size", [MiB, 3 * PART], ids=["copy-object", "part-copies"])
def test_a_source_changed_after_listing_is_not_copied(moto_server, relay, size):
    client = moto_server.client()
    src, dst = moto_server.new_bucket(), moto_server.new_bucket()
    client.put_object(Bucket=src, Key="src/obj.bin", Body=b"a" * size)
    job = job_on(relay, src, dst)
    item = listed(job, "obj.bin")
    client.put_object(Bucket=src, Key="src/obj.bin", Body=b"b" * size)  # same size, new bytes
    with pytest.raises(SourceChanged):
        copy_object(job, item, SETTINGS)
    assert "Contents" not in client.list_objects_v2(Bucket=dst)  # nothing published
    assert "Uploads" not in client.list_multipart_uploads(Bucket=dst)


def test_a_stopped_run_publishes_nothing(moto_server, relay):
    """The driver's stop flag (a signal, a circuit breaker) ends the one read of the
    source at its next chunk: no copy request is made, nothing is published."""
    client = moto_server.client()
    src, dst = moto_server.new_bucket(), moto_server.new_bucket()
    client.put_object(Bucket=src, Key="src/obj.bin", Body=random.Random(8).randbytes(3 * PART))
    job = job_on(relay, src, dst)
    item = listed(job, "obj.bin")
    with cancel.Switch("stopped-run") as switch:
        switch.stop("d")
        with pytest.raises(cancel.Cancelled):
            copy_object(job, item, replace(SETTINGS, run_token="stopped-run"))
    assert "Contents" not in client.list_objects_v2(Bucket=dst)
    assert "Uploads" not in client.list_multipart_uploads(Bucket=dst)


def test_part_copies_travel_at_once(moto_server, relay):
    client = moto_server.client()
    src, dst = moto_server.new_bucket(), moto_server.new_bucket()
    data = random.Random(2).randbytes(4 * PART)
    client.put_object(Bucket=src, Key="src/obj.bin", Body=data)
    job = job_on(relay, src, dst)
    # The one read of the source is a request at a time; the 4 part copies are not.
    copy_object(job, listed(job, "obj.bin"), SETTINGS)
    assert relay.most > 1, relay.most
    assert client.get_object(Bucket=dst, Key="dst/obj.bin")["Body"].read() == data


def test_what_is_not_the_same_store_or_is_encrypted_is_streamed(moto_server, relay, tmp_path):
    src, dst = moto_server.new_bucket(), moto_server.new_bucket()
    assert not in_store.applies(job_on(relay, src, dst, config_kwargs={"max_pool_connections": 5}))
    recipient = X25519Identity.generate().recipient.encode()
    encrypted = replace(job_on(relay, src, dst), encryption=Encryption(recipients=(recipient,)))
    assert not in_store.applies(encrypted)  # new bytes: a new file key per object
    local = DatasetJob("d", Location.of(str(tmp_path)), Location.of(str(tmp_path / "x")),
                       KeyFilter(), VerifyMode.checksum)
    assert not in_store.applies(local)
    client = moto_server.client()
    data = random.Random(3).randbytes(MiB)
    client.put_object(Bucket=src, Key="src/obj.bin", Body=data)
    other = job_on(relay, src, dst, config_kwargs={"max_pool_connections": 5})
    before = relay.sent
    result = copy_object(other, listed(other, "obj.bin"), SETTINGS)
    assert relay.sent - before >= len(data)  # streamed: the bytes went through the client
    assert result.bytes_written == len(data)


# --- GCS: objects.rewrite --------------------------------------------------------------

def gcs_job(gcs_emulator, relay: Relay, src: str, dst: str) -> DatasetJob:
    options = {**gcs_emulator.options, "endpoint_url": f"http://127.0.0.1:{relay.port}"}
    return DatasetJob("d", Location.of(f"gs://{src}/src/", options),
                      Location.of(f"gs://{dst}/dst/", options), KeyFilter(), VerifyMode.checksum)


@pytest.fixture
def gcs_relay(gcs_emulator) -> Iterator[Relay]:
    relay = Relay(gcs_emulator.port)
    yield relay
    relay.close()


def test_gcs_same_store_is_rewritten_inside_the_store(gcs_emulator, gcs_relay):
    fs = gcs_emulator.fs()
    src, dst = gcs_emulator.new_bucket(), gcs_emulator.new_bucket()
    data = random.Random(4).randbytes(3 * MiB + 5)
    fs.pipe(f"{src}/src/obj.bin", data)
    job = gcs_job(gcs_emulator, gcs_relay, src, dst)
    assert in_store.applies(job)
    item = listed(job, "obj.bin")
    before = gcs_relay.sent
    result = copy_object(job, item, SETTINGS)
    assert gcs_relay.sent - before < 256 * 1024, "object bytes went through the client"
    assert result.sha256 == hashlib.sha256(data).hexdigest() and result.bytes_written == 0
    assert result.native_checksum and result.native_checksum.startswith("crc32c:")
    assert fs.cat(f"{dst}/dst/obj.bin") == data
    checked = check_object(job, PlanItem(Action.check, "obj.bin", item.source, None, "check"))
    assert checked.status == "matched"


def test_gcs_source_changed_after_listing_is_not_copied(gcs_emulator, gcs_relay):
    fs = gcs_emulator.fs()
    src, dst = gcs_emulator.new_bucket(), gcs_emulator.new_bucket()
    fs.pipe(f"{src}/src/obj.bin", b"a" * MiB)
    job = gcs_job(gcs_emulator, gcs_relay, src, dst)
    item = listed(job, "obj.bin")
    fs.pipe(f"{src}/src/obj.bin", b"b" * MiB)
    with pytest.raises(SourceChanged):
        copy_object(job, item, SETTINGS)
    assert not fs.exists(f"{dst}/dst/obj.bin")


def test_a_run_copies_in_store_records_and_then_skips(moto_server, tmp_path):
    """Through the CLI: copied inside the store (nothing sent), recorded, verified by
    ``datamove verify``, and a rerun copies nothing."""
    client = moto_server.client()
    bucket = moto_server.new_bucket()
    files = {"small.bin": random.Random(5).randbytes(MiB),
             "large.bin": random.Random(6).randbytes(2 * PART + 3)}
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=f"raw/{key}", Body=data)
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": s3_location(moto_server, bucket, "raw/"),
         "destination": s3_location(moto_server, bucket, "copy/")}],
        ledger=str(tmp_path / "ledger"), engine={"threads": 2, "part_size": PART})
    first = cli("run", str(manifest), "--json", "--no-progress")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])["datasets"]["d"]
    assert summary["copied"] == 2 and summary["bytes_sent"] == 0
    for key, data in files.items():
        assert client.get_object(Bucket=bucket, Key=f"copy/{key}")["Body"].read() == data
    checked = cli("verify", str(manifest), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = cli("run", str(manifest), "--json", "--no-progress")
    assert json.loads(again.stdout.strip().splitlines()[-1])["datasets"]["d"]["copied"] == 0
