"""The driver's helpers shared by every command: jobs, preflights, run ids, ledger rows.

A command turns the manifest's datasets into :class:`DatasetJob` s (``jobs_of``),
checks that every location answers and every identity opens before anything
moves (``preflight``, ``preflight_identities``), orders datasets that feed one
another (``stages``) and turns each settled object into its ledger row
(``ledger_row``). Commands and :mod:`datamove.pipeline.session` import these;
``datamove.api`` is the public facade and no module below the CLI imports it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

from datamove.errors import LocationUnreachable
from datamove.ledger.tables import DONE_STATUSES, ROTATING, Ledger, now, ts
from datamove.manifest.model import Manifest
from datamove.pipeline.filters import check_files_from
from datamove.pipeline.march import DatasetJob, PlanItem
from datamove.pipeline.report import Report
from datamove.pipeline.transfer import ObjectResult
from datamove.stores.core import Entry, check_readable, describe, list_entries


def new_run_id() -> str:
    """A run's id: sortable by start time, unique across hosts."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def run_token(run_id: str) -> str:
    """The run's short token: names its temporary files and its cancel flags."""
    return run_id.rsplit("-", 1)[-1]


def ledger_of(manifest: Manifest) -> Ledger:
    """The manifest's ledger (not opened: tables are read on demand)."""
    return Ledger(manifest.ledger, manifest.ledger_options)


def jobs_of(manifest: Manifest, only: list[str] | None = None,
            identity: str | None = None) -> list[DatasetJob]:
    """The manifest's datasets as worker jobs, optionally just the named ones.

    ``identity``: an identity file that replaces the manifest's for encrypted
    datasets (``--identity``); its passphrase variable and KMS context still come
    from the manifest.
    """
    specs = [manifest.dataset(name) for name in only] if only else manifest.datasets
    jobs = [DatasetJob.from_spec(spec, manifest.encryption_of(spec)) for spec in specs]
    if identity is not None:
        jobs = [with_identity_file(job, identity) for job in jobs]
    return jobs


def with_identity_file(job: DatasetJob, path: str) -> DatasetJob:
    from dataclasses import replace

    from datamove.crypto.identities import IdentityRef

    if job.encryption is None:
        return job
    ref = job.encryption.identity or IdentityRef(file=path)
    ref = replace(ref, file=os.path.abspath(path) if "://" not in path else path)
    return replace(job, encryption=replace(job.encryption, identity=ref))


def preflight_identities(jobs: list[DatasetJob]) -> None:
    """Open every identity a command may use, on the driver, before work starts:
    a wrong passphrase or a KMS refusal is one clear error (exit 2), not one
    failure per object, and nothing has been written. A run may use one even
    without ``--reverify``: ``verify: full`` decrypts every copy, and an object
    a killed run copied is verified by decryption before it is recorded.
    (Workers open their own copy; nothing secret is sent.)"""
    for job in jobs:
        if job.encryption is not None and job.encryption.identity is not None:
            job.encryption.identities()


def preflight(jobs: list[DatasetJob]) -> None:
    """Every source readable and every destination listable, before anything moves;
    every ``files_from`` read through (filters.py)."""
    for job in jobs:
        check_readable(job.source)
        if job.filters is not None:
            check_files_from(job.name, job.filters)
        try:
            next(iter(list_entries(job.destination)), None)
        except LocationUnreachable:
            raise
        except Exception as exc:
            raise LocationUnreachable(
                f"dataset {job.name}: destination {job.destination.url} cannot be reached: "
                f"{describe(exc)}") from exc


