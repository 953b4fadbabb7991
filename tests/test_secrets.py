"""No secret anywhere: identities, passphrases and file keys stay out of every output.

One realistic session on real components: identities wrapped by KMS (moto_server)
and protected by a passphrase, an encrypted run, verification by decryption,
a key rotation, and the failures people cause (wrong passphrase, wrong KMS
context, wrong identity), all through the real CLI with debug logging on
(``-vv``, which includes botocore's wire logging). Then every byte the session
left behind is scanned: stdout and stderr of each command, the JSON reports,
every file of the Delta ledger (parquet and ``_delta_log``), the pickled work
that Dask would ship to workers, and the text of the exceptions raised.

The secrets: each identity's ``AGE-SECRET-KEY-1…`` string (any case), the
passphrase, and each object's 16-byte file key (raw, hex and base64).
"""

from __future__ import annotations

import base64
import io
import os
import pickle
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from datamove import api
from datamove.age import X25519Identity, format_identity_file, read_header
from datamove.age.header import unwrap_file_key
from datamove.crypto.identities import (
    IdentityRef,
    clear_identity_cache,
    load_identities,
    protect_with_passphrase,
    wrap_identity_with_kms,
)
from datamove.errors import KeyProblem
from datamove.pipeline.jobs import jobs_of, preflight_identities
from datamove.pipeline.march import plan_dataset
from datamove.pipeline.transfer import Batch, TransferSettings
from tests.conftest import run_cli, s3_location, write_manifest

PASSPHRASE = "correct horse battery staple 0x5eed"
CONTEXT = {"purpose": "datamove-secrets-test"}


def forms_of(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), base64.b64encode(secret),
            base64.b64encode(secret).rstrip(b"="), base64.urlsafe_b64encode(secret).rstrip(b"=")]


def assert_no_secret(blob: bytes, secrets: dict[str, list[bytes]], where: str) -> None:
    lowered = blob.lower()
    for name, forms in secrets.items():
        for form in forms:
            assert form not in blob and form.lower() not in lowered, f"{name} found in {where}"


@pytest.fixture
def session(tmp_path: Path, moto_server):
    import boto3

    client = boto3.client("kms", endpoint_url=moto_server.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    key_id = client.create_key(Description="datamove test")["KeyMetadata"]["Arn"]
    keys = tmp_path / "keys"
    keys.mkdir()
    kms_identity, pass_identity, new_identity = (X25519Identity.generate() for _ in range(3))
    (keys / "kms.key").write_text(wrap_identity_with_kms(
        kms_identity, key_id, CONTEXT, region="us-east-1", endpoint_url=moto_server.endpoint))
    (keys / "pass.key").write_text(protect_with_passphrase(pass_identity, PASSPHRASE))
    (keys / "new.key").write_text(format_identity_file(new_identity))
    (keys / "kms.pub").write_text(f"{kms_identity.recipient}\n")
    (keys / "pass.pub").write_text(f"{pass_identity.recipient}\n")
    (keys / "new.pub").write_text(f"{new_identity.recipient}\n")
    for name in ("a", "b"):
        src = tmp_path / f"src-{name}"
        src.mkdir()
        for i in range(5):
            (src / f"f{i}.bin").write_bytes(bytes([i]) * (70_000 * i + 3))
    kms_ref = {"file": "keys/kms.key", "kms_context": CONTEXT, "kms_region": "us-east-1",
               "kms_endpoint_url": moto_server.endpoint}
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "kms", "source": {"url": "src-a/"}, "destination": {"url": "dst-a/"},
         "encrypt": {"recipients_file": "keys/kms.pub", "identity": kms_ref}},
        {"name": "pass", "source": {"url": "src-b/"}, "destination": {"url": "dst-b/"},
         "encrypt": {"recipients_file": "keys/pass.pub",
                     "identity": {"file": "keys/pass.key"}}},
    ], engine={"threads": 2})
    secrets = {
        "kms identity": [kms_identity.encode().encode()],
        "passphrase identity": [pass_identity.encode().encode()],
        "new identity": [new_identity.encode().encode()],
        "passphrase": [PASSPHRASE.encode()],
    }
    return {"tmp": tmp_path, "manifest": manifest, "secrets": secrets, "key_id": key_id,
            "identities": [kms_identity, pass_identity, new_identity],
            "env": {"DATAMOVE_PASSPHRASE": PASSPHRASE}}


