"""Offline verification of the audit log: chain, Merkle roots, signed checkpoints.

What is checked, and why each check exists:

* every row: seq contiguous from 0, the event text is canonical JSON with the
  event fields, ``event_hash`` = sha256(event), and the columns repeat the JSON
  (a reader filtering on columns must see what was hashed);
* the chain: each event's ``prev`` is the hash of the event before it, so an
  event cannot be changed, removed, added or moved without breaking a link;
* every stored checkpoint: its columns match its note, its origin is this log's,
  its root is the Merkle root of the first ``tree size`` events and its head the
  hash of the last of them, and its signature verifies with the verifier key;
* a checkpoint the auditor held outside the ledger: the log is at least that
  long and its first ``tree size`` events have that root (so truncating the
  tail, or rewriting the log and its stored checkpoints, is caught).

* with a verifier key: the events after the last checkpoint or seal (seal.py)
  it verifies are named as unvouched: nothing but the storage stands behind them.

Where a link breaks, the event named is the one the evidence points at: an
event whose own seq jumps past its predecessor's, with a ``prev`` that does not
match, has events missing before it (deleted, the seq column renumbered to hide
the gap); an event whose successor still vouches for it is original, so the
break is blamed on its predecessor (changed); a ``prev`` that skips one event
blames the skipped one (inserted); otherwise the event whose ``prev`` is wrong.
A run of events rewritten consistently (hashes and prevs recomputed, a change to
the last event with its hash recomputed being the shortest such run) leaves the
chain whole: only a signed root and head differ, which bound the run to a
range, from the last checkpoint that still matches to the differing head, and
that range is reported (``exact`` False, ``seq`` and ``last_seq``), never a guess
inside it. Verification failures are a result (exit 1), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TextIO

import pyarrow as pa

from datamove.audit import merkle
from datamove.audit.events import (
    ACKNOWLEDGED,
    INIT_ACTION,
    ZERO_HASH,
    EventError,
    parse_event,
    parse_time,
    sha256_hex,
)
from datamove.audit.note import Checkpoint, Note, NoteError, SignedCheckpoint, Verifier
from datamove.audit.seal import newest_seal
from datamove.audit.tables import AUDIT, CHECKPOINTS, read_table
from datamove.errors import EXIT_OBJECTS_FAILED, EXIT_OK
from datamove.ledger.tables import Ledger

MAX_PROBLEMS = 1_000  # a renumbered tail breaks every later link; the first ones matter


@dataclass
class Problem:
    """One thing wrong. ``seq``: the event it names. ``exact`` False when the
    evidence only bounds the damage to the events ``seq``..``last_seq`` (a signed
    root or head that differs while the chain recomputes)."""

    check: str
    message: str
    seq: int | None = None
    tree_size: int | None = None
    exact: bool = True
    last_seq: int | None = None  # the end of a range; None: just ``seq``

    @property
    def last(self) -> int | None:
        return self.seq if self.last_seq is None else self.last_seq

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "message": self.message, "seq": self.seq,
                "last_seq": self.last, "tree_size": self.tree_size, "exact": self.exact}

    def __str__(self) -> str:
        where = (f"seq {self.seq}..{self.last}" if self.seq is not None and
                 self.last != self.seq else f"seq {self.seq}" if self.seq is not None else
                 f"checkpoint {self.tree_size}" if self.tree_size is not None else "log")
        return f"{where}: {self.message}"


@dataclass
class VerifyResult:
    ledger: str
    size: int = 0
    origin: str | None = None
    checkpoints: int = 0
    signatures_verified: int = 0
    held_size: int | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    omitted: int = 0  # problems beyond MAX_PROBLEMS
    acknowledged: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_OBJECTS_FAILED

    @property
    def first_bad(self) -> Problem | None:
        """Where the damage starts: the earliest event named exactly, unless a
        range ends before it (then a bad event certainly comes earlier, somewhere
        in the range that ends first)."""
        named = [p for p in self.problems if p.seq is not None]
        exact = min((p for p in named if p.exact), key=lambda p: p.seq, default=None)
        ranges = min((p for p in named if not p.exact), key=lambda p: (p.last, -p.seq),
                     default=None)
        if ranges is not None and (exact is None or ranges.last < exact.seq):
            return ranges
        return exact

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.omitted += 1

    def to_dict(self) -> dict[str, Any]:
        first = self.first_bad
        return {"ledger": self.ledger, "ok": self.ok, "events": self.size,
                "origin": self.origin, "checkpoints": self.checkpoints,
                "signatures_verified": self.signatures_verified,
                "held_checkpoint_size": self.held_size,
                "first_bad_seq": first.seq if first else None,
                "first_bad": first.to_dict() if first else None,
                "problems": [p.to_dict() for p in self.problems],
                "problems_omitted": self.omitted, "notes": self.notes,
                "acknowledged": self.acknowledged, "exit_code": self.exit_code}

    def render(self, out: TextIO) -> None:
        out.write(f"audit log {self.ledger}: {self.size} events, origin {self.origin}\n")
        held = f", held checkpoint at size {self.held_size}" if self.held_size else ""
        out.write(f"checkpoints: {self.checkpoints} stored, {self.signatures_verified} "
                  f"signatures verified{held}\n")
        for note in self.notes:
            out.write(f"note: {note}\n")
        if self.ok:
            out.write("OK: chain, Merkle roots and checkpoints verify\n")
            return
        first = self.first_bad
        out.write(f"FAILED: {len(self.problems) + self.omitted} problems\n")
        if first is not None:
            at = f"seq {first.seq}" if first.exact else \
                f"somewhere in seq {first.seq}..{first.last}"
            out.write(f"first bad event: {at}: {first.message}\n")
        for problem in self.problems[:20]:
            out.write(f"  {problem}\n")
        if len(self.problems) + self.omitted > 20:
            out.write(f"  … and {len(self.problems) + self.omitted - 20} more\n")


@dataclass
class _Entry:
    seq: int
    hash: str
    prev: str
    gap_before: bool
    claimed: int | None  # the seq the event itself says (None: unreadable)


def verify_log(ledger: Ledger, verifiers: list[Verifier] | None = None,
               held: SignedCheckpoint | None = None) -> VerifyResult:
    """Verify the audit log of ``ledger``; ``held``: a checkpoint kept by the auditor."""
    verifiers = verifiers or []
    result = VerifyResult(ledger.url)
    # What the storage holds now, never a table this process opened before
    # (Ledger.table brings those up to date, which misses a table replaced since).
    for name in (AUDIT, CHECKPOINTS):
        ledger.forget(name)
    entries, leaves, fields0 = _check_rows(read_table(ledger, AUDIT), result)
    result.size = len(entries)
    result.origin = _origin(fields0, result)
    stored, vouching = _stored_checkpoints(ledger, result, verifiers)
    if held is not None:
        result.held_size = held.body.size
        if _check_signature(held.note, "held checkpoint", held.body.size, verifiers, result):
            vouching.append(held.body.size)
        if held.body.origin != result.origin:
            result.add(Problem("held.origin", f"held checkpoint is for log {held.body.origin}, "
                               f"not {result.origin}", tree_size=held.body.size))
        stored.append((held.body, "held checkpoint"))
    seal = newest_seal(ledger.table(AUDIT), result.origin, verifiers)
    if seal is not None and result.origin is not None:
        vouching.append(seal.size)
        body = seal.checkpoint(result.origin)
        if all(cp != body for cp, _ in stored):  # says more than the checkpoints
            stored.append((body, f"seal of audit commit {seal.version}"))
    heads = {cp.size: cp.head for cp, _ in stored}
    _check_chain(entries, heads, result)
    _check_trees(stored, entries, leaves, result)
    _check_vouched(entries, vouching, bool(verifiers), result)
    if not entries:
        result.notes.append(f"the audit log has no events ({ledger.uri(AUDIT)})")
    if not verifiers:
        result.notes.append("checkpoint signatures and seals not checked: no verifier key "
                            "given")
    if not stored:
        result.notes.append("no signed checkpoint: a rewrite of the whole log or of its "
                            "tail cannot be told from the original")
    return result


def verify_tail(ledger: Ledger, start: int, before: str, heads: dict[int, str]
                ) -> tuple[VerifyResult, list[bytes]]:
    """The per-row and chain checks of the events from seq ``start`` on, the first of
    which must have ``prev`` = ``before`` (the head of a checkpoint at size ``start``);
    ``heads``: the signed head hash at each tree size known. For a writer about to
    continue the log (vouch.py); returns the leaf hashes too."""
    result = VerifyResult(ledger.url)
    rows = read_table(ledger, AUDIT, sql_where=f"seq >= {int(start)}")
    entries, leaves, _ = _check_rows(rows, result, start)
    _check_chain(entries, heads, result, before)
    result.size = start + len(entries)
    return result, leaves


def _check_rows(rows: pa.Table, result: VerifyResult, start: int = 0
                ) -> tuple[list[_Entry], list[bytes], dict[str, Any] | None]:
    """Per-row checks of rows in seq order from ``start``; returns the chain entries,
    leaf hashes and event 0's fields."""
    columns = {name: rows[name].to_pylist() for name in rows.column_names}
    entries: list[_Entry] = []
    leaves: list[bytes] = []
    fields0: dict[str, Any] | None = None
    expected = start
    for i, seq in enumerate(columns["seq"]):
        if seq is None or seq < expected:
            result.add(Problem("seq", f"seq {seq} appears more than once" if seq is not None
                               else "a row has no seq", seq=seq))
            continue
        if seq > expected:
            missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            result.add(Problem("seq", f"event {missing} missing (deleted?)", seq=expected))
        text = columns["event"][i] or ""
        data = text.encode("utf-8")
        digest = sha256_hex(data)
        fields: dict[str, Any] | None = None
        try:
            fields = parse_event(text)
        except EventError as exc:
            result.add(Problem("event", f"event text is damaged: {exc}", seq=seq))
        if columns["event_hash"][i] != digest:
            result.add(Problem("event_hash", "event_hash is not sha256 of the event text "
                               "(the event was changed)", seq=seq))
        prev = fields["prev"] if fields else columns["prev_hash"][i]
        if fields is not None:
            for what in _column_mismatches(fields, columns, i):
                result.add(Problem("columns", what, seq=seq))
            if seq == 0:
                fields0 = fields
            if fields["action"] == ACKNOWLEDGED:
                _acknowledged(seq, fields, result)
        entries.append(_Entry(seq, digest, prev, seq != expected,
                              fields["seq"] if fields else None))
        leaves.append(merkle.leaf_hash(data))
        expected = seq + 1
    return entries, leaves, fields0


