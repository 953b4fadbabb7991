"""Tabular datasets: rows from Parquet, CSV or JSON-lines files streamed into a Delta
table, then proven there row by row (docs/TABULAR.md).

A dataset whose destination has ``format: delta`` does not go through the
object planner. Its run is:

1. **List** the source files in key order and read every file's schema
   (Parquet footers, the first block of CSV/JSON); judge them all against the
   table with the schema policy (tabular_source.reconcile). A refused file fails
   the dataset before a single row is written.
2. **Load**: each file is cut into *units* of ``unit_rows`` rows (a file with
   fewer rows is one unit). A commit carries one or more whole units, and for
   each a Delta app transaction ``(datamove:<dataset>:<file id>, unit + 1)``,
   where the file id hashes the file's key, size, mtime/ETag and the unit size.
   A rerun after a crash reads the table's transaction versions and writes only
   the units no commit recorded, so rows are never duplicated and never lost.
   Small files share a commit (up to ``group_bytes`` of source), so many tiny
   files do not make many tiny commits; record batches stream from the reader
   into delta-rs, so memory does not grow with the file or the commit.
3. **Verify**: every source row (also those of units already committed, which
   are read but not written) is hashed into a per-partition digest
   (tabular_digest); the table (plus the cold tables of its lifecycle rules) is
   read back and hashed the same way. Any partition whose count or digest
   differs fails the dataset.
4. **Record**: one ledger row per partition (``<ledger>/tables``) and audit
   events ``table.loaded``, ``table.verified`` or ``table.failed``.

Only the driver touches the table (a DeltaTable is not picklable and
concurrent appenders conflict), so no Dask workers are involved.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from datamove.errors import BadInput, LocationUnreachable
from datamove.ledger.tables import TS, Ledger, append_once, now, storage_options
from datamove.stores.core import KeyFilter, Location, describe
from datamove.tabular.digest import BackgroundDigests, Digest, PartitionDigests, partition_json
from datamove.tabular.encoding import distinct_columns, writer_properties
from datamove.tabular.scan import digest_table
from datamove.tabular.source import (
    FileReader,
    SchemaProblem,
    SourceFile,
    conform,
    decoded,
    list_source_files,
    read_facts,
    reconcile,
)

if TYPE_CHECKING:
    from datamove.audit import AuditWriter
    from datamove.manifest.model import DatasetSpec, Manifest
    from datamove.pipeline.report import Report

log = logging.getLogger(__name__)

UNIT_ROWS = 1_000_000
"""Rows per unit of a source file: the granularity of a resumed load (part of the app id)."""
GROUP_BYTES = 256 * 1024 * 1024
GROUP_FILES = 1_000
DEFAULT_SCHEMA_MODE = "strict"

TABLES = "tables"
TABLE_SCHEMA = pa.schema([
    ("dataset", pa.string()),
    ("run_id", pa.string()),
    ("command", pa.string()),  # run | archive
    ("table_url", pa.string()),
    ("table_version", pa.int64()),
    ("partition", pa.string()),  # JSON object of partition column -> text; {} unpartitioned
    ("rows", pa.int64()),
    ("digest", pa.string()),
    ("source_rows", pa.int64()),
    ("source_digest", pa.string()),
    ("status", pa.string()),  # ok | mismatch | missing | extra | failed | moved
    ("error", pa.string()),
    ("recorded_at", TS),
])


def table_uri(location: Location) -> str:
    """The URI delta-rs opens: a local path, or the URL without a trailing slash."""
    return location.root if location.is_local else location.url.rstrip("/")


@dataclass(frozen=True)
class Table:
    """A Delta table datamove writes or reads, with delta-rs's storage options."""

    location: Location

    @property
    def uri(self) -> str:
        return table_uri(self.location)

    @property
    def options(self) -> dict[str, str]:
        return storage_options(self.location.url, dict(self.location.options))

    def open(self, version: int | None = None) -> Any:
        """The DeltaTable, or None if there is none yet."""
        from deltalake import DeltaTable

        try:
            if not DeltaTable.is_deltatable(self.uri, storage_options=self.options):
                return None
            return DeltaTable(self.uri, version=version, storage_options=self.options)
        except OSError as exc:
            raise LocationUnreachable(f"{self.location.url}: the Delta table cannot be "
                                      f"opened: {describe(exc)}") from exc


