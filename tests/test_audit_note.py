"""Signed notes and checkpoints: known answers from Go's sumdb/note and the C2SP
spec, and a verifier written here from the spec alone that must accept what
datamove signs. Also canonical event bytes (RFC 8785 subset)."""

from __future__ import annotations

import base64
import hashlib
import pickle

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from datamove.audit.events import EventError, canonical, parse_event
from datamove.audit.note import (
    Checkpoint,
    Note,
    NoteError,
    SignedCheckpoint,
    Signer,
    Verifier,
)
from datamove.errors import BadInput

# golang.org/x/mod/sumdb/note's documented example (note.go, note_test.go).
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1F" \
    "FYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
# The C2SP signed-note specification's example.
SPEC_VERIFIER = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = ("This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1"
             "YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")


def spec_verify(note: str, verifier_key: str) -> str:
    """A from-scratch verifier (C2SP signed-note + Go's key encoding): returns the text.

    Written from the specification only, sharing no code with datamove.
    """
    name, hex8, key_b64 = verifier_key.split("+", 2)
    key = base64.b64decode(key_b64)
    assert key[0] == 1, "only Ed25519 (type 0x01)"
    key_id = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]
    assert key_id.hex() == hex8
    split = note.rindex("\n\n")
    text, signatures = note[:split + 1], note[split + 2:]
    for line in signatures.splitlines():
        prefix = "\u2014 " + name + " "
        if line.startswith(prefix):
            blob = base64.b64decode(line[len(prefix):])
            if blob[:4] == key_id:
                Ed25519PublicKey.from_public_bytes(key[1:]).verify(blob[4:], text.encode())
                return text
    raise AssertionError(f"no signature by {name}")


def test_signing_reproduces_the_go_note_byte_for_byte() -> None:
    signer = Signer.parse(GO_SIGNER)
    assert str(signer.verifier) == GO_VERIFIER
    assert signer.sign(GO_TEXT) == GO_NOTE  # Ed25519 is deterministic
    assert signer.encode() == GO_SIGNER
    assert Note.parse(GO_NOTE).verified_by(Verifier.parse(GO_VERIFIER)) is True


def test_the_c2sp_spec_example_verifies() -> None:
    verifier = Verifier.parse(SPEC_VERIFIER)
    assert verifier.name == "example.com/foo" and verifier.hash.hex() == "530d903a"
    assert Note.parse(SPEC_NOTE).verified_by(verifier) is True
    assert spec_verify(SPEC_NOTE, SPEC_VERIFIER) == "This is an example message.\n"
    assert Note.parse(SPEC_NOTE).verified_by(Verifier.parse(GO_VERIFIER)) is None


def test_a_checkpoint_we_sign_verifies_with_the_spec_verifier() -> None:
    signer = Signer.generate("audit-test")
    body = Checkpoint("datamove.audit/demo/0123456789abcdef", 42, bytes(range(32)), "ab" * 32)
    note = signer.sign(body.text())
    text = spec_verify(note, str(signer.verifier))
    lines = text.split("\n")
    assert lines[:3] == ["datamove.audit/demo/0123456789abcdef", "42",
                         base64.b64encode(bytes(range(32))).decode()]
    assert lines[3] == "head " + "ab" * 32 and lines[4] == ""
    parsed = SignedCheckpoint.parse(note)
    assert parsed.body == body and parsed.note.verified_by(signer.verifier) is True


def test_altered_notes_do_not_verify() -> None:
    signer = Signer.generate("audit-test")
    note = signer.sign(Checkpoint("o", 3, bytes(32), "cd" * 32).text())
    other = Signer.generate("audit-test")  # same name, another key: other key hash
    assert Note.parse(note).verified_by(other.verifier) is None
    changed_text = note.replace("\n3\n", "\n4\n")
    assert Note.parse(changed_text).verified_by(signer.verifier) is False
    with pytest.raises(InvalidSignature):
        spec_verify(changed_text, str(signer.verifier))
    line = note.rstrip("\n").rsplit(" ", 1)
    blob = bytearray(base64.b64decode(line[1]))
    blob[10] ^= 1
    flipped = f"{line[0]} {base64.b64encode(bytes(blob)).decode()}\n"
    assert Note.parse(flipped).verified_by(signer.verifier) is False


