"""`datamove keys`, `encrypt` and `decrypt` as a user runs them (subprocesses).

Round trips at the chunk edges and past one S3 part, interop with the age CLI in
both directions (X25519 and passphrase), local paths, moto S3 URLs and stdin/stdout,
and every refusal: no identity matching, a damaged, truncated or shortened file
(nothing published, no temporary left), a passphrase that is not set. The
passphrase is DATAMOVE_PASSPHRASE; scrypt costs about a second per derivation, so
only a few tests use it.
"""

from __future__ import annotations

import random
import stat
import subprocess
from pathlib import Path

import pytest

from datamove.age import X25519Identity, format_identity_file
from tests.conftest import MotoServer, cli, require_tool, run_with_passphrase

PASSPHRASE = "cli keys: correct horse battery staple"
CHUNK = 65_536
SIZES = [0, 1, CHUNK, 5 * 2**20 + 1]


def data(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An identity file made by `keys generate -o`, and its recipient."""
    path = tmp_path_factory.mktemp("key") / "key.txt"
    recipient = ok(cli("keys", "generate", "-o", str(path))).stdout.strip()
    return path, recipient


def payload_start(blob: bytes) -> int:
    """Offset of the first STREAM chunk (after the header's MAC line and the nonce)."""
    mac_line = blob.index(b"\n--- ") + 1
    return blob.index(b"\n", mac_line) + 1 + 16


def test_generate_writes_a_private_key_file_age_reads(key: tuple[Path, str]) -> None:
    path, recipient = key
    assert recipient.startswith("age1") and len(recipient.split()) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "AGE-SECRET-KEY-1" in path.read_text()
    derived = subprocess.run([require_tool("age-keygen"), "-y", str(path)], check=True,
                             capture_output=True, text=True).stdout.strip()
    assert derived == recipient
    assert ok(cli("keys", "recipient", "-i", str(path))).stdout.strip() == recipient


def test_generate_without_output_follows_age_keygen(tmp_path: Path) -> None:
    result = ok(cli("keys", "generate"))
    assert "AGE-SECRET-KEY-1" not in result.stderr
    recipient = result.stderr.strip().removeprefix("Public key: ")
    assert recipient.startswith("age1")
    (tmp_path / "k.txt").write_text(result.stdout)
    assert f"# public key: {recipient}" in result.stdout
    assert ok(cli("keys", "recipient", "-i", str(tmp_path / "k.txt"))).stdout.strip() \
        == recipient


def test_generate_refuses_to_overwrite(key: tuple[Path, str]) -> None:
    path, _ = key
    before = path.read_bytes()
    result = cli("keys", "generate", "-o", str(path))
    assert result.returncode == 2
    assert f"{path} already exists" in result.stderr
    assert path.read_bytes() == before


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_and_age_interop(size: int, tmp_path: Path, key: tuple[Path, str]) -> None:
    path, recipient = key
    plain = tmp_path / "plain"
    plain.write_bytes(data(size))
    ok(cli("encrypt", "-r", recipient, str(plain), str(tmp_path / "ours.age")))
    ok(cli("decrypt", "-i", str(path), str(tmp_path / "ours.age"), str(tmp_path / "back")))
    assert (tmp_path / "back").read_bytes() == data(size)
    age = require_tool("age")
    subprocess.run([age, "-d", "-i", str(path), "-o", str(tmp_path / "by-age"),
                    str(tmp_path / "ours.age")], check=True)
    if size:  # age creates -o on its first write: no file for an empty plaintext
        assert (tmp_path / "by-age").read_bytes() == data(size)
    subprocess.run([age, "-e", "-r", recipient, "-o", str(tmp_path / "theirs.age"), str(plain)],
                   check=True)
    ok(cli("decrypt", "-i", str(path), str(tmp_path / "theirs.age"), str(tmp_path / "t")))
    assert (tmp_path / "t").read_bytes() == data(size)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["plain", "ours.age", "back", "theirs.age", "t"] + (["by-age"] if size else []))


def test_every_recipient_can_decrypt(tmp_path: Path) -> None:
    keys = [X25519Identity.generate() for _ in range(4)]
    for number, identity in enumerate(keys):
        (tmp_path / f"k{number}").write_text(format_identity_file(identity))
    (tmp_path / "recipients").write_text(f"# team\n{keys[2].recipient}\n\n{keys[3].recipient}\n")
    (tmp_path / "plain").write_bytes(data(CHUNK + 1))
    ok(cli("encrypt", "-a", "-r", str(keys[0].recipient), "-r", str(keys[1].recipient),
           "-R", str(tmp_path / "recipients"), str(tmp_path / "plain"),
           str(tmp_path / "c.age")))
    assert (tmp_path / "c.age").read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    for number in range(4):
        ok(cli("decrypt", "-i", str(tmp_path / f"k{number}"), str(tmp_path / "c.age"),
               str(tmp_path / f"out{number}")))
        assert (tmp_path / f"out{number}").read_bytes() == data(CHUNK + 1)


def test_stdin_and_stdout(tmp_path: Path, key: tuple[Path, str]) -> None:
    path, recipient = key
    cipher = ok(cli("encrypt", "-r", recipient, "-", "-", stdin=data(70_000),
                    binary=True)).stdout
    assert cipher.startswith(b"age-encryption.org/v1\n")
    plain = ok(cli("decrypt", "-i", str(path), "-", "-", stdin=cipher, binary=True)).stdout
    assert plain == data(70_000)


def test_s3_urls(tmp_path: Path, key: tuple[Path, str], moto_server: MotoServer) -> None:
    """Local → S3 → S3, the second one larger than one 16 MiB part (multipart upload)."""
    path, recipient = key
    bucket = moto_server.new_bucket()
    env = {"AWS_ENDPOINT_URL": moto_server.endpoint}
    size = 16 * 2**20 + 3
    (tmp_path / "plain").write_bytes(data(size))
    ok(cli("encrypt", "-r", recipient, str(tmp_path / "plain"),
           f"s3://{bucket}/enc/plain.age", env=env))
    ok(cli("decrypt", "-i", str(path), f"s3://{bucket}/enc/plain.age",
           f"s3://{bucket}/dec/plain", env=env))
    s3 = moto_server.client()
    assert s3.get_object(Bucket=bucket, Key="dec/plain")["Body"].read() == data(size)
    ok(cli("decrypt", "-i", str(path), f"s3://{bucket}/enc/plain.age",
           str(tmp_path / "back"), env=env))
    assert (tmp_path / "back").read_bytes() == data(size)

    # A chunk damaged after the first part: the upload is aborted, nothing is published.
    blob = bytearray(s3.get_object(Bucket=bucket, Key="enc/plain.age")["Body"].read())
    blob[-100] ^= 1
    s3.put_object(Bucket=bucket, Key="enc/bad.age", Body=bytes(blob))
    result = cli("decrypt", "-i", str(path), f"s3://{bucket}/enc/bad.age",
                 f"s3://{bucket}/dec/bad", env=env)
    assert result.returncode == 1, result.stderr
    assert f"s3://{bucket}/enc/bad.age: payload error" in result.stderr
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="dec/bad")
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_wrong_identity_exit_2(tmp_path: Path, key: tuple[Path, str]) -> None:
    _, recipient = key
    (tmp_path / "plain").write_bytes(b"secret data")
    ok(cli("encrypt", "-r", recipient, str(tmp_path / "plain"), str(tmp_path / "c.age")))
    other = X25519Identity.generate()
    (tmp_path / "other.txt").write_text(format_identity_file(other))
    out = tmp_path / "out"
    out.mkdir()
    result = cli("decrypt", "-i", str(tmp_path / "other.txt"), str(tmp_path / "c.age"),
                 str(out / "plain"))
    assert result.returncode == 2
    assert f"{tmp_path / 'c.age'}: no identity matches" in result.stderr
    assert "tried 1 identity from" in result.stderr
    assert other.encode() not in result.stderr
    assert list(out.iterdir()) == []


