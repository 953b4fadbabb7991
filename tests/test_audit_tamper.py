"""Tamper trials against a real audit log: every one detected, the first bad event named.

A log of 61 events is written by two runs with a signing key (checkpoints every
10 events, one at the end, which the auditor keeps outside the ledger). Each
trial rewrites the Delta table the way an attacker with storage access could
(``delta.appendOnly`` only stops honest mistakes), then verifies with the
verifier key and the held checkpoint. 60 seeded trials at random positions:
a field modified (the row's hash recomputed to match), an event deleted, a
forged event inserted (later events renumbered), two events swapped, the tail
truncated, and a stored checkpoint's signature altered.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from datamove.audit import AuditLog, SignedCheckpoint, Signer, verify_log
from datamove.ledger.tables import Ledger

KINDS = ["modify", "delete", "insert", "swap", "truncate", "signature"]
TRIALS = 60


def canonical(event: dict) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def with_event(row: dict, event: dict) -> dict:
    text = canonical(event)
    return {**row, "event": text, "event_hash": hashlib.sha256(text.encode()).hexdigest(),
            "seq": event["seq"], "key": event["key"], "dataset": event["dataset"],
            "action": event["action"]}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-tamper")
    key_file = root / "signer.key"
    signer = Signer.generate("auditor.example")
    key_file.write_text(signer.encode())
    held = None
    for run in range(2):
        log = AuditLog(str(root / "ledger"), {}, origin_name="tamper-test",
                       signing_key=str(key_file), checkpoint_every=10)
        writer = log.writer(f"run-{run}")
        for i in range(30):
            writer.append("object.copied", dataset="d", key=f"k{run}-{i:02d}", size=i,
                          sha256=hashlib.sha256(b"%d-%d" % (run, i)).hexdigest())
        held = writer.checkpoint()
    ledger = Ledger(str(root / "ledger"))
    audit = DeltaTable(ledger.uri("audit")).to_pyarrow_table()
    checkpoints = DeltaTable(ledger.uri("audit_checkpoints")).to_pyarrow_table()
    assert audit.num_rows == 61  # the log's init event + 60
    assert held is not None
    return {"root": root, "ledger": ledger, "verifier": signer.verifier,
            "held": SignedCheckpoint.parse(held), "audit": audit,
            "checkpoints": checkpoints}


def rewrite(ledger: Ledger, name: str, rows: list[dict], schema: pa.Schema) -> None:
    """What an attacker with write access to the storage can do."""
    shutil.rmtree(ledger.uri(name))
    write_deltalake(ledger.uri(name), pa.Table.from_pylist(rows, schema=schema),
                    configuration={"delta.appendOnly": "true"})


def test_the_untouched_log_verifies(original):
    result = verify_log(original["ledger"], [original["verifier"]], original["held"])
    assert result.ok, [str(p) for p in result.problems]
    assert result.size == 61 and result.signatures_verified >= 2


def test_tamper_trials_are_all_detected_with_the_first_bad_event(original):
    rng = random.Random(20261128)
    ledger, schema = original["ledger"], original["audit"].schema
    rows = sorted(original["audit"].to_pylist(), key=lambda r: r["seq"])
    detected = 0
    try:
        for trial in range(TRIALS):
            kind = KINDS[trial % len(KINDS)]
            s = rng.randrange(1, len(rows) - 1)
            tampered = copy.deepcopy(rows)
            if kind == "modify":
                event = json.loads(tampered[s]["event"])
                event["details"]["size"] = event["details"].get("size", 0) + 1
                tampered[s] = with_event(tampered[s], event)
            elif kind == "delete":
                del tampered[s]
            elif kind == "insert":
                forged = json.loads(tampered[s]["event"])
                forged["key"] = "forged-object"
                tampered = tampered[:s] + [with_event(tampered[s], forged)] + [
                    with_event(r, {**json.loads(r["event"]), "seq": r["seq"] + 1})
                    for r in tampered[s:]]
            elif kind == "swap":
                first, second = json.loads(tampered[s]["event"]), json.loads(
                    tampered[s + 1]["event"])
                first["seq"], second["seq"] = second["seq"], first["seq"]
                tampered[s], tampered[s + 1] = with_event(tampered[s + 1], second), \
                    with_event(tampered[s], first)
            elif kind == "truncate":
                tampered = tampered[:s]
            if kind == "signature":
                notes = original["checkpoints"].to_pylist()
                victim = rng.randrange(len(notes))
                text = notes[victim]["note"]
                at = text.rindex(" ") + 5  # inside the signature's base64
                flipped = "A" if text[at] != "A" else "B"
                notes[victim]["note"] = text[:at] + flipped + text[at + 1:]
                rewrite(ledger, "audit_checkpoints", notes, original["checkpoints"].schema)
            else:
                rewrite(ledger, "audit", tampered, schema)
            result = verify_log(ledger, [original["verifier"]], original["held"])
            assert not result.ok, (trial, kind, s)
            if kind == "signature":  # no event is bad: the checkpoint is named
                assert any("signature" in (p.check + p.message).lower()
                           for p in result.problems), (trial, [str(p) for p in result.problems])
            else:
                first = result.first_bad
                assert first is not None and first.seq == s, (trial, kind, s, str(first))
            assert result.exit_code == 1
            detected += 1
            rewrite(ledger, "audit", rows, schema)
            rewrite(ledger, "audit_checkpoints", original["checkpoints"].to_pylist(),
                    original["checkpoints"].schema)
    finally:
        rewrite(ledger, "audit", rows, schema)
    assert detected == TRIALS
    assert verify_log(ledger, [original["verifier"]], original["held"]).ok