def test_no_secret_in_outputs_ledger_pickles_or_errors(session):
    s = session
    manifest = str(s["manifest"])
    outputs: list[tuple[str, bytes]] = []

    def cli(*args: str, env: dict[str, str] | None = None, expect: int = 0) -> None:
        result = run_cli("-vv", *args, env={**s["env"], **(env or {})})
        outputs.append((" ".join(args), (result.stdout + result.stderr).encode()))
        assert result.returncode == expect, result.stdout + result.stderr

    cli("run", manifest, "--json", "--no-progress")
    cli("verify", manifest, "--json", "--no-progress")  # decrypts with both identities
    cli("keys", "rotate", manifest, "--recipients-file", str(s["tmp"] / "keys" / "new.pub"),
        "--dataset", "pass", "--json", "--no-progress")
    cli("verify", manifest, "--json", "--dataset", "pass", "--identity",
        str(s["tmp"] / "keys" / "new.key"), "--no-progress")
    # The failures people cause: each is exit 2 with a message, and no secret in it.
    cli("verify", manifest, "--json", "--dataset", "pass", "--no-progress",
        env={"DATAMOVE_PASSPHRASE": "not the passphrase"}, expect=2)
    cli("verify", manifest, "--json", "--dataset", "pass", "--no-progress", expect=2)
    stored = next((s["tmp"] / "dst-a").glob("*.age"))
    cli("decrypt", "-i", str(s["tmp"] / "keys" / "new.key"), str(stored),
        str(s["tmp"] / "out.bin"), expect=2)
    wrong_context = s["manifest"].read_text().replace("datamove-secrets-test", "other")
    (s["tmp"] / "wrong.yaml").write_text(wrong_context)
    cli("verify", str(s["tmp"] / "wrong.yaml"), "--json", "--dataset", "kms",
        "--no-progress", expect=2)
    assert any(b"encryption context" in out for _, out in outputs)

    # Each object's file key, unwrapped here with the identity that opens it.
    secrets = dict(s["secrets"])
    for stored_file in sorted(s["tmp"].glob("dst-*/*.age")):
        header, _ = read_header(io.BytesIO(stored_file.read_bytes()))
        for identity in s["identities"]:
            try:
                secrets[f"file key of {stored_file.parent.name}/{stored_file.name}"] = forms_of(
                    unwrap_file_key(header, [identity]))
                break
            except Exception:
                continue
        else:
            pytest.fail(f"no identity opens {stored_file}")
    assert sum(name.startswith("file key") for name in secrets) == 10

    for command, out in outputs:
        assert_no_secret(out, secrets, f"the output of `datamove {command}`")
    ledger_files = [p for p in (s["tmp"] / ".datamove").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in ledger_files)
    for path in ledger_files:
        assert_no_secret(path.read_bytes(), secrets, str(path))

    # What the driver ships to workers: jobs and batches pickle without secrets,
    # even after the driver opened the identities (they are cached in-process).
    loaded = api.load_manifest(s["manifest"])
    jobs = jobs_of(loaded)
    clear_identity_cache()
    os.environ["DATAMOVE_PASSPHRASE"] = PASSPHRASE
    try:
        preflight_identities(jobs)
    finally:
        del os.environ["DATAMOVE_PASSPHRASE"]
    for job in jobs:
        items = tuple(plan_dataset(job))
        blob = pickle.dumps(Batch(job, items, TransferSettings()))
        assert_no_secret(blob, secrets, f"the pickled batch of {job.name}")
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(load_identities(jobs[0].encryption.identity))

    # Exceptions raised for bad keys carry no secret either.
    clear_identity_cache()
    for ref, env in ((IdentityRef.of(str(s["tmp"] / "keys" / "pass.key")), "wrong"),
                     (IdentityRef.of(str(s["tmp"] / "keys" / "kms.key"),
                                     kms_context={"purpose": "other"},
                                     kms_region="us-east-1",
                                     kms_endpoint_url=jobs[0].encryption.identity
                                     .kms_endpoint_url), None)):
        os.environ["DATAMOVE_PASSPHRASE"] = env or ""
        try:
            with pytest.raises(KeyProblem) as caught:
                load_identities(ref)
        finally:
            del os.environ["DATAMOVE_PASSPHRASE"]
        text = f"{caught.value}\n{caught.value!r}".encode()
        assert_no_secret(text, secrets, "a KeyProblem")


# --- credentials of the stores' own clients, at any verbosity -------------------------

# What an STS session token looks like (base64 with '/', '+' and '='), recognisably fake.
SESSION_TOKEN = ("IQoJb3JpZ2luX2VjEDatamoveFAKE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+TEST"
                 "+session/token+value+NOT+REAL==")


