"""A writer holding the signing key vouches for what it signs (docs/FORMAT.md, "What a
writer vouches for").

Someone with write access to the storage but not the key appends events to the
audit table the way an attacker would: well-formed, chained to the real head, seq
continuing, even with datamove's commit metadata copied or recomputed. The next
command with the key must refuse (exit 2, nothing written) instead of signing a
checkpoint over them; a run killed before its checkpoint must not be refused (its
commits are sealed; it is killed for real here); `datamove audit acknowledge` is
the one way on after an investigation, and it leaves the adopted events on the
record as unvouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from datamove.audit import AuditDamaged, AuditLog, AuditUnvouched, merkle, verify_log
from datamove.audit.events import AUDIT_SCHEMA, canonical, make_event, row_of
from datamove.audit.tables import (
    AUDIT,
    CHECKPOINTS,
    META_FRONTIER,
    META_HEAD,
    META_SIZE,
    read_table,
)
from datamove.ledger.tables import Ledger, now
from tests.conftest import cli as datamove_cli
from tests.conftest import last_json, write_manifest
from tests.test_audit_log import events_of, independent_root, new_key

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def keyed(tmp_path) -> dict:
    """A manifest with a signing key and a log of 6 events, ended by a checkpoint."""
    key_file, signer = new_key(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}],
        name="vouch", audit={"signing_key": key_file, "checkpoint_every": 100})
    url = str(tmp_path / ".datamove" / "ledger")
    writer = open_log(url, key_file).writer("run-1")
    for i in range(5):
        writer.append("object.copied", dataset="d", key=f"k{i}", size=i)
    writer.checkpoint()
    return {"dir": tmp_path, "url": url, "key": key_file, "signer": signer,
            "manifest": str(manifest), "ledger": Ledger(url)}


def open_log(url: str, key_file: str | None) -> AuditLog:
    return AuditLog(url, {}, origin_name="vouch", signing_key=key_file, checkpoint_every=100)


def forged_rows(ledger: Ledger, count: int = 1) -> list[dict]:
    """``count`` well-chained events after the log's last, as someone with storage
    access but no key would write them."""
    rows = read_table(ledger, AUDIT, columns=["seq", "event"]).to_pylist()
    seq, head = len(rows), hashlib.sha256(rows[-1]["event"].encode()).hexdigest()
    forged = []
    for _ in range(count):
        event = make_event(seq, now(), "run-forged", "object.copied", "mallory@elsewhere",
                           "d", f"forged-{seq}", {"size": 1}, head)
        forged.append(row_of(event))
        seq, head = seq + 1, hashlib.sha256(event).hexdigest()
    return forged


def forge(ledger: Ledger, count: int = 1, metadata: dict[str, str] | None = None) -> int:
    """Append forged events (with ``metadata`` on their commit); the first one's seq."""
    rows = forged_rows(ledger, count)
    write_deltalake(ledger.uri(AUDIT), pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA),
                    mode="append", commit_properties=_properties(metadata))
    return rows[0]["seq"]


def _properties(metadata: dict[str, str] | None):
    from deltalake import CommitProperties

    return CommitProperties(custom_metadata=metadata) if metadata else None


def versions(ledger: Ledger) -> tuple[int, int]:
    return (DeltaTable(ledger.uri(AUDIT)).version(),
            DeltaTable(ledger.uri(CHECKPOINTS)).version())


def cli(*args: str) -> SimpleNamespace:
    """The datamove command in this process (conftest.cli); ``output``: what it said on
    stderr, then stdout (so that the JSON line of --json stays last)."""
    result = datamove_cli(*args)
    return SimpleNamespace(exit_code=result.returncode, output=result.stderr + result.stdout)


def test_a_forged_well_chained_event_is_refused_not_signed(keyed):
    ledger = keyed["ledger"]
    seq = forge(ledger)
    assert seq == 6
    assert verify_log(ledger).ok  # without a key the forgery looks like any tail
    before = versions(ledger)
    with pytest.raises(AuditUnvouched) as refused:
        open_log(keyed["url"], keyed["key"]).writer("run-2")
    message = str(refused.value)
    assert (refused.value.first_seq, refused.value.last_seq) == (6, 6)
    assert "event 6 comes after the last checkpoint" in message and "audit verify" in message
    assert "audit acknowledge MANIFEST --through 6" in message
    # The commands: exit 2, one clear message, no traceback, nothing written.
    run = cli("run", keyed["manifest"])
    assert run.exit_code == 2, run.output
    assert "event 6 comes after" in run.output and "Traceback" not in run.output
    signed = cli("audit", "checkpoint", keyed["manifest"], "--json")
    assert signed.exit_code == 2 and last_json(signed.output)["exit_code"] == 2
    assert versions(ledger) == before
    assert not (keyed["dir"] / "dst").exists()
    assert Ledger(keyed["url"]).table("objects") is None
    # The auditor with the verifier key sees the same events, named.
    result = verify_log(ledger, [keyed["signer"].verifier])
    assert [(p.check, p.seq, p.last) for p in result.problems] == [("unvouched", 6, 6)]
    assert result.exit_code == 1


