"""Keys, bech32 and armor: parsing is strict, formatting is canonical, secrets stay hidden."""

from __future__ import annotations

import base64
import io
import os

import pytest

from datamove.age import bech32
from datamove.age.armor import ArmorDecoder, ArmorEncoder
from datamove.age.errors import ArmorError, InvalidKey
from datamove.age.files import decrypt_identities, encrypt
from datamove.age.keys import (
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    fingerprint,
    format_identity_file,
    parse_identities,
    parse_recipients,
)

# From the CCTV vectors: a secret key and the recipient the age CLI derives from it.
SECRET = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"


@pytest.mark.parametrize("text", ["A12UEL5L", "a12uel5l", "?1ezyfcl",
                                  "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
                                  "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w"])
def test_bech32_bip173_valid(text: str) -> None:
    hrp, data = bech32.decode(text)
    assert hrp == text[: text.rfind("1")]
    assert bech32.encode(hrp, data) == text.lower()


@pytest.mark.parametrize("text", ["A12UEl5L", "a12uel5m", "1nwldj5", "pzry9x0s0muk",
                                  "abc1rzg", "x1b4n0q5v", "li1dgmt3", "de1lg7wt\xff",
                                  "A1G7SGD8", "10a06t8", "1qzzfhee"])
def test_bech32_bip173_invalid(text: str) -> None:
    with pytest.raises(ValueError) as info:
        bech32.decode(text)
    assert text not in str(info.value)


def test_bech32_rejects_nonzero_padding() -> None:
    good = bech32.encode("age", bytes(32))
    values = [bech32.CHARSET.index(c) for c in good[4:-6]]
    values[-1] |= 1  # 32 bytes = 256 bits leave 4 padding bits in the last group
    bad_data = bytes(values)
    checksum = bech32._create_checksum("age", list(bad_data))
    bad = "age1" + "".join(bech32.CHARSET[v] for v in [*values, *checksum])
    with pytest.raises(ValueError, match="padding"):
        bech32.decode(bad)


def test_identity_roundtrip_and_recipient() -> None:
    identity = X25519Identity.parse(SECRET)
    assert identity.encode() == SECRET
    recipient = identity.recipient
    assert X25519Recipient.parse(str(recipient)) == recipient
    assert str(recipient).startswith("age1") and str(recipient) == str(recipient).lower()
    assert SECRET not in repr(identity) and SECRET.lower() not in repr(identity).lower()


def test_key_case_and_kind_are_strict() -> None:
    identity = X25519Identity.generate()
    with pytest.raises(InvalidKey):
        X25519Identity.parse(identity.encode().lower())
    with pytest.raises(InvalidKey):
        X25519Recipient.parse(str(identity.recipient).upper())
    with pytest.raises(InvalidKey):
        X25519Recipient.parse(identity.encode())
    with pytest.raises(InvalidKey):
        X25519Identity.parse(str(identity.recipient))
    with pytest.raises(InvalidKey):
        X25519Recipient.parse(bech32.encode("age", bytes(31)))
    encoded = identity.encode()
    damaged = encoded[:-1] + ("Q" if encoded[-1] != "Q" else "P")  # a checksum that fails
    with pytest.raises(InvalidKey) as info:
        X25519Identity.parse(damaged)
    assert encoded not in str(info.value)


def test_identity_file_parsing() -> None:
    a, b = X25519Identity.generate(), X25519Identity.generate()
    text = format_identity_file(a, created="2024-01-01T00:00:00Z") + "\n\r\n# other\n" + \
        b.encode() + "\r\n"
    parsed = parse_identities(text)
    assert [p.recipient for p in parsed] == [a.recipient, b.recipient]
    broken = text + "AGE-SECRET-KEY-1NOTAKEY\n"
    with pytest.raises(InvalidKey, match="line 8") as info:
        parse_identities(broken)
    assert "NOTAKEY" not in str(info.value)
    with pytest.raises(InvalidKey, match="no AGE-SECRET-KEY"):
        parse_identities("# nothing here\n\n")
    recipients = parse_recipients(f"# ops\n{a.recipient}\n\n{b.recipient}\n")
    assert recipients == [a.recipient, b.recipient]


def test_passphrase_protected_identity_file() -> None:
    identity = X25519Identity.generate()
    sealed = io.BytesIO()
    encrypt(io.BytesIO(format_identity_file(identity).encode()), sealed,
            [ScryptRecipient.from_str("correct horse", work_factor=10)], armor=True)
    found = decrypt_identities(sealed.getvalue(), passphrase="correct horse")
    assert [i.recipient for i in found] == [identity.recipient]
    plain = decrypt_identities(format_identity_file(identity).encode())
    assert [i.recipient for i in plain] == [identity.recipient]


def test_fingerprint() -> None:
    identity = X25519Identity.parse(SECRET)
    fp = fingerprint(identity.recipient)
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 16
    assert fingerprint(identity) == fp
    assert fingerprint(ScryptRecipient.from_str("pw")) == "scrypt"
    assert "pw" not in repr(ScryptIdentity.from_str("pw"))
    assert "hunter2" not in repr(ScryptRecipient.from_str("hunter2"))


def test_scrypt_recipient_limits() -> None:
    with pytest.raises(InvalidKey):
        ScryptRecipient.from_str("pw", work_factor=23)
    with pytest.raises(InvalidKey):
        ScryptRecipient.from_str("")


@pytest.mark.parametrize("size", [0, 1, 47, 48, 49, 96, 1000, 100_000])
def test_armor_roundtrip(size: int) -> None:
    data = os.urandom(size)
    encoder = ArmorEncoder()
    text = b"".join([encoder.update(data[: size // 3]), encoder.update(data[size // 3 :]),
                     encoder.finalize()])
    lines = text.split(b"\n")
    assert lines[0] == b"-----BEGIN AGE ENCRYPTED FILE-----" and lines[-1] == b""
    assert lines[-2] == b"-----END AGE ENCRYPTED FILE-----"
    assert all(len(line) == 64 for line in lines[1:-3])
    assert b"".join(lines[1:-2]) == base64.b64encode(data)
    decoder = ArmorDecoder()
    assert decoder.update(text) == data
    decoder.finalize()


def test_armor_decoder_is_strict_even_when_split() -> None:
    data = os.urandom(200)
    encoder = ArmorEncoder()
    good = encoder.update(data) + encoder.finalize()
    bad = good.replace(b"\n", b"\n ", 2)  # whitespace at a line start
    decoder = ArmorDecoder()
    with pytest.raises(ArmorError):
        for i in range(len(bad)):
            decoder.update(bad[i : i + 1])
        decoder.finalize()
    garbage = ArmorDecoder()
    with pytest.raises(ArmorError, match="over-long"):
        garbage.update(b"x" * 10_000)