def damage(blob: bytes, how: str) -> bytes:
    """Three chunks of plaintext (two full, one short): damage one way."""
    start = payload_start(blob)
    second = start + CHUNK + 16
    if how == "flipped":
        return blob[: second + 10] + bytes([blob[second + 10] ^ 0x40]) + blob[second + 11:]
    if how == "truncated":
        return blob[: second + 1000]
    assert how == "last-chunk-dropped"
    assert len(blob) == second + (CHUNK + 16) + (500 + 16)  # then a short third chunk
    return blob[: second + CHUNK + 16]


@pytest.mark.parametrize("how", ["flipped", "truncated", "last-chunk-dropped"])
def test_damaged_input_exit_1_and_nothing_left(how: str, tmp_path: Path,
                                               key: tuple[Path, str]) -> None:
    path, recipient = key
    (tmp_path / "plain").write_bytes(data(2 * CHUNK + 500))
    ok(cli("encrypt", "-r", recipient, str(tmp_path / "plain"), str(tmp_path / "c.age")))
    bad = tmp_path / "bad.age"
    bad.write_bytes(damage((tmp_path / "c.age").read_bytes(), how))
    out = tmp_path / "out"
    out.mkdir()
    result = cli("decrypt", "-i", str(path), str(bad), str(out / "plain"))
    assert result.returncode == 1, result.stderr
    assert f"{bad}: payload error" in result.stderr
    assert f"nothing was written to {out / 'plain'}" in result.stderr
    assert list(out.iterdir()) == []
    # stdout cannot be retracted: only authenticated chunks, and a non-zero exit.
    piped = cli("decrypt", "-i", str(path), str(bad), "-", binary=True)
    assert piped.returncode == 1
    released = 2 * CHUNK if how == "last-chunk-dropped" else CHUNK
    assert piped.stdout == data(2 * CHUNK + 500)[:released]


