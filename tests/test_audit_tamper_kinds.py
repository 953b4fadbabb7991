"""More ways to tamper with the audit log, each detected with the first bad event named.

tests/test_audit_tamper.py covers the common kinds; this file adds the variants
an attacker with storage access would try next, each against a fresh copy of a
real log (41 events, two runs, checkpoints at 16, 25 and 41; the auditor holds
the last one as a file): an event changed without and with its hash recomputed,
only a column changed, an event re-spelled non-canonically, deletions with and
without renumbering (of the events, or of the seq column alone), insertions
renumbered or as a duplicate seq, swaps of any two events, a seq column swapped
under unchanged events, truncation with the stored checkpoints cleaned up
(visible only against the held file, or the newest seal), altered signatures
(stored and held), and consistent rewrites (reported as the range the
checkpoints bound them to).
Tables are rewritten for real, alternately by recreating them and by turning
``delta.appendOnly`` off for an overwrite, and rows are shuffled on disk: the
physical order means nothing, which the untouched controls confirm.
"""

from __future__ import annotations

import copy
import io
import json
import random
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from datamove.audit import AuditLog, Signer, read_note_file, verify_log
from datamove.audit.events import AUDIT_SCHEMA, CHECKPOINT_SCHEMA, ZERO_HASH, canonical, row_of
from datamove.audit.tables import AUDIT, CHECKPOINTS, read_table
from datamove.ledger.tables import Ledger

SEED = 6962
ROUNDS = 5  # trials per event kind


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tamper-kinds")
    signer = Signer.generate("auditor.example")
    (root / "signer.key").write_text(signer.encode())
    for run, count in (("run-a", 24), ("run-b", 16)):
        writer = AuditLog(str(root / "ledger"), {}, origin_name="kinds",
                          signing_key=str(root / "signer.key"),
                          checkpoint_every=16).writer(run)
        for i in range(count):
            writer.append("object.copied", dataset="d", key=f"{run}/{i:02d}", size=i)
        held = writer.checkpoint()
    assert held is not None
    (root / "held.note").write_text(held)
    ledger = Ledger(str(root / "ledger"))
    sizes = read_table(ledger, CHECKPOINTS)["tree_size"].to_pylist()
    assert sizes == [16, 25, 41]
    return {"root": root, "verifier": signer.verifier, "held": str(root / "held.note"),
            "rows": read_table(ledger, AUDIT).to_pylist(),
            "checkpoints": read_table(ledger, CHECKPOINTS).to_pylist()}


# --- what the attacker does -----------------------------------------------------------

def fields(row: dict) -> dict:
    return json.loads(row["event"])


def rebuilt(event: dict) -> dict:
    """A row for ``event`` with every column (and the hash) made to match."""
    return row_of(canonical(event))


def renumbered(rows: list[dict], start: int) -> list[dict]:
    """Rows from ``start`` on with their seq set to their position (hashes recomputed,
    ``prev`` left alone: rewriting those too is the tail rewrite below)."""
    return rows[:start] + [rebuilt({**fields(r), "seq": start + i})
                           for i, r in enumerate(rows[start:])]


def forged_after(rows: list[dict], k: int) -> dict:
    """A well-formed event at seq k whose prev is the real hash of event k - 1."""
    event = {**fields(rows[max(k - 1, 1)]), "seq": k, "key": "forged/object",
             "prev": rows[k - 1]["event_hash"] if k else ZERO_HASH}
    return rebuilt(event)


def modify_naive(rows, k, rng):
    event = fields(rows[k])
    change = rng.choice(["details", "action", "key", "time", "run_id", "actor", "dataset"])
    if change == "details":
        event["details"]["forged"] = True
    elif change == "time":
        event["time"] = event["time"][:-2] + ("1Z" if event["time"][-2] != "1" else "2Z")
    else:
        event[change] = f"{event[change]}-x"
    rows[k] = {**rows[k], "event": canonical(event).decode()}  # hash and columns left
    return rows, k


def modify_rehashed(rows, k, rng):
    event = fields(rows[k])
    event["details"] = {**event["details"], "size": 10 ** 6}
    rows[k] = rebuilt(event)
    if k == len(rows) - 1:  # no successor: a consistent rewrite ending here, for all we see
        return rows, bounds(k)
    return rows, k


def modify_column(rows, k, rng):
    column = rng.choice(["dataset", "key", "action", "run_id"])
    rows[k] = {**rows[k], column: f"{rows[k][column]}-x"}
    return rows, k


