"""What a writer holding the signing key may continue from (docs/FORMAT.md, "What a
writer vouches for").

A writer with the key signs checkpoints over every event before its own, so
before it appends anything it makes sure each of those is one it can vouch for:

* the newest signed checkpoint (this key, this log) and the newest seal in the
  table's recent commits (seal.py) are read, each checked against the event at
  its size (the head it signed); a signed size beyond the table's end means
  events were removed;
* the events since that checkpoint must recompute (rows, hashes, seq, links,
  the first one chained to the checkpoint's head);
* every event must be under the checkpoint or the seal: events after both were
  written by no writer holding the key (forged, or by a datamove without the
  key or with another one), and are refused rather than adopted;
* the Merkle frontier it goes on from is the seal's (signed), or one whose root
  is the checkpoint's signed root, never unsigned commit metadata alone.

Anything else raises (exit 2) before a byte is written. :func:`open_vouched`
with ``adopt_through`` is the one way past an unvouched tail: `datamove audit
acknowledge`, which records the adopted range in the log itself (log.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from datamove.audit import merkle
from datamove.audit.events import ZERO_HASH
from datamove.audit.note import NoteError, SignedCheckpoint, Verifier
from datamove.audit.seal import SEAL_HISTORY, newest_seal
from datamove.audit.tables import (
    AUDIT,
    CHECKPOINTS,
    META_FRONTIER,
    META_SIZE,
    AuditDamaged,
    Head,
    event_hashes,
    read_ends,
    read_table,
    rebuild_frontier,
    table_size,
)
from datamove.audit.verify import verify_tail
from datamove.errors import BadInput
from datamove.ledger.tables import Ledger

VERIFY_HINT = "Run `datamove audit verify MANIFEST --pubkey VERIFIER_KEY` to see it"
ASIDE_HINT = ("then restore the audit tables from a backup, or move <ledger>/audit and "
              "<ledger>/audit_checkpoints aside (keep them as evidence) to start a new log")


class AuditUnvouched(BadInput):
    """Events after everything the signing key vouches for; the writer refuses them."""

    def __init__(self, message: str, first_seq: int, last_seq: int):
        super().__init__(message)
        self.first_seq = first_seq
        self.last_seq = last_seq


@dataclass
class Opened:
    """Where a keyed writer goes on from, and what it adopted unvouched (if asked)."""

    head: Head
    checkpoint_size: int  # the newest checkpoint this key signed for this log
    checkpoint_note: str | None
    adopted: tuple[int, int] | None = None  # first and last seq adopted unvouched
    vouched_by: str | None = None  # what vouched for the events before the adopted ones


def open_vouched(ledger: Ledger, verifier: Verifier, *,
                 adopt_through: int | None = None) -> Opened:
    """The head a writer with ``verifier``'s signing key may continue from.

    ``adopt_through``: the last seq of an unvouched tail to adopt (it must be the
    log's last event, and the tail must recompute); BadInput if there is none.
    """
    where = f"audit log {ledger.uri(AUDIT)}"
    table = ledger.table(AUDIT)
    size = table_size(table) if table is not None else 0
    origin, head = read_ends(ledger, size) if size else (None, ZERO_HASH)
    checkpoint = _newest_checkpoint(ledger, verifier, origin)
    if size == 0:
        if checkpoint is not None:
            raise AuditDamaged(f"{where} has no events, but a checkpoint signed by this key "
                               f"covers {checkpoint.body.size}: the log was deleted. Refusing "
                               f"to start another over it; {ASIDE_HINT}")
        if adopt_through is not None:
            raise BadInput(f"{where} has no events: nothing to acknowledge")
        return Opened(Head(0, ZERO_HASH, merkle.Frontier(), None), 0, None)
    seal = newest_seal(table, origin, [verifier])
    signed: list[tuple[int, str, str]] = []  # (size, head, what signed it)
    if checkpoint is not None:
        signed.append((checkpoint.body.size, checkpoint.body.head, "checkpoint"))
    if seal is not None:
        signed.append((seal.size, seal.head, "seal"))
    _check_signed_heads(ledger, where, size, signed)

    start = checkpoint.body.size if checkpoint else 0
    tail, leaves = verify_tail(ledger, start, checkpoint.body.head if checkpoint else ZERO_HASH,
                               {at: signed_head for at, signed_head, _ in signed})
    first = tail.first_bad
    if first is not None or tail.problems:
        what = f"seq {first.seq}: {first.message}" if first else str(tail.problems[0])
        raise AuditDamaged(f"{where}: the events since the last signed checkpoint (size "
                           f"{start}) do not verify: {what}. Refusing to append to it or to "
                           f"sign over it; nothing was written. {VERIFY_HINT}; {ASIDE_HINT}")

    vouched = max(start, seal.size if seal else 0)
    by = "seal" if seal is not None and seal.size == vouched and vouched > start else \
        "checkpoint" if checkpoint is not None else None
    adopted = None
    if vouched < size:
        if adopt_through is None:
            raise _unvouched(where, vouched, size - 1, by)
        if adopt_through != size - 1:
            raise BadInput(f"{where}: --through {adopt_through} is not the log's last event: "
                           f"the unvouched events are seq {vouched}..{size - 1}; if that is "
                           f"more than you investigated, look at the rest first. {VERIFY_HINT}")
        adopted = (vouched, size - 1)
    elif adopt_through is not None:
        raise BadInput(f"{where}: nothing to acknowledge: every event is under a checkpoint "
                       "or seal of this signing key")

    if seal is not None and seal.size == vouched:
        frontier = merkle.Frontier(seal.size, seal.frontier.hashes)
    elif checkpoint is not None:
        frontier = _frontier_at(ledger, table, checkpoint, where)
    else:
        frontier = merkle.Frontier()
    for leaf in leaves[frontier.size - start:]:  # the adopted events, if any
        frontier.append(leaf)
    return Opened(Head(size, head, frontier, origin), start,
                  checkpoint.text if checkpoint else None, adopted, by)


def _unvouched(where: str, first: int, last: int, by: str | None) -> AuditUnvouched:
    after = f"the last {by} of this signing key (size {first})" if by else \
        "the start of the log (nothing in it is signed by this key)"
    events = f"event {first} comes" if first == last else \
        f"{last - first + 1} events, seq {first}..{last}, come"
    return AuditUnvouched(
        f"{where}: {events} after {after} and no datamove writer holding the key vouches "
        "for them: appended by someone with "
        "write access to the storage, or written by a datamove without the signing key or "
        "with another one. Refusing to append and to sign a checkpoint over them; nothing "
        f"was written. {VERIFY_HINT}, and `datamove audit show MANIFEST --format json` to "
        "read them. If they are not yours, keep the tables as evidence and restore the audit "
        "tables from a backup (or move <ledger>/audit and <ledger>/audit_checkpoints aside "
        "to start a new log). If you have established where they came from, record that you "
        f"adopt them unvouched: `datamove audit acknowledge MANIFEST --through {last} "
        "--reason TEXT`.", first, last)


def _newest_checkpoint(ledger: Ledger, verifier: Verifier,
                       origin: str | None) -> SignedCheckpoint | None:
    """The largest stored checkpoint of this log that ``verifier`` signed."""
    rows = read_table(ledger, CHECKPOINTS, columns=["tree_size", "note"]).to_pylist()
    for row in reversed(rows):
        try:
            signed = SignedCheckpoint.parse(row["note"] or "")
        except NoteError:
            continue
        if signed.note.verified_by(verifier) and (origin is None or
                                                   signed.body.origin == origin):
            return signed
    return None


def _check_signed_heads(ledger: Ledger, where: str, size: int,
                        signed: list[tuple[int, str, str]]) -> None:
    """Each signed (size, head) must still be the log's: not past its end, and the
    event at that size the one that was signed."""
    for at, _, what in signed:
        if at > size:
            raise AuditDamaged(f"{where}: a {what} of this signing key covers {at} events but "
                               f"the log has {size}: events {size}..{at - 1} were removed. "
                               f"Refusing to continue it; nothing was written. {VERIFY_HINT}; "
                               f"{ASIDE_HINT}")
    found = event_hashes(ledger, [at - 1 for at, _, _ in signed if at])
    for at, head, what in signed:
        if at and found.get(at - 1) != head:
            raise AuditDamaged(f"{where}: event {at - 1} is not the one the {what} of this "
                               f"signing key at size {at} signed (changed, removed or "
                               f"duplicated). Refusing to continue the log; nothing was "
                               f"written. {VERIFY_HINT}; {ASIDE_HINT}")


def _frontier_at(ledger: Ledger, table: object, checkpoint: SignedCheckpoint,
                 where: str) -> merkle.Frontier:
    """The frontier at the checkpoint's size whose root is its signed root: from a
    recent commit's metadata when one has it, else from the events."""
    size, root = checkpoint.body.size, checkpoint.body.root
    for commit in table.history(SEAL_HISTORY):  # type: ignore[attr-defined]
        if commit.get(META_SIZE) == str(size) and META_FRONTIER in commit:
            try:
                frontier = merkle.Frontier.decode(size, commit[META_FRONTIER])
            except ValueError:
                continue
            if frontier.root() == root:
                return frontier
    frontier = rebuild_frontier(ledger, size)
    if frontier.root() != root:
        raise AuditDamaged(f"{where}: its first {size} events do not have the Merkle root "
                           f"the checkpoint of this signing key signed. Refusing to continue "
                           f"it; nothing was written. {VERIFY_HINT}; {ASIDE_HINT}")
    return frontier
