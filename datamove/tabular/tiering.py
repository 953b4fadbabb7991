"""Partition tiering for Delta table datasets: old partitions move to a cold table.

A ``format: delta`` dataset's lifecycle rule names a partition column holding a
date (``column``), an age (``after``) and a cold Delta table (``location``).
Each hot partition whose date is older than the age moves, one partition at a
time, in steps that make a crash at any point harmless:

1. **append** its rows to the cold table in one commit carrying the app
   transaction ``datamove:tier:<dataset>:<column>=<value>``; a rerun that finds
   the transaction recorded appends nothing;
2. **verify**: the cold table's rows for the partition must have the hot rows'
   count and digest (tabular_digest); otherwise nothing is deleted and the
   partition is reported;
3. **record** the move (ledger ``tables`` row, status ``moved``, idempotent;
   audit ``partition.moved``);
4. **delete** the partition from the hot table (a predicate on the column, one
   commit: Delta removes its files from the table, the bytes stay for time
   travel);
5. **vacuum** the hot table with an explicit retention and ``dry_run=False``
   (delta-rs's vacuum is a dry run by default and would delete nothing).

Killed between any two steps, a rerun finds the partition either still hot
(and repeats from step 1, which is a no-op if it was done) or gone from hot and
complete in cold; no row is lost or doubled. ``tabular.verify`` counts hot and
cold together, so a dataset stays verifiable after its partitions move.

Limits: a partition moves once; rows that arrive in hot for a date already
moved fail the verification (cold holds the earlier rows) and stay hot, with a
message. Tiering and loading the same dataset must not overlap (the archive
command holds the ledger lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from datamove.ledger.tables import Ledger
from datamove.stores.core import Location, describe
from datamove.tabular.dataset import Table, TableJob, _ledger_row, record_ledger
from datamove.tabular.digest import PartitionDigests, partition_json, partition_text
from datamove.tabular.encoding import writer_properties
from datamove.tabular.scan import digest_table, scan_batches, table_plain_columns
from datamove.tiers import due

if TYPE_CHECKING:
    from datamove.audit import AuditWriter
    from datamove.manifest.model import DatasetSpec, LifecycleRule, Manifest

log = logging.getLogger(__name__)

DEFAULT_RETENTION = timedelta(days=7)  # Delta's default deletedFileRetentionDuration


@dataclass
class TierResult:
    partitions_moved: int = 0
    rows_moved: int = 0
    failures: list[str] = field(default_factory=list)
    vacuumed_files: int = 0


def partition_date(text: str) -> datetime | None:
    """A partition value as a UTC datetime (``2024-01-31``, ``2024-01-31T10:00:00``…)."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        try:
            value = datetime.combine(date.fromisoformat(text.strip()[:10]), datetime.min.time())
        except ValueError:
            return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def typed(text: str, type_: pa.DataType) -> Any:
    """A Delta partition value (text) as a value of the column's type, for filters."""
    return pa.scalar(text).cast(type_).as_py() if not pa.types.is_string(type_) else text


def due_rule(rules: list[LifecycleRule], when: datetime, now: datetime) -> LifecycleRule | None:
    """The rule with the longest ``after`` a partition dated ``when`` has passed."""
    index = due(rules, when, when, now)  # a partition's age counts from its date
    return None if index is None else rules[index]


