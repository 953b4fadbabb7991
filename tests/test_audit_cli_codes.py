"""`datamove audit` exit codes and JSON: 0 verified, 1 a problem (naming the first bad
event), 2 bad input; keygen's files; show's filters and formats; prove against a
held checkpoint; no signing-key material in any output. tests/test_audit_cli.py
runs the commands end to end after a real run."""

from __future__ import annotations

import csv
import io
import json
import shutil
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable, write_deltalake

from datamove.audit import AuditLog
from datamove.audit.events import AUDIT_SCHEMA, canonical, row_of
from datamove.audit.tables import AUDIT
from datamove.cli.audit import audit
from datamove.ledger.tables import Ledger
from tests.conftest import cli, last_json, write_manifest


def invoke(*args: str):
    return CliRunner().invoke(audit, list(args), catch_exceptions=False)


@pytest.fixture
def logged(tmp_path) -> dict:
    """A manifest whose ledger holds 14 events (3 runs) and 4 signed checkpoints."""
    made = invoke("keygen", "--name", "ops.example", "-o", str(tmp_path / "audit.key"),
                  "--pubkey-out", str(tmp_path / "audit.pub"))
    assert made.exit_code == 0, made.output
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}],
        name="cli-test", audit={"signing_key": "audit.key", "checkpoint_every": 5})
    log = AuditLog(str(tmp_path / ".datamove" / "ledger"), {}, origin_name="cli-test",
                   signing_key=str(tmp_path / "audit.key"), checkpoint_every=5)
    for run, keys in (("run-1", ["a", "b", "c", "d"]), ("run-2", ["a", "e", "f", "g"]),
                      ("run-3", ["h", "i"])):
        writer = log.writer(run)
        writer.append("run.start", command="run")
        for key in keys:
            writer.append("object.copied", dataset="d", key=key, size=len(key))
        writer.checkpoint()
    return {"dir": tmp_path, "manifest": str(manifest), "pub": str(tmp_path / "audit.pub"),
            "key": (tmp_path / "audit.key").read_text().strip(),
            "ledger": Ledger(str(tmp_path / ".datamove" / "ledger"))}


def test_keygen_writes_a_private_key_file_and_refuses_to_overwrite(tmp_path):
    out = invoke("keygen", "-o", str(tmp_path / "k"), "--pubkey-out", str(tmp_path / "p"))
    assert out.exit_code == 0
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    secret = (tmp_path / "k").read_text().strip()
    assert secret.startswith("PRIVATE+KEY+datamove-audit+")
    assert out.output.strip() == (tmp_path / "p").read_text().strip()
    assert out.output.startswith("datamove-audit+") and secret not in out.output
    again = invoke("keygen", "-o", str(tmp_path / "k"))
    assert again.exit_code == 2 and "already exists" in again.output
    assert (tmp_path / "k").read_text().strip() == secret
    taken = invoke("keygen", "-o", str(tmp_path / "k2"), "--pubkey-out", str(tmp_path / "p"))
    assert taken.exit_code == 2 and not (tmp_path / "k2").exists()
    bad = invoke("keygen", "--name", "has space", "-o", str(tmp_path / "k3"))
    assert bad.exit_code == 2 and not (tmp_path / "k3").exists()


def test_verify_exit_codes_and_json(logged):
    ok = invoke("verify", logged["manifest"], "--pubkey", logged["pub"], "--json")
    assert ok.exit_code == 0, ok.output
    summary = last_json(ok.output)
    assert summary["ok"] and summary["events"] == 14 and summary["first_bad_seq"] is None
    assert summary["signatures_verified"] == summary["checkpoints"] == 4

    # Event 6's details changed (and its row hash recomputed): exit 1, seq 6 named.
    ledger = logged["ledger"]
    rows = DeltaTable(ledger.uri(AUDIT)).to_pyarrow_table().to_pylist()
    shutil.rmtree(ledger.uri(AUDIT))
    for row in rows:
        if row["seq"] == 6:
            event = json.loads(row["event"])
            event["details"]["size"] = 999
            row.update(row_of(canonical(event)))
    write_deltalake(ledger.uri(AUDIT), pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA))
    bad = invoke("verify", logged["manifest"], "--pubkey", logged["pub"], "--json")
    assert bad.exit_code == 1
    summary = last_json(bad.output)
    assert summary["exit_code"] == 1 and not summary["ok"]
    assert summary["first_bad_seq"] == 6 and summary["first_bad"]["check"] == "chain"
    text = invoke("verify", logged["manifest"], "--pubkey", logged["pub"])
    assert text.exit_code == 1 and "first bad event: seq 6:" in text.output


