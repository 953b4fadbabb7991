"""The audit writer on real Delta tables: rows, chain across writers and runs,
idempotent retried commits, a second writer refused, the head rebuilt when the
commit metadata is missing, checkpoints, an S3 ledger, and no key material in
any table file or log line."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import socket
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from datamove.audit import (
    AuditConflict,
    AuditLog,
    EventError,
    SignedCheckpoint,
    Signer,
    merkle,
    verify_log,
)
from datamove.audit.events import AUDIT_SCHEMA, make_event, row_of
from datamove.audit.query import prove
from datamove.audit.tables import AUDIT, CHECKPOINTS, read_table
from datamove.errors import BadInput
from datamove.ledger.tables import Ledger, now


def new_key(tmp_path: Path, name: str = "audit-test") -> tuple[str, Signer]:
    signer = Signer.generate(name)
    path = tmp_path / f"{name}.key"
    path.write_text(signer.encode() + "\n")
    return str(path), signer


def events_of(ledger: Ledger) -> list[dict]:
    texts = read_table(ledger, AUDIT, columns=["event"])["event"].to_pylist()
    return [json.loads(t) for t in texts]


def independent_root(ledger: Ledger, size: int) -> bytes:
    texts = read_table(ledger, AUDIT, columns=["event"])["event"].to_pylist()[:size]
    return merkle.root([hashlib.sha256(b"\x00" + t.encode()).digest() for t in texts])


def test_rows_chain_and_table_properties(tmp_path):
    url = str(tmp_path / "ledger")
    writer = AuditLog(url, {}, origin_name="vision").writer("run-1")
    assert writer.append("run.start", command="run") == 1  # event 0 is the log's init
    writer.append("object.copied", dataset="d", key="a/b.bin", size=3, sha256="ab" * 32,
                  fingerprints=["fp1"], encrypted=False, error=None)
    writer.flush()
    ledger = Ledger(url)
    table = DeltaTable(ledger.uri(AUDIT))
    assert table.metadata().configuration["delta.appendOnly"] == "true"
    assert table.schema().to_arrow() is not None
    rows = read_table(ledger, AUDIT).to_pylist()
    assert [r["seq"] for r in rows] == [0, 1, 2]
    init, start, copied = (json.loads(r["event"]) for r in rows)
    assert init["action"] == "audit.init" and init["prev"] == "0" * 64
    assert re.fullmatch(r"datamove\.audit/vision/[0-9a-f]{16}", init["details"]["origin"])
    assert start["prev"] == rows[0]["event_hash"] and copied["prev"] == rows[1]["event_hash"]
    assert copied["actor"].endswith("@" + socket.gethostname())
    assert copied["details"] == {"size": 3, "sha256": "ab" * 32, "fingerprints": ["fp1"],
                                 "encrypted": False, "error": None}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", copied["time"])
    for row in rows:
        assert row == {**row_of(row["event"].encode()), "time": row["time"]}
        assert row["event_hash"] == hashlib.sha256(row["event"].encode()).hexdigest()
    # An honest delete or overwrite is refused by the table itself.
    with pytest.raises(Exception, match="append-only"):
        table.delete("seq = 1")
    with pytest.raises(Exception, match="append-only"):
        write_deltalake(table, pa.Table.from_pylist(rows[:1], schema=AUDIT_SCHEMA),
                        mode="overwrite")
    assert verify_log(ledger).ok


def test_the_chain_continues_across_writers_and_runs_with_a_stable_origin(tmp_path):
    url = str(tmp_path / "ledger")
    first = AuditLog(url, {}, origin_name="vision").writer("run-a")
    for i in range(3):
        first.append("object.copied", dataset="d", key=f"k{i}")
    first.flush()
    # Renaming the manifest later does not change which log this is.
    second = AuditLog(url, {}, origin_name="renamed").writer("run-b")
    assert (second.size, second.head) == (first.size, first.head)
    assert second.frontier.root() == first.frontier.root()
    second.append("run.end", exit_code=0)
    second.flush()
    events = events_of(Ledger(url))
    assert [e["seq"] for e in events] == list(range(5))
    assert [e["run_id"] for e in events] == ["run-a"] * 4 + ["run-b"]
    assert events[4]["prev"] == first.head
    assert second.origin == first.origin and "/vision/" in second.origin
    assert verify_log(Ledger(url)).ok


def test_flushes_by_count_and_by_time(tmp_path):
    url = str(tmp_path / "ledger")
    writer = AuditLog(url, {}, origin_name="t").writer("r", max_events=3, max_seconds=3600)
    writer.append("a")  # init + a: 2 buffered
    assert Ledger(url).table(AUDIT) is None
    writer.append("b")  # 3: flushed
    assert len(read_table(Ledger(url), AUDIT)) == 3
    timed = AuditLog(url, {}, origin_name="t").writer("r2", max_events=1000, max_seconds=0.0)
    timed.append("c")
    assert len(read_table(Ledger(url), AUDIT)) == 4


def test_a_commit_that_landed_but_looked_failed_is_not_repeated(tmp_path, monkeypatch):
    import deltalake

    url = str(tmp_path / "ledger")
    real_write = deltalake.write_deltalake
    calls = []

    def lands_then_fails(*args, **kwargs):
        calls.append(kwargs["commit_properties"])
        real_write(*args, **kwargs)
        if len(calls) == 1:
            raise OSError("connection reset after the commit was sent")

    monkeypatch.setattr(deltalake, "write_deltalake", lands_then_fails)
    writer = AuditLog(url, {}, origin_name="t").writer("run-lost", retries=3)
    writer.append("object.copied", key="k1")
    writer.flush()
    assert len(calls) == 1, "the retry wrote again although the first write had landed"
    writer.append("object.copied", key="k2")
    writer.flush()
    ledger = Ledger(url)
    assert [e["key"] for e in events_of(ledger)] == [None, "k1", "k2"]
    assert ledger.table(AUDIT).transaction_version("datamove-audit:run-lost") == 2
    assert verify_log(ledger).ok


def test_a_commit_failing_before_the_write_is_retried_and_lands_once(tmp_path, monkeypatch):
    import deltalake

    url = str(tmp_path / "ledger")
    real_write = deltalake.write_deltalake
    calls = []

    def fails_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("connection refused")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", fails_first)
    writer = AuditLog(url, {}, origin_name="t").writer("run-retry", retries=2)
    writer.append("object.copied", key="k1")
    writer.flush()
    assert len(calls) == 2
    assert [e["key"] for e in events_of(Ledger(url))] == [None, "k1"]


def test_a_writer_reopened_for_the_same_run_goes_on_with_new_batches(tmp_path):
    """Batch numbers continue from the table's app transaction: restarting at 1 would
    make the new batch look already committed and silently drop it."""
    url = str(tmp_path / "ledger")
    log = AuditLog(url, {}, origin_name="t")
    first = log.writer("same-run")
    first.append("a")
    first.flush()
    again = log.writer("same-run")
    assert again.batch == 1
    again.append("b")
    again.flush()
    assert [e["action"] for e in events_of(Ledger(url))] == ["audit.init", "a", "b"]


def test_a_second_concurrent_writer_is_refused_rather_than_forking_the_chain(tmp_path):
    url = str(tmp_path / "ledger")
    log = AuditLog(url, {}, origin_name="t")
    seed = log.writer("seed")
    seed.append("a")
    seed.flush()
    first, second = log.writer("one"), log.writer("two")
    first.append("from-one")
    first.flush()
    second.append("from-two")
    with pytest.raises(AuditConflict, match="another datamove wrote"):
        second.flush()
    events = events_of(Ledger(url))
    assert [e["action"] for e in events] == ["audit.init", "a", "from-one"]
    assert verify_log(Ledger(url)).ok


def test_the_head_is_rebuilt_from_the_events_when_commit_metadata_does_not_match(tmp_path):
    url = str(tmp_path / "ledger")
    ledger = Ledger(url)
    writer = AuditLog(url, {}, origin_name="t").writer("r")
    for i in range(6):
        writer.append("object.copied", key=f"k{i}")
    writer.flush()
    # Another program appends one well-formed event without datamove's metadata.
    extra = make_event(7, now(), "other", "note", "x@y", None, None, {}, writer.head)
    write_deltalake(ledger.table(AUDIT), pa.Table.from_pylist([row_of(extra)],
                                                              schema=AUDIT_SCHEMA),
                    mode="append")
    reopened = AuditLog(url, {}, origin_name="t").writer("r2")
    assert reopened.size == 8
    assert reopened.head == hashlib.sha256(extra).hexdigest()
    assert reopened.frontier.root() == independent_root(ledger, 8)
    # And after compaction (the last commit is an OPTIMIZE): same head, same tree.
    DeltaTable(ledger.uri(AUDIT)).optimize.compact()
    compacted = AuditLog(url, {}, origin_name="t").writer("r3")
    assert (compacted.size, compacted.head) == (8, reopened.head)
    assert compacted.frontier.root() == independent_root(ledger, 8)
    compacted.append("after")
    compacted.flush()
    assert verify_log(ledger).ok


def test_checkpoints_every_n_events_at_the_end_and_only_once_per_size(tmp_path):
    url = str(tmp_path / "ledger")
    key_file, signer = new_key(tmp_path)
    writer = AuditLog(url, {}, origin_name="t", signing_key=key_file,
                      checkpoint_every=5).writer("r")
    for i in range(11):
        writer.append("object.copied", key=f"k{i}")
    note = writer.checkpoint()
    assert note is not None and writer.checkpoint() == note  # nothing new: same note
    ledger = Ledger(url)
    rows = read_table(ledger, CHECKPOINTS).to_pylist()
    assert [r["tree_size"] for r in rows] == [5, 10, 12]
    for row in rows:
        signed = SignedCheckpoint.parse(row["note"])
        assert signed.note.verified_by(signer.verifier) is True
        assert signed.body.root == independent_root(ledger, row["tree_size"])
        assert signed.body.root.hex() == row["root_hash"] and row["run_id"] == "r"
    result = verify_log(ledger, [signer.verifier], SignedCheckpoint.parse(note))
    assert result.ok and result.signatures_verified == 4


def test_without_a_signing_key_nothing_is_signed(tmp_path):
    url = str(tmp_path / "ledger")
    writer = AuditLog(url, {}, origin_name="t", checkpoint_every=1).writer("r")
    writer.append("a")
    assert writer.checkpoint() is None
    assert Ledger(url).table(CHECKPOINTS) is None
    assert AuditLog(str(tmp_path / "empty"), {}, origin_name="t").writer("r").checkpoint() \
        is None


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    url = str(tmp_path / "ledger")
    with pytest.raises(BadInput, match="keygen"):
        AuditLog(url, {}, origin_name="t", signing_key=str(tmp_path / "missing.key"))
    with pytest.raises(BadInput, match="origin name"):
        AuditLog(url, {}, origin_name="has space")
    writer = AuditLog(url, {}, origin_name="t").writer("r")
    with pytest.raises(EventError, match="float"):
        writer.append("object.copied", ratio=0.5)
    with pytest.raises(ValueError, match="action"):
        writer.append("")
    writer.append("ok")
    writer.flush()
    assert [e["action"] for e in events_of(Ledger(url))] == ["audit.init", "ok"]


def test_no_signing_key_material_in_tables_logs_or_reprs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    url = str(tmp_path / "ledger")
    key_file, signer = new_key(tmp_path)
    secret = signer.encode()
    seed_b64 = secret.split("+", 4)[4]  # the base64 itself may contain "+"
    log = AuditLog(url, {}, origin_name="t", signing_key=key_file, checkpoint_every=2)
    writer = log.writer("r")
    for i in range(5):
        writer.append("object.copied", key=f"k{i}")
    writer.checkpoint()
    assert verify_log(Ledger(url), [signer.verifier]).ok
    seed = base64.b64decode(seed_b64)[1:]
    for path in Path(url).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert seed_b64.encode() not in data and seed not in data, path
            assert b"PRIVATE+KEY" not in data, path
    for text in (caplog.text, repr(log), repr(writer.log.signer)):
        assert seed_b64 not in text and "PRIVATE+KEY" not in text


def test_an_audit_log_on_s3(tmp_path, moto_server):
    bucket = moto_server.new_bucket()
    url = f"s3://{bucket}/ledger"
    options = {"endpoint_url": moto_server.endpoint}
    key_file, signer = new_key(tmp_path)
    for run in ("run-1", "run-2"):
        writer = AuditLog(url, options, origin_name="s3-test", signing_key=key_file,
                          checkpoint_every=4).writer(run)
        for i in range(5):
            writer.append("object.copied", dataset="d", key=f"{run}/k{i}")
        writer.checkpoint()
    stored = [o["Key"] for o in moto_server.client().list_objects_v2(
        Bucket=bucket, Prefix="ledger/").get("Contents", [])]
    assert any(k.startswith("ledger/audit/_delta_log/") for k in stored)
    assert any(k.startswith("ledger/audit_checkpoints/_delta_log/") for k in stored)
    ledger = Ledger(url, options)
    result = verify_log(ledger, [signer.verifier])
    assert result.ok and result.size == 11, [str(p) for p in result.problems]
    proof = prove(ledger, "run-1/k2", dataset="d")
    assert proof.exit_code == 0 and proof.tree_size == 11 and proof.leaf_index == 3
    assert merkle.verify_inclusion(3, 11, merkle.leaf_hash(proof.event.encode()),
                                   [bytes.fromhex(h) for h in proof.audit_path],
                                   bytes.fromhex(proof.root_hash))