def respelled(rows, k, rng):
    text = json.dumps(fields(rows[k]), sort_keys=rng.random() < 0.5, indent=1)
    rows[k] = {**rows[k], "event": text, "event_hash": row_of(text.encode())["event_hash"]}
    return rows, k


def delete_gap(rows, k, rng):
    return rows[:k] + rows[k + 1:], k


def delete_renumbered(rows, k, rng):
    return renumbered(rows[:k] + rows[k + 1:], k), k


def delete_renumbered_column(rows, k, rng):
    """Event k's row deleted and the seq column of every later row renumbered to close
    the gap; the events themselves (and their hashes) are left as they were."""
    return rows[:k] + [{**r, "seq": r["seq"] - 1} for r in rows[k + 1:]], k


def insert_renumbered(rows, k, rng):
    later = [rebuilt({**fields(r), "seq": k + 1 + i}) for i, r in enumerate(rows[k:])]
    return [*rows[:k], forged_after(rows, k), *later], k


def insert_duplicate(rows, k, rng):
    return [*rows, forged_after(rows, k)], k


def swap_any(rows, k, rng):
    j = rng.choice([x for x in range(len(rows)) if x != k])
    i, j = min(k, j), max(k, j)
    rows[i], rows[j] = (rebuilt({**fields(rows[j]), "seq": i}),
                        rebuilt({**fields(rows[i]), "seq": j}))
    return rows, i


def swap_seq_column(rows, k, rng):
    j = rng.choice([x for x in range(len(rows)) if x != k])
    rows[k], rows[j] = {**rows[k], "seq": rows[j]["seq"]}, {**rows[j], "seq": rows[k]["seq"]}
    return rows, min(k, j)


KINDS: dict[str, tuple[Callable, range]] = {  # kind: (tamper, positions it may hit)
    "modify_naive": (modify_naive, range(0, 41)),
    "modify_rehashed": (modify_rehashed, range(0, 41)),
    "modify_column": (modify_column, range(0, 41)),
    "respelled": (respelled, range(0, 41)),
    "delete_gap": (delete_gap, range(1, 41)),
    "delete_renumbered": (delete_renumbered, range(1, 40)),
    "delete_renumbered_column": (delete_renumbered_column, range(1, 40)),
    "insert_renumbered": (insert_renumbered, range(0, 41)),
    "insert_duplicate": (insert_duplicate, range(1, 41)),
    "swap_any": (swap_any, range(0, 41)),
    "swap_seq_column": (swap_seq_column, range(0, 41)),
}

# What gives each kind away first: a row that contradicts itself, or a broken link
# (the last event of the log has no successor: only the checkpoint's root and head
# show it, as a range).
EVIDENCE = {
    "modify_naive": {"event_hash"}, "modify_rehashed": {"chain", "head", "root"},
    "modify_column": {"columns"}, "respelled": {"event"}, "delete_gap": {"seq", "truncated"},
    "delete_renumbered": {"chain"}, "delete_renumbered_column": {"columns", "chain"},
    "insert_renumbered": {"chain", "init"},
    "insert_duplicate": {"seq"}, "swap_any": {"chain", "init"},
    "swap_seq_column": {"columns"},
}


CHECKPOINT_SIZES = (16, 25, 41)


def bounds(k: int) -> tuple[int, int]:
    """Where the checkpoints bound a consistent rewrite that reaches event k: after the
    last checkpoint it leaves intact, up to the last event of the first it changes."""
    return (max((c for c in CHECKPOINT_SIZES if c <= k), default=0),
            min(c for c in CHECKPOINT_SIZES if c > k) - 1)


def assert_first_bad(first, expected, why) -> None:
    """An int: that event, exactly; a (first, last) pair: that range, not exact."""
    assert first is not None, why
    if isinstance(expected, tuple):
        assert (first.seq, first.last, first.exact) == (*expected, False), (why, str(first))
        assert first.to_dict()["last_seq"] == expected[1]
    else:
        assert (first.seq, first.exact) == (expected, True), (why, str(first))


def rewrite(ledger: Ledger, name: str, rows: list[dict], rng: random.Random,
            trial: int) -> None:
    """Replace a table's contents the way someone with storage access can."""
    schema = AUDIT_SCHEMA if name == AUDIT else CHECKPOINT_SCHEMA
    rows = rows[:]
    rng.shuffle(rows)  # the order on disk means nothing
    data = pa.Table.from_pylist(rows, schema=schema)
    uri = ledger.uri(name)
    if trial % 2:  # recreate the table, append-only again
        shutil.rmtree(uri)
        write_deltalake(uri, data, configuration={"delta.appendOnly": "true"})
    else:  # turn the protection off, overwrite, turn it back on
        DeltaTable(uri).alter.set_table_properties({"delta.appendOnly": "false"})
        write_deltalake(uri, data, mode="overwrite")
        DeltaTable(uri).alter.set_table_properties({"delta.appendOnly": "true"})