def stages(jobs: list[DatasetJob]) -> list[list[DatasetJob]]:
    """Datasets in the order they can run: one whose source overlaps an earlier
    dataset's destination (a chain such as S3 → GCS → Azure) waits until that
    dataset's copies are done, so it never plans from half-written output."""
    from datamove.manifest.checks import comparable_url

    def overlaps(a: str, b: str) -> bool:
        a, b = comparable_url(a), comparable_url(b)
        return a.startswith(b) or b.startswith(a)

    level: list[int] = []
    for i, job in enumerate(jobs):
        after = [level[j] + 1 for j in range(i)
                 if overlaps(job.source.url, jobs[j].destination.url)]
        level.append(max(after, default=0))
    return [[job for job, at in zip(jobs, level, strict=True) if at == n]
            for n in range(max(level, default=-1) + 1)]


def skipped_link_counter(report: Report, job: DatasetJob) -> Callable[[str], None]:
    """Counts the source's symbolic links left out by ``links: skip`` (as rclone
    does by default), so the report says how many were not copied."""
    def skipped(key: str) -> None:
        report.dataset(job.name).counts["links_skipped"] += 1

    return skipped


def filter_counters(report: Report, job: DatasetJob
                    ) -> tuple[Callable[[Entry, str], None], Callable[[str], None]]:
    """``on_filtered`` and ``on_absent`` for plan_dataset: the report counts the
    source objects the dataset's filters leave out (``filtered``, with their
    bytes), and names each key ``files_from`` lists that the source does not
    have (``not_at_source``, a warning: nothing to copy is not a failure)."""
    def filtered(entry: Entry, reason: str) -> None:
        report.dataset(job.name).add("filtered", entry.size)

    def absent(key: str) -> None:
        report.dataset(job.name).counts["not_at_source"] += 1
        report.warn(f"dataset {job.name}: {key!r} is in files_from but not at the source")

    return filtered, absent


def count_housekeeping(report: Report, job: DatasetJob, what: str, n: int) -> None:
    """Housekeeping counts shown with the dataset (zero counts stay out of the way)."""
    if n:
        report.dataset(job.name).counts[what] += n


def ledger_row(job: DatasetJob, item: PlanItem, result: ObjectResult,
               run_id: str) -> dict[str, object]:
    """The ``objects`` row for one result (docs/FORMAT.md)."""
    done = result.status in DONE_STATUSES
    error = result.error or ""
    source, row = item.source, item.recorded
    encrypted = job.encryption is not None
    stored_size, stored_sha = result.stored_size, result.stored_sha256
    payload_sha, fingerprints = result.payload_sha256, result.key_fingerprints
    if encrypted and done and stored_sha is None and row is not None:
        # Verified by decryption: the stored object is the one the ledger recorded.
        stored_size, stored_sha = row.stored_size, row.stored_sha256
        payload_sha, fingerprints = row.payload_sha256, row.key_fingerprints
    elif not encrypted:
        stored_size, stored_sha = result.size, result.sha256
    moment = now()
    return {
        "dataset": job.name, "key": item.key, "run_id": run_id, "status": result.status,
        "source_url": job.source.url_of(item.key),
        "size": source.size if source else (row.size if row else result.size),
        "source_mtime": ts(source.mtime if source else (row.source_mtime if row else None)),
        "source_etag": source.etag if source else (row.source_etag if row else None),
        "source_version": None,
        "sha256": result.sha256,
        "destination_url": result.destination_url,
        "stored_size": stored_size if done else None,
        "stored_sha256": stored_sha if done else None,
        "native_checksum": result.native_checksum,
        "encrypted": encrypted, "key_fingerprints": list(fingerprints),
        "payload_sha256": payload_sha if done else None,
        "previous_key_fingerprints": list(result.previous_key_fingerprints),
        "storage_class": (job.storage_class or "STANDARD")
        if job.destination.backend.storage_classes is not None else None,
        "region": job.destination.region,
        "verify_mode": job.verify.value,
        "verify_result": "ok" if done else (None if result.status == ROTATING else
                                            "mismatch" if "VerifyMismatch" in error
                                            else "error"),
        "verified_at": moment if done else None,
        "attempts": result.attempts, "error": result.error, "recorded_at": moment,
    }
