"""Reading the audit log for people: ``audit show`` and ``audit prove``.

``prove`` answers an auditor's question about one object ("show me that this
event is in the log you signed") with an RFC 6962 inclusion proof they can check
offline with sha256 and Ed25519 alone (docs/FORMAT.md, "Audit log").
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import pyarrow.compute as pc

from datamove.audit import merkle
from datamove.audit.note import NoteError, SignedCheckpoint
from datamove.audit.tables import AUDIT, CHECKPOINTS, read_table
from datamove.errors import EXIT_OBJECTS_FAILED, EXIT_OK, BadInput
from datamove.ledger.tables import Ledger

FORMATS = ("table", "json", "csv")


@dataclass
class ShowResult:
    """Events matching the filters, oldest first, as their canonical JSON text."""

    events: list[str]
    exit_code: int = EXIT_OK
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``--json``: the events as objects (``audit.events.canonical`` gives back the
        exact bytes that were hashed), their count and the exit code."""
        return {"events": [json.loads(text) for text in self.events],
                "count": len(self.events), "exit_code": self.exit_code}

    def render(self, out: TextIO, fmt: str = "table") -> None:
        if fmt == "json":  # JSON Lines: the exact bytes that were hashed
            for text in self.events:
                out.write(text + "\n")
            return
        parsed = [json.loads(text) for text in self.events]
        names = ["seq", "time", "action", "dataset", "key", "run_id", "actor", "details"]
        cells = [[_cell(e[n]) for n in names] for e in parsed]
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(names)
            writer.writerows(cells)
            return
        widths = [max([len(n), *(len(row[i]) for row in cells)]) for i, n in enumerate(names)]
        for row in [names, *cells]:
            out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                      + "\n")
        out.write(f"{len(cells)} events\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def show(ledger: Ledger, *, dataset: str | None = None, key: str | None = None,
         run_id: str | None = None, action: str | None = None, since: datetime | None = None,
         until: datetime | None = None) -> ShowResult:
    """Events filtered on their columns (``until`` is exclusive)."""
    conditions = [pc.field(name) == value for name, value in
                  (("dataset", dataset), ("key", key), ("run_id", run_id), ("action", action))
                  if value is not None]
    if since is not None:
        conditions.append(pc.field("time") >= since)
    if until is not None:
        conditions.append(pc.field("time") < until)
    where = None
    for condition in conditions:
        where = condition if where is None else where & condition
    rows = read_table(ledger, AUDIT, where, ["seq", "event"])
    return ShowResult(rows["event"].to_pylist())


@dataclass
class Proof:
    """An inclusion proof of one event under a signed checkpoint."""

    origin: str
    leaf_index: int
    tree_size: int
    event: str
    audit_path: list[str]
    root_hash: str
    checkpoint: str
    exit_code: int = EXIT_OK
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error, "exit_code": self.exit_code}
        return {"origin": self.origin, "leaf_index": self.leaf_index,
                "tree_size": self.tree_size, "event": self.event,
                "leaf_hash": merkle.leaf_hash(self.event.encode("utf-8")).hex(),
                "audit_path": self.audit_path, "root_hash": self.root_hash,
                "checkpoint": self.checkpoint, "exit_code": self.exit_code}

    def render(self, out: TextIO) -> None:
        if self.error:
            return
        out.write(f"event {self.leaf_index} of {self.origin}, under the checkpoint of "
                  f"{self.tree_size} events (root {self.root_hash})\n")
        out.write(f"event: {self.event}\n")
        out.write(f"audit path ({len(self.audit_path)} hashes, leaf first):\n")
        for h in self.audit_path:
            out.write(f"  {h}\n")
        out.write("checkpoint:\n" + "".join(f"  {line}".rstrip() + "\n"
                                            for line in self.checkpoint.splitlines()))


def _failed(message: str) -> Proof:
    return Proof("", -1, 0, "", [], "", "", exit_code=EXIT_OBJECTS_FAILED, error=message)


def prove(ledger: Ledger, key: str, *, dataset: str | None = None,
          held: SignedCheckpoint | None = None) -> Proof:
    """An inclusion proof for the latest event of ``key`` under the held checkpoint,
    or else the largest stored one that covers it.

    Exit 1 (a result) when the key has no event or the log does not match the
    checkpoint; BadInput (exit 2) when no checkpoint covers the event yet.
    """
    where = pc.field("key") == key
    if dataset is not None:
        where &= pc.field("dataset") == dataset
    found = read_table(ledger, AUDIT, where, ["seq"])
    if found.num_rows == 0:
        scope = f" in dataset {dataset!r}" if dataset else ""
        return _failed(f"no audit event for key {key!r}{scope}; see `datamove audit show "
                       f"MANIFEST --key KEY` (keys are relative to their dataset)")
    index = found["seq"].to_pylist()[-1]
    signed = held if held is not None else _covering_checkpoint(ledger, index)
    if signed is None or signed.body.size <= index:
        covered = f"the held checkpoint covers {signed.body.size} events" if signed else \
            "no stored checkpoint covers it"
        raise BadInput(f"event {index} of key {key!r} is not under a signed checkpoint "
                       f"({covered}); sign one with `datamove audit checkpoint MANIFEST`")
    body = signed.body
    rows = read_table(ledger, AUDIT, columns=["seq", "event"], sql_where=f"seq < {int(body.size)}")
    if rows["seq"].to_pylist() != list(range(body.size)):
        return _failed(f"the log's first {body.size} events are not seq 0..{body.size - 1}; "
                       "run `datamove audit verify`")
    events = rows["event"].to_pylist()
    leaves = [merkle.leaf_hash(text.encode("utf-8")) for text in events]
    path = merkle.inclusion_proof(index, leaves)
    if not merkle.verify_inclusion(index, body.size, leaves[index], path, body.root):
        return _failed(f"the log does not have the root signed for size {body.size}; "
                       "run `datamove audit verify`")
    return Proof(body.origin, index, body.size, events[index], [h.hex() for h in path],
                 body.root.hex(), signed.text)


def _covering_checkpoint(ledger: Ledger, index: int) -> SignedCheckpoint | None:
    """The largest stored checkpoint that parses and covers ``index``."""
    rows = read_table(ledger, CHECKPOINTS, columns=["tree_size", "note"],
                      sql_where=f"tree_size > {int(index)}").to_pylist()
    for row in reversed(rows):
        try:
            return SignedCheckpoint.parse(row["note"] or "")
        except NoteError:
            continue
    return None
