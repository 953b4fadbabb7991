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
from pathlib import Path

import pytest

from datamove import api
from datamove.crypto import X25519Identity, format_identity_file, read_header
from datamove.crypto.header import unwrap_file_key
from datamove.errors import KeyProblem
from datamove.identities import (
    IdentityRef,
    clear_identity_cache,
    load_identities,
    protect_with_passphrase,
    wrap_identity_with_kms,
)
from datamove.plan import plan_dataset
from datamove.transfer import Batch, TransferSettings
from tests.conftest import run_cli, write_manifest

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
    cli("keys", "rotate", manifest, "--recipients", str(s["tmp"] / "keys" / "new.pub"),
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
    jobs = api.jobs_of(loaded)
    clear_identity_cache()
    os.environ["DATAMOVE_PASSPHRASE"] = PASSPHRASE
    try:
        api.preflight_identities(jobs)
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