@dataclass(frozen=True)
class TableJob:
    """A ``format: delta`` dataset, as the loader needs it."""

    name: str
    source: Location
    source_format: str | None
    key_filter: KeyFilter
    table: Table
    partition_by: tuple[str, ...]
    schema_mode: str
    cold: tuple[Table, ...] = ()  # lifecycle rules' cold tables (hot + cold = the source)

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> TableJob:
        src, dst = spec.source, spec.destination
        cold = tuple(Table(Location.of(r.location.url, r.location.options, r.location.region))
                     for r in spec.lifecycle if r.location is not None)
        return cls(name=spec.name, source=Location.of(src.url, src.options, src.region),
                   source_format=src.format,
                   key_filter=KeyFilter(tuple(spec.include), tuple(spec.exclude)),
                   table=Table(Location.of(dst.url, dst.options, dst.region)),
                   partition_by=tuple(dst.partition_by),
                   schema_mode=dst.schema_mode or DEFAULT_SCHEMA_MODE, cold=cold)


def app_id(job: TableJob, file: SourceFile, unit_rows: int) -> str:
    """The app transaction of one source file's units (its version: units committed)."""
    ident = hashlib.sha256(f"{file.identity}\0{unit_rows}".encode()).hexdigest()[:32]
    return f"datamove:{job.name}:{ident}"


# --- loading --------------------------------------------------------------------------

@dataclass
class LoadResult:
    files_loaded: int = 0
    files_skipped: int = 0
    bytes_loaded: int = 0
    bytes_skipped: int = 0
    rows_loaded: int = 0
    rows_read: int = 0
    commits: int = 0
    version: int | None = None
    source: PartitionDigests = field(default_factory=lambda: PartitionDigests([]))


class Rows:
    """One source file's batches, conformed to the table's schema and hashed into
    ``digests`` as they are taken (what is hashed is exactly what is written; a
    column read dictionary-encoded is hashed before it is decoded for the writer,
    which gives the same row hashes at a fraction of the cost)."""

    def __init__(self, job: TableJob, file: SourceFile,
                 digests: PartitionDigests | BackgroundDigests, schema: pa.Schema):
        self.reader = FileReader(job.source, file)
        self.batches = iter(self.reader)
        self.digests = digests
        self.schema = schema
        self.head: pa.RecordBatch | None = None
        self.read = 0

    def peek(self) -> pa.RecordBatch | None:
        if self.head is None:
            key = self.reader.file.key
            try:
                self.head = next(self.batches, None)
                while self.head is not None and self.head.num_rows == 0:
                    self.head = next(self.batches, None)
            except (OSError, pa.ArrowException) as exc:
                hint = ("" if self.reader.file.format == "parquet" else
                        " (a text file's column types come from its first 8 MiB: fix the "
                        "value, or convert the file to Parquet)")
                raise SchemaProblem(f"{key}: cannot be read: {describe(exc)}{hint}") from exc
            if self.head is not None:
                self.head = conform(self.head, self.schema, key)
        return self.head

    def take(self, limit: int) -> Iterator[pa.RecordBatch]:
        """Up to ``limit`` rows, batch by batch (a batch crossing the limit is split)."""
        left = limit
        while left > 0 and self.peek() is not None:
            batch = self.head
            assert batch is not None
            if batch.num_rows > left:
                batch, self.head = batch.slice(0, left), batch.slice(left)
            else:
                self.head = None
            left -= batch.num_rows
            self.read += batch.num_rows
            self.digests.update(batch)
            yield decoded(batch, self.schema)

    def close(self) -> None:
        self.reader.close()


@dataclass
class Plan:
    """What the schema pass found: the schema to write and the rows Parquet footers tell."""

    schema: pa.Schema
    known_rows: dict[str, int]
    evolves: bool
    plain_columns: frozenset[str] = frozenset()  # to write without a dictionary


def plan_schema(job: TableJob, files: list[SourceFile], table: Any) -> Plan:
    """Judge every file against the table before writing anything (SchemaProblem lists all)."""
    current = pa.schema(table.schema().to_arrow()) if table is not None else None
    if table is not None:
        existing = list(table.metadata().partition_columns)
        if existing != list(job.partition_by):
            raise BadInput(f"dataset {job.name}: the table at {job.table.location.url} is "
                           f"partitioned by {existing} but the manifest says "
                           f"partition_by: {list(job.partition_by)}; make them agree")
    start, problems, known, plain = current, [], {}, set()
    for file in files:
        facts = read_facts(job.source, file)
        if facts.rows is not None:
            known[file.key] = facts.rows
        plain.update(facts.plain_columns)
        current, wrong = reconcile(current, facts.schema, mode=job.schema_mode,
                                   partition_by=list(job.partition_by), key=file.key)
        problems.extend(wrong)
    if problems:
        raise SchemaProblem(f"dataset {job.name}: schema_mode {job.schema_mode}: "
                            + "; ".join(problems[:20])
                            + (f"; and {len(problems) - 20} more" if len(problems) > 20 else ""))
    schema = current if current is not None else pa.schema([])
    # Any file whose writer gave up a column's dictionary speaks for the table's
    # files too (tabular_encoding); partition columns are not in the data files.
    plain &= set(schema.names) - set(job.partition_by)
    return Plan(schema, known, start is None or schema != start, frozenset(plain))


