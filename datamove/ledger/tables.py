"""The ledger: Delta Lake tables recording every object copy and every run.

Two tables live under the manifest's ``ledger`` URL (docs/FORMAT.md documents
every column):

* ``objects``: one row per object copy or verification: provenance, checksums,
  where it went, how it was verified, how many attempts it took.
* ``runs``: one row when a run starts and one when it ends.

Rules (DESIGN.md, "The driver is the only ledger writer"): a ``DeltaTable`` is
not picklable and concurrent appenders conflict, so only the driver opens the
ledger. :class:`LedgerWriter` buffers rows and appends them in batches; every
commit carries a Delta app transaction ``(datamove:<run id>, batch number)``
that is checked first, so a commit retried after an error that hid its success
never duplicates rows.
"""

from __future__ import annotations

import getpass
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from datamove import __version__
from datamove.errors import BadInput, DatamoveError
from datamove.extsort import sorted_batches
from datamove.ledger.damage import (
    check_free_space,
    check_not_orphaned,
    check_table,
    is_permanent,
    read_error,
    write_error,
)
from datamove.ledger.vouched import AUDIT, Lost, accepted, find_lost, lost_rows, refusal
from datamove.stores.core import describe

log = logging.getLogger(__name__)

OBJECTS = "objects"
RUNS = "runs"
LATEST_MEMORY_ROWS = 250_000
"""Ledger rows :meth:`Ledger.latest` sorts in memory at once (about 300 bytes each in
Arrow, twice while sorting); bigger datasets are sorted in runs on disk and merged."""
ROW_GROUP_ROWS = 16_384
"""Rows per Parquet row group in the files compaction writes. A scan decodes a row
group whole (pyarrow's dataset reader), so this bounds a ledger read's memory: at
delta-rs's default (about a million rows) one row group of the columns the plan
reads takes about 350 MB. Compaction's writer holds a row group too: merging 200,000
rows peaked 183 MB above its start at 65,536 rows a group, 91 MB at 16,384 (8,192 is
no lower), in the same time."""
CREATED_EMPTY = (OBJECTS, RUNS, AUDIT, f"{AUDIT}_checkpoints")
"""Tables created empty before any row is written: data files without a log there are
damage, never a crash while creating the table (as they can be for ``tables``)."""

TS = pa.timestamp("us", tz="UTC")
OBJECT_SCHEMA = pa.schema([
    ("dataset", pa.string()),
    ("key", pa.string()),
    ("run_id", pa.string()),
    ("status", pa.string()),  # copied | verified | repaired | rotated | archived | failed
    #                           | rotating | deleted
    ("source_url", pa.string()),
    ("size", pa.int64()),
    ("source_mtime", TS),
    ("source_etag", pa.string()),
    ("source_version", pa.string()),
    ("sha256", pa.string()),
    ("destination_url", pa.string()),
    ("stored_size", pa.int64()),
    ("stored_sha256", pa.string()),
    ("native_checksum", pa.string()),
    ("encrypted", pa.bool_()),
    ("key_fingerprints", pa.list_(pa.string())),
    ("payload_sha256", pa.string()),  # encrypted: stored bytes after the age header
    ("previous_key_fingerprints", pa.list_(pa.string())),  # rotation: the keys before
    ("storage_class", pa.string()),
    ("region", pa.string()),
    ("verify_mode", pa.string()),
    ("verify_result", pa.string()),  # ok | mismatch | error
    ("verified_at", TS),
    ("attempts", pa.int32()),
    ("error", pa.string()),
    ("recorded_at", TS),
    ("archive_url", pa.string()),  # lifecycle moved the bytes here (else destination_url)
])
RUN_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("event", pa.string()),  # start | end
    ("command", pa.string()),
    ("manifest_name", pa.string()),
    ("manifest_sha256", pa.string()),
    ("user", pa.string()),
    ("host", pa.string()),
    ("engine", pa.string()),
    ("started_at", TS),
    ("ended_at", TS),
    ("counts_json", pa.string()),  # per dataset: objects and bytes per outcome
    ("exit_code", pa.int32()),
    ("datamove_version", pa.string()),
    ("objects_commits", pa.int64()),  # end: the run's objects commits (app txn versions)
    ("lost_run_id", pa.string()),  # lost: the run whose records the ledger lost
    ("note", pa.string()),  # lost: what of it was missing
])
DONE_STATUSES = ("copied", "verified", "repaired", "rotated", "archived")
ROTATING = "rotating"  # journal: a rotation to key_fingerprints is about to rewrite this object
DELETED = "deleted"  # sync --delete removed the destination object (pipeline/mirror.py)


