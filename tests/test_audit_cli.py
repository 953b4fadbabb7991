"""The auditors' commands on a real run: keygen, checkpoint, verify, show, prove.

The proof is checked here from scratch, the way docs/FORMAT.md tells an auditor
to: the leaf hash from the event, the RFC 6962 audit path up to the root, the
root against the checkpoint note, and the note's Ed25519 signature against the
verifier key, using only hashlib and cryptography.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.conftest import cli, last_json, write_manifest


def root_from_path(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: recompute the root from an inclusion proof."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if fn % 2 == 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return r


def test_auditor_commands_end_to_end(tmp_path):
    keygen = cli("audit", "keygen", "--name", "ops.example", "-o",
                 str(tmp_path / "signer.key"), "--pubkey-out", str(tmp_path / "verifier"))
    assert keygen.returncode == 0, keygen.stderr
    verifier = (tmp_path / "verifier").read_text().strip()
    assert keygen.stdout.strip() == verifier and verifier.startswith("ops.example+")
    secret = (tmp_path / "signer.key").read_text().strip()
    again = cli("audit", "keygen", "-o", str(tmp_path / "signer.key"))
    assert again.returncode == 2 and (tmp_path / "signer.key").read_text().strip() == secret

    (tmp_path / "src").mkdir()
    for i in range(5):
        (tmp_path / "src" / f"f{i}.bin").write_bytes(b"x" * (i + 1))
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}],
        audit={"signing_key": "signer.key", "checkpoint_every": 4})
    run = cli("run", str(manifest), "--json")
    assert run.returncode == 0, run.stderr
    held = cli("audit", "checkpoint", str(manifest), "-o", str(tmp_path / "held.note"))
    assert held.returncode == 0, held.stderr

    ok = cli("audit", "verify", str(manifest), "--pubkey", str(tmp_path / "verifier"),
             "--checkpoint", str(tmp_path / "held.note"), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert last_json(ok.stdout)["exit_code"] == 0

    shown = cli("audit", "show", str(manifest), "--action", "object.copied", "--csv")
    assert shown.returncode == 0, shown.stderr
    rows = list(csv.DictReader(io.StringIO(shown.stdout)))
    assert sorted(r["key"] for r in rows) == [f"f{i}.bin" for i in range(5)]

    proof = cli("audit", "prove", str(manifest), "f3.bin", "--json")
    assert proof.returncode == 0, proof.stdout + proof.stderr
    p = last_json(proof.stdout)
    event = json.loads(p["event"])
    assert event["key"] == "f3.bin" and event["action"] == "object.copied"
    assert event["details"]["sha256"] == hashlib.sha256(b"xxxx").hexdigest()
    leaf = hashlib.sha256(b"\x00" + p["event"].encode()).digest()
    root = root_from_path(p["leaf_index"], p["tree_size"], leaf,
                          [bytes.fromhex(h) for h in p["audit_path"]])
    note = p["checkpoint"]
    body, signature_line = note.split("\n\n", 1)
    origin, size, root_b64 = body.split("\n")[:3]
    assert origin == p["origin"]
    assert int(size) == p["tree_size"] and base64.b64decode(root_b64) == root
    name, key_hash_hex, key_b64 = verifier.split("+", 2)  # base64 may hold "+"
    public = base64.b64decode(key_b64)
    assert public[0] == 1
    [line] = [x for x in signature_line.splitlines() if x.startswith(f"— {name} ")]
    signature = base64.b64decode(line.split(" ")[2])
    assert signature[:4] == bytes.fromhex(key_hash_hex)
    Ed25519PublicKey.from_public_bytes(public[1:]).verify(signature[4:],
                                                          (body + "\n").encode())

    for text in (run.stdout + run.stderr, ok.stdout, shown.stdout, proof.stdout,
                 held.stdout):
        assert secret not in text and secret.split("+", 4)[4] not in text