def replace_events(ledger: Ledger, rows: list[dict]) -> None:
    """Recreate the audit table with ``rows``, as someone with storage access can."""
    shutil.rmtree(ledger.uri(AUDIT))
    write_deltalake(ledger.uri(AUDIT), pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA))


def test_verify_names_a_deleted_event_when_later_seq_columns_were_renumbered(logged):
    """Event 6 deleted, every later row's seq lowered by one: no gap, no repeat, and
    every later event still chains to its original predecessor. The event named is
    the deleted position, 6, not the event before it."""
    ledger = logged["ledger"]
    rows = sorted(DeltaTable(ledger.uri(AUDIT)).to_pyarrow_table().to_pylist(),
                  key=lambda r: r["seq"])
    replace_events(ledger, rows[:6] + [{**r, "seq": r["seq"] - 1} for r in rows[7:]])
    bad = invoke("verify", logged["manifest"], "--pubkey", logged["pub"], "--json")
    assert bad.exit_code == 1
    summary = last_json(bad.output)
    assert summary["first_bad_seq"] == 6 and summary["first_bad"]["exact"] is True
    [chain] = [p for p in summary["problems"] if p["check"] == "chain"]
    assert chain["seq"] == 6 and "missing before it" in chain["message"]
    text = invoke("verify", logged["manifest"], "--pubkey", logged["pub"])
    assert "first bad event: seq 6:" in text.output


def test_verify_reports_a_consistent_rewrite_as_a_range(logged):
    """Events from 12 on rewritten with every hash and prev recomputed: the chain is
    whole, so only the checkpoint at 14 shows it, and the first bad event is somewhere
    after the last checkpoint that still matches (11) up to 13: reported as that range
    (exact: false), as docs/FORMAT.md says, not as event 13."""
    ledger = logged["ledger"]
    rows = sorted(DeltaTable(ledger.uri(AUDIT)).to_pyarrow_table().to_pylist(),
                  key=lambda r: r["seq"])
    sizes = sorted(r["tree_size"] for r in DeltaTable(
        ledger.uri("audit_checkpoints")).to_pyarrow_table().to_pylist())
    assert sizes[-2:] == [11, 14]
    for i in range(12, len(rows)):
        event = {**json.loads(rows[i]["event"]), "prev": rows[i - 1]["event_hash"]}
        if i == 12:
            event["details"] = {**event["details"], "size": 999}
        rows[i] = row_of(canonical(event))
    replace_events(ledger, rows)
    bad = invoke("verify", logged["manifest"], "--pubkey", logged["pub"], "--json")
    assert bad.exit_code == 1
    summary = last_json(bad.output)
    first = summary["first_bad"]
    assert (summary["first_bad_seq"], first["exact"]) == (11, False)
    assert (first["seq"], first["last_seq"]) == (11, 13)
    assert {p["check"] for p in summary["problems"]} == {"root", "head"}
    assert all(p["exact"] is False for p in summary["problems"])
    text = invoke("verify", logged["manifest"], "--pubkey", logged["pub"])
    assert "first bad event: somewhere in seq 11..13:" in text.output


def test_verify_bad_input_is_exit_2_with_json(logged):
    missing = invoke("verify", logged["manifest"], "--pubkey", "/nonexistent/pub", "--json")
    assert missing.exit_code == 2
    assert last_json(missing.output) == {"error": last_json(missing.output)["error"],
                                         "exit_code": 2}
    assert "/nonexistent/pub" in last_json(missing.output)["error"]
    secret_as_pub = Path(logged["dir"]) / "audit.key"
    wrong = invoke("verify", logged["manifest"], "--pubkey", str(secret_as_pub), "--json")
    assert wrong.exit_code == 2 and "signer (secret) key" in wrong.output
    assert logged["key"] not in wrong.output
    garbage = Path(logged["dir"]) / "garbage.note"
    garbage.write_text("not a note\n")
    held = invoke("verify", logged["manifest"], "--checkpoint", str(garbage))
    assert held.exit_code == 2 and "garbage.note" in held.output
    no_manifest = invoke("verify", str(Path(logged["dir"]) / "none.yaml"), "--json")
    assert no_manifest.exit_code == 2