def test_debug_logging_against_s3_prints_no_session_token_or_signature(tmp_path: Path,
                                                                        moto_server):
    """-vv turns on botocore's wire logging (request headers, canonical requests,
    signatures); none of the credentials in it may reach the terminal."""
    bucket = moto_server.new_bucket()
    (tmp_path / "src").mkdir()
    for i in range(3):
        (tmp_path / "src" / f"f{i}.txt").write_text(f"object {i}")
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": s3_location(moto_server, bucket)}])

    result = run_cli("-vv", "run", str(manifest), "--no-progress",
                     env={"AWS_SESSION_TOKEN": SESSION_TOKEN})

    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "x-amz-security-token" in out.lower()  # the wire logging did run
    assert "<redacted>" in out
    for form in (SESSION_TOKEN, quote(SESSION_TOKEN, safe=""), SESSION_TOKEN[:40]):
        assert form not in out, f"the session token appears: {form}"
    assert not re.search(r"Signature=[0-9a-f]{16}", out), "a SigV4 signature appears"
    assert not re.search(r"Signature:\s*\n[0-9a-f]{64}", out), "a SigV4 signature appears"
    assert "Credential=testing" not in out


# Logs, from the places a library can log from, once the CLI has set logging up.
LOG_SOURCES = r"""
import logging, sys, threading
from datamove.cli import main

try:
    main(["-vv", "plan", "--help"])  # the group sets logging up, then --help exits
except SystemExit:
    pass
token = sys.argv[1]
# a worker thread, in botocore's own words
threading.Thread(target=lambda: logging.getLogger("botocore.endpoint").debug(
    "Sending http request: <AWSPreparedRequest headers=%s>",
    {"X-Amz-Security-Token": b"%s" % token.encode(), "Authorization": b"AWS4-HMAC-SHA256 "
     b"Credential=AKIDEXAMPLE/20260101/us-east-1/s3/aws4_request, "
     b"SignedHeaders=host, Signature=" + b"ab" * 32})).start()
# distributed has its own handler and does not propagate to the root logger
logging.getLogger("distributed.worker").warning(
    "Compute Failed: https://acct.blob.core.windows.net/c/k?sv=2024&sig=SASSIGNATURE0001")
# a library that configures its handler after datamove did
late = logging.getLogger("late.library")
late.addHandler(logging.StreamHandler(sys.stderr))
late.propagate = False
late.warning("retrying with headers {'Authorization': 'Bearer BEARERTOKEN0002.abc'}")
# an exception whose text carries a credential, logged with its traceback
try:
    raise RuntimeError(f"token {token} refused")
except RuntimeError:
    logging.getLogger("aiobotocore").exception("request failed")
print("done", file=sys.stderr)
"""


