"""Identity files in their three forms (plaintext, passphrase, KMS on moto_server), the
errors each failure gives (naming the file, never the secret), the per-process cache,
and the rule that identities are never pickled while their references are."""

from __future__ import annotations

import io
import os
import pickle
import stat
import traceback
from pathlib import Path

import pytest

from datamove.age import (
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    encrypt,
    format_identity_file,
)
from datamove.crypto.identities import (
    KMS_COMMENT,
    KMS_MAGIC,
    PASSPHRASE_ENV,
    IdentityRef,
    clear_identity_cache,
    load_identities,
    protect_with_passphrase,
    wrap_identity_with_kms,
    write_secret_file,
)
from datamove.errors import EXIT_BAD_INPUT, KeyProblem
from tests.conftest import MotoServer

PASSPHRASE = "identities: correct horse battery staple"
CONTEXT = {"dataset": "sales", "purpose": "datamove"}


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    clear_identity_cache()


def failure(ref: IdentityRef) -> KeyProblem:
    with pytest.raises(KeyProblem) as caught:
        load_identities(ref)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return caught.value


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    """Neither the message nor the printed traceback (with its chained causes) leaks."""
    shown = "".join(traceback.format_exception(exc)) + repr(exc)
    for secret in secrets:
        assert secret not in shown


@pytest.fixture(scope="module")
def identity() -> X25519Identity:
    return X25519Identity.generate()


@pytest.fixture(scope="module")
def armored_protected(identity: X25519Identity) -> str:
    """One scrypt derivation at the age CLI's work factor (about a second)."""
    return protect_with_passphrase(identity, PASSPHRASE)


def test_plaintext_identity_file_loads(tmp_path: Path, identity: X25519Identity) -> None:
    other = X25519Identity.generate()
    path = tmp_path / "key.txt"
    path.write_text(format_identity_file(identity, created="2025-01-01T00:00:00Z")
                    + "\n# another\n" + other.encode() + "\n")
    loaded = load_identities(IdentityRef(str(path)))
    assert [str(i.recipient) for i in loaded] == [str(identity.recipient), str(other.recipient)]


