"""The driver's side of the audit log: :class:`AuditLog` and its :class:`AuditWriter`.

Same rules as the ledger (DESIGN.md, "The driver is the only ledger writer"):
one writer at a time, events buffered and appended in batches, every batch a
Delta app transaction ``(datamove-audit:<run id>, batch number)`` checked before
committing, so a commit retried after an error that hid its success never
duplicates events. Before each batch the writer also checks the table still
ends where its chain does: a second writer would fork the chain, so it is
refused rather than recorded.

With a signing key, the writer first makes sure it can vouch for every event it
will sign over (vouch.py: refused, exit 2, before anything is written, if not),
and seals each commit (seal.py) so that its events, even if the run dies before
its checkpoint, are told apart from events someone else appended.

Usage (pipeline/auditing.py open_audit, for every run session)::

    log = AuditLog(manifest.ledger, manifest.ledger_options, origin_name=manifest.name,
                   signing_key=manifest.audit.signing_key,
                   checkpoint_every=manifest.audit.checkpoint_every)
    writer = log.writer(run_id)
    writer.append("object.copied", dataset="d", key="a/b", sha256="…")
    writer.checkpoint()   # flush, sign (if a signing key is set), return the note
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from typing import Any

import pyarrow as pa

from datamove.audit import merkle
from datamove.audit.events import (
    ACKNOWLEDGED,
    AUDIT_SCHEMA,
    CHECKPOINT_SCHEMA,
    INIT_ACTION,
    make_event,
    sha256_hex,
)
from datamove.audit.note import Checkpoint, NoteError, Signer, check_name
from datamove.audit.seal import SEAL_KEY, make_seal
from datamove.audit.tables import (
    AUDIT,
    CHECKPOINTS,
    META_FRONTIER,
    META_HEAD,
    META_SIZE,
    ensure_table,
    latest_checkpoint,
    read_head,
    table_size,
)
from datamove.audit.vouch import open_vouched
from datamove.errors import BadInput
from datamove.ledger.tables import Ledger, append_once, now, user

log = logging.getLogger(__name__)

ORIGIN_PREFIX = "datamove.audit"
FORMAT = "datamove-audit/1"


class AuditConflict(BadInput):
    """Another process appended to the audit log while this writer had it open."""


class AuditLog:
    """The audit log of one ledger. Holds the signing key (if any), never shows it."""

    def __init__(self, ledger_url: str, ledger_options: dict[str, Any] | None = None, *,
                 origin_name: str, signing_key: str | None = None,
                 checkpoint_every: int = 10_000):
        try:
            self.origin_name = check_name(origin_name)
        except NoteError as exc:
            raise BadInput(f"audit origin name: {exc}") from None
        if checkpoint_every < 1:
            raise BadInput(f"audit checkpoint_every must be at least 1, not {checkpoint_every}")
        self.ledger = Ledger(ledger_url, ledger_options or {})
        # Loaded now, so a bad key path fails before anything moves (exit 2).
        self.signer = Signer.load(signing_key) if signing_key else None
        self.checkpoint_every = checkpoint_every

    def writer(self, run_id: str, *, max_events: int = 2_000, max_seconds: float = 1.0,
               retries: int = 5) -> AuditWriter:
        """A writer continuing the log; with a signing key, refuses (AuditUnvouched,
        AuditDamaged: exit 2) a log it cannot vouch for, before writing anything."""
        return AuditWriter(self, run_id, max_events=max_events, max_seconds=max_seconds,
                           retries=retries)

    def acknowledge(self, run_id: str, through: int, reason: str) -> dict[str, Any]:
        """Adopt the unvouched events up to seq ``through`` (the log's last) after an
        investigation: an ``audit.acknowledged`` event names them and the reason, and
        a checkpoint is signed. The events stay what they were, unvouched: the log
        itself says so, and `audit verify` lists every acknowledgement."""
        if self.signer is None:
            raise BadInput("acknowledging needs the manifest's audit.signing_key: only the "
                           "key that signs checkpoints can decide what they cover")
        reason = " ".join(reason.split())
        if not reason:
            raise BadInput("--reason: say what the investigation found (it is recorded in "
                           "the audit log)")
        writer = AuditWriter(self, run_id, adopt_through=through)
        assert writer.adopted is not None
        first, last = writer.adopted
        writer.append(ACKNOWLEDGED, first_seq=first, last_seq=last, last_hash=writer.head,
                      vouched_before=writer.vouched_by, reason=reason)
        note = writer.checkpoint()
        return {"first_seq": first, "last_seq": last, "seq": writer.size - 1,
                "checkpoint": note}

    def __repr__(self) -> str:
        return f"AuditLog({self.ledger.url!r}, signer={self.signer!r})"


class AuditWriter:
    """Appends events for one run, continuing the chain from the table's head."""

    def __init__(self, audit_log: AuditLog, run_id: str, *, max_events: int = 2_000,
                 max_seconds: float = 1.0, retries: int = 5,
                 adopt_through: int | None = None):
        self.log = audit_log
        self.ledger = audit_log.ledger
        self.run_id = run_id
        self.app_id = f"datamove-audit:{run_id}"
        self.max_events = max_events
        self.max_seconds = max_seconds
        self.retries = retries
        self.actor = f"{user()}@{socket.gethostname()}"
        self.adopted: tuple[int, int] | None = None
        self.vouched_by: str | None = None
        if audit_log.signer is not None:
            opened = open_vouched(self.ledger, audit_log.signer.verifier,
                                  adopt_through=adopt_through)
            head = opened.head
            self.adopted, self.vouched_by = opened.adopted, opened.vouched_by
            checkpoint = opened.checkpoint_size, opened.checkpoint_note
        else:
            head = read_head(self.ledger)
            checkpoint = latest_checkpoint(self.ledger)
        self.size, self.head, self.frontier = head.size, head.hash, head.frontier
        self.origin = head.origin
        self.committed = head.size  # events in the table; the rest are in _pending
        self._pending: list[tuple[Any, ...]] = []  # rows in AUDIT_SCHEMA's column order
        self._ensured: set[str] = set()  # tables known to exist (ensure_table)
        self._last_flush = time.monotonic()
        self.batch = _transaction_version(self.ledger, AUDIT, self.app_id)
        self.checkpoint_batch = _transaction_version(self.ledger, CHECKPOINTS,
                                                     f"{self.app_id}:checkpoints")
        self.checkpoint_size, self._checkpoint_note = checkpoint

    # --- events -------------------------------------------------------------------------

    def append(self, action: str, *, dataset: str | None = None, key: str | None = None,
               **details: Any) -> int:
        """Buffer one event; returns its seq. Flushes by count and by time, and signs a
        checkpoint every ``checkpoint_every`` events when a signing key is set.

        ``details`` values: strings, ints, bools, None, lists and dicts (no floats:
        see events.py); anything else raises EventError (a ValueError).
        """
        if not isinstance(action, str) or not action:
            raise ValueError("an audit event needs an action such as 'object.copied'")
        if self.size == 0:
            self._init_event()
        seq = self._add(action, dataset, key, details)
        if len(self._pending) >= self.max_events or \
                time.monotonic() - self._last_flush >= self.max_seconds:
            self.flush()
        if self.log.signer is not None and \
                self.size - self.checkpoint_size >= self.log.checkpoint_every:
            self.checkpoint()
        return seq

    def _init_event(self) -> None:
        """Event 0: the log's random id and its origin, so checkpoints name this log
        and no other, whatever the manifest is called later."""
        log_id = uuid.uuid4().hex[:16]
        self.origin = f"{ORIGIN_PREFIX}/{self.log.origin_name}/{log_id}"
        self._add(INIT_ACTION, None, None,
                  {"log_id": log_id, "origin": self.origin, "format": FORMAT})

    def _add(self, action: str, dataset: str | None, key: str | None,
             details: dict[str, Any]) -> int:
        """Chain one event and keep its table row (the columns events.row_of would
        parse back out of it, taken from the values it was made of)."""
        seq, prev, moment = self.size, self.head, now()
        event = make_event(seq, moment, self.run_id, action, self.actor, dataset, key,
                           details, prev)
        self.head = sha256_hex(event)
        self._pending.append((seq, self.head, prev, moment, self.run_id, action, dataset,
                              key, event.decode("utf-8")))
        self.frontier.append(merkle.leaf_hash(event))
        self.size += 1
        return seq

    def flush(self) -> None:
        """Commit the buffered events as the next batch (idempotent on retry)."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        columns = zip(*self._pending, strict=True)
        data = pa.Table.from_arrays([pa.array(column, type=field.type) for column, field
                                     in zip(columns, AUDIT_SCHEMA, strict=True)],
                                    schema=AUDIT_SCHEMA)
        metadata = {META_SIZE: str(self.size), META_HEAD: self.head,
                    META_FRONTIER: self.frontier.encode()}
        if self.log.signer is not None and self.origin is not None:
            metadata[SEAL_KEY] = make_seal(self.log.signer, self.origin, self.size, self.head,
                                           metadata[META_FRONTIER])
        self._commit(AUDIT, data, self.app_id, self.batch + 1, metadata,
                     expect_size=self.committed)
        self.batch += 1
        self.committed = self.size
        self._pending = []

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None:
            self.flush()

    # --- checkpoints --------------------------------------------------------------------

    def checkpoint(self) -> str | None:
        """Flush, then sign a checkpoint over every event (if a signing key is set).

        Returns the signed note, None without a key or events. A log already
        checkpointed at its current size returns that checkpoint's note.
        """
        self.flush()
        signer = self.log.signer
        if signer is None or self.size == 0 or self.origin is None:
            return None
        if self.checkpoint_size == self.size and self._checkpoint_note:
            return self._checkpoint_note
        body = Checkpoint(self.origin, self.size, self.frontier.root(), self.head)
        note = signer.sign(body.text())
        row = {"tree_size": self.size, "root_hash": body.root.hex(), "head_hash": self.head,
               "note": note, "created_at": now(), "run_id": self.run_id}
        data = pa.Table.from_pylist([row], schema=CHECKPOINT_SCHEMA)
        self._commit(CHECKPOINTS, data, f"{self.app_id}:checkpoints",
                     self.checkpoint_batch + 1, {"datamove.audit.tree_size": str(self.size)})
        self.checkpoint_batch += 1
        self.checkpoint_size, self._checkpoint_note = self.size, note
        log.info("audit checkpoint: %s events, root %s", self.size, body.root.hex())
        return note

    # --- committing ---------------------------------------------------------------------

    def _commit(self, name: str, data: pa.Table, app_id: str, version: int,
                metadata: dict[str, str], expect_size: int | None = None) -> bool:
        """Append ``data`` as app transaction ``version``; False if it had landed.

        ``expect_size``: the number of events the table must hold before this
        append (the chain continues from there); anything else is a conflict.
        """
        table_uri = self.ledger.uri(name)

        def continues_the_chain(table: Any) -> None:
            if expect_size is not None and (found := table_size(table)) != expect_size:
                raise AuditConflict(
                    f"audit log {table_uri}: it holds {found} events but this writer "
                    f"continues from {expect_size}; another datamove wrote to the same "
                    "ledger. Run one datamove per ledger at a time.")

        if name not in self._ensured:
            ensure_table(self.ledger, name)  # created with delta.appendOnly
            self._ensured.add(name)
        return append_once(self.ledger, name, data, app_id, version, retries=self.retries,
                           metadata={"datamove.run_id": self.run_id,
                                     "datamove.audit.batch": str(version), **metadata},
                           before=continues_the_chain)


def _transaction_version(ledger: Ledger, name: str, app_id: str) -> int:
    table = ledger.table(name)
    return (table.transaction_version(app_id) or 0) if table is not None else 0
