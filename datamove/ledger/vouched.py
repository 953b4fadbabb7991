"""Does the ledger still hold what the audit log vouches for? Asked before a writing
command (``run``, ``archive``, ``keys rotate``) records anything.

The audit log beside the ledger (``<ledger>/audit``) gets a ``run.end`` event for
every writing command that finished, after the command's ``end`` row was
committed to the ``runs`` table; each ``end`` row says how many ``objects``
commits the run made (``objects_commits``: its app transaction versions 1..n).
A ledger restored from an older backup, or one whose last commits or whole
tables vanished, therefore lacks an ``end`` row the audit log knows about, or an
``objects`` commit its own ``end`` row counts. Recording on top of it would
silently redo what it forgot: copy and verify again, or copy archived objects
back to the hot tier. So such a ledger is refused (exit 2) unless the operator
names the newest lost run in ``DATAMOVE_ACCEPT_LEDGER_LOSS``; the lost runs then
get a ``lost`` row in ``runs`` and are not asked about again (docs/FORMAT.md,
"A damaged ledger").

Reads the audit table as the Delta table FORMAT.md documents (``seq``,
``run_id``, ``action``, ``time``, ``event``), through delta-rs' SQL engine, and
only the columns it needs; it never writes there. Pure functions of the tables:
ledger/tables.py decides when to call them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from datamove.ledger.damage import LedgerDamaged, shown

AUDIT = "audit"
WRITING_COMMANDS = frozenset({"run", "archive", "rotate"})
ACCEPT_ENV = "DATAMOVE_ACCEPT_LEDGER_LOSS"
NEWEST_CHECKED = 20
"""End rows whose objects commits are checked, newest first. A log loses its newest
commits first, and runs hold the ledger lock one at a time, so the newest runs that
wrote objects rows are the ones to look at."""


class LedgerBehind(LedgerDamaged):
    """The ledger lacks records the audit log vouches for."""


@dataclass(frozen=True)
class Lost:
    """A finished run whose records the ledger lost."""

    run_id: str
    ended: datetime | None
    what: str  # what is missing, for people
    start: dict[str, Any] | None = None  # its run.start event, as the audit log has it
    end: dict[str, Any] | None = None  # its run.end event


def find_lost(audit: Any, runs: Any, objects: Any) -> list[Lost]:
    """Runs the ledger lost records of, oldest first; the arguments are the ledger's
    DeltaTables (None for a table that does not exist)."""
    ledger_runs = _runs_rows(runs)
    have_end = {r["run_id"] for r in ledger_runs if r["event"] == "end"}
    accepted = {r.get("lost_run_id") for r in ledger_runs if r["event"] == "lost"}
    lost = [run for run in _ended_in_audit(audit, have_end | accepted)]
    ends = sorted((r for r in ledger_runs if r["event"] == "end" and r["run_id"] not in accepted
                   and (r.get("objects_commits") or 0) > 0),
                  key=lambda r: r["ended_at"] or datetime.min.replace(tzinfo=UTC),
                  reverse=True)
    for row in ends[:NEWEST_CHECKED]:
        have = (objects.transaction_version(f"datamove:{row['run_id']}") or 0) \
            if objects is not None else 0
        if have < row["objects_commits"]:
            lost.append(Lost(row["run_id"], row["ended_at"],
                             f"the objects table holds {have} of its "
                             f"{row['objects_commits']} commits"))
    return sorted(lost, key=lambda run: run.ended or datetime.min.replace(tzinfo=UTC))


def _runs_rows(runs: Any) -> list[dict[str, Any]]:
    if runs is None:
        return []
    names = {f.name for f in runs.schema().fields}
    wanted = [c for c in ("run_id", "event", "ended_at", "objects_commits", "lost_run_id")
              if c in names]
    return _query(runs, f"SELECT {', '.join(f'{c!r}'.replace(chr(39), chr(34)) for c in wanted)} "
                        "FROM t").to_pylist()


def _ended_in_audit(audit: Any, known: set[str]) -> list[Lost]:
    """Writing commands the audit log says ended, without an end (or lost) row."""
    if audit is None:
        return []
    ended = _query(audit, "SELECT seq, run_id FROM t WHERE action = 'run.end'").to_pylist()
    missing = {row["run_id"]: row["seq"] for row in ended if row["run_id"] not in known}
    if not missing:
        return []
    starts = _query(audit, "SELECT seq, run_id FROM t WHERE action = 'run.start'").to_pylist()
    start_seq = {row["run_id"]: row["seq"] for row in starts if row["run_id"] in missing}
    events = _events(audit, [*missing.values(), *start_seq.values()])
    lost = []
    for run_id, seq in missing.items():
        start = events.get(start_seq.get(run_id, -1))
        command = ((start or {}).get("details") or {}).get("command")
        if command in WRITING_COMMANDS:  # restore and drill write no ledger rows
            end = events.get(seq)
            lost.append(Lost(run_id, _time(end), "the runs table has no end row for it",
                             start, end))
    return lost


def _events(audit: Any, seqs: list[int]) -> dict[int, dict[str, Any]]:
    """The canonical JSON of the events at ``seqs``, parsed (a few: two per lost run)."""
    if not seqs:
        return {}
    listed = ", ".join(str(int(s)) for s in seqs)
    rows = _query(audit, f"SELECT seq, event FROM t WHERE seq IN ({listed})").to_pylist()
    out = {}
    for row in rows:
        try:
            out[row["seq"]] = json.loads(row["event"])
        except (TypeError, ValueError):
            out[row["seq"]] = {}
    return out


def _query(table: Any, sql: str) -> pa.Table:
    """A query through delta-rs (not a pyarrow scan: see audit/tables.py, read_table)."""
    from deltalake import QueryBuilder

    return pa.table(QueryBuilder().register("t", table).execute(sql))


def _time(event: dict[str, Any] | None) -> datetime | None:
    text = (event or {}).get("time")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def accepted(lost: list[Lost]) -> bool:
    """The operator named the newest lost run in DATAMOVE_ACCEPT_LEDGER_LOSS."""
    return bool(lost) and os.environ.get(ACCEPT_ENV, "").strip() == lost[-1].run_id


def refusal(ledger_url: str, lost: list[Lost]) -> LedgerBehind:
    newest = lost[-1]
    when = f" at {newest.ended:%Y-%m-%d %H:%M:%SZ}" if newest.ended else ""
    older = len(lost) - 1
    more = (f" ({older} older run{'s' * (older != 1)} lost records too)" if older else "")
    return LedgerBehind(
        f"ledger {shown(ledger_url)} lost records the audit log vouches for: run "
        f"{newest.run_id} finished{when}, but {newest.what}{more}. The ledger was "
        "probably restored from an older backup or lost its last commits; recording on "
        "top of it would copy or verify again what it forgot. Nothing was written. "
        "Restore the ledger's tables from a backup taken after that run and run the "
        "command again; or, to go on without those records (the next run verifies what "
        "is at the destinations and copies what is not), run it again with "
        f"{ACCEPT_ENV}={newest.run_id}: the loss is then recorded in the runs table "
        "(`datamove history` shows it).")


def lost_rows(lost: list[Lost]) -> list[dict[str, Any]]:
    """``lost`` rows for the runs table: what the audit log knows of each lost run."""
    rows = []
    for run in lost:
        start = (run.start or {}).get("details") or {}
        end = (run.end or {}).get("details") or {}
        counts = end.get("counts")
        user, _, host = ((run.end or {}).get("actor") or "").rpartition("@")
        rows.append({"event": "lost", "lost_run_id": run.run_id, "note": run.what,
                     "user": user or None, "host": host or None,
                     "command": start.get("command"),
                     "manifest_sha256": start.get("manifest_sha256"),
                     "engine": start.get("engine"), "started_at": _time(run.start),
                     "ended_at": run.ended,
                     "counts_json": json.dumps(counts) if counts is not None else None,
                     "exit_code": end.get("exit_code")})
    return rows


def events_by_run(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``runs`` rows as {run_id: {event: row}}, for history. A lost run gets its ``lost``
    row and, when its own end row is gone too, an ``end`` made of what the audit log
    knew of it (marked ``from_audit``)."""
    by_run: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row["event"] != "lost":
            by_run.setdefault(row["run_id"], {})[row["event"]] = row
    for row in rows:
        if row["event"] == "lost":
            events = by_run.setdefault(row["lost_run_id"], {})
            events.setdefault("end", {**row, "run_id": row["lost_run_id"], "event": "end",
                                      "from_audit": True})
            events["lost"] = row
    return by_run