def load(job: TableJob, *, run_id: str, unit_rows: int | None = None,
         group_bytes: int | None = None) -> LoadResult:
    """Append every source row not yet in the table, hashing every source row.

    Raises SchemaProblem (nothing of the refused files written) or any store
    error (the commits made so far stand; a rerun writes only what is missing).
    ``unit_rows`` and ``group_bytes`` default to the module's UNIT_ROWS and GROUP_BYTES.
    """
    unit_rows = unit_rows or UNIT_ROWS
    group_bytes = group_bytes or GROUP_BYTES
    files = list_source_files(job.source, job.source_format, job.key_filter)
    table = job.table.open()
    plan = plan_schema(job, files, table)
    result = LoadResult(source=PartitionDigests(job.partition_by))
    ids = {f.key: app_id(job, f, unit_rows) for f in files}
    done = {f.key: (table.transaction_version(ids[f.key]) or 0) if table is not None else 0
            for f in files}
    hasher = BackgroundDigests(result.source)
    try:
        _load_files(job, files, table, plan, result, hasher, ids, done, unit_rows, group_bytes,
                    run_id)
    finally:
        hasher.close()
    table = job.table.open()
    if table is not None:
        result.version = table.version()
    return result


def _load_files(job: TableJob, files: list[SourceFile], table: Any, plan: Plan,
                result: LoadResult, hasher: BackgroundDigests, ids: dict[str, str],
                done: dict[str, int], unit_rows: int, group_bytes: int, run_id: str) -> None:
    group: list[tuple[SourceFile, int]] = []
    size = 0

    def small(file: SourceFile) -> bool:
        rows = plan.known_rows.get(file.key)
        if rows is not None:
            return rows <= unit_rows
        return file.compression is None and file.size <= unit_rows  # a row takes a byte

    def flush() -> None:
        nonlocal group, size, table
        if group:
            table = _commit(job, table, plan, group, unit_rows, ids, result, hasher, run_id)
        group, size = [], 0

    for file in files:
        if small(file):
            if done[file.key] >= 1:
                _hash_only(job, file, result, hasher, plan.schema)
                continue
            group.append((file, 0))
            size += file.size
            if size >= group_bytes or len(group) >= GROUP_FILES:
                flush()
            continue
        flush()
        rows = Rows(job, file, hasher, plan.schema)
        try:
            unit = 0
            while unit < done[file.key] and rows.peek() is not None:
                for _ in rows.take(unit_rows):
                    pass
                unit += 1
            wrote = False
            while rows.peek() is not None:
                table = _commit(job, table, plan, [(file, unit)], unit_rows, ids, result,
                                hasher, run_id, rows=rows)
                unit += 1
                wrote = True
            _count_file(result, file, wrote)
            result.rows_read += rows.read
        finally:
            rows.close()
    flush()


def _hash_only(job: TableJob, file: SourceFile, result: LoadResult,
               hasher: BackgroundDigests, schema: pa.Schema) -> None:
    rows = Rows(job, file, hasher, schema)
    try:
        for _ in rows.take(1 << 62):
            pass
        result.rows_read += rows.read
    finally:
        rows.close()
    _count_file(result, file, False)


def _count_file(result: LoadResult, file: SourceFile, wrote: bool) -> None:
    if wrote:
        result.files_loaded += 1
        result.bytes_loaded += file.size
    else:
        result.files_skipped += 1
        result.bytes_skipped += file.size