def _acknowledged(seq: int, fields: dict[str, Any], result: VerifyResult) -> None:
    details = fields["details"]
    entry = {"seq": seq, "first_seq": details.get("first_seq"),
             "last_seq": details.get("last_seq"), "actor": fields["actor"],
             "time": fields["time"], "reason": details.get("reason")}
    result.acknowledged.append(entry)
    result.notes.append(f"events {entry['first_seq']}..{entry['last_seq']} were adopted "
                        f"without a seal or checkpoint vouching for them, by {entry['actor']} "
                        f"at seq {seq} ({entry['time']}): {entry['reason']}")


def _column_mismatches(fields: dict[str, Any], columns: dict[str, list[Any]],
                       i: int) -> list[str]:
    out = []
    if fields["seq"] != columns["seq"][i]:
        why = ("an event before it deleted and the seq column renumbered, or moved?"
               if fields["seq"] > columns["seq"][i] else "moved?")
        out.append(f"row seq {columns['seq'][i]} but the event says seq {fields['seq']} "
                   f"({why})")
    if fields["prev"] != columns["prev_hash"][i]:
        out.append("prev_hash column differs from the event's prev")
    column_time = columns["time"][i]
    if column_time is None or parse_time(fields["time"]) != column_time:
        out.append(f"time column {column_time} differs from the event's {fields['time']}")
    for name in ("run_id", "action", "dataset", "key"):
        if fields[name] != columns[name][i]:
            out.append(f"{name} column {columns[name][i]!r} differs from the event's "
                       f"{fields[name]!r}")
    return out