def fresh_copy(pristine: dict, tmp_path: Path, trial: int) -> Ledger:
    target = tmp_path / f"trial-{trial}"
    shutil.copytree(pristine["root"] / "ledger", target)
    return Ledger(str(target))


def verify(pristine: dict, ledger: Ledger, held: str | None = None):
    return verify_log(ledger, [pristine["verifier"]], read_note_file(held or pristine["held"]))


# --- the trials -----------------------------------------------------------------------

def test_event_tampering_of_every_kind_names_the_first_bad_event(pristine, tmp_path):
    rng = random.Random(SEED)
    outcomes: Counter[str] = Counter()
    trial = 0
    for kind, (tamper, positions) in KINDS.items():
        for _ in range(ROUNDS):
            trial += 1
            ledger = fresh_copy(pristine, tmp_path, trial)
            k = rng.choice(positions)
            rows, expected = tamper(copy.deepcopy(pristine["rows"]), k, rng)
            rewrite(ledger, AUDIT, rows, rng, trial)
            result = verify(pristine, ledger)
            first = result.first_bad
            assert not result.ok and result.exit_code == 1, (kind, k)
            assert_first_bad(first, expected,
                             (kind, k, expected, [str(p) for p in result.problems[:5]]))
            assert first.check in EVIDENCE[kind], (kind, k, str(first))
            outcomes[kind] += 1
    assert sum(outcomes.values()) == len(KINDS) * ROUNDS == 55
    assert set(outcomes) == set(KINDS)


def test_truncation_with_the_checkpoints_cleaned_up_is_caught_by_the_held_file(pristine,
                                                                                tmp_path):
    rng = random.Random(SEED + 1)
    keeps = [(trial, rng.randrange(1, 41)) for trial in range(5)] + [(5, 25)]
    for trial, keep in keeps:
        ledger = fresh_copy(pristine, tmp_path, trial)
        rewrite(ledger, AUDIT, pristine["rows"][:keep], rng, trial)
        rewrite(ledger, CHECKPOINTS, [c for c in pristine["checkpoints"]
                                      if c["tree_size"] <= keep], rng, trial)
        result = verify(pristine, ledger)
        assert not result.ok
        assert result.first_bad is not None and result.first_bad.seq == keep
        assert [p.check for p in result.problems] == ["truncated"]
        # Without the held checkpoint: a table overwritten in place still has the
        # newest seal in its commit history, which covers the events that are gone;
        # one recreated without its history leaves events after the last checkpoint
        # that nothing signed vouches for; cut at a checkpoint, it looks whole (so
        # keep a checkpoint outside the ledger).
        alone = verify_log(ledger, [pristine["verifier"]])
        found = [(p.check, p.seq) for p in alone.problems]
        if trial % 2 == 0:
            assert found == [("truncated", keep)]
            assert "seal of audit commit" in alone.problems[0].message
        elif keep in CHECKPOINT_SIZES:
            assert alone.ok, found
        else:
            assert found == [("unvouched", max(c for c in (0, *CHECKPOINT_SIZES) if c <= keep))]


def test_altered_signatures_are_caught_and_name_the_checkpoint(pristine, tmp_path):
    rng = random.Random(SEED + 2)
    for trial in range(3):
        ledger = fresh_copy(pristine, tmp_path, trial)
        notes = copy.deepcopy(pristine["checkpoints"])
        victim = rng.randrange(len(notes))
        notes[victim]["note"] = flip_signature(notes[victim]["note"], rng)
        rewrite(ledger, CHECKPOINTS, notes, rng, trial)
        result = verify(pristine, ledger)
        assert [(p.check, p.tree_size) for p in result.problems] == \
            [("checkpoint.signature", notes[victim]["tree_size"])]
        assert "does not verify" in result.problems[0].message
        assert result.first_bad is None and result.exit_code == 1
    held = tmp_path / "held-altered.note"
    held.write_text(flip_signature(Path(pristine["held"]).read_text(), rng))
    result = verify(pristine, fresh_copy(pristine, tmp_path, 99), str(held))
    assert [(p.check, p.tree_size) for p in result.problems] == [("held.signature", 41)]