def _commit(job: TableJob, table: Any, plan: Plan, units: list[tuple[SourceFile, int]],
            unit_rows: int, ids: dict[str, str], result: LoadResult,
            hasher: BackgroundDigests, run_id: str, *, rows: Rows | None = None) -> Any:
    """Append ``units`` in one Delta commit carrying their app transactions."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    if table is not None:
        table.update_incremental()
        for file, unit in units:  # a second writer got here first: never append twice
            if (table.transaction_version(ids[file.key]) or 0) > unit:
                raise BadInput(f"dataset {job.name}: {file.key} unit {unit} was committed by "
                               "another writer during this run; run one load at a time")
    written = 0
    failure: list[BaseException] = []

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from unit_batches()
        except Exception as exc:  # delta-rs would wrap it in a C Data interface error
            failure.append(exc)
            raise

    def unit_batches() -> Iterator[pa.RecordBatch]:
        nonlocal written
        for file, _ in units:
            source = rows if rows is not None else Rows(job, file, hasher, plan.schema)
            try:
                for batch in source.take(unit_rows):
                    written += batch.num_rows
                    yield batch
            finally:
                if rows is None:
                    result.rows_read += source.read
                    source.close()

    transactions = [Transaction(ids[f.key], unit + 1) for f, unit in units]
    metadata = {"datamove.run_id": run_id, "datamove.dataset": job.name,
                "datamove.units": str(len(units))}
    stream: Iterator[pa.RecordBatch] = batches()
    first = next(stream, None)
    plain = plan.plain_columns
    if first is not None:
        if units[0][0].format != "parquet":  # no footer: the first batch is the evidence
            plain = plain | (set(distinct_columns(first)) - set(job.partition_by))
        stream = itertools.chain([first], stream)
    started = time.monotonic()
    try:
        write_deltalake(
            table if table is not None else job.table.uri,
            pa.RecordBatchReader.from_batches(plan.schema, stream),
            mode="append", partition_by=list(job.partition_by) or None,
            schema_mode="merge" if job.schema_mode == "merge" and plan.evolves else None,
            storage_options=job.table.options,
            writer_properties=writer_properties(plain),
            commit_properties=CommitProperties(app_transactions=transactions,
                                               custom_metadata=metadata))
    except Exception:
        if failure:  # our reader's error (a source file), not delta-rs's
            raise failure[0] from None
        raise
    log.info("dataset %s: committed %d rows of %d unit(s) in %.2fs", job.name, written,
             len(units), time.monotonic() - started)
    result.rows_loaded += written
    result.commits += 1
    if rows is None:
        for file, _ in units:
            _count_file(result, file, True)
    return table if table is not None else job.table.open()


# --- verifying ------------------------------------------------------------------------

def source_digests(job: TableJob) -> tuple[PartitionDigests, int]:
    """Every source row hashed per partition (``verify`` reads, writes nothing)."""
    files = list_source_files(job.source, job.source_format, job.key_filter)
    plan = plan_schema(job, files, job.table.open())
    result = LoadResult(source=PartitionDigests(job.partition_by))
    hasher = BackgroundDigests(result.source)
    try:
        for file in files:
            _hash_only(job, file, result, hasher, plan.schema)
    finally:
        hasher.close()
    return result.source, len(files)


def table_digests(table: Table, partition_by: tuple[str, ...], *, version: int | None = None,
                  where: Any = None) -> tuple[PartitionDigests, int | None]:
    """A table read back and hashed per partition, streaming; (digests, version read)."""
    dt = table.open(version)
    if dt is None:
        return PartitionDigests(partition_by), None
    return digest_table(dt, partition_by, where), dt.version()


@dataclass
class PartitionOutcome:
    key: tuple[str | None, ...]
    status: str  # ok | mismatch | missing | extra
    table: Digest
    source: Digest

    def message(self, partition_by: tuple[str, ...]) -> str:
        where = partition_json(partition_by, self.key)
        if self.status == "missing":
            return f"partition {where}: {self.source.rows} source rows, none in the table"
        if self.status == "extra":
            return f"partition {where}: {self.table.rows} rows in the table, none in the source"
        return (f"partition {where}: the table has {self.table.rows} rows (digest "
                f"{self.table.hex}), the source {self.source.rows} (digest {self.source.hex})")


def compare(source: PartitionDigests, table: PartitionDigests) -> list[PartitionOutcome]:
    """Every partition of either side, in key order, judged."""
    out = []
    for key in sorted(source.parts.keys() | table.parts.keys(),
                      key=lambda k: tuple((v is None, v or "") for v in k)):
        s, t = source.parts.get(key), table.parts.get(key)
        status = ("missing" if t is None else "extra" if s is None else
                  "ok" if s == t else "mismatch")
        out.append(PartitionOutcome(key, status, t or Digest(), s or Digest()))
    return out


def stored_digests(job: TableJob) -> tuple[PartitionDigests, int | None]:
    """Hot table plus the cold tables its lifecycle rules moved partitions to."""
    total, version = table_digests(job.table, job.partition_by)
    for cold in job.cold:
        digests, _ = table_digests(cold, job.partition_by)
        total.merge(digests)
    return total, version


# --- the command ----------------------------------------------------------------------

def table_jobs(manifest: Manifest, datasets: list[str] | None = None) -> list[TableJob]:
    """The manifest's ``format: delta`` datasets (optionally only the named ones)."""
    specs = [manifest.dataset(name) for name in datasets] if datasets else manifest.datasets
    return [TableJob.from_spec(spec) for spec in specs if spec.is_table]