def _origin(fields0: dict[str, Any] | None, result: VerifyResult) -> str | None:
    if fields0 is None:
        return None
    details = fields0["details"]
    if fields0["action"] != INIT_ACTION or not isinstance(details.get("origin"), str):
        result.add(Problem("init", f"event 0 is not {INIT_ACTION} with an origin", seq=0))
        return None
    return details["origin"]


def _check_chain(entries: list[_Entry], heads: dict[int, str], result: VerifyResult,
                 before: str = ZERO_HASH) -> None:
    def vouched(p: int) -> bool:  # does something later still commit to entry p's hash?
        if heads.get(entries[p].seq + 1) == entries[p].hash:
            return True
        return p + 1 < len(entries) and not entries[p + 1].gap_before \
            and entries[p + 1].prev == entries[p].hash

    def hash_before(p: int) -> str:  # what entry p's prev must be
        return entries[p - 1].hash if p else before

    def jumps(p: int) -> bool:  # entry p says it comes more than one after entry p - 1
        said, said_before = entries[p].claimed, entries[p - 1].claimed
        return said is not None and said_before is not None and said > said_before + 1

    for p, entry in enumerate(entries):
        if entry.prev == hash_before(p) or entry.gap_before:
            continue  # a gap is reported once, as the missing seq
        if p >= 1 and entry.prev == hash_before(p - 1):
            blamed, why = p - 1, (f"not in the chain: event {entry.seq}'s prev skips it "
                                  "(inserted?)")
        elif p >= 1 and jumps(p):
            blamed, why = p, (f"events are missing before it: it says it is seq "
                              f"{entry.claimed}, after seq {entries[p - 1].claimed}, and its "
                              f"prev is not the hash of event {entries[p - 1].seq} (deleted, "
                              "and the seq column renumbered to close the gap?)")
        elif p >= 1 and vouched(p):
            blamed, why = p - 1, (f"hash differs from the prev recorded by event {entry.seq} "
                                  "(changed?)")
        else:
            blamed, why = p, (f"prev is not the hash of event {entries[p - 1].seq}" if p else
                              "prev of the first event is not 64 zeros" if before == ZERO_HASH
                              else "prev is not the head of the last signed checkpoint")
        result.add(Problem("chain", why, seq=entries[blamed].seq))