def test_passphrase_round_trip_and_age_interop(tmp_path: Path, key: tuple[Path, str]) -> None:
    env = {"DATAMOVE_PASSPHRASE": PASSPHRASE}
    (tmp_path / "plain").write_bytes(data(CHUNK + 7))
    ok(cli("encrypt", "-p", str(tmp_path / "plain"), str(tmp_path / "c.age"), env=env))
    assert b"\n-> scrypt " in (tmp_path / "c.age").read_bytes()[:100]
    keyed = cli("decrypt", "-i", str(key[0]), str(tmp_path / "c.age"), str(tmp_path / "x"))
    assert keyed.returncode == 2
    assert "the file is encrypted with a passphrase: use -p" in keyed.stderr
    transcript = run_with_passphrase(
        ["-d", "-o", str(tmp_path / "by-age"), str(tmp_path / "c.age")], PASSPHRASE)
    assert PASSPHRASE not in transcript
    assert (tmp_path / "by-age").read_bytes() == data(CHUNK + 7)
    run_with_passphrase(["-p", "-o", str(tmp_path / "theirs.age"), str(tmp_path / "plain")],
                        PASSPHRASE)
    ok(cli("decrypt", "-p", str(tmp_path / "theirs.age"), str(tmp_path / "back"), env=env))
    assert (tmp_path / "back").read_bytes() == data(CHUNK + 7)