def test_show_filters_and_formats(logged):
    table = invoke("show", logged["manifest"], "--key", "a")
    assert table.exit_code == 0 and table.output.strip().endswith("2 events")
    as_json = invoke("show", logged["manifest"], "--run", "run-2", "--json")
    shown = last_json(as_json.stdout)  # one object, last line, as every command's --json
    events = shown["events"]
    assert [e["seq"] for e in events] == [6, 7, 8, 9, 10]
    assert {e["run_id"] for e in events} == {"run-2"}
    assert shown["count"] == 5 and shown["exit_code"] == 0
    # the old spelling still works, says it is deprecated, and prints the canonical texts
    old = invoke("show", logged["manifest"], "--run", "run-2", "--format", "json")
    assert old.exit_code == 0 and "--format is deprecated; use --json or --csv" in old.stderr
    canonical_lines = old.stdout.splitlines()
    assert [json.loads(line) for line in canonical_lines] == events
    assert canonical_lines[0].encode() == canonical(events[0])
    rows = list(csv.DictReader(io.StringIO(invoke(
        "show", logged["manifest"], "--action", "run.start", "--csv").stdout)))
    assert [r["seq"] for r in rows] == ["1", "6", "11"]
    assert invoke("show", logged["manifest"], "--since", "2000-01-01",
                  "--until", "2000-01-02").output.strip() == \
        "seq  time  action  dataset  key  run_id  actor  details\n0 events"
    later = invoke("show", logged["manifest"], "--since", "2000-01-01T00:00:00Z", "--json")
    assert last_json(later.stdout)["count"] == 14
    bad = invoke("show", logged["manifest"], "--since", "yesterday", "--json")
    assert bad.exit_code == 2 and last_json(bad.stdout)["exit_code"] == 2
    both = invoke("show", logged["manifest"], "--json", "--csv")
    assert both.exit_code == 2 and "choose one" in last_json(both.stdout)["error"]


def test_prove_against_the_held_checkpoint_and_unknown_keys(logged):
    exported = Path(logged["dir"]) / "held.note"
    made = invoke("checkpoint", logged["manifest"], "-o", str(exported), "--json")
    assert made.exit_code == 0
    assert last_json(made.output)["tree_size"] == 14 and exported.read_text() == \
        last_json(made.output)["note"]
    proof = invoke("prove", logged["manifest"], "a", "--dataset", "d", "--checkpoint",
                   str(exported), "--json")
    assert proof.exit_code == 0, proof.output
    p = last_json(proof.output)
    assert (p["leaf_index"], p["tree_size"]) == (7, 14)  # the latest event of "a": run-2
    assert json.loads(p["event"])["run_id"] == "run-2" and p["checkpoint"] == \
        exported.read_text()
    unknown = invoke("prove", logged["manifest"], "nope", "--json")
    assert unknown.exit_code == 1 and last_json(unknown.output)["exit_code"] == 1
    other_dataset = invoke("prove", logged["manifest"], "a", "--dataset", "other")
    assert other_dataset.exit_code == 1


def test_prove_without_a_covering_checkpoint_and_checkpoint_without_a_key(logged, tmp_path):
    writer = AuditLog(logged["ledger"].url, {}, origin_name="cli-test").writer("run-4")
    writer.append("object.copied", dataset="d", key="late")
    writer.flush()
    uncovered = invoke("prove", logged["manifest"], "late", "--json")
    assert uncovered.exit_code == 2 and "audit checkpoint" in last_json(uncovered.output)["error"]
    keyless = write_manifest(tmp_path / "keyless.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}],
        ledger=logged["ledger"].url)
    refused = invoke("checkpoint", str(keyless))
    assert refused.exit_code == 2 and "audit.signing_key" in refused.output
    empty = write_manifest(tmp_path / "empty.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}],
        ledger=str(tmp_path / "empty-ledger"),
        audit={"signing_key": str(Path(logged["dir"]) / "audit.key")})
    nothing = invoke("checkpoint", str(empty))
    assert nothing.exit_code == 2 and "no events yet" in nothing.output
    for result in (uncovered, refused, nothing):
        assert logged["key"] not in result.output


def test_the_registered_command_exits_1_in_a_real_process(logged):
    """Through `datamove audit` in a subprocess: exit codes survive process exit."""
    ledger = logged["ledger"]
    rows = DeltaTable(ledger.uri(AUDIT)).to_pyarrow_table()
    shutil.rmtree(ledger.uri(AUDIT))
    write_deltalake(ledger.uri(AUDIT), rows.filter(pc.field("seq") != 4))
    result = cli("audit", "verify", logged["manifest"], "--pubkey", logged["pub"],
                 "--json", cwd=logged["dir"])
    assert result.returncode == 1, result.stderr
    assert last_json(result.stdout)["first_bad_seq"] == 4
    for text in (result.stdout, result.stderr):
        assert logged["key"] not in text