def _stored_checkpoints(ledger: Ledger, result: VerifyResult, verifiers: list[Verifier]
                        ) -> tuple[list[tuple[Checkpoint, str]], list[int]]:
    """The stored checkpoints that parse, and the sizes of those a verifier signed."""
    rows = read_table(ledger, CHECKPOINTS).to_pylist()
    result.checkpoints = len(rows)
    parsed = []
    signed_sizes = []
    for row in rows:
        size = row["tree_size"]
        try:
            signed = SignedCheckpoint.parse(row["note"] or "")
        except NoteError as exc:
            result.add(Problem("checkpoint.note", f"stored note is damaged: {exc}",
                               tree_size=size))
            continue
        body = signed.body
        if (body.size, body.root.hex(), body.head) != \
                (size, row["root_hash"], row["head_hash"]):
            result.add(Problem("checkpoint.columns", "tree_size, root_hash or head_hash "
                               "column differs from the signed note", tree_size=size))
        if body.origin != result.origin:
            result.add(Problem("checkpoint.origin", f"origin {body.origin} is not this "
                               f"log's ({result.origin})", tree_size=body.size))
        if _check_signature(signed.note, "checkpoint", body.size, verifiers, result):
            signed_sizes.append(body.size)
        parsed.append((body, "checkpoint"))
    return parsed, signed_sizes


