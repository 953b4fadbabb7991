"""The Delta ledger: idempotent commits, readable by other readers, on S3 too.

* A commit retried after a failure never duplicates rows: a failure injected
  before the write, and a write that lands but whose success is lost (the
  retry must find the app transaction and append nothing).
* The tables read back the same with deltalake's pyarrow reader, polars,
  DuckDB's delta extension (delta-kernel, not the delta-rs writer) and a replay
  of the ``_delta_log`` by hand that reads the listed parquet files.
* A ledger on S3 (moto_server): a run records there, a rerun skips from it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamove import api
from datamove.ledger.damage import LedgerUnwritable
from datamove.ledger.tables import OBJECT_SCHEMA, OBJECTS, RUNS, Ledger, LedgerWriter
from datamove.manifest.model import load_manifest
from datamove.pipeline.march import DatasetJob, plan_dataset
from tests.conftest import s3_location, write_manifest

# --- helpers -------------------------------------------------------------------------

KEYS = ["a-c", "a/b", "empty.bin", "nested/deeper/x.bin", "nested/y.bin", "ünïcødé/ß.txt"]


def make_source(root: Path, seed: int = 7) -> dict[str, str]:
    """A small tree with awkward keys; returns key → sha256."""
    rng = random.Random(seed)
    out = {}
    for key in KEYS:
        data = b"" if key == "empty.bin" else rng.randbytes(rng.randint(1, 300_000))
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[key] = hashlib.sha256(data).hexdigest()
    return out


def object_row(run_id: str, key: str, status: str = "copied") -> dict[str, object]:
    now = datetime.now(UTC)
    return {"dataset": "d", "key": key, "run_id": run_id, "status": status,
            "source_url": f"/src/{key}", "size": 3, "sha256": hashlib.sha256(key.encode())
            .hexdigest(), "destination_url": f"/dst/{key}", "stored_size": 3,
            "encrypted": False, "key_fingerprints": [], "verify_mode": "checksum",
            "verify_result": "ok", "attempts": 1, "recorded_at": now}


def batch_of(run_id: str, keys: list[str]) -> pa.Table:
    return pa.Table.from_pylist([object_row(run_id, k) for k in keys], schema=OBJECT_SCHEMA)


def rows_of(ledger: Ledger) -> list[tuple[str, str, str]]:
    table = ledger.objects(columns=["run_id", "key", "status"])
    return sorted(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def new_ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(str(tmp_path / "ledger"))
    ledger.ensure()
    return ledger


def test_a_table_is_opened_once_and_sees_every_later_commit(tmp_path):
    """Ledger.table opens a table once and brings it up to date on later calls (a
    run's start asked for the same tables 16 times, each replaying the log); what
    another writer (another Ledger, as another process would be) commits since is
    seen all the same, and forget() opens the table afresh."""
    ledger = new_ledger(tmp_path)
    first = ledger.table(OBJECTS)
    other = Ledger(str(tmp_path / "ledger"))
    assert LedgerWriter(other, "run-b").commit(OBJECTS, batch_of("run-b", ["k1", "k2"]), 1)
    again = ledger.table(OBJECTS)
    assert again is first
    assert again.version() == other.table(OBJECTS).version()
    assert rows_of(ledger) == [("run-b", "k1", "copied"), ("run-b", "k2", "copied")]
    ledger.forget(OBJECTS)
    assert ledger.table(OBJECTS) is not first


# --- 4. retried commits never duplicate rows ----------------------------------------

def test_commit_repeated_with_the_same_version_appends_nothing(tmp_path):
    ledger = new_ledger(tmp_path)
    writer = LedgerWriter(ledger, "run-a")
    data = batch_of("run-a", ["k1", "k2", "k3"])
    assert writer.commit(OBJECTS, data, 1) is True
    version = ledger.table(OBJECTS).version()
    # The same batch sent again (a retry after a lost answer): found, not appended.
    assert writer.commit(OBJECTS, data, 1) is False
    assert LedgerWriter(ledger, "run-a").commit(OBJECTS, data, 1) is False  # a new writer too
    assert ledger.table(OBJECTS).version() == version
    assert rows_of(ledger) == [("run-a", k, "copied") for k in ("k1", "k2", "k3")]
    table = ledger.table(OBJECTS)
    assert table.transaction_version("datamove:run-a") == 1
    # The next batch, and another run's batch 1, are new transactions.
    assert writer.commit(OBJECTS, batch_of("run-a", ["k4"]), 2) is True
    assert LedgerWriter(ledger, "run-b").commit(OBJECTS, batch_of("run-b", ["k1"]), 1) is True
    assert len(rows_of(ledger)) == 5
    # Commit metadata names the run and the batch.
    history = ledger.table(OBJECTS).history()
    named = [(h.get("datamove.run_id"), h.get("datamove.batch")) for h in history
             if h.get("datamove.run_id")]
    assert sorted(named) == [("run-a", "1"), ("run-a", "2"), ("run-b", "1")]


def test_commit_that_landed_but_looked_failed_is_not_repeated(tmp_path, monkeypatch):
    """The write reaches the table, then the caller sees an error (a lost answer):
    the retry inside LedgerWriter.commit must find the transaction and stop."""
    import deltalake

    ledger = new_ledger(tmp_path)
    real_write = deltalake.write_deltalake
    calls = []

    def lands_then_fails(*args, **kwargs):
        calls.append(kwargs["commit_properties"])
        if len(calls) == 1:
            real_write(*args, **kwargs)  # the commit happens for real…
            raise OSError("connection reset after the commit was sent")  # …the answer is lost
        return real_write(*args, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", lands_then_fails)
    writer = LedgerWriter(ledger, "run-lost", retries=3)
    for key in ("k1", "k2"):
        writer.add(object_row("run-lost", key))
    writer.flush()
    assert len(calls) == 1, "the retry wrote again although the first write had landed"
    assert rows_of(ledger) == [("run-lost", "k1", "copied"), ("run-lost", "k2", "copied")]
    assert writer.batch == 1
    # The writer goes on with batch 2 normally.
    writer.add(object_row("run-lost", "k3"))
    writer.flush()
    assert len(calls) == 2
    assert [r[1] for r in rows_of(ledger)] == ["k1", "k2", "k3"]
    assert ledger.table(OBJECTS).transaction_version("datamove:run-lost") == 2


def test_commit_failing_before_the_write_is_retried_exactly_once(tmp_path, monkeypatch):
    import deltalake

    ledger = new_ledger(tmp_path)
    real_write = deltalake.write_deltalake
    calls = []

    def fails_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("injected: the store refused the write")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", fails_first)
    writer = LedgerWriter(ledger, "run-retry", retries=2)
    writer.run_event("start", command="run")
    assert len(calls) == 2  # failed, then retried
    for key in ("k1", "k2", "k3"):
        writer.add(object_row("run-retry", key))
    writer.flush()
    writer.run_event("end", command="run", exit_code=0)
    assert len(calls) == 4
    assert rows_of(ledger) == [("run-retry", k, "copied") for k in ("k1", "k2", "k3")]
    runs = ledger.runs()
    assert sorted(runs.column("event").to_pylist()) == ["end", "start"]
    assert ledger.table(RUNS).transaction_version("datamove:run-retry:runs") == 2


def test_commit_that_keeps_failing_raises_and_leaves_no_rows(tmp_path, monkeypatch):
    import deltalake

    ledger = new_ledger(tmp_path)

    def always_fails(*args, **kwargs):
        raise OSError("injected: the store is down")

    monkeypatch.setattr(deltalake, "write_deltalake", always_fails)
    writer = LedgerWriter(ledger, "run-down", retries=1)
    writer.add(object_row("run-down", "k1"))
    with pytest.raises(LedgerUnwritable, match=r"cannot be written: injected: the store is "
                       r"down .* the ledger is intact"):
        writer.flush()
    assert rows_of(ledger) == []
    assert ledger.table(OBJECTS).transaction_version("datamove:run-down") is None


# --- 5. other readers see the same tables --------------------------------------------

def live_files(table_dir: Path) -> list[Path]:
    """Replay ``_delta_log`` by hand (checkpoint, then JSON commits): the parquet
    files of the current version. Shares no code with delta-rs."""
    log = table_dir / "_delta_log"
    files: set[str] = set()
    after = -1
    last = log / "_last_checkpoint"
    if last.exists():
        checkpoint = json.loads(last.read_text())
        after = checkpoint["version"]
        parts = checkpoint.get("parts")
        names = [f"{after:020d}.checkpoint.parquet"] if not parts else \
            [f"{after:020d}.checkpoint.{i:010d}.{parts:010d}.parquet" for i in range(1, parts + 1)]
        for name in names:
            for add in pq.read_table(log / name, columns=["add"]).column("add").to_pylist():
                if add:
                    files.add(unquote(add["path"]))
    commits = sorted(log.glob("*.json"), key=lambda p: int(p.name.split(".")[0]))
    assert commits, f"{log}: no commits"
    for commit in commits:
        if int(commit.name.split(".")[0]) <= after:
            continue
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                files.add(unquote(action["add"]["path"]))
            elif "remove" in action:
                files.discard(unquote(action["remove"]["path"]))
    return [table_dir / f for f in sorted(files)]


def read_by_log_replay(table_dir: Path) -> pa.Table:
    tables = [pq.read_table(f) for f in live_files(table_dir)]
    return pa.concat_tables(tables) if tables else pa.table({})


def duckdb_connection():  # type: ignore[no-untyped-def]
    """DuckDB with the delta extension from the duckdb-ext-delta wheel (no download)."""
    spec = importlib.util.find_spec("duckdb_ext")
    if importlib.util.find_spec("duckdb") is None or spec is None:
        message = "duckdb==1.4.4 and duckdb-ext-delta are not installed (pip install '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import duckdb

    directory = Path(next(iter(spec.submodule_search_locations))) / "extensions"
    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute(f"SET extension_directory = '{directory}'")
    con.execute("LOAD delta")
    return con


def triples(keys: list, shas: list, statuses: list) -> list[tuple[str, str, str]]:
    return sorted(zip(keys, shas, statuses, strict=True))


def all_readers(table_dir: Path) -> dict[str, list[tuple[str, str, str]]]:
    """(key, sha256, status) of every objects row, from four independent readers."""
    import polars as pl
    from deltalake import DeltaTable

    out = {}
    t = DeltaTable(str(table_dir)).to_pyarrow_table()
    out["deltalake/pyarrow"] = triples(t["key"].to_pylist(), t["sha256"].to_pylist(),
                                       t["status"].to_pylist())
    df = pl.read_delta(str(table_dir))
    out["polars"] = triples(df["key"].to_list(), df["sha256"].to_list(), df["status"].to_list())
    rows = duckdb_connection().execute(
        "SELECT key, sha256, status FROM delta_scan(?)", [str(table_dir)]).fetchall()
    out["duckdb delta_scan"] = sorted(rows)
    t = read_by_log_replay(table_dir)
    out["_delta_log replay + parquet"] = triples(t["key"].to_pylist(), t["sha256"].to_pylist(),
                                                 t["status"].to_pylist())
    return out


def test_tables_read_back_the_same_with_every_reader(tmp_path):
    source, dest = tmp_path / "src", tmp_path / "dst"
    expected = make_source(source)
    manifest_path = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(source)}, "destination": {"url": str(dest)}}],
        engine={"threads": 2, "batch_objects": 2})
    manifest = load_manifest(manifest_path)
    assert api.run(manifest).exit_code == 0
    # A second run with one changed object: a second batch of rows from another run.
    (source / "nested/y.bin").write_bytes(b"changed")
    os.utime(source / "nested/y.bin", (1_700_000_000, 1_700_000_000))
    assert api.run(manifest).datasets["d"].counts["copied"] == 1
    expected_rows = sorted([(k, s, "copied") for k, s in expected.items()] +
                           [("nested/y.bin", hashlib.sha256(b"changed").hexdigest(), "copied")])

    ledger_dir = tmp_path / ".datamove" / "ledger"  # the default, beside the manifest
    objects = ledger_dir / "objects"
    seen = all_readers(objects)
    for reader, rows in seen.items():
        assert rows == expected_rows, reader

    # Compaction and a checkpoint rewrite the files; every reader still agrees.
    files_before = len(live_files(objects))
    assert files_before >= 2
    Ledger(str(ledger_dir)).compact(max_files=0)
    assert len(live_files(objects)) == 1
    assert (objects / "_delta_log" / "_last_checkpoint").exists()
    for reader, rows in all_readers(objects).items():
        assert rows == expected_rows, f"{reader} after compaction"

    # The runs table too: one start and one end row per run, from each reader.
    import polars as pl

    runs = ledger_dir / "runs"
    by_replay = read_by_log_replay(runs)
    events = sorted(zip(by_replay["run_id"].to_pylist(), by_replay["event"].to_pylist(),
                        strict=True))
    assert len(events) == 4 and sorted(e for _, e in events) == ["end", "end", "start", "start"]
    df = pl.read_delta(str(runs))
    assert sorted(zip(df["run_id"].to_list(), df["event"].to_list(), strict=True)) == events
    duck = duckdb_connection().execute(
        "SELECT run_id, event FROM delta_scan(?)", [str(runs)]).fetchall()
    assert sorted(duck) == events
    ends = duckdb_connection().execute(
        "SELECT exit_code, counts_json FROM delta_scan(?) WHERE event = 'end'",
        [str(runs)]).fetchall()
    assert [code for code, _ in ends] == [0, 0]
    assert sorted(json.loads(c)["d"]["copied"] for _, c in ends) == [1, len(KEYS)]


# --- 6. a ledger on S3 ---------------------------------------------------------------

def test_ledger_on_s3_records_and_a_rerun_skips_from_it(tmp_path, moto_server):
    client = moto_server.client()
    ledger_bucket, data_bucket = moto_server.new_bucket(), moto_server.new_bucket()
    source = tmp_path / "src"
    expected = make_source(source, seed=8)
    manifest_path = write_manifest(
        tmp_path / "m.yaml",
        [{"name": "d", "source": {"url": str(source)},
          "destination": s3_location(moto_server, data_bucket, "data/")}],
        engine={"threads": 2}, ledger=f"s3://{ledger_bucket}/ledger",
        ledger_options={"endpoint_url": moto_server.endpoint})
    manifest = load_manifest(manifest_path)
    first = api.run(manifest)
    assert first.exit_code == 0
    assert first.datasets["d"].counts["copied"] == len(KEYS)

    # The tables live in the bucket (and nothing was written beside the manifest).
    stored = [o["Key"] for o in client.list_objects_v2(
        Bucket=ledger_bucket, Prefix="ledger/").get("Contents", [])]
    assert any(k.startswith("ledger/objects/_delta_log/") and k.endswith(".json") for k in stored)
    assert any(k.startswith("ledger/runs/_delta_log/") for k in stored)
    assert any(k.startswith("ledger/objects/") and k.endswith(".parquet") for k in stored)
    assert not (tmp_path / ".datamove").exists()

    ledger = Ledger(f"s3://{ledger_bucket}/ledger", {"endpoint_url": moto_server.endpoint})
    rows = ledger.objects(columns=["key", "sha256", "status", "run_id"]).to_pylist()
    assert sorted((r["key"], r["sha256"], r["status"]) for r in rows) == \
        sorted((k, s, "copied") for k, s in expected.items())
    assert {r["run_id"] for r in rows} == {first.run_id}

    # The plan reads the S3 ledger: every object recorded and unchanged.
    job = DatasetJob.from_spec(manifest.datasets[0])
    reasons = {item.key: item.reason for item in
               plan_dataset(job, recorded=ledger.latest_done("d"))}
    assert reasons == dict.fromkeys(expected, "recorded and unchanged")

    second = api.run(manifest)
    assert second.exit_code == 0
    counts = second.datasets["d"].counts
    assert counts["copied"] == 0 and counts["verified"] == 0
    assert counts["skipped"] == len(KEYS)
    assert len(ledger.objects(columns=["key"])) == len(KEYS)  # nothing recorded twice
    runs = ledger.runs().to_pylist()
    assert sorted((r["run_id"], r["event"]) for r in runs) == sorted(
        (run, event) for run in (first.run_id, second.run_id) for event in ("start", "end"))


def test_rows_of_an_old_destination_do_not_skip_a_new_one(tmp_path):
    """A dataset re-pointed at another destination must not inherit its rows."""
    from datamove import api
    from datamove.manifest.model import load_manifest
    from tests.conftest import write_manifest

    (tmp_path / "src").mkdir()
    (tmp_path / "src/f.bin").write_bytes(b"right bytes")
    first = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dstA/"}}])
    assert api.run(load_manifest(first)).exit_code == 0
    (tmp_path / "dstB").mkdir()
    (tmp_path / "dstB/f.bin").write_bytes(b"wrong bytes")  # same size, other content
    second = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dstB/"}}])
    report = api.run(load_manifest(second))
    assert report.datasets["d"].counts["skipped"] == 0
    assert (tmp_path / "dstB/f.bin").read_bytes() == b"right bytes"
