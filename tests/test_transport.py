"""In-transit security: plain http:// or TLS checks off towards another host are refused
unless the manifest opts in, and the ledger never enables plain HTTP behind the user's back.

The end-to-end tests run moto_server on this machine's non-loopback address (the
address other hosts would reach it by), so "another host" is real network
traffic that is not loopback, not a name the code merely believes is remote.
Validation of every place a manifest names an endpoint is in test_manifest.py.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamove.ledger.tables import storage_options
from datamove.stores.transport import clear_text_scheduler, is_loopback
from tests.conftest import (
    AWS_ENV,
    MotoServer,
    cli,
    environment,
    require_tool,
    start_listening,
    stop_server,
    write_manifest,
)


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    import psutil

    stats = psutil.net_if_stats()
    for name, addresses in psutil.net_if_addrs().items():
        if not stats.get(name) or not stats[name].isup:
            continue
        for address in addresses:
            if address.family.name == "AF_INET" and not ipaddress.ip_address(
                    address.address).is_loopback:
                return address.address
    return None


@pytest.fixture(scope="module")
def remote_moto() -> Iterator[MotoServer]:
    """moto_server listening only on a non-loopback address of this machine."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to serve S3 on")
    missing = {key: value for key, value in AWS_ENV.items() if key not in os.environ}
    process, port = start_listening("moto_server", [require_tool("moto_server"), "-H",
                                                    address, "-p", "0"], host=address)
    server = MotoServer(port, process)
    server.endpoint = f"http://{address}:{port}"
    try:
        with environment(**missing):
            yield server
    finally:
        stop_server(process)


def test_plain_http_to_another_host_is_refused_before_anything_moves(
        tmp_path: Path, remote_moto: MotoServer) -> None:
    bucket = remote_moto.new_bucket()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello")
    options = {"endpoint_url": remote_moto.endpoint}
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"},
         "destination": {"url": f"s3://{bucket}/data/", "options": options}}],
        ledger=f"s3://{bucket}/ledger", ledger_options=options)

    result = cli("run", str(manifest), "--no-progress")

    assert result.returncode == 2, result.stdout + result.stderr
    host = remote_moto.endpoint.split("//")[1].split(":")[0]
    for field in ("ledger_options.endpoint_url", "datasets[0].destination.options.endpoint_url"):
        assert f"{field}: is plain http:// to {host}, which is not this machine" \
            in result.stderr, result.stderr
    assert "set allow_insecure: true" in result.stderr
    assert "Traceback" not in result.stderr
    listing = remote_moto.client().list_objects_v2(Bucket=bucket)
    assert listing.get("KeyCount", 0) == 0  # no object, no ledger, no lock


