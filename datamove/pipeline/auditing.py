"""What the commands record in the audit log, in one place.

The audit package (``datamove/audit/``) knows how to chain, store, sign and
verify events; this module decides which events a run or a rotation emits and
what each carries, so the event vocabulary is written down once
(docs/FORMAT.md, "Audit log"):

* ``policy.decision``: every rule judged in a run's preflight (also the
  satisfied ones: auditors want to see what was checked), before anything moves;
* ``run.start`` / ``run.refused`` / ``run.end``;
* ``object.<status>`` for each object a run settles (``copied``, ``verified``,
  ``repaired``, ``failed``), ``key.rotation`` for each object ``keys rotate``
  re-wrapped (or ``object.failed``).
* ``object.deleted`` for each object ``sync --delete`` deleted, and
  ``delete.refused`` when ``--max-delete`` refused them all (commands/copy.py).

Events carry checksums, key fingerprints, region and storage class, never
secrets or object contents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datamove.audit import AuditLog, AuditWriter
from datamove.manifest.model import Manifest

if TYPE_CHECKING:
    from datamove.pipeline.march import DatasetJob, PlanItem
    from datamove.pipeline.transfer import ObjectResult
    from datamove.policy.rules import PolicyReport


def audit_log_of(manifest: Manifest) -> AuditLog:
    """The manifest's audit log, beside its ledger, with its signing settings."""
    return AuditLog(manifest.ledger, manifest.ledger_options, origin_name=manifest.name,
                    signing_key=manifest.audit.signing_key,
                    checkpoint_every=manifest.audit.checkpoint_every)


def open_audit(manifest: Manifest, run_id: str) -> AuditWriter:
    """The run's audit writer (driver only); a bad signing key path is exit 2 here."""
    return audit_log_of(manifest).writer(run_id)


def record_policy(audit: AuditWriter, decided: PolicyReport) -> None:
    for d in decided.decisions:
        audit.append("policy.decision", dataset=d.dataset, rule=d.rule_id,
                     severity=d.severity, outcome=d.outcome, field=d.field, reason=d.reason,
                     origin=d.origin)
    if decided.denied:
        audit.append("run.refused", denied=[d.rule_id for d in decided.denied],
                     datasets=sorted({d.dataset for d in decided.denied}))
        audit.checkpoint()


def record_result(audit: AuditWriter, job: DatasetJob, result: ObjectResult,
                  action: str | None = None) -> None:
    """One settled object: what it is, where it went, how it was checked."""
    details: dict[str, Any] = {
        "destination_url": result.destination_url, "size": result.size,
        "sha256": result.sha256, "attempts": result.attempts,
        "region": job.destination.region,
    }
    if result.stored_sha256 is not None:
        details.update(stored_size=result.stored_size, stored_sha256=result.stored_sha256,
                       payload_sha256=result.payload_sha256)
    if job.encryption is not None:
        details["key_fingerprints"] = list(result.key_fingerprints)
    if result.previous_key_fingerprints:
        details["previous_key_fingerprints"] = list(result.previous_key_fingerprints)
    if job.storage_class or job.destination.backend.storage_classes is not None:
        details["storage_class"] = job.storage_class or "STANDARD"
    if result.error:
        details["error"] = result.error
    audit.append(action or f"object.{result.status}", dataset=job.name, key=result.key,
                 **details)


# --- lifecycle ---

def record_tier_change(audit: AuditWriter, job: DatasetJob, item: PlanItem, target: str,
                       region: str | None, result: ObjectResult) -> None:
    """``tier.change`` for a verified move to a colder tier, else ``object.failed``."""
    row = item.recorded
    assert row is not None
    details: dict[str, Any] = {
        "from": row.archive_url or row.storage_class or
        ("STANDARD" if job.destination.backend.storage_classes is not None
         else job.destination.url),
        "to": target,
        "stored_size": row.stored_size, "stored_sha256": row.stored_sha256,
        "region": region or job.destination.region, "location": result.destination_url,
    }
    if result.native_checksum:
        details["server_checksum"] = result.native_checksum
    if result.status == "moved":
        audit.append("tier.change", dataset=job.name, key=item.key, **details)
    else:
        audit.append("object.failed", dataset=job.name, key=item.key, operation="archive",
                     error=result.error or "failed", **details)


# --- tabular ---
# Delta table datasets (tabular/dataset.py, tabular/tiering.py): what was loaded, each
# partition's verification (rows and order-independent digests, docs/FORMAT.md
# "Tabular tables"), and partitions moved to a cold table.

def record_table_loaded(audit: AuditWriter, dataset: str, table_url: str, loaded: Any) -> None:
    """``table.loaded``: the version the load left and what it appended."""
    audit.append("table.loaded", dataset=dataset, table_url=table_url,
                 table_version=loaded.version, files_loaded=loaded.files_loaded,
                 files_skipped=loaded.files_skipped, rows_loaded=loaded.rows_loaded,
                 rows_read=loaded.rows_read, commits=loaded.commits)


def record_table_partition(audit: AuditWriter, dataset: str, table_url: str,
                           version: int | None, partition: str, outcome: Any) -> None:
    """``table.verified`` (or ``table.failed``) for one partition: both sides' rows and digests."""
    audit.append("table.verified" if outcome.status == "ok" else "table.failed",
                 dataset=dataset, key=partition, table_url=table_url, table_version=version,
                 status=outcome.status, rows=outcome.table.rows, digest=outcome.table.hex,
                 source_rows=outcome.source.rows, source_digest=outcome.source.hex)


def record_table_failed(audit: AuditWriter, dataset: str, table_url: str, error: str) -> None:
    """``table.failed`` for a dataset that could not be loaded or read at all."""
    audit.append("table.failed", dataset=dataset, table_url=table_url, error=error)


def record_partition_moved(audit: AuditWriter, dataset: str, partition: str, *,
                           hot_url: str, cold_url: str, hot_version: int | None,
                           cold_version: int | None, rows: int, digest: str) -> None:
    """``partition.moved``: a partition now lives in the cold table, verified, hot deleted."""
    audit.append("partition.moved", dataset=dataset, key=partition, hot_url=hot_url,
                 cold_url=cold_url, hot_version=hot_version, cold_version=cold_version,
                 rows=rows, digest=digest)
