"""The store registry and what each backend decides: URL parsing by fsspec's rules,
lazy imports, and which errors are worth a retry (real servers, real answers)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from datamove.errors import LocationUnreachable
from datamove.manifest.model import VerifyMode
from datamove.pipeline.march import Action, DatasetJob, PlanItem
from datamove.pipeline.transfer import TransferSettings, process_item
from datamove.stores.base import BACKENDS, Location, backend_for
from datamove.stores.core import Entry, KeyFilter, list_entries
from tests.conftest import require_tool, start_listening, stop_server

MIB = 1024 * 1024


@pytest.mark.parametrize("url, root, options", [
    ("hdfs://nn:8020/data/x/", "/data/x", {"host": "nn", "port": 8020}),
    ("ftp://files.example:2121/pub/x", "/pub/x", {"host": "files.example", "port": 2121}),
    ("sftp://alice@files.example:2222/srv/x/", "/srv/x",
     {"host": "files.example", "port": 2222, "username": "alice"}),
    ("memory://bucket/x/", "/bucket/x", {}),
])
def test_other_fsspec_urls_keep_host_and_port(url: str, root: str, options: dict) -> None:
    """Parsed by the filesystem class's own rules; nothing connects."""
    location = Location.of(url)
    assert location.root == root
    assert location.backend.client_options(location) == options
    assert location.path("a/b") == f"{root}/a/b"
    assert location.url_of("a/b") == url.rstrip("/") + "/a/b"


def test_manifest_options_win_over_the_url() -> None:
    location = Location.of("ftp://files.example:2121/pub", {"port": 21, "allow_insecure": True})
    assert location.backend.client_options(location) == {"host": "files.example", "port": 21}