def flip_signature(note: str, rng: random.Random) -> str:
    import base64

    head, _, b64 = note.rstrip("\n").rpartition(" ")
    blob = bytearray(base64.b64decode(b64))
    blob[rng.randrange(4, len(blob))] ^= 1 << rng.randrange(8)
    return f"{head} {base64.b64encode(bytes(blob)).decode()}\n"


def test_a_consistent_rewrite_is_reported_as_the_range_it_lies_in(pristine, tmp_path):
    """Every hash and prev recomputed from event k on (to the end, or up to a later
    event whose prev is left pointing at the rewritten one): where the chain is whole,
    only the signed roots and heads show it, and they bound the first bad event to a
    range, from the last checkpoint that still matches to the first head that
    differs. That range is the answer (exact: false), in the JSON and the text."""
    rng = random.Random(SEED + 3)
    cases = [(k, 41) for k in (1, 15, 16, 24, 25, 40)] + [(3, 9), (17, 20)]
    for trial, (k, end) in enumerate(cases):
        ledger = fresh_copy(pristine, tmp_path, trial)
        rows = copy.deepcopy(pristine["rows"])
        for i in range(k, end):
            event = {**fields(rows[i]), "prev": rows[i - 1]["event_hash"]}
            if i == k:
                event["details"] = {**event["details"], "size": 10 ** 6}
            rows[i] = rebuilt(event)
        rewrite(ledger, AUDIT, rows, rng, trial)
        result = verify(pristine, ledger)
        lo, hi = bounds(k)
        if end < 41:  # the event after the run still names the original: exact
            assert_first_bad(result.first_bad, end - 1, (k, end))
            continue
        assert not result.ok and {p.check for p in result.problems} <= {"root", "head"}
        assert all(not p.exact and p.seq <= k <= p.last < p.tree_size
                   for p in result.problems), [str(p) for p in result.problems]
        assert_first_bad(result.first_bad, (lo, hi), k)
        summary = result.to_dict()
        assert summary["first_bad_seq"] == lo
        assert (summary["first_bad"]["seq"], summary["first_bad"]["last_seq"],
                summary["first_bad"]["exact"]) == (lo, hi, False)
        text = io.StringIO()
        result.render(text)
        assert f"first bad event: somewhere in seq {lo}..{hi}:" in text.getvalue()


def test_untouched_logs_rewritten_in_another_order_verify(pristine, tmp_path):
    rng = random.Random(SEED + 4)
    for trial in range(4):
        ledger = fresh_copy(pristine, tmp_path, trial)
        rewrite(ledger, AUDIT, pristine["rows"], rng, trial)
        rewrite(ledger, CHECKPOINTS, pristine["checkpoints"], rng, trial)
        result = verify(pristine, ledger)
        assert result.ok, [str(p) for p in result.problems]
        assert result.signatures_verified == 4 and result.size == 41


EDGES = [0, 1, 15, 16, 24, 25, 39, 40]  # both ends and both sides of each checkpoint


@pytest.mark.parametrize("kind", ["modify_rehashed", "delete_renumbered", "insert_renumbered",
                                  "delete_gap", "swap_any", "delete_renumbered_column"])
def test_tampering_at_the_ends_and_at_checkpoint_boundaries(pristine, tmp_path, kind):
    tamper, positions = KINDS[kind]
    rng = random.Random(SEED + 5)
    for trial, k in enumerate(k for k in EDGES if k in positions):
        ledger = fresh_copy(pristine, tmp_path, trial)
        rows, expected = tamper(copy.deepcopy(pristine["rows"]), k, rng)
        rewrite(ledger, AUDIT, rows, rng, trial)
        assert_first_bad(verify(pristine, ledger).first_bad, expected, (kind, k))


def test_a_deleted_event_with_the_seq_column_renumbered_is_named_where_it_was(pristine,
                                                                             tmp_path):
    """One row deleted, every later row's seq column lowered by one to close the gap,
    events untouched: seq stays contiguous and every later event still chains to its
    original predecessor, so the one link that breaks is at the deleted position, and
    that position (not the event before it) is the first bad one, at every position."""
    rng = random.Random(SEED + 6)
    for trial, k in enumerate(range(1, 40)):
        ledger = fresh_copy(pristine, tmp_path, trial)
        rows, _ = delete_renumbered_column(copy.deepcopy(pristine["rows"]), k, rng)
        rewrite(ledger, AUDIT, rows, rng, trial)
        result = verify(pristine, ledger)
        assert_first_bad(result.first_bad, k, k)
        chain = [p for p in result.problems if p.check == "chain"]
        assert [p.seq for p in chain] == [k] and "missing before it" in chain[0].message
