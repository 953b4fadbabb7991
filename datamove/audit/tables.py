"""The audit log's two Delta tables under the ledger, and reading them.

``<ledger>/audit`` holds one row per event, ``<ledger>/audit_checkpoints`` one
row per signed checkpoint. Both are created with ``delta.appendOnly = true``,
which makes Delta writers refuse deletes and overwrites: it stops honest
mistakes, not an attacker with write access to the storage, which is what the
hash chain, the Merkle roots and signed checkpoints are for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from datamove.audit import merkle
from datamove.audit.events import (
    AUDIT_SCHEMA,
    CHECKPOINT_SCHEMA,
    INIT_ACTION,
    ZERO_HASH,
    sha256_hex,
)
from datamove.errors import BadInput
from datamove.ledger.tables import Ledger

AUDIT = "audit"
CHECKPOINTS = "audit_checkpoints"
TABLE_CONFIG = {"delta.appendOnly": "true", "delta.checkpointInterval": "20"}
SCHEMAS = {AUDIT: AUDIT_SCHEMA, CHECKPOINTS: CHECKPOINT_SCHEMA}
DESCRIPTIONS = {
    AUDIT: "datamove: hash-chained audit events (docs/FORMAT.md, Audit log)",
    CHECKPOINTS: "datamove: signed checkpoints of the audit log's Merkle tree",
}
# Commit metadata of every audit append: the tree after it, so the next writer
# continues without reading every event (verification never trusts these).
META_SIZE = "datamove.audit.size"
META_HEAD = "datamove.audit.head"
META_FRONTIER = "datamove.audit.frontier"


class AuditDamaged(BadInput):
    """The audit table cannot be continued safely (its head is inconsistent)."""


def ensure_table(ledger: Ledger, name: str) -> Any:
    """The table, created (append-only) if missing."""
    from deltalake import DeltaTable

    table = ledger.table(name)
    if table is None:
        DeltaTable.create(ledger.uri(name), schema=SCHEMAS[name], mode="ignore",
                          name=f"datamove_{name}", description=DESCRIPTIONS[name],
                          configuration=TABLE_CONFIG, storage_options=ledger.storage_options)
        table = ledger.table(name)
    return table


def read_table(ledger: Ledger, name: str, where: Any = None,
               columns: list[str] | None = None, sql_where: str | None = None) -> pa.Table:
    """Rows of an audit table in log order (empty if the table does not exist).

    ``sql_where``: a condition for delta-rs' SQL engine, which skips files by
    their statistics; only ever built from integers here. ``where``: a pyarrow
    expression applied to what was read (strings from the command line never
    go into SQL). Read through delta-rs rather than a pyarrow dataset: a process
    that exits right after a pyarrow scan of a deltalake dataset aborts now and
    then ("terminate called without an active exception"; 4 in 600 runs here
    even single-threaded, 0 in 600 this way), which would turn `datamove audit
    verify`'s exit code into 134.
    """
    from deltalake import QueryBuilder

    table = ledger.table(name)
    schema = SCHEMAS[name]
    wanted = columns or schema.names
    if table is None:
        return schema.empty_table().select(wanted)
    order = ["seq", "event_hash"] if name == AUDIT else ["tree_size", "created_at"]
    read = schema.names if where is not None else list(dict.fromkeys([*wanted, *order]))
    quoted = ", ".join(f'"{c}"' for c in read)
    sql = (f"SELECT {quoted} FROM t"
           + (f" WHERE {sql_where}" if sql_where else "")
           + f" ORDER BY {', '.join(order)}")
    rows = pa.table(QueryBuilder().register("t", table).execute(sql))
    rows = rows.cast(pa.schema([schema.field(c) for c in read]))
    if where is not None:
        rows = rows.filter(where)
    return rows.select(wanted)


def table_size(table: Any) -> int:
    """Events in the audit table, by its largest seq (file statistics when every file
    has them, else a query)."""
    from deltalake import QueryBuilder

    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0
    if "max.seq" in actions.column_names and actions["max.seq"].null_count == 0:
        return int(pc.max(actions["max.seq"]).as_py()) + 1
    result = pa.table(QueryBuilder().register("t", table).execute("SELECT max(seq) AS n FROM t"))
    largest = result["n"][0].as_py()
    return 0 if largest is None else int(largest) + 1


@dataclass
class Head:
    """Where the log ends: the next seq, the last event's hash, the tree so far."""

    size: int
    hash: str
    frontier: merkle.Frontier
    origin: str | None  # from event 0; None for an empty log