def _check_signature(note: Note, what: str, size: int, verifiers: list[Verifier],
                     result: VerifyResult) -> bool:
    """Whether one of ``verifiers`` signed ``note`` (a problem is added if none did)."""
    if not verifiers:
        return False
    answers = [note.verified_by(v) for v in verifiers]
    if any(answers):
        result.signatures_verified += 1
        return True
    if False in answers:
        result.add(Problem(f"{what.split()[0]}.signature", f"{what} signature does not "
                           "verify (the note or its signature was altered)", tree_size=size))
    else:
        names = ", ".join(v.name for v in verifiers)
        result.add(Problem(f"{what.split()[0]}.signature",
                           f"{what} is not signed by {names}", tree_size=size))
    return False


def _check_trees(checkpoints: list[tuple[Checkpoint, str]], entries: list[_Entry],
                 leaves: list[bytes], result: VerifyResult) -> None:
    """Each checkpoint's root and head against the events (one pass over the leaves)."""
    n = len(leaves)
    wanted = sorted({cp.size for cp, _ in checkpoints if cp.size <= n})
    roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT}
    frontier = merkle.Frontier()
    for size in wanted:
        while frontier.size < size:
            frontier.append(leaves[frontier.size])
        roots[size] = frontier.root()
    matched = sorted(cp.size for cp, _ in checkpoints
                     if cp.size <= n and roots[cp.size] == cp.root)
    for cp, what in checkpoints:
        if cp.size > n:
            result.add(Problem("truncated", f"{what} at size {cp.size} but the log has "
                               f"{n} events: events {n}..{cp.size - 1} are gone "
                               "(truncated?)", seq=n, tree_size=cp.size))
            continue
        if not cp.size:
            continue
        # Events before the largest size whose root still matches are intact; the
        # damage is in [start, last], and where the chain recomputes it cannot be
        # pinned closer: a consistent rewrite of any run ending at `last` looks alike.
        start = entries[max([m for m in matched if m < cp.size], default=0)].seq
        last = entries[cp.size - 1].seq
        if entries[cp.size - 1].hash != cp.head:
            result.add(Problem("head", f"event {last} is not the one the {what} at size "
                               f"{cp.size} signed (its hash differs from the signed head): "
                               f"rewritten events end there and start in {start}..{last}",
                               seq=start, last_seq=last, tree_size=cp.size, exact=False))
        if roots[cp.size] != cp.root:
            result.add(Problem("root", f"the first {cp.size} events do not have the Merkle "
                               f"root of the {what}: an event in {start}..{last} differs",
                               seq=start, last_seq=last, tree_size=cp.size, exact=False))


def _check_vouched(entries: list[_Entry], vouching: list[int], keyed: bool,
                   result: VerifyResult) -> None:
    """Events after everything a verifier key signed (checkpoints, the newest seal)
    have only the storage behind them: a problem when a key was given to check."""
    top = max(vouching, default=0)
    if top >= len(entries):
        return
    if not keyed:
        return  # the note that nothing was checked says it
    first, last = entries[top].seq, entries[-1].seq
    events = f"event {first} comes" if first == last else f"events {first}..{last} come"
    result.add(Problem("unvouched", f"{events} after the last signed "
                       f"checkpoint or seal (size {top}): no datamove writer holding the "
                       "signing key vouches for them (appended by someone with write access "
                       "to the storage, or written without the key or with another one?); "
                       "docs/FORMAT.md, 'What a writer vouches for', says what to do",
                       seq=first, last_seq=last))