def test_forged_events_with_datamove_metadata_copied_or_recomputed_are_refused(keyed):
    ledger = keyed["ledger"]
    newest = DeltaTable(ledger.uri(AUDIT)).history(1)[0]
    copied = {k: str(v) for k, v in newest.items() if k.startswith("datamove.")}
    assert "datamove.audit.seal" in copied
    forge(ledger, 2, copied)  # the honest commit's seal, on the forged commit
    with pytest.raises(AuditUnvouched, match=r"seq 6\.\.7"):
        open_log(keyed["url"], keyed["key"]).writer("run-2")
    # Metadata recomputed for the new tree, with the old seal: still not this key's.
    rows = forged_rows(ledger)
    texts = read_table(ledger, AUDIT, columns=["event"])["event"].to_pylist()
    frontier = merkle.Frontier()
    for text in [*texts, rows[0]["event"]]:
        frontier.append(merkle.leaf_hash(text.encode()))
    write_deltalake(ledger.uri(AUDIT), pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA),
                    mode="append", commit_properties=_properties({
                        **copied, META_SIZE: "9", META_HEAD: rows[0]["event_hash"],
                        META_FRONTIER: frontier.encode()}))
    with pytest.raises(AuditUnvouched, match=r"seq 6\.\.8"):
        open_log(keyed["url"], keyed["key"]).writer("run-2")


