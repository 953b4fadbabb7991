"""The tamper-evident audit log (docs/FORMAT.md, "Audit log").

Every state-changing action of a run is an event: canonical JSON, hash-chained
to the one before it, appended by the driver to the Delta table
``<ledger>/audit``; signed checkpoints of the events' RFC 6962 Merkle tree go to
``<ledger>/audit_checkpoints``. An auditor verifies both offline, with the
verifier key and, ideally, a checkpoint they kept themselves.

Modules: ``events`` (canonical bytes, rows), ``merkle`` (RFC 6962),
``note`` (C2SP signed notes, keys, checkpoints), ``tables`` (the Delta tables),
``seal`` (the key's signature on every commit), ``vouch`` (what a keyed writer
may continue from), ``log`` (the writer), ``verify`` (verification), ``query``
(show, prove).
"""

from datamove.audit.events import EventError
from datamove.audit.log import AuditConflict, AuditLog, AuditWriter
from datamove.audit.note import (
           SignedCheckpoint,
           Signer,
           Verifier,
           read_note_file,
           read_verifier_file,
)
from datamove.audit.tables import AuditDamaged
from datamove.audit.verify import Problem, VerifyResult, verify_log
from datamove.audit.vouch import AuditUnvouched

__all__ = ["AuditConflict", "AuditDamaged", "AuditLog", "AuditUnvouched", "AuditWriter",
           "EventError", "Problem", "SignedCheckpoint", "Signer", "Verifier", "VerifyResult",
           "read_note_file", "read_verifier_file", "verify_log"]