@pytest.mark.parametrize("bad", [
    "datamove.audit/x\n3\nAAAA\nhead " + "0" * 64 + "\n",     # root not 32 bytes
    "datamove.audit/x\n03\n" + base64.b64encode(bytes(32)).decode() + "\nhead " + "0" * 64 + "\n",
    "datamove.audit/x\n3\n" + base64.b64encode(bytes(32)).decode() + "\nhead xyz\n",
    "datamove audit\n3\n" + base64.b64encode(bytes(32)).decode() + "\nhead " + "0" * 64 + "\n",
    "datamove.audit/x\n3\n" + base64.b64encode(bytes(32)).decode() + "\n",
])
def test_malformed_checkpoint_bodies_are_refused(bad: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(bad)


def test_key_errors_never_echo_the_secret(tmp_path) -> None:
    signer = Signer.generate("k")
    secret_b64 = signer.encode().split("+", 4)[4]  # the base64 itself may contain '+'

    seed = bytearray(base64.b64decode(secret_b64))
    seed[-1] ^= 1  # another seed: the key hash in the file no longer fits
    damaged_b64 = base64.b64encode(bytes(seed)).decode()
    path = tmp_path / "audit.key"
    path.write_text("+".join(signer.encode().split("+", 4)[:4]) + "+" + damaged_b64 + "\n")
    with pytest.raises(BadInput) as info:
        Signer.load(str(path))
    assert str(path) in str(info.value) and "key hash" in str(info.value)
    assert secret_b64[:20] not in str(info.value) and damaged_b64[:20] not in str(info.value)
    with pytest.raises(BadInput, match="file not found; make one with"):
        Signer.load(str(tmp_path / "missing.key"))
    assert secret_b64 not in repr(signer) and "PRIVATE" not in repr(signer)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(signer)


def test_key_names_follow_the_note_rules() -> None:
    for bad in ("", "has space", "a+b"):
        with pytest.raises(NoteError):
            Signer.generate(bad)
    with pytest.raises(NoteError):
        Verifier.parse(GO_VERIFIER.replace("c74f20a3", "c74f20a4"))


# --- canonical event bytes ----------------------------------------------------------

def test_canonical_bytes_are_rfc8785_for_the_allowed_values() -> None:
    event = {"b": [1, True, None, "é\u2028"], "a": {"z": "\x01\n\"\\", "y": -(2 ** 53 - 1)}}
    assert canonical(event) == (
        '{"a":{"y":-9007199254740991,"z":"\\u0001\\n\\"\\\\"},"b":[1,true,null,"é\u2028"]}'
    ).encode()


@pytest.mark.parametrize("value", [1.5, 2 ** 53, float("nan"), b"bytes", {1: "x"}, "\ud800"])
def test_values_without_one_canonical_form_are_refused(value: object) -> None:
    with pytest.raises(EventError):
        canonical({"details": {"v": value}})


def test_stored_event_text_must_be_exactly_canonical() -> None:
    fields = {"action": "x", "actor": "u@h", "dataset": None, "details": {}, "key": None,
              "prev": "0" * 64, "run_id": "r", "seq": 0, "time": "2025-01-01T00:00:00.000000Z"}
    text = canonical(fields).decode()
    assert parse_event(text) == fields
    for bad, why in [(text.replace(",", ", ", 1), "canonical"),
                     (text.replace('"seq":0', '"seq":0.0'), "not an integer"),
                     (text[:-1] + ',"seq":1}', "twice"),
                     (text.replace('"key":null,', ""), "wrong fields"),
                     (text.replace("00.000000Z", "00Z"), "time"),
                     (text[:-1], "JSON")]:
        with pytest.raises(EventError, match=why):
            parse_event(bad)