def test_passphrase_refusals(tmp_path: Path, key: tuple[Path, str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAMOVE_PASSPHRASE", raising=False)
    (tmp_path / "plain").write_bytes(b"x")
    unset = cli("encrypt", "-p", str(tmp_path / "plain"), str(tmp_path / "c.age"))
    assert unset.returncode == 2 and "DATAMOVE_PASSPHRASE" in unset.stderr
    mixed = cli("encrypt", "-p", "-r", key[1], str(tmp_path / "plain"),
                str(tmp_path / "c.age"), env={"DATAMOVE_PASSPHRASE": PASSPHRASE})
    assert mixed.returncode == 2 and "only recipient" in mixed.stderr
    assert PASSPHRASE not in mixed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_passphrase_protected_identity_files(tmp_path: Path) -> None:
    """Ours (`keys generate -p`) opens with `age -d`; one `age -p` made opens with ours."""
    env = {"DATAMOVE_PASSPHRASE": PASSPHRASE}
    recipient = ok(cli("keys", "generate", "-p", "-o", str(tmp_path / "ours.age"),
                       env=env)).stdout.strip()
    assert (tmp_path / "ours.age").read_text().startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    run_with_passphrase(["-d", "-o", str(tmp_path / "ours.txt"), str(tmp_path / "ours.age")],
                        PASSPHRASE)
    derived = subprocess.run([require_tool("age-keygen"), "-y", str(tmp_path / "ours.txt")],
                             check=True, capture_output=True, text=True).stdout.strip()
    assert derived == recipient

    subprocess.run([require_tool("age-keygen"), "-o", str(tmp_path / "theirs.txt")], check=True,
                   capture_output=True)
    run_with_passphrase(["-p", "-o", str(tmp_path / "theirs.age"), str(tmp_path / "theirs.txt")],
                        PASSPHRASE)
    expected = subprocess.run([require_tool("age-keygen"), "-y", str(tmp_path / "theirs.txt")],
                              check=True, capture_output=True, text=True).stdout.strip()
    (tmp_path / "plain").write_bytes(b"for their key")
    ok(cli("encrypt", "-r", expected, str(tmp_path / "plain"), str(tmp_path / "c.age")))
    ok(cli("decrypt", "-i", str(tmp_path / "theirs.age"), str(tmp_path / "c.age"),
           str(tmp_path / "back"), env=env))
    assert (tmp_path / "back").read_bytes() == b"for their key"


def test_kms_wrapped_identity(tmp_path: Path, moto_server: MotoServer) -> None:
    import boto3

    kms = boto3.client("kms", endpoint_url=moto_server.endpoint, region_name="us-east-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms_args = ["--kms-context", "team=data", "--kms-context", "env=test",
                "--kms-endpoint-url", moto_server.endpoint]
    recipient = ok(cli("keys", "generate", "--kms-key", key_id, *kms_args,
                       "-o", str(tmp_path / "key.kms"))).stdout.strip()
    text = (tmp_path / "key.kms").read_text()
    assert "datamove-kms-identity-v1" in text and "AGE-SECRET-KEY" not in text
    assert f"# recipient: {recipient}" in text
    assert ok(cli("keys", "recipient", "-i", str(tmp_path / "key.kms"),
                  *kms_args)).stdout.strip() == recipient
    (tmp_path / "plain").write_bytes(data(1000))
    ok(cli("encrypt", "-r", recipient, str(tmp_path / "plain"), str(tmp_path / "c.age")))
    ok(cli("decrypt", "-i", str(tmp_path / "key.kms"), *kms_args, str(tmp_path / "c.age"),
           str(tmp_path / "back")))
    assert (tmp_path / "back").read_bytes() == data(1000)

    wrong = cli("decrypt", "-i", str(tmp_path / "key.kms"), "--kms-context", "team=data",
                "--kms-endpoint-url", moto_server.endpoint, str(tmp_path / "c.age"),
                str(tmp_path / "never"))
    assert wrong.returncode == 2
    assert f"KMS refused to unwrap identity file {tmp_path / 'key.kms'}" in wrong.stderr
    assert "encryption context {'team': 'data'} does not match" in wrong.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("args, phrase", [
    (["keys", "generate", "-p", "--kms-key", "alias/x"], "exclusive"),
    (["keys", "generate", "--kms-context", "a=b"], "--kms-context needs --kms-key"),
    (["keys", "generate", "--kms-key", "k", "--kms-context", "novalue"], "KEY=VALUE"),
    (["encrypt", "in", "out"], "no recipients"),
    (["encrypt", "-r", "age1notakey", "in", "out"], "-r recipient #1"),
    (["decrypt", "in", "out"], "no identities"),
    (["encrypt", "-r", str(X25519Identity.generate().recipient), "in", "out"],
     "in: not found; check the path"),
], ids=["p-and-kms", "context-without-key", "context-syntax", "no-recipient", "bad-recipient",
        "no-identity", "missing-input"])
def test_bad_arguments_exit_2(args: list[str], phrase: str, tmp_path: Path) -> None:
    result = cli(*args, env={"DATAMOVE_PASSPHRASE": PASSPHRASE}, cwd=tmp_path)
    assert result.returncode == 2
    assert phrase in result.stderr
    assert list(tmp_path.iterdir()) == []