def test_a_run_killed_before_its_checkpoint_is_vouched_for_by_its_seals(keyed):
    """kill -9 after some batches committed: the next run goes on and its checkpoint
    covers them, because every commit of a keyed writer is sealed."""
    script = textwrap.dedent(f"""
        import sys, time
        from datamove.audit import AuditLog
        w = AuditLog({keyed['url']!r}, {{}}, origin_name="vouch", signing_key={keyed['key']!r},
                     checkpoint_every=100).writer("run-killed")
        for i in range(3):
            w.append("object.copied", dataset="d", key=f"killed-{{i}}")
            w.flush()
        print("flushed", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"flushed\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    ledger = keyed["ledger"]
    assert [e["key"] for e in events_of(ledger)][-3:] == [f"killed-{i}" for i in range(3)]
    writer = open_log(keyed["url"], keyed["key"]).writer("run-next")
    assert writer.size == 9 and writer.checkpoint_size == 6
    writer.append("run.end", exit_code=0)
    note = writer.checkpoint()
    assert note is not None
    result = verify_log(ledger, [keyed["signer"].verifier])
    assert result.ok, [str(p) for p in result.problems]
    assert read_table(ledger, CHECKPOINTS)["tree_size"].to_pylist() == [6, 10]


def test_forged_frontier_metadata_never_becomes_a_signed_root(keyed):
    """Unsigned commit metadata naming the right size and head but a made-up tree:
    the next checkpoint must still be the root of the events."""
    ledger = keyed["ledger"]
    newest = DeltaTable(ledger.uri(AUDIT)).history(1)[0]
    bogus = ",".join(hashlib.sha256(b"%d" % i).hexdigest()
                     for i in range(len(newest[META_FRONTIER].split(","))))
    write_deltalake(ledger.uri(AUDIT), AUDIT_SCHEMA.empty_table(), mode="append",
                    commit_properties=_properties({META_SIZE: newest[META_SIZE],
                                                   META_HEAD: newest[META_HEAD],
                                                   META_FRONTIER: bogus}))
    writer = open_log(keyed["url"], keyed["key"]).writer("run-2")
    writer.append("run.end", exit_code=0)
    writer.checkpoint()
    row = read_table(ledger, CHECKPOINTS).to_pylist()[-1]
    assert bytes.fromhex(row["root_hash"]) == independent_root(ledger, 7)
    assert verify_log(ledger, [keyed["signer"].verifier]).ok


def test_acknowledging_adopts_the_tail_on_the_record(keyed):
    ledger = keyed["ledger"]
    forge(ledger, 2)
    before = versions(ledger)
    manifest = keyed["manifest"]
    for args, says in ((["--through", "6", "--reason", "x"], "unvouched events are seq 6..7"),
                       (["--through", "7", "--reason", "  "], "--reason"),
                       (["--through", "7"], "--reason")):
        refused = cli("audit", "acknowledge", manifest, *args)
        assert refused.exit_code == 2 and says in refused.output, refused.output
        assert "Traceback" not in refused.output
    assert versions(ledger) == before
    done = cli("audit", "acknowledge", manifest, "--through", "7", "--reason",
               "imported by the migration team's script, ticket OPS-12", "--json")
    assert done.exit_code == 0, done.output
    answer = last_json(done.output)
    assert (answer["first_seq"], answer["last_seq"], answer["seq"]) == (6, 7, 8)
    ack = events_of(ledger)[8]
    assert ack["action"] == "audit.acknowledged"
    assert ack["details"]["first_seq"] == 6 and ack["details"]["last_seq"] == 7
    assert ack["details"]["last_hash"] == ack["prev"]
    assert ack["details"]["vouched_before"] == "checkpoint"
    assert "OPS-12" in ack["details"]["reason"]
    result = verify_log(ledger, [keyed["signer"].verifier])
    assert result.ok, [str(p) for p in result.problems]
    assert [(a["first_seq"], a["last_seq"], a["seq"]) for a in result.acknowledged] == \
        [(6, 7, 8)]
    assert any("events 6..7 were adopted without a seal" in n for n in result.notes)
    # The next run goes on; a second acknowledgement has nothing to adopt.
    assert open_log(keyed["url"], keyed["key"]).writer("run-3").size == 9
    again = cli("audit", "acknowledge", manifest, "--through", "8", "--reason", "again")
    assert again.exit_code == 2 and "nothing to acknowledge" in again.output


def test_a_tail_that_does_not_recompute_is_refused_and_cannot_be_adopted(keyed):
    """Events after the checkpoint, sealed by an honest writer, then one changed (its
    hash recomputed): the writer names it; acknowledging does not adopt it."""
    ledger = keyed["ledger"]
    writer = open_log(keyed["url"], keyed["key"]).writer("run-2")
    for i in range(3):
        writer.append("object.copied", dataset="d", key=f"late-{i}")
    writer.flush()  # sealed, not checkpointed: seq 6, 7, 8
    rows = read_table(ledger, AUDIT).to_pylist()
    event = json.loads(rows[7]["event"])
    event["details"]["size"] = 10 ** 6
    rows[7] = row_of(canonical(event))
    table = DeltaTable(ledger.uri(AUDIT))
    table.alter.set_table_properties({"delta.appendOnly": "false"})
    write_deltalake(ledger.uri(AUDIT), pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA),
                    mode="overwrite")
    with pytest.raises(AuditDamaged, match=r"do not verify: seq 7: hash differs"):
        open_log(keyed["url"], keyed["key"]).writer("run-3")
    adopt = cli("audit", "acknowledge", keyed["manifest"], "--through", "8", "--reason", "r")
    assert adopt.exit_code == 2 and "seq 7" in adopt.output


def test_removed_events_and_a_removed_log_are_refused(keyed):
    ledger = keyed["ledger"]
    rows = read_table(ledger, AUDIT).to_pylist()
    table = DeltaTable(ledger.uri(AUDIT))
    table.alter.set_table_properties({"delta.appendOnly": "false"})
    write_deltalake(ledger.uri(AUDIT), pa.Table.from_pylist(rows[:4], schema=AUDIT_SCHEMA),
                    mode="overwrite")
    with pytest.raises(AuditDamaged, match=r"covers 6 events but the log has 4"):
        open_log(keyed["url"], keyed["key"]).writer("run-2")
    shutil.rmtree(ledger.uri(AUDIT))
    with pytest.raises(AuditDamaged, match="the log was deleted"):
        open_log(keyed["url"], keyed["key"]).writer("run-2")
    assert not Path(ledger.uri(AUDIT)).exists()


def test_events_written_without_the_key_or_with_another_need_an_acknowledgement(keyed,
                                                                                 tmp_path):
    ledger = keyed["ledger"]
    unkeyed = open_log(keyed["url"], None).writer("run-no-key")
    unkeyed.append("run.start", command="run")
    unkeyed.flush()
    with pytest.raises(AuditUnvouched, match="event 6 comes after the last checkpoint"):
        open_log(keyed["url"], keyed["key"]).writer("run-2")
    other_key, other = new_key(tmp_path, "other-key")
    with pytest.raises(AuditUnvouched, match=r"7 events, seq 0\.\.6, come after the start"):
        open_log(keyed["url"], other_key).writer("run-2")
    result = open_log(keyed["url"], other_key).acknowledge(
        "run-ack", 6, "signing key replaced by other-key")
    assert (result["first_seq"], result["last_seq"]) == (0, 6)
    assert events_of(ledger)[7]["details"]["vouched_before"] is None
    assert verify_log(ledger, [other.verifier, keyed["signer"].verifier]).ok


def test_keys_rotate_refuses_before_it_writes_anything(tmp_path):
    """`keys rotate` opens the audit log before its ledger row and before any header
    is rewritten, so a refusal leaves the ledger and the objects as they were."""
    from datamove import api
    from datamove.commands.rotate import rotate
    from tests.test_rotate import keypair

    key_file, _ = new_key(tmp_path)
    _, old_key, old_pub = keypair(tmp_path, "old")
    _, _, new_pub = keypair(tmp_path, "new")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"secret bytes")
    manifest = api.load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"},
         "encrypt": {"recipients_file": str(old_pub), "identity": {"file": str(old_key)}}}],
        audit={"signing_key": key_file}))
    assert api.run(manifest).exit_code == 0
    ledger = Ledger(manifest.ledger)
    forge(ledger)
    stored = (tmp_path / "dst" / "a.bin.age").read_bytes()
    runs = ledger.runs().num_rows
    with pytest.raises(AuditUnvouched):
        rotate(manifest, str(new_pub))
    assert ledger.runs().num_rows == runs
    assert (tmp_path / "dst" / "a.bin.age").read_bytes() == stored