@dataclass(frozen=True)
class LedgerRow:
    """What the planner needs from the latest good row of one object."""

    key: str
    size: int
    source_mtime: float | None
    source_etag: str | None
    stored_size: int
    sha256: str | None
    stored_sha256: str | None = None
    payload_sha256: str | None = None
    key_fingerprints: tuple[str, ...] = ()
    recorded_at: float | None = None
    status: str = "copied"
    destination_url: str | None = None
    storage_class: str | None = None
    archive_url: str | None = None  # a lifecycle rule moved the bytes to this cold location
    encrypted: bool = False
    copied_at: float | None = None  # when these bytes were first recorded (lifecycle ages)

    @property
    def stored_url(self) -> str | None:
        """Where the object's bytes are now."""
        return self.archive_url or self.destination_url


def storage_options(url: str, options: dict[str, Any]) -> dict[str, str]:
    """Map manifest (fsspec-style) options to delta-rs object-store options.

    Credentials stay in the environment, where delta-rs reads them itself. A
    single writer per ledger is the rule, so S3's missing atomic rename is safe.
    Azure: the account and blob endpoint (not secret) come from the options or
    the connection string in the environment; delta-rs does not read connection
    strings, so the key comes from ``AZURE_STORAGE_ACCOUNT_KEY`` (or another
    credential delta-rs finds itself). GCS: everything from the environment
    (``GOOGLE_APPLICATION_CREDENTIALS``); docs/BACKENDS.md says what is tested.
    Plain HTTP is allowed only to a loopback endpoint or with the manifest's
    ``allow_insecure: true`` (stores/transport.py); elsewhere delta-rs refuses it.
    """
    from datamove.stores.transport import plain_http_allowed

    if url.startswith(("az://", "abfs://", "abfss://")):
        conn = dict(part.split("=", 1) for part in
                    os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").split(";") if "=" in part)
        azure: dict[str, str] = {}
        account = (options.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
                   or conn.get("AccountName"))
        if account:
            azure["azure_storage_account_name"] = str(account)
        endpoint = conn.get("BlobEndpoint")
        if endpoint:
            azure["azure_storage_endpoint"] = endpoint.rstrip("/")
            if endpoint.startswith("http://") and plain_http_allowed(endpoint, options):
                azure["azure_allow_http"] = "true"
        return azure
    if not url.startswith(("s3://", "s3a://")):
        return {}
    out = {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    endpoint = options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        out["AWS_ENDPOINT_URL"] = str(endpoint)
        if str(endpoint).startswith("http://") and plain_http_allowed(str(endpoint), options):
            out["AWS_ALLOW_HTTP"] = "true"
    region = options.get("region") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        out["AWS_REGION"] = str(region)
    return out


class Ledger:
    """The ledger's tables, opened on the driver."""

    def __init__(self, url: str, options: dict[str, Any] | None = None):
        self.url = url.rstrip("/")
        self.storage_options = storage_options(self.url, options or {})
        self._checked: set[str] = set()  # tables whose files and log were checked
        self._open: dict[str, Any] = {}  # tables opened so far, brought up to date on use
        self.lost: list[Lost] | None = None  # after check_against_audit: accepted losses

    def uri(self, table: str) -> str:
        return f"{self.url}/{table}"

    def table(self, name: str) -> Any:
        """The DeltaTable as of now, or None if it does not exist yet.

        The first time a table is opened its data files and recent commits are
        checked (ledger/damage.py): damage is LedgerDamaged (exit 2), never a
        traceback nor a table that silently lost rows. Later calls bring that
        object up to date (``update_incremental`` reads only the commits since,
        about 1 ms) instead of replaying the log again (10-30 ms): a run's start
        asked for the same three tables 16 times. Callers read what they get
        at once, so a table moving forward under an earlier caller changes nothing.
        """
        from deltalake import DeltaTable

        opened = self._open.get(name)
        if opened is not None:
            try:
                opened.update_incremental()
                return opened
            except Exception:  # gone or damaged since: opened afresh below, and checked
                self.forget(name)
        uri = self.uri(name)
        try:
            exists = DeltaTable.is_deltatable(uri, storage_options=self.storage_options)
            table = DeltaTable(uri, storage_options=self.storage_options) if exists else None
        except OSError as exc:
            raise BadInput(f"ledger {self.url}: cannot be opened: {describe(exc)}") from exc
        except Exception as exc:
            raise read_error(uri, exc) from None
        if table is None:
            if name in CREATED_EMPTY:
                check_not_orphaned(uri)
        else:
            if name not in self._checked:
                check_table(table, uri)
                self._checked.add(name)
            self._open[name] = table
        return table

    def forget(self, name: str) -> None:
        """Open ``name`` afresh next time (after a failed write, say)."""
        self._open.pop(name, None)

    def ensure(self) -> None:
        """Create both tables if missing (idempotent), once the audit log's record
        agrees with the ledger's (ledger/vouched.py): a ledger that lost its tables is
        refused, not created anew."""
        from deltalake import DeltaTable

        self.check_against_audit()
        try:
            if not self.url.startswith(("s3://", "s3a://", "gs://", "az://", "abfs")):
                os.makedirs(self.url, exist_ok=True)
            for name, schema, description in (
                    (OBJECTS, OBJECT_SCHEMA, "datamove: one row per object copy or verification"),
                    (RUNS, RUN_SCHEMA, "datamove: one row per run start and end")):
                table = self.table(name)
                if table is None:
                    check_free_space(self.uri(name), 0)
                    DeltaTable.create(self.uri(name), schema=schema, mode="ignore",
                                      name=f"datamove_{name}", description=description,
                                      configuration={"delta.checkpointInterval": "20"},
                                      storage_options=self.storage_options)
                else:
                    _add_missing_columns(table, schema)
        except DatamoveError:
            raise
        except Exception as exc:
            raise write_error(self.url, exc) from None

    def check_against_audit(self) -> None:
        """Refuse (LedgerBehind, exit 2) a ledger that lost records the audit log
        vouches for, unless the operator accepted the loss (ledger/vouched.py). Once
        per Ledger; an accepted loss waits in ``lost`` for the next start row."""
        if self.lost is not None:
            return
        lost = find_lost(self.table(AUDIT), self.table(RUNS), self.table(OBJECTS))
        if lost and not accepted(lost):
            raise refusal(self.url, lost)
        for run in lost:
            log.warning("ledger %s: going on without the records of run %s (%s), as "
                        "accepted", self.url, run.run_id, run.what)
        self.lost = lost

    # --- reading ----------------------------------------------------------------------

    def objects(self, filter_expr: Any = None, columns: list[str] | None = None) -> pa.Table:
        table = self.table(OBJECTS)
        if table is None:
            empty = OBJECT_SCHEMA.empty_table()
            return empty.select(columns) if columns else empty
        return scan(table, filter_expr, columns)

    def latest_done(self, dataset: str, destination_prefix: str = "") -> Iterator[LedgerRow]:
        """The latest good row per key of a dataset, in UTF-8 byte order of the key.

        Only rows whose destination URL starts with ``destination_prefix`` count:
        a dataset pointed at a new destination must not inherit the old one's rows.
        A key whose latest row is ``deleted`` (``sync --delete``) has no good copy.
        """
        return (row for row in self.latest(dataset, destination_prefix,
                                           (*DONE_STATUSES, DELETED))
                if row.status != DELETED)

    def latest(self, dataset: str, destination_prefix: str = "",
               statuses: tuple[str, ...] = DONE_STATUSES) -> Iterator[LedgerRow]:
        """The latest row per key with one of ``statuses``, in UTF-8 byte order of the key.

        Streams the dataset's rows (only the columns needed) through an external
        sort (datamove/extsort.py): memory stays bounded by ``LATEST_MEMORY_ROWS``
        rows whatever the size of the dataset; bigger datasets spill sorted runs to
        the system's temporary directory (``TMPDIR``), about 300 bytes a row.
        """
        where = (pc.field("dataset") == dataset) & pc.field("status").isin(list(statuses))
        if destination_prefix:
            where &= pc.starts_with(pc.field("destination_url"), destination_prefix)
        table = self.table(OBJECTS)
        if table is None:
            return iter(())
        ordered = sorted_batches(batches(table, where, LATEST_COLUMNS), "key", then="recorded_at",
                                 memory_rows=LATEST_MEMORY_ROWS)
        # Sort now, not on the first next(): a sort reads every row before it yields
        # one, so a damaged ledger is the caller's error (exit 2) here, never a plan
        # that stopped half-way. The rows then stream from the sorted runs.
        first = next(ordered, None)
        return _latest_rows(ordered if first is None else itertools.chain([first], ordered))

    def runs(self) -> pa.Table:
        table = self.table(RUNS)
        return RUN_SCHEMA.empty_table() if table is None else scan(table)

    # --- housekeeping -----------------------------------------------------------------

    def compact(self, max_files: int = 64) -> None:
        """Merge small files once there are many, so the tables stay fast to open; the
        merged files have row groups of ``ROW_GROUP_ROWS`` rows, so reading them stays
        in bounded memory (:func:`batches`).

        Housekeeping after the run's end row: a failure (say, a full disk) is
        logged and changes nothing, since compaction only rewrites what is there.
        """
        from deltalake import WriterProperties

        for name in (OBJECTS, RUNS):
            table = self.table(name)
            if table is None or len(table.file_uris()) <= max_files:
                continue
            try:
                files = pa.table(table.get_add_actions(flatten=True))
                check_free_space(self.uri(name), pc.sum(files["size_bytes"]).as_py() or 0)
                table.optimize.compact(writer_properties=WriterProperties(
                    max_row_group_size=ROW_GROUP_ROWS))
                table.create_checkpoint()
            except Exception as exc:
                log.warning("ledger table %s not compacted (%s); it is complete, and the "
                            "next run tries again", self.uri(name), describe(exc))


def _latest_rows(rows: Iterable[pa.RecordBatch]) -> Iterator[LedgerRow]:
    """The last row per key of rows read for :meth:`Ledger.latest`, sorted by key and
    ``recorded_at`` (stably); ``copied_at`` is the first row of the last run of rows
    with the same sha256. Converted a column at a time, 10,000 rows at once."""
    previous: tuple[Any, ...] | None = None
    copied_at = None  # the first row of the latest run of rows with the same content
    for batch in rows:
        for start in range(0, batch.num_rows, 10_000):
            for row in zip(*_python_columns(batch.slice(start, 10_000)), strict=True):
                if previous is not None and previous[_KEY] != row[_KEY]:
                    yield _ledger_row(previous, copied_at)
                    previous = None
                if previous is None or previous[_SHA256] != row[_SHA256]:
                    copied_at = row[_RECORDED_AT]
                previous = row
    if previous is not None:
        yield _ledger_row(previous, copied_at)


LATEST_COLUMNS = ["key", "size", "source_mtime", "source_etag", "stored_size", "sha256",
                  "stored_sha256", "payload_sha256", "key_fingerprints", "recorded_at",
                  "status", "destination_url", "storage_class", "archive_url", "encrypted"]
"""What :meth:`Ledger.latest` reads, in the order :func:`_ledger_row` takes them."""
_KEY, _SHA256, _RECORDED_AT = (LATEST_COLUMNS.index(name)
                               for name in ("key", "sha256", "recorded_at"))


def _python_columns(batch: pa.RecordBatch) -> list[list[Any]]:
    """``LATEST_COLUMNS`` as Python lists; timestamps as POSIX seconds (microseconds
    divided by a million: what ``datetime.timestamp()`` gives, exactly until the year 2255)."""
    out = []
    for name in LATEST_COLUMNS:
        column = batch.column(name)
        if pa.types.is_timestamp(column.type):
            column = pc.divide(column.cast(pa.int64()).cast(pa.float64(), safe=False), 1e6)
        out.append(column.to_pylist())
    return out


def _add_missing_columns(table: Any, schema: pa.Schema) -> None:
    """Bring a ledger written by an older datamove up to ``schema``: new columns are
    nullable and added at the end, so old rows read as null and old readers still work."""
    from deltalake import Field, Schema

    have = {f.name for f in table.schema().fields}
    wanted = Schema.from_arrow(schema).fields
    missing = [f for f in wanted if f.name not in have]
    if missing:
        log.info("ledger %s: adding columns %s", table.table_uri,
                 ", ".join(f.name for f in missing))
        table.alter.add_columns([Field(f.name, f.type, nullable=True) for f in missing])


def scan(table: Any, filter_expr: Any = None, columns: list[str] | None = None) -> pa.Table:
    """Read a DeltaTable into Arrow, single-threaded on purpose.

    A process that exits right after a threaded pyarrow scan of a deltalake
    dataset aborts about one time in three with "terminate called without an
    active exception" (pyarrow 26, deltalake 1.6; apache/arrow#34314).
    """
    try:
        return table.to_pyarrow_dataset().to_table(filter=filter_expr, columns=columns,
                                                   use_threads=False)
    except Exception as exc:  # a data file gone or corrupt since the table was opened
        raise read_error(table.table_uri, exc, table) from None


def batches(table: Any, filter_expr: Any = None,
            columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a DeltaTable's rows, single-threaded (as :func:`scan`); a data file that
    cannot be read is LedgerDamaged."""
    try:
        dataset = table.to_pyarrow_dataset()
        # No readahead: by default the scanner decodes several files (and batches)
        # ahead, about 1.3 GB at 10M rows; one row group at a time is the bound.
        yield from dataset.scanner(filter=filter_expr, columns=columns, use_threads=False,
                                   batch_readahead=0, fragment_readahead=0).to_batches()
    except Exception as exc:
        raise read_error(table.table_uri, exc, table) from None


def _ledger_row(row: tuple[Any, ...], copied_at: float | None) -> LedgerRow:
    (key, size, mtime, etag, stored_size, sha256, stored_sha256, payload_sha256, fingerprints,
     recorded_at, status, destination_url, storage_class, archive_url, encrypted) = row
    return LedgerRow(key=key, size=size, source_mtime=mtime, source_etag=etag,
                     stored_size=stored_size, sha256=sha256, stored_sha256=stored_sha256,
                     payload_sha256=payload_sha256, key_fingerprints=tuple(fingerprints or ()),
                     recorded_at=recorded_at, status=status, destination_url=destination_url,
                     storage_class=storage_class, archive_url=archive_url,
                     encrypted=bool(encrypted), copied_at=copied_at)


class LedgerWriter:
    """The single writer: batches rows by count and by time; idempotent commits.

    Opening one checks the ledger against the audit log first (ledger/vouched.py):
    a ledger that lost records the audit log vouches for is refused (exit 2)
    before this writer records anything.
    """

    def __init__(self, ledger: Ledger, run_id: str, *, max_rows: int = 2_000,
                 max_seconds: float = 1.0, retries: int = 5):
        ledger.check_against_audit()
        self.ledger = ledger
        self.run_id = run_id
        self.app_id = f"datamove:{run_id}"
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.retries = retries
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self.batch = 0  # batches committed so far by this writer

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.max_rows or \
                time.monotonic() - self._last_flush >= self.max_seconds:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        data = pa.Table.from_pylist(self._rows, schema=OBJECT_SCHEMA)
        self.commit(OBJECTS, data, self.batch + 1)
        self.batch += 1
        self._rows = []

    def commit(self, table_name: str, data: pa.Table, version: int) -> bool:
        """Append ``data`` as app-transaction ``version``; False if already committed."""
        app_id = self.app_id if table_name == OBJECTS else f"{self.app_id}:{table_name}"
        return append_once(self.ledger, table_name, data, app_id, version,
                           metadata={"datamove.run_id": self.run_id,
                                     "datamove.batch": str(version)},
                           retries=self.retries)

    def run_event(self, event: str, **fields: Any) -> None:
        """Append a run start or end row (its own app transaction: 1 start, 2 end).

        The end row says how many objects commits the run made, so a later writer
        can tell a ledger that lost its last commits; the start row carries, in
        the same commit, a ``lost`` row for each run whose loss the operator
        accepted (ledger/vouched.py)."""
        mine = {"run_id": self.run_id, "user": user(), "host": socket.gethostname(),
                "datamove_version": __version__}
        rows = [{**mine, "event": event, **fields}]
        if event == "end":
            rows[0]["objects_commits"] = self.batch
        elif self.ledger.lost:
            rows += [{**mine, "manifest_name": fields.get("manifest_name"), **lost}
                     for lost in lost_rows(self.ledger.lost)]
        runs = self.ledger.table(RUNS)
        if runs is not None:  # archive and rotate do not run ensure(): older ledgers
            try:
                _add_missing_columns(runs, RUN_SCHEMA)
            except Exception as exc:
                raise write_error(self.ledger.uri(RUNS), exc) from None
        self.commit(RUNS, pa.Table.from_pylist(rows, schema=RUN_SCHEMA),
                    1 if event == "start" else 2)
        if event == "start":
            self.ledger.lost = []


def append_once(ledger: Ledger, table_name: str, data: pa.Table, app_id: str, version: int,
                *, metadata: dict[str, str], retries: int = 5,
                before: Callable[[Any], None] | None = None) -> bool:
    """Append ``data`` to a table under the Delta app transaction (app_id, version), once.

    The transaction version is read before every attempt, so a retry after a
    failure that hid its success appends nothing (returns False). ``before``
    sees the table (None if it does not exist yet) and may refuse the append by
    raising a DatamoveError, which is never retried. Other failures are retried
    ``retries`` times with exponential backoff, except those retrying cannot fix
    (a full disk, permissions): those, and the last failure, are LedgerUnwritable.
    The table comes from :meth:`Ledger.table`, brought up to date between commits.
    """
    from deltalake import CommitProperties, Transaction, write_deltalake

    for attempt in range(1, retries + 2):
        try:
            table = ledger.table(table_name)
            if table is not None and (table.transaction_version(app_id) or 0) >= version:
                return False  # a previous attempt landed; never append twice
            if before is not None:
                before(table)
            check_free_space(ledger.uri(table_name), data.nbytes)
            write_deltalake(
                table if table is not None else ledger.uri(table_name), data,
                mode="append", storage_options=ledger.storage_options,
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id, version)],
                    custom_metadata=metadata))
            return True
        except DatamoveError:
            raise
        except Exception as exc:
            ledger.forget(table_name)  # the retry opens the table afresh
            if attempt > retries or is_permanent(exc):
                raise write_error(ledger.uri(table_name), exc) from None
            log.warning("commit %s/%s to %s failed (%s); retrying", app_id, version,
                        table_name, describe(exc))
            time.sleep(min(5.0, 0.2 * 2 ** attempt))
    return False


def now() -> datetime:
    return datetime.now(UTC)


def ts(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def user() -> str:
    """The OS user running datamove, for run rows and audit events."""
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