def preflight_tables(jobs: list[TableJob]) -> None:
    """Every source listable with known formats, every table openable (exit 2 if not)."""
    for job in jobs:
        list_source_files(job.source, job.source_format, job.key_filter)
        job.table.open()


def execute_table(job: TableJob, command: str, report: Report, *, run_id: str,
                  ledger: Ledger | None, audit: AuditWriter | None, sequence: int) -> None:
    """Load (``run``) or only compare (``verify``) one table dataset into ``report``."""
    from datamove.pipeline.auditing import (
        record_table_failed,
        record_table_loaded,
        record_table_partition,
    )

    ds = report.dataset(job.name, job.source.url, job.table.location.url)
    started = time.monotonic()
    try:
        if command == "run":
            loaded = load(job, run_id=run_id)
            source = loaded.source
            ds.counts["copied"] += loaded.files_loaded
            ds.bytes["copied"] += loaded.bytes_loaded
            ds.counts["skipped"] += loaded.files_skipped
            ds.bytes["skipped"] += loaded.bytes_skipped
            ds.counts["rows_loaded"] += loaded.rows_loaded
            ds.counts["commits"] += loaded.commits
            if audit is not None:
                record_table_loaded(audit, job.name, job.table.location.url, loaded)
        else:
            source, _ = source_digests(job)
        stored, version = stored_digests(job)
    except Exception as exc:  # one dataset's failure is that dataset's (exit 1)
        if isinstance(exc, LocationUnreachable):
            raise
        _dataset_failed(job, report, describe_problem(exc), ledger, audit, run_id, sequence,
                        command)
        if audit is not None:
            record_table_failed(audit, job.name, job.table.location.url, describe_problem(exc))
        return
    outcomes = compare(source, stored)
    rows = []
    for outcome in outcomes:
        text = partition_json(job.partition_by, outcome.key)
        if outcome.status == "ok":
            ds.add("verified" if command == "run" else "matched", 0)
            ds.counts["rows_verified"] += outcome.table.rows
        else:
            from datamove.pipeline.transfer import ObjectResult

            status = ("failed" if command == "run" else
                      {"mismatch": "differs"}.get(outcome.status, outcome.status))
            report.record(ObjectResult(dataset=job.name, key=text, action="verify",
                                       status=status, size=0,
                                       error=outcome.message(job.partition_by)))
        if audit is not None:
            record_table_partition(audit, job.name, job.table.location.url, version, text,
                                   outcome)
        rows.append(_ledger_row(job, run_id, command, version, text, outcome.table,
                                outcome.source, outcome.status, None))
    ds.counts["partitions"] += len(outcomes)
    if version is not None:
        ds.counts["table_version"] = version
    log.info("dataset %s: %s in %.1fs", job.name, command, time.monotonic() - started)
    if ledger is not None and rows:
        record_ledger(ledger, run_id, sequence, rows)


def describe_problem(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BadInput) else describe(exc)


def _dataset_failed(job: TableJob, report: Report, error: str, ledger: Ledger | None,
                    audit: AuditWriter | None, run_id: str, sequence: int,
                    command: str) -> None:
    from datamove.pipeline.transfer import ObjectResult

    report.dataset(job.name).counts["partitions"] += 0
    report.record(ObjectResult(dataset=job.name, key="", action="load", status="failed",
                               size=0, error=error))
    if ledger is not None:
        record_ledger(ledger, run_id, sequence, [_ledger_row(
            job, run_id, command, None, None, None, None, "failed", error)])


def _ledger_row(job: TableJob, run_id: str, command: str, version: int | None,
                partition: str | None, stored: Digest | None, source: Digest | None,
                status: str, error: str | None) -> dict[str, Any]:
    return {"dataset": job.name, "run_id": run_id, "command": command,
            "table_url": job.table.location.url, "table_version": version,
            "partition": partition, "rows": stored.rows if stored else None,
            "digest": stored.hex if stored else None,
            "source_rows": source.rows if source else None,
            "source_digest": source.hex if source else None, "status": status,
            "error": error, "recorded_at": now()}


def record_ledger(ledger: Ledger, run_id: str, sequence: int,
                  rows: list[dict[str, Any]]) -> None:
    """One idempotent append per dataset and run to ``<ledger>/tables``."""
    append_once(ledger, TABLES, pa.Table.from_pylist(rows, schema=TABLE_SCHEMA),
                f"datamove:{run_id}:{TABLES}", sequence,
                metadata={"datamove.run_id": run_id, "datamove.batch": str(sequence)})