def test_opt_in_copies_and_records_over_plain_http(tmp_path: Path,
                                                   remote_moto: MotoServer) -> None:
    """allow_insecure: true is read by datamove, ignored by the filesystems, and lets
    delta-rs (the ledger) speak plain HTTP to that endpoint."""
    bucket = remote_moto.new_bucket()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello")
    options = {"endpoint_url": remote_moto.endpoint, "allow_insecure": True}
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"},
         "destination": {"url": f"s3://{bucket}/data/", "options": options}}],
        ledger=f"s3://{bucket}/ledger", ledger_options=options)

    result = cli("run", str(manifest), "--no-progress", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    keys = [o["Key"] for o in remote_moto.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert "data/a.txt" in keys
    assert any(k.startswith("ledger/objects/_delta_log/") for k in keys)


@pytest.mark.parametrize(("endpoint", "options", "allowed"), [
    ("http://127.0.0.1:9000", {}, True),
    ("http://localhost:9000", {}, True),
    ("http://[::1]:9000", {}, True),
    ("http://minio.internal:9000", {}, False),
    ("http://10.0.0.5:9000", {}, False),
    ("http://127.0.0.1.nip.io:9000", {}, False),
    ("http://minio.internal:9000", {"allow_insecure": True}, True),
    ("http://minio.internal:9000", {"allow_insecure": "true"}, False),  # only a real true
])
def test_ledger_allows_plain_http_only_to_loopback_or_when_opted_in(
        endpoint: str, options: dict, allowed: bool) -> None:
    out = storage_options("s3://ledger/l", {"endpoint_url": endpoint, **options})

    assert out["AWS_ENDPOINT_URL"] == endpoint
    assert ("AWS_ALLOW_HTTP" in out) is allowed
    assert "allow_insecure" not in {k.lower() for k in out}  # datamove's key, not delta-rs's


def test_ledger_endpoints_from_the_environment_follow_the_same_rule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.lan:9000")
    assert "AWS_ALLOW_HTTP" not in storage_options("s3://ledger/l", {})
    assert storage_options("s3://ledger/l", {"allow_insecure": True})["AWS_ALLOW_HTTP"] == "true"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "DefaultEndpointsProtocol=http;AccountName=acct;"
                       "BlobEndpoint=http://azurite.lan:10000/acct;")
    assert "azure_allow_http" not in storage_options("az://c/l", {})
    assert storage_options("az://c/l", {"allow_insecure": True})["azure_allow_http"] == "true"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "BlobEndpoint=http://127.0.0.1:10000/acct;")
    assert storage_options("az://c/l", {})["azure_allow_http"] == "true"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.255.0.9", True), ("localhost", True), ("LOCALHOST", True),
    ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("192.0.2.2", False), ("localhost.example.com", False),
    ("127.0.0.1.nip.io", False), ("::2", False), ("", False), (None, False),
])
def test_loopback_is_judged_on_the_name_as_written(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("address", "refused"), [
    ("tcp://192.0.2.7:8786", True), ("tcp://scheduler.internal:8786", True),
    ("TCP://dask-scheduler:8786", True), ("ucx://192.0.2.7:13337", True),
    ("tcp://127.0.0.1:8786", False), ("tcp://localhost:8786", False),
    ("tcp://[::1]:8786", False), ("tls://192.0.2.7:8786", False),
    ("inproc://192.0.2.7/1/2", False), (None, False),
])
def test_a_clear_text_scheduler_is_judged_on_scheme_and_host(address: str | None,
                                                            refused: bool) -> None:
    assert (clear_text_scheduler(address) is not None) is refused


def test_a_clear_text_scheduler_on_another_host_is_refused_unless_opted_in(
        tmp_path: Path) -> None:
    """Tasks and results cross the scheduler connection as pickles: tcp:// to another
    host is refused in the manifest (file:line) and on the command line (before the
    run records anything, without a connection attempt), unless engine says
    allow_insecure: true."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello")
    datasets = [{"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}]
    remote = "tcp://192.0.2.7:8786"  # TEST-NET-1: nothing answers there
    in_manifest = write_manifest(tmp_path / "m.yaml", datasets, engine={"scheduler": remote})
    result = cli("plan", str(in_manifest))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "m.yaml:4: engine.scheduler: is clear-text tcp:// to 192.0.2.7, which is not " \
        "this machine" in result.stderr, result.stderr
    assert "set allow_insecure: true in the manifest's engine section" in result.stderr

    plain = write_manifest(tmp_path / "plain.yaml", datasets)
    began = time.monotonic()
    result = cli("run", str(plain), "--scheduler", remote, "--no-progress")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"the Dask scheduler {remote} is clear-text tcp:// to 192.0.2.7" in result.stderr
    assert time.monotonic() - began < 8  # refused, not a 10 s connection attempt
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".datamove").exists() and not (tmp_path / "dst").exists()

    opted = write_manifest(tmp_path / "opted.yaml", datasets,
                           engine={"scheduler": remote, "allow_insecure": True})
    assert cli("plan", str(opted)).returncode == 0