def test_importing_stores_imports_no_store_sdk() -> None:
    code = ("import sys, datamove.stores.core, datamove.stores.writers, datamove.stores.base;"
            "from datamove.stores.base import Location;"
            "Location.of('s3://b/p').backend; Location.of('gs://b/p').backend;"
            "Location.of('az://c/p').backend;"
            "print(sorted(m for m in ('s3fs', 'gcsfs', 'adlfs', 'boto3', 'botocore', 'aiobotocore',"
            " 'azure.storage.blob', 'paramiko') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert out.stdout.strip() == "[]"


def test_every_registered_scheme_resolves_to_a_backend_declaring_its_features() -> None:
    for scheme in BACKENDS:
        backend = backend_for(scheme)
        assert isinstance(backend.atomic_temp_names, bool)
        assert backend.lease_lock in ("flock", "conditional-write", "none")
    assert backend_for("s3").native_checksums == ("md5", "crc32c", "crc32")
    assert backend_for("gs").storage_classes is not None
    assert backend_for("file").is_local and backend_for("file").atomic_temp_names
    assert not backend_for("memory").can_host_ledger


def _client_error(code: str, status: int) -> BaseException:
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    return translate_boto_error(ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject"))


@pytest.mark.parametrize("code, status, transient", [
    ("SlowDown", 503, True), ("InternalError", 500, True), ("RequestTimeout", 400, True),
    ("AccessDenied", 403, False), ("InvalidAccessKeyId", 403, False),
    ("SignatureDoesNotMatch", 403, False), ("NoSuchBucket", 404, False),
    ("EntityTooSmall", 400, False), ("InvalidStorageClass", 400, False),
])
def test_s3_judges_its_answers(code: str, status: int, transient: bool) -> None:
    assert backend_for("s3").is_transient(_client_error(code, status)) is transient


@pytest.mark.parametrize(("status", "transient"), [
    (408, True), (429, True), (500, True), (503, True),
    (400, False), (401, False), (403, False), (404, False), (412, False),
])
def test_gcs_and_azure_judge_their_http_answers(status: int, transient: bool) -> None:
    from azure.core.exceptions import HttpResponseError
    from gcsfs.retry import HttpError

    gcs_error = HttpError({"code": status, "message": "answer"})
    azure_error = HttpResponseError(message="answer")
    azure_error.status_code = status
    assert backend_for("gs").is_transient(gcs_error) is transient
    assert backend_for("az").is_transient(azure_error) is transient
    # Another library's answer with the same status is not theirs to judge.
    assert not backend_for("az").is_transient(gcs_error)


def test_local_retries_only_passing_os_errors() -> None:
    local = backend_for("file")
    assert local.is_transient(OSError(errno.EINTR, "interrupted"))
    assert not local.is_transient(OSError(errno.ENOSPC, "full"))
    assert not local.is_transient(OSError(errno.EINVAL, "invalid"))
    assert not local.is_transient(_client_error("EntityTooSmall", 400))  # not the disk's


def _copy_to_s3(tmp_path: Path, destination: Location, size: int, part_size: int):
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "obj.bin").write_bytes(os.urandom(size))
    entry = Entry("obj.bin", size, (source / "obj.bin").stat().st_mtime)
    job = DatasetJob("d", Location.of(str(source)), destination, KeyFilter(), VerifyMode.size)
    settings = TransferSettings(part_size=part_size, retries=4, backoff_base=0.01,
                                backoff_max=0.02)
    return process_item(job, PlanItem(Action.copy, "obj.bin", entry, None, "new"), settings)


def test_a_permanent_s3_error_fails_after_one_attempt(tmp_path: Path, moto_server) -> None:
    """S3 refuses parts under 5 MiB when the upload completes (EntityTooSmall, a 400):
    the answer will not change, so the object fails at once (it was tried 5 times)."""
    bucket = moto_server.new_bucket()
    destination = Location.of(f"s3://{bucket}/data/", {"endpoint_url": moto_server.endpoint})
    result = _copy_to_s3(tmp_path, destination, 3 * MIB, MIB)
    assert result.status == "failed"
    assert "smaller than the minimum allowed" in (result.error or "")
    assert result.attempts == 1


@pytest.fixture
def moto_with_auth(monkeypatch):
    """A moto_server that checks credentials and IAM policies after the first
    four requests (which set up a bucket and a user allowed to read but not write)."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "4")
    process, port = start_listening("moto_server", [require_tool("moto_server"), "-H",
                                                    "127.0.0.1", "-p", "0"])
    monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
    endpoint = f"http://127.0.0.1:{port}"
    admin = {"endpoint_url": endpoint, "region_name": "us-east-1",
             "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    boto3.client("s3", **admin).create_bucket(Bucket="denied-bucket")
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="reader")
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
            "s3:ListBucket", "s3:GetObject", "s3:ListBucketMultipartUploads"]}]}))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    try:
        yield endpoint
    finally:
        stop_server(process)


def test_access_denied_fails_after_one_attempt(tmp_path: Path, moto_with_auth: str) -> None:
    destination = Location.of("s3://denied-bucket/data/", {"endpoint_url": moto_with_auth,
                                                           "skip_instance_cache": True})
    result = _copy_to_s3(tmp_path, destination, 1000, 5 * MIB)
    assert result.status == "failed" and "Access Denied" in (result.error or "")
    assert result.attempts == 1


def test_sftp_refuses_to_trust_any_host_key_towards_a_remote_host() -> None:
    """fsspec's default would accept whatever key a man in the middle shows;
    datamove checks known_hosts and asks for an explicit opt-in (nothing connects)."""
    location = Location.of("sftp://alice@files.example:2222/srv", {"host_key_policy": "auto_add"})
    assert location.backend.name == "sftp"
    with pytest.raises(LocationUnreachable, match="known_hosts"):
        location.fs  # noqa: B018


def test_sftp_checks_the_host_key_against_known_hosts(tmp_path: Path, sftp_server) -> None:
    """``reject`` (the default towards any other host) refuses a server whose key no
    known_hosts file names, and connects when the ``known_hosts`` option names it."""
    directory = sftp_server.new_dir()
    (Path(directory) / "a.bin").write_bytes(b"x")
    url = f"sftp://127.0.0.1:{sftp_server.port}{directory}"
    unknown = Location.of(url, {**sftp_server.options, "host_key_policy": "reject",
                                "skip_instance_cache": True})
    with pytest.raises(Exception, match="not found in known_hosts"):
        unknown.fs  # noqa: B018
    known = Location.of(url, {**sftp_server.options, "host_key_policy": "reject",
                              "known_hosts": str(sftp_server.known_hosts),
                              "skip_instance_cache": True})
    assert [e.key for e in list_entries(known)] == ["a.bin"]