def read_ends(ledger: Ledger, size: int) -> tuple[str | None, str]:
    """The log's origin (from event 0) and the hash of its last event (seq size - 1)."""
    where = f"audit log {ledger.uri(AUDIT)}"
    ends = read_table(ledger, AUDIT, columns=["seq", "event"],
                      sql_where=f"seq IN (0, {int(size) - 1})").to_pylist()
    by_seq = {row["seq"]: row["event"] for row in ends}
    if len(ends) != len(by_seq) or set(by_seq) != {0, size - 1}:
        raise AuditDamaged(f"{where}: events 0 and {size - 1} are not there exactly once; "
                           "run `datamove audit verify` to find the damage")
    first = json.loads(by_seq[0])
    if first.get("action") != INIT_ACTION or not isinstance(first.get("details"), dict):
        raise AuditDamaged(f"{where}: event 0 is not {INIT_ACTION}; "
                           "run `datamove audit verify` to find the damage")
    return first["details"].get("origin"), sha256_hex(by_seq[size - 1].encode("utf-8"))


def event_hashes(ledger: Ledger, seqs: list[int]) -> dict[int, str]:
    """The hashes of the events at ``seqs`` (those present exactly once)."""
    if not seqs:
        return {}
    listed = ", ".join(str(int(s)) for s in seqs)
    rows = read_table(ledger, AUDIT, columns=["seq", "event"],
                      sql_where=f"seq IN ({listed})").to_pylist()
    counts: dict[int, int] = {}
    for row in rows:
        counts[row["seq"]] = counts.get(row["seq"], 0) + 1
    return {row["seq"]: sha256_hex(row["event"].encode("utf-8")) for row in rows
            if counts[row["seq"]] == 1 and row["event"] is not None}


def rebuild_frontier(ledger: Ledger, size: int) -> merkle.Frontier:
    """The Merkle frontier of the first ``size`` events, read from the table."""
    rows = read_table(ledger, AUDIT, columns=["seq", "event"], sql_where=f"seq < {int(size)}")
    if rows["seq"].to_pylist() != list(range(size)):
        raise AuditDamaged(f"audit log {ledger.uri(AUDIT)}: seq is not 0..{size - 1} without "
                           "gaps or repeats; run `datamove audit verify` to find the damage")
    frontier = merkle.Frontier()
    for batch in rows.to_batches(max_chunksize=10_000):
        for text in batch.column(1).to_pylist():
            frontier.append(merkle.leaf_hash(text.encode("utf-8")))
    return frontier


def read_head(ledger: Ledger) -> Head:
    """The log's head, from the last commit's metadata when it matches the table,
    else by reading every event (after a compaction, or an older writer).

    This is what a writer without the signing key continues from; one with the
    key vouches for what it continues from first (vouch.py)."""
    table = ledger.table(AUDIT)
    size = table_size(table) if table is not None else 0
    if size == 0:
        return Head(0, ZERO_HASH, merkle.Frontier(), None)
    origin, head = read_ends(ledger, size)
    for commit in table.history(10):
        if META_SIZE in commit:
            if int(commit[META_SIZE]) == size and commit.get(META_HEAD) == head:
                return Head(size, head, merkle.Frontier.decode(size, commit[META_FRONTIER]),
                            origin)
            break
    return Head(size, head, rebuild_frontier(ledger, size), origin)


def latest_checkpoint(ledger: Ledger) -> tuple[int, str | None]:
    """Tree size and note of the largest stored checkpoint (0, None if none)."""
    rows = read_table(ledger, CHECKPOINTS, columns=["tree_size", "note"])
    if rows.num_rows == 0:
        return 0, None
    last = rows.slice(rows.num_rows - 1).to_pylist()[0]
    return last["tree_size"], last["note"]
