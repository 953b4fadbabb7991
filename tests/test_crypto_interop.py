"""Interop with the stock age CLI (Debian package ``age``), in both directions.

X25519 (several recipients, binary and armored) and passphrase (scrypt) files, at the
sizes around the 64 KiB chunk boundary plus a multi-chunk object. The CLI reads
passphrases only from a terminal (no environment variable in age 1.1), so the
passphrase cases drive it through a pseudo-terminal. In CI a missing ``age`` is a
failure, elsewhere a skip.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from datamove.age.files import decrypt, encrypt
from datamove.age.keys import (
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    format_identity_file,
    load_identities,
)
from tests.conftest import require_tool, run_with_passphrase

SIZES = [0, 1, 65_535, 65_536, 65_537, 131_072, 5 * 2**20 + 1]
PASSPHRASE = "interop: correct horse battery staple"


def tool(name: str) -> str:
    return require_tool(name)  # Debian package 'age'


def plaintext(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def read_output(path: Path, size: int) -> bytes:
    """The CLI creates ``-o`` lazily, on its first write: no file means no plaintext."""
    if not path.exists():
        assert size == 0, f"age wrote no output for {size} bytes"
        return b""
    return path.read_bytes()


@pytest.fixture(scope="module")
def cli_identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, X25519Identity]:
    """A key made by age-keygen; parsing its file also tests our identity-file reader."""
    path = tmp_path_factory.mktemp("cli-key") / "key.txt"
    subprocess.run([tool("age-keygen"), "-o", str(path)], check=True, capture_output=True)
    (identity,) = load_identities(path)
    public = subprocess.run([tool("age-keygen"), "-y", str(path)], check=True,
                            capture_output=True, text=True).stdout.strip()
    assert str(identity.recipient) == public
    return path, identity


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, X25519Identity]:
    identity = X25519Identity.generate()
    path = tmp_path_factory.mktemp("our-key") / "key.txt"
    path.write_text(format_identity_file(identity, created="2025-01-01T00:00:00Z"))
    return path, identity


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armor"])
@pytest.mark.parametrize("size", SIZES)
def test_cli_encrypts_x25519_we_decrypt(size: int, armor: bool, tmp_path: Path,
                                        cli_identity: tuple, ours: tuple) -> None:
    data = plaintext(size)
    (tmp_path / "plain").write_bytes(data)
    args = [tool("age"), "-r", str(ours[1].recipient), "-r", str(cli_identity[1].recipient),
            "-r", str(X25519Identity.generate().recipient), "-o", str(tmp_path / "c.age")]
    subprocess.run([*args, *(["-a"] if armor else []), str(tmp_path / "plain")], check=True)
    blob = (tmp_path / "c.age").read_bytes()
    assert blob.startswith(b"-----BEGIN" if armor else b"age-encryption.org/v1\n")
    for identity in (ours[1], cli_identity[1]):
        out = io.BytesIO()
        decrypt(io.BytesIO(blob), out, [identity])
        assert out.getvalue() == data


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armor"])
@pytest.mark.parametrize("size", SIZES)
def test_we_encrypt_x25519_cli_decrypts(size: int, armor: bool, tmp_path: Path,
                                        cli_identity: tuple, ours: tuple) -> None:
    data = plaintext(size)
    with (tmp_path / "c.age").open("wb") as dst:
        encrypt(io.BytesIO(data), dst, [ours[1].recipient, cli_identity[1].recipient,
                                        X25519Identity.generate().recipient], armor=armor)
    for key_file in (ours[0], cli_identity[0]):
        out = tmp_path / "out"
        out.unlink(missing_ok=True)
        subprocess.run([tool("age"), "-d", "-i", str(key_file), "-o", str(out),
                        str(tmp_path / "c.age")], check=True)
        assert read_output(out, size) == data


@pytest.fixture(scope="module")
def cli_passphrase_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The CLI encrypts every size with a passphrase (work factor 18, ~1 s each), in parallel."""
    tool("age")
    root = tmp_path_factory.mktemp("cli-scrypt")

    def make(size: int) -> tuple[int, Path]:
        (root / f"{size}.txt").write_bytes(plaintext(size))
        run_with_passphrase(["-p", "-o", str(root / f"{size}.age"), str(root / f"{size}.txt")],
                            PASSPHRASE)
        return size, root / f"{size}.age"

    with ThreadPoolExecutor(max_workers=min(4, max(2, os.cpu_count() or 2))) as pool:
        return dict(pool.map(make, SIZES))


@pytest.mark.parametrize("size", SIZES)
def test_cli_encrypts_passphrase_we_decrypt(size: int, cli_passphrase_files: dict) -> None:
    blob = cli_passphrase_files[size].read_bytes()
    assert b"\n-> scrypt " in blob[:200]
    out = io.BytesIO()
    decrypt(io.BytesIO(blob), out, [ScryptIdentity.from_str(PASSPHRASE)])
    assert out.getvalue() == plaintext(size)


@pytest.mark.parametrize("size", SIZES)
def test_we_encrypt_passphrase_cli_decrypts(size: int, tmp_path: Path) -> None:
    # Our default work factor (18, the CLI's own) once; a cheap one elsewhere to keep the
    # suite fast; the CLI accepts any work factor up to 22 either way.
    work_factor = 18 if size == 65_537 else 10
    data = plaintext(size)
    with (tmp_path / "c.age").open("wb") as dst:
        encrypt(io.BytesIO(data), dst, [ScryptRecipient.from_str(PASSPHRASE, work_factor)],
                armor=size == 1)
    transcript = run_with_passphrase(["-d", "-o", str(tmp_path / "out"), str(tmp_path / "c.age")],
                                     PASSPHRASE)
    assert PASSPHRASE not in transcript
    assert read_output(tmp_path / "out", size) == data