def tier_partitions(manifest: Manifest, dataset: DatasetSpec | str, *, now: datetime,
                    audit: AuditWriter | None,
                    retention: timedelta = DEFAULT_RETENTION) -> TierResult:
    """Move every due partition of one ``format: delta`` dataset to its cold table.

    ``now``: the time ages are measured at (timezone-aware). ``retention``: what
    the hot table's vacuum keeps for time travel (Delta's default is 7 days;
    shorter drops older versions sooner). Never raises for one partition: its
    problem is in ``failures``.
    """
    spec = manifest.dataset(dataset) if isinstance(dataset, str) else dataset
    job = TableJob.from_spec(spec)
    rules = [r for r in spec.lifecycle if r.column and r.location is not None]
    result = TierResult()
    hot = job.table.open()
    if hot is None or not rules:
        return result
    ledger = Ledger(manifest.ledger, manifest.ledger_options)
    schema = pa.schema(hot.schema().to_arrow())
    moves = _due_moves(hot, rules, now)
    # the cold files are written the way the hot ones are (tabular_encoding)
    properties = writer_properties(table_plain_columns(hot)) if moves else None
    run_id = audit.run_id if audit is not None else f"tier-{now:%Y%m%dT%H%M%SZ}"
    for (column, text), rule in sorted(moves.items()):
        try:
            _move(job, ledger, audit, run_id, schema, column, text, rule, result,
                  properties=properties)
        except Exception as exc:  # one partition's failure is that partition's
            where = partition_json((column,), (text,))
            result.failures.append(f"dataset {job.name}: partition {where}: {describe(exc)}")
    try:
        hot = job.table.open()
        removed = hot.vacuum(retention_hours=int(retention.total_seconds() // 3600),
                             dry_run=False, enforce_retention_duration=False)
        result.vacuumed_files = len(removed)
    except Exception as exc:
        result.failures.append(f"dataset {job.name}: vacuum of {job.table.location.url}: "
                               f"{describe(exc)}")
    return result


def due_partitions(spec: DatasetSpec, *, now: datetime) -> int:
    """How many hot partitions of a ``format: delta`` dataset are due to move at ``now``
    (``archive --dry-run``; reads the table's partition list, moves nothing)."""
    rules = [r for r in spec.lifecycle if r.column and r.location is not None]
    hot = TableJob.from_spec(spec).table.open()
    return len(_due_moves(hot, rules, now)) if hot is not None and rules else 0


def _due_moves(hot: Any, rules: list[LifecycleRule],
               now: datetime) -> dict[tuple[str, str], LifecycleRule]:
    """(column, partition value) → the rule it is due for, for every hot partition."""
    moves: dict[tuple[str, str], LifecycleRule] = {}
    columns = sorted({r.column for r in rules if r.column})
    for values in hot.partitions():
        for column in columns:
            text = values.get(column)
            when = partition_date(text) if text is not None else None
            chosen = due_rule([r for r in rules if r.column == column], when, now) \
                if when is not None else None
            if chosen is not None and text is not None:
                moves[(column, text)] = chosen
    return moves


def _move(job: TableJob, ledger: Ledger, audit: AuditWriter | None, run_id: str,
          schema: pa.Schema, column: str, text: str, rule: LifecycleRule, result: TierResult,
          *, properties: Any) -> None:
    """One partition's five steps; ``properties``: the cold table's writer properties."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    from datamove.pipeline.auditing import record_partition_moved

    assert rule.location is not None
    cold = Table(Location.of(rule.location.url, rule.location.options, rule.location.region))
    value = typed(text, schema.field(column).type)
    where = pc.field(column) == pa.scalar(value, schema.field(column).type)
    app = f"datamove:tier:{job.name}:{column}={partition_text(value)}"
    key = (partition_text(value),)
    hot_digests = PartitionDigests((column,))
    hot = job.table.open()
    cold_table = cold.open()
    if cold_table is None or (cold_table.transaction_version(app) or 0) < 1:
        with _spool(hot, where, hot_digests) as spooled:
            write_deltalake(
                cold_table if cold_table is not None else cold.uri, spooled, mode="append",
                partition_by=list(job.partition_by) or None, schema_mode="merge",
                storage_options=cold.options,
                writer_properties=properties,
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app, 1)],
                    custom_metadata={"datamove.dataset": job.name,
                                     "datamove.partition": text}))
    else:
        hot_digests = digest_table(hot, (column,), where)
    cold_table = cold.open()
    cold_digests = digest_table(cold_table, (column,), where)
    moved, landed = hot_digests.parts.get(key), cold_digests.parts.get(key)
    partition = partition_json((column,), key)
    if moved is None:
        return  # nothing hot any more (an earlier run deleted it after its move)
    if moved != landed:
        rows = landed.rows if landed else 0
        result.failures.append(
            f"dataset {job.name}: partition {partition}: the cold table {cold.location.url} "
            f"holds {rows} rows for it, the hot table {moved.rows}; nothing was deleted. If "
            "rows arrived for this date after it moved, load them into the cold table "
            "yourself or move them back")
        return
    record_ledger(ledger, f"tier:{job.name}:{partition}", 1, [_ledger_row(
        job, run_id, "archive", cold_table.version(), partition, landed, moved,
        "moved", None) | {"table_url": cold.location.url}])
    if audit is not None:
        record_partition_moved(audit, job.name, partition, hot_url=job.table.location.url,
                               cold_url=cold.location.url, hot_version=hot.version(),
                               cold_version=cold_table.version(), rows=moved.rows,
                               digest=moved.hex)
        audit.flush()  # on the record before the hot rows go
    hot.delete(_predicate(column, text, schema.field(column).type),
               commit_properties=CommitProperties(
                   custom_metadata={"datamove.tier": app}))
    result.partitions_moved += 1
    result.rows_moved += moved.rows
    log.info("dataset %s: partition %s (%d rows) moved to %s", job.name, partition,
             moved.rows, cold.location.url)


@contextlib.contextmanager
def _spool(hot: Any, where: Any, digests: PartitionDigests) -> Iterator[pa.RecordBatchReader]:
    """The partition's rows through a local Arrow IPC file, hashed on the way in.

    delta-rs cannot pull a stream that itself reads through delta-rs (its
    runtime refuses to block inside itself), so the rows are spooled to disk
    first: memory stays bounded by a batch, disk holds one partition.
    """
    with tempfile.TemporaryDirectory(prefix="datamove-tier-") as folder:
        path = os.path.join(folder, "partition.arrow")
        schema = None
        with pa.OSFile(path, "wb") as sink:
            writer = None
            for batch in scan_batches(hot, where):
                digests.update(batch)
                if writer is None:
                    schema = batch.schema
                    writer = pa.ipc.new_stream(sink, schema)
                writer.write_batch(batch)
            if writer is None:
                schema = hot.to_pyarrow_dataset().schema
                writer = pa.ipc.new_stream(sink, schema)
            writer.close()
        with pa.memory_map(path) as source:
            yield pa.ipc.open_stream(source)


def _predicate(column: str, text: str, type_: pa.DataType) -> str:
    """A delta-rs SQL predicate selecting one partition value."""
    name = '"' + column.replace('"', '""') + '"'
    literal = "'" + text.replace("'", "''") + "'"
    if pa.types.is_integer(type_) or pa.types.is_floating(type_):
        literal = str(typed(text, type_))
    return f"{name} = {literal}"