def test_armored_passphrase_identity_file_loads(tmp_path: Path, identity: X25519Identity,
                                               armored_protected: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert armored_protected.startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    assert identity.encode() not in armored_protected
    path = tmp_path / "key.age"
    path.write_text(armored_protected)
    monkeypatch.setenv("MY_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    (loaded,) = load_identities(IdentityRef(str(path), passphrase_env="MY_KEY_PASSPHRASE"))
    assert loaded.recipient == identity.recipient


def test_binary_passphrase_identity_file_loads(tmp_path: Path, identity: X25519Identity,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "key.age"
    with path.open("wb") as out:  # what `age -p -o key.age key.txt` writes (cheaper factor)
        encrypt(io.BytesIO(format_identity_file(identity).encode()), out,
                [ScryptRecipient.from_str(PASSPHRASE, work_factor=10)])
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    (loaded,) = load_identities(IdentityRef(str(path)))
    assert loaded.recipient == identity.recipient


def test_wrong_passphrase_names_the_file_and_leaks_nothing(
        tmp_path: Path, identity: X25519Identity, armored_protected: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "key.age"
    path.write_text(armored_protected)
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    exc = failure(IdentityRef(str(path)))
    assert f"wrong passphrase for identity file {path}" in str(exc)
    assert PASSPHRASE_ENV in str(exc)
    assert_no_secret(exc, identity.encode(), "not the passphrase", PASSPHRASE)


def test_missing_passphrase_variable_is_named(tmp_path: Path, armored_protected: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "key.age"
    path.write_text(armored_protected)
    monkeypatch.delenv("ABSENT_PASSPHRASE_VAR", raising=False)
    exc = failure(IdentityRef(str(path), passphrase_env="ABSENT_PASSPHRASE_VAR"))
    assert str(path) in str(exc)
    assert "set the environment variable ABSENT_PASSPHRASE_VAR" in str(exc)


def test_missing_file_is_named(tmp_path: Path) -> None:
    exc = failure(IdentityRef(str(tmp_path / "nope.txt")))
    assert str(exc) == f"identity file {tmp_path / 'nope.txt'}: not found; check the path"


def test_malformed_file_names_file_and_line_not_content(tmp_path: Path,
                                                        identity: X25519Identity) -> None:
    typo = identity.encode()[:-3] + "QQQ"  # a mistyped secret key must not be echoed
    path = tmp_path / "key.txt"
    path.write_text(f"# created: today\n{typo}\n")
    exc = failure(IdentityRef(str(path)))
    assert f"identity file {path}, line 2" in str(exc)
    assert_no_secret(exc, typo, typo[20:40])


@pytest.mark.parametrize("content", [b"", b"# only a comment\n", b"\xff\xfe binary junk\x00"],
                         ids=["empty", "comments", "binary"])
def test_not_an_identity_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key.txt"
    path.write_bytes(content)
    assert str(path) in str(failure(IdentityRef(str(path))))


def test_damaged_passphrase_file_is_a_key_problem(tmp_path: Path, armored_protected: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "key.age"
    path.write_text(armored_protected[: len(armored_protected) // 2])
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    exc = failure(IdentityRef(str(path)))
    assert f"identity file {path}: not a valid passphrase-protected age file" in str(exc)


# --- KMS --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kms_key(moto_server: MotoServer) -> str:
    import boto3

    kms = boto3.client("kms", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    return kms.create_key(Description="datamove test")["KeyMetadata"]["KeyId"]


def kms_ref(path: Path, server: MotoServer, context: dict[str, str]) -> IdentityRef:
    return IdentityRef.of(str(path), kms_context=context, kms_endpoint_url=server.endpoint)


@pytest.fixture
def kms_file(tmp_path: Path, identity: X25519Identity, kms_key: str,
             moto_server: MotoServer) -> Path:
    path = tmp_path / "key.kms"
    path.write_text(wrap_identity_with_kms(identity, kms_key, CONTEXT,
                                           endpoint_url=moto_server.endpoint))
    return path


def test_kms_file_format_and_round_trip(kms_file: Path, identity: X25519Identity, kms_key: str,
                                        moto_server: MotoServer) -> None:
    lines = kms_file.read_text().splitlines()
    assert lines[0] == KMS_COMMENT
    assert lines[0].startswith("# datamove: age identity wrapped by AWS KMS.")
    assert lines[1] == f"# recipient: {identity.recipient}"
    assert lines[2] == KMS_MAGIC == "datamove-kms-identity-v1"
    assert lines[3].startswith("key-id: arn:aws:kms:us-east-1:") and lines[3].endswith(kms_key)
    assert lines[4].startswith("ciphertext: ") and len(lines) == 5
    assert identity.encode() not in kms_file.read_text()
    # Context order does not matter; the region comes from the key ARN.
    reversed_context = dict(reversed(list(CONTEXT.items())))
    (loaded,) = load_identities(kms_ref(kms_file, moto_server, reversed_context))
    assert loaded.recipient == identity.recipient


def test_kms_context_mismatch_is_explained(kms_file: Path, identity: X25519Identity,
                                           moto_server: MotoServer) -> None:
    wrong = {**CONTEXT, "dataset": "marketing"}
    exc = failure(kms_ref(kms_file, moto_server, wrong))
    key_id = kms_file.read_text().split("key-id: ")[1].split("\n")[0]
    assert (f"KMS refused to unwrap identity file {kms_file} with key {key_id}: the encryption "
            f"context {dict(sorted(wrong.items()))} does not match") in str(exc)
    assert "wrapped with another key" in str(exc)
    assert_no_secret(exc, identity.encode())
    assert "does not match" in str(failure(kms_ref(kms_file, moto_server, {})))


def test_kms_unknown_key_names_the_aws_error(kms_file: Path, moto_server: MotoServer) -> None:
    text = kms_file.read_text()
    key_id = text.split("key-id: ")[1].split("\n")[0]
    missing = key_id.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    kms_file.write_text(text.replace(key_id, missing))
    exc = failure(kms_ref(kms_file, moto_server, CONTEXT))
    assert str(kms_file) in str(exc) and missing in str(exc)
    assert "AWS error NotFoundException" in str(exc)


def test_kms_unreachable_endpoint(kms_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import refused_port

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the user's retry setting is respected
    with refused_port() as port:
        ref = IdentityRef.of(str(kms_file), kms_context=CONTEXT,
                             kms_endpoint_url=f"http://127.0.0.1:{port}")
        exc = failure(ref)
    assert str(kms_file) in str(exc) and "cannot reach KMS" in str(exc)


def test_kms_bodies_stay_out_of_debug_logs(tmp_path: Path, identity: X25519Identity,
                                           kms_key: str, moto_server: MotoServer,
                                           caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`datamove -vv` turns on DEBUG, where botocore logs request and response bodies."""
    import base64
    import logging

    import boto3

    caplog.set_level(logging.DEBUG)
    # The CLI scrubs every log record (a record factory, and a filter on every handler
    # it finds, pytest's capture handler included); an in-process CLI test may have
    # installed both in this process. The API must not rely on them.
    monkeypatch.setattr(logging, "_logRecordFactory", logging.LogRecord)
    for handler in {caplog.handler, *logging.getLogger().handlers}:
        monkeypatch.setattr(handler, "filters", [])
    kms = boto3.client("kms", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    kms.encrypt(KeyId=kms_key, Plaintext=b"canary-plaintext")
    assert base64.b64encode(b"canary-plaintext").decode() in caplog.text  # the threat is real
    caplog.clear()
    path = tmp_path / "key.kms"
    path.write_text(wrap_identity_with_kms(identity, kms_key, CONTEXT,
                                           endpoint_url=moto_server.endpoint))
    load_identities(kms_ref(path, moto_server, CONTEXT))
    secret_file = format_identity_file(identity).encode()
    for leak in (identity.encode(), base64.b64encode(secret_file).decode()[:40], "Plaintext"):
        assert leak not in caplog.text
    assert logging.getLogger("botocore.parsers").level == logging.NOTSET  # levels restored


@pytest.mark.parametrize("edit", ["drop-ciphertext", "bad-base64", "other-recipient"])
def test_kms_damaged_file(kms_file: Path, moto_server: MotoServer, edit: str) -> None:
    lines = kms_file.read_text().splitlines()
    if edit == "drop-ciphertext":
        lines = lines[:4]
    elif edit == "bad-base64":
        lines[4] = "ciphertext: not*base64"
    else:
        lines[1] = f"# recipient: {X25519Identity.generate().recipient}"
    kms_file.write_text("\n".join(lines) + "\n")
    exc = failure(kms_ref(kms_file, moto_server, CONTEXT))
    assert f"KMS identity file {kms_file}" in str(exc)


# --- references, pickling, cache ----------------------------------------------------------

@pytest.mark.parametrize("make", [
    X25519Identity.generate,
    lambda: ScryptIdentity.from_str(PASSPHRASE),
    lambda: ScryptRecipient.from_str(PASSPHRASE),
], ids=["x25519", "scrypt-identity", "scrypt-recipient"])
def test_secret_keys_refuse_pickling(make) -> None:  # type: ignore[no-untyped-def]
    key = make()
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="identities hold secrets"):
            pickle.dumps(key, protocol=protocol)


def test_reference_pickles_without_secret_and_loads_on_the_other_side(
        tmp_path: Path, identity: X25519Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "key.txt"
    path.write_text(format_identity_file(identity))
    monkeypatch.chdir(tmp_path)
    ref = IdentityRef.of("key.txt", kms_context={"b": "2", "a": "1"})
    assert ref.file == str(path)  # absolute: a worker elsewhere opens the same file
    assert ref.kms_context == (("a", "1"), ("b", "2"))
    assert ref == IdentityRef.of(str(path), kms_context={"a": "1", "b": "2"})
    blob = pickle.dumps(ref)
    assert identity.encode().encode() not in blob
    (loaded,) = load_identities(pickle.loads(blob))
    assert loaded.recipient == identity.recipient


def test_cache_returns_the_same_identities_without_reading_again(
        tmp_path: Path, identity: X25519Identity) -> None:
    path = tmp_path / "key.txt"
    path.write_text(format_identity_file(identity))
    ref = IdentityRef(str(path))
    first = load_identities(ref)
    path.unlink()
    second = load_identities(IdentityRef(str(path)))  # an equal ref hits the cache
    assert second == first and second[0] is first[0]
    second.clear()  # callers get their own list
    assert load_identities(ref)[0] is first[0]
    clear_identity_cache()
    assert "not found" in str(failure(ref))


def test_write_secret_file_is_private_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "key.txt"
    write_secret_file(str(path), "secret\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(KeyProblem, match="already exists"):
        write_secret_file(str(path), "other\n")
    assert path.read_text() == "secret\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.txt"]  # no temporary left