def test_every_log_record_is_scrubbed_whichever_thread_or_handler_emits_it(tmp_path: Path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", LOG_SOURCES, SESSION_TOKEN],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "AWS_SESSION_TOKEN": SESSION_TOKEN})

    err = result.stderr
    assert result.returncode == 0 and err.rstrip().endswith("done"), err
    for line in ("botocore.endpoint: Sending http request", "Compute Failed",
                 "retrying with headers", "request failed", "RuntimeError: token"):
        assert line in err, f"{line!r} was not logged:\n{err}"
    for secret in (SESSION_TOKEN, "ab" * 32, "AKIDEXAMPLE/20260101", "SASSIGNATURE0001",
                   "BEARERTOKEN0002"):
        assert secret not in err, f"{secret} appears in:\n{err}"


SCRUBBED = {
    # botocore: the prepared request's headers, the canonical request, the signature
    "botocore-headers": ("headers={'X-Amz-Date': b'20260101T000000Z', 'X-Amz-Security-Token': "
                         "b'FwoGZXIvYXdzEJr//////////SECRET1', 'Authorization': b'AWS4-HMAC-"
                         "SHA256 Credential=AKIDSECRET2/20260101/us-east-1/s3/aws4_request, "
                         "SignedHeaders=host, Signature=SECRET3abcdef0123'}",
                         ["SECRET1", "AKIDSECRET2", "SECRET3"]),
    "canonical-request": ("GET\n/b\n\nhost:s3.amazonaws.com\nx-amz-security-token:"
                          "FwoGSECRET4==\n\nhost;x-amz-security-token\n", ["FwoGSECRET4"]),
    "botocore-signature": ("Signature:\n" + "5ec7e7" * 10 + "abcd", ["5ec7e7" * 10]),
    "presigned-url": ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&"
                      "X-Amz-Credential=AKIDSECRET5%2F20260101&X-Amz-Security-Token=SECRET6&"
                      "X-Amz-Signature=SECRET7", ["AKIDSECRET5", "SECRET6", "SECRET7"]),
    "sts-response-body": ("Response body:\nb'<Credentials><AccessKeyId>ASIAQWERTYUIOPASDFGH"
                          "</AccessKeyId><SecretAccessKey>SECRET8/abc+def</SecretAccessKey>"
                          "<SessionToken>SECRET9</SessionToken></Credentials>'",
                          ["ASIAQWERTYUIOPASDFGH", "SECRET8", "SECRET9"]),
    "kms-decrypt-body": ('b\'{"KeyId":"arn:aws:kms:us-east-1:1:key/k","Plaintext":'
                         '"U0VDUkVUMTA="}\'', ["U0VDUkVUMTA="]),
    "credentials-repr": ("ReadOnlyCredentials(access_key='AKID', secret_key='SECRET11', "
                         "token='SECRET12')", ["SECRET11", "SECRET12"]),
    # Azure: SAS tokens in URLs, bare and encoded; SharedKey; azure-core's header dump
    "azure-sas-url": ("Request URL: 'https://acct.blob.core.windows.net/c/k?sv=2024-05-04&"
                      "ss=b&srt=co&sp=rwdlac&se=2026-01-01T00:00:00Z&spr=https&"
                      "sig=SECRET13%2Babc%3D'", ["SECRET13"]),
    "azure-sas-bare": ("sas_token=sv=2024-05-04&ss=b&sig=SECRET14", ["SECRET14"]),
    "azure-sas-encoded": ("url=https%3A%2F%2Fa.blob.core.windows.net%2Fc%3Fsv%3D2024"
                          "%26sig%3DSECRET15%252B%26se%3D2026", ["SECRET15"]),
    "azure-shared-key": ("    'Authorization': 'SharedKey acct:SECRET16+/abc='",
                         ["SECRET16"]),
    "azure-shared-key-wire": ("Authorization: SharedKey acct:SECRET17abc=", ["SECRET17"]),
    "azure-account-key": ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=SECRET18==;",
                          ["SECRET18"]),
    # bearer tokens: HTTP wire form, JSON, GCS OAuth tokens, OAuth responses
    "bearer-wire": ("Authorization: Bearer SECRET19.payload.sig", ["SECRET19"]),
    "bearer-json": ('{"authorization": "Bearer SECRET20"}', ["SECRET20"]),
    "gcs-oauth-token": ("GET: b/o, (), {'Authorization': 'Bearer ya29.a0SECRET21xxxxxxxxxxxxxx'}",
                        ["ya29.a0SECRET21"]),
    "oauth-response": ('{"access_token": "SECRET22", "refresh_token": "SECRET23", '
                       '"client_secret": "SECRET24"}', ["SECRET22", "SECRET23", "SECRET24"]),
    "gcs-signed-url": ("https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&"
                       "X-Goog-Credential=sa%40p.iam%2FSECRET25&X-Goog-Signature=SECRET26",
                       ["SECRET25", "SECRET26"]),
    "basic-auth": ("Proxy-Authorization: Basic dXNlcjpTRUNSRVQyNw==", ["dXNlcjpTRUNSRVQyNw=="]),
    "cookie": ("{'Cookie': 'session=SECRET28'}", ["SECRET28"]),
    "sse-c-key": ("{'x-amz-server-side-encryption-customer-key': b'SECRET29base64='}",
                  ["SECRET29"]),
}


@pytest.mark.parametrize("name", SCRUBBED)
def test_scrub_removes_credentials_in_the_forms_clients_log_them(name: str) -> None:
    from datamove.redact import scrub

    text, secrets = SCRUBBED[name]
    cleaned = scrub(text)

    assert "<redacted>" in cleaned
    for secret in secrets:
        assert secret not in cleaned, cleaned


@pytest.mark.parametrize("text", [
    "datasets[0].source.options.password: looks like a credential ('password'); inline "
    "secrets are refused",
    "host;x-amz-content-sha256;x-amz-date;x-amz-security-token",
    "{'Key': 'data/Token/secret-plans.txt', 'ContinuationToken': '1abc'}",
    "dataset d: 3 copied, exit code=1; Basic tier, Digest of 2 objects",
    "s3://bucket/key?versionId=3&partNumber=2",
])
def test_scrub_leaves_ordinary_messages_alone(text: str) -> None:
    from datamove.redact import scrub

    assert scrub(text) == text


def test_values_of_credential_variables_are_scrubbed_but_paths_are_not(tmp_path: Path):
    """The environment's credentials are scrubbed in any form; PWD and the paths of
    credential files stay readable (they name places, and errors need them)."""
    import subprocess
    import sys

    script = ("from datamove.redact import install_log_scrubber, scrub\n"
              "install_log_scrubber()\n"
              "import sys; print(scrub(sys.argv[1]))\n")
    secret = "s3cr3t/Passphrase+Value=="
    text = (f"token {secret} and {quote(secret, safe='')} in {tmp_path}/keys/sa.json "
            f"under {tmp_path}")
    result = subprocess.run(
        [sys.executable, "-c", script, text], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env={**os.environ, "DATAMOVE_PASSPHRASE": secret, "PWD": str(tmp_path),
                           "GOOGLE_APPLICATION_CREDENTIALS": f"{tmp_path}/keys/sa.json",
                           "MY_SERVICE_TOKEN": str(tmp_path)})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"token <redacted> and <redacted> in {tmp_path}/keys/"
                                     f"sa.json under {tmp_path}")
