"""Partition tiering: old partitions move to a cold Delta table, and a kill -9 between
any two steps loses and doubles no row (the rerun finishes the move)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from datamove.api import run, verify
from datamove.manifest.model import load_manifest
from datamove.tabular.tiering import tier_partitions
from tests.conftest import AWS_ENV, REPO, write_manifest
from tests.tabular_fixtures import (
    DAY0,
    delta_rows,
    duckdb_ids,
    ids,
    manifest,
    polars_ids,
    write_parquet_files,
)

NOW = datetime(2024, 1, 10, 12, tzinfo=UTC)  # with after: 5d, days 1..5 are due
DUE = {(DAY0 + timedelta(days=i)).isoformat() for i in range(5)}


def loaded(tmp: Path, cold: Path | None = None) -> tuple[Path, list[int]]:
    src = write_parquet_files(tmp / "src", 2, 1_000, days=10)
    rule = {"after": "5d", "column": "day", "location": {"url": str(cold or tmp / "cold")}}
    path = write_manifest(tmp / "m.yaml", [manifest(
        tmp, tmp / "src", {"url": str(tmp / "hot"), "partition_by": ["day"]},
        lifecycle=[rule])], ledger=str(tmp / "ledger"))
    assert run(load_manifest(path)).exit_code == 0
    return path, ids(src)


def days(uri: Path) -> set[str]:
    return {d.isoformat() for d in delta_rows(str(uri)).column("day").to_pylist()}


def test_due_partitions_move_and_the_dataset_still_verifies(tmp_path: Path) -> None:
    path, want = loaded(tmp_path)
    from datamove.pipeline.auditing import open_audit

    m = load_manifest(path)
    audit = open_audit(m, "tier-run")
    result = tier_partitions(m, "feat", now=NOW, audit=audit, retention=timedelta(0))
    audit.checkpoint()
    assert (result.partitions_moved, result.rows_moved, result.failures) == (5, 1_000, [])
    assert result.vacuumed_files >= 5  # dry_run=False: the hot files are really gone
    assert days(tmp_path / "cold") == DUE and not days(tmp_path / "hot") & DUE
    hot, cold = delta_rows(str(tmp_path / "hot")), delta_rows(str(tmp_path / "cold"))
    assert sorted(ids(hot) + ids(cold)) == want
    assert polars_ids(str(tmp_path / "cold")) == ids(cold)
    assert duckdb_ids(str(tmp_path / "hot")) == ids(hot)
    report = verify(m)  # hot + cold together still equal the source
    assert report.exit_code == 0 and report.to_dict()["datasets"]["feat"]["matched"] == 10
    assert run(m).exit_code == 0  # and a later run neither reloads nor complains

    again = tier_partitions(m, "feat", now=NOW, audit=None)
    assert (again.partitions_moved, again.failures) == (0, [])

    from deltalake import DeltaTable
    rows = DeltaTable(str(tmp_path / "ledger" / "tables")).to_pyarrow_dataset().to_table()
    moved = [r for r in rows.to_pylist() if r["status"] == "moved"]
    assert sorted(json.loads(r["partition"])["day"] for r in moved) == sorted(DUE)
    assert all(r["digest"] == r["source_digest"] and r["rows"] == 200 for r in moved)
    from tests.test_tabular import audit_events
    events = [e for e in audit_events(tmp_path / "ledger") if e["action"] == "partition.moved"]
    assert len(events) == 5 and events[0]["details"]["rows"] == 200


SCRIPT = """
import os
import re
import signal
import sys
from datetime import UTC, datetime, timedelta

import deltalake

from datamove.manifest.model import load_manifest
from datamove.pipeline.auditing import open_audit
from datamove.tabular import tiering

manifest_path, attempt, step = sys.argv[1:4]
m = load_manifest(manifest_path)
spec = m.dataset("feat")
HOT, COLD = spec.destination.url, spec.lifecycle[0].location.url


def same_table(table_or_uri, url):
    uri = getattr(table_or_uri, "table_uri", table_or_uri)
    return len({re.sub("^[a-z0-9]+://", "", str(u)).rstrip("/") for u in (uri, url)}) == 1


def kill_9():
    os.kill(os.getpid(), signal.SIGKILL)


def around(owner, name, url, before=False):
    # Wrap owner.name: a call on the table at ``url`` dies before or after it runs.
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        hit = same_table(args[0] if args else kwargs.get("table_or_uri"), url)
        if hit and before:
            kill_9()
        result = real(*args, **kwargs)
        if hit:
            kill_9()
        return result

    setattr(owner, name, wrapper)


if step == "append":  # the cold table's commit landed
    around(deltalake, "write_deltalake", COLD)
elif step == "verify":  # the digests matched; nothing recorded yet
    tiering.record_ledger = lambda *args, **kwargs: kill_9()
elif step == "record":  # ledger row and audit event written; the hot rows not deleted
    around(deltalake.DeltaTable, "delete", HOT, before=True)
elif step == "delete":  # the hot rows deleted
    around(deltalake.DeltaTable, "delete", HOT)
elif step == "vacuum":  # the hot table vacuumed
    around(deltalake.DeltaTable, "vacuum", HOT)
elif step != "none":
    sys.exit(f"unknown step {step}")

audit = open_audit(m, "tier-" + attempt)
result = tiering.tier_partitions(m, "feat", now=datetime(2024, 1, 10, 12, tzinfo=UTC),
                                 audit=audit, retention=timedelta(0))
audit.checkpoint()
print(result.partitions_moved, result.rows_moved, len(result.failures))
sys.exit(1 if result.failures else 0)
"""


def tier_process(path: Path, fault: str | None, attempt: str) -> subprocess.CompletedProcess:
    """``tier_partitions`` in a new process that a SIGKILL ends right after ``fault``,
    one of its steps (the driver above wraps the call that completes the step)."""
    env = {**os.environ, **AWS_ENV, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(path), attempt, fault or "none"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("step", ["append", "verify", "record", "delete", "vacuum"])
def test_kill_9_after_each_step_then_rerun_moves_every_row_once(tmp_path: Path,
                                                                step: str) -> None:
    path, want = loaded(tmp_path)
    killed = tier_process(path, step, "1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    hot_ids = ids(delta_rows(str(tmp_path / "hot")))
    cold = tmp_path / "cold"
    cold_ids = ids(delta_rows(str(cold))) if (cold / "_delta_log").exists() else []
    assert set(hot_ids) | set(cold_ids) == set(want)  # nothing lost at the crash
    if step in ("delete", "vacuum"):
        assert len(cold_ids) >= 200 and not set(hot_ids) & set(cold_ids)

    finished = tier_process(path, None, "2")
    assert finished.returncode == 0, finished.stderr
    hot, cold_rows = delta_rows(str(tmp_path / "hot")), delta_rows(str(cold))
    assert sorted(ids(hot) + ids(cold_rows)) == want  # every row exactly once
    assert days(cold) == DUE and not days(tmp_path / "hot") & DUE
    assert verify(load_manifest(path)).exit_code == 0


def test_rows_arriving_for_a_moved_day_stay_hot_with_a_message(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    from tests.tabular_fixtures import features

    path, _ = loaded(tmp_path)
    m = load_manifest(path)
    assert tier_partitions(m, "feat", now=NOW, audit=None).partitions_moved == 5
    late = features(50_000, 5, days=1)  # day 2024-01-01, already cold
    write_deltalake(str(tmp_path / "hot"), late.cast(delta_rows(str(tmp_path / "hot")).schema),
                    mode="append")
    result = tier_partitions(m, "feat", now=NOW, audit=None)
    assert result.partitions_moved == 0 and len(result.failures) == 1
    assert "2024-01-01" in result.failures[0] and "nothing was deleted" in result.failures[0]
    assert 50_000 in ids(delta_rows(str(tmp_path / "hot")))


def test_partitions_move_between_tables_on_s3(moto_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Hot table, cold table and ledger on S3 (moto_server): the move, a kill -9 after
    the delete and the rerun, read through delta-rs's object store, not a local path."""
    from datamove.stores.core import Location
    from datamove.tabular.dataset import Table
    from tests.conftest import s3_location

    bucket = moto_server.new_bucket()
    src = write_parquet_files(tmp_path / "src", 2, 500, days=10)
    hot = {**s3_location(moto_server, bucket, "hot/feat"), "partition_by": ["day"]}
    cold = s3_location(moto_server, bucket, "cold/feat")
    rule = {"after": "5d", "column": "day", "location": cold}
    path = write_manifest(tmp_path / "m.yaml",
                          [manifest(tmp_path, tmp_path / "src", hot, lifecycle=[rule])],
                          ledger=f"s3://{bucket}/ledger",
                          ledger_options={"endpoint_url": moto_server.endpoint})
    assert run(load_manifest(path)).exit_code == 0

    def rows(location: dict) -> list[int]:
        table = Table(Location.of(location["url"], location["options"]))
        return ids(delta_rows(table.uri, table.options)) if table.open() else []

    killed = tier_process(path, "delete", "1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert set(rows(hot)) | set(rows(cold)) == set(ids(src))
    finished = tier_process(path, None, "2")
    assert finished.returncode == 0, finished.stderr
    hot_ids, cold_ids = rows(hot), rows(cold)
    assert sorted(hot_ids + cold_ids) == ids(src) and len(cold_ids) == 500
    report = verify(load_manifest(path))
    assert report.exit_code == 0 and report.to_dict()["datasets"]["feat"]["matched"] == 10


def test_archive_dry_run_counts_due_partitions_and_reports_say_rows(tmp_path: Path) -> None:
    from tests.conftest import cli

    path, want = loaded(tmp_path)
    planned = cli("archive", str(path), "--now", NOW.isoformat(), "--dry-run", "--json")
    assert planned.returncode == 0, planned.stderr
    counts = json.loads(planned.stdout.strip().splitlines()[-1])["datasets"]["feat"]
    assert counts["partitions_due"] == 5
    assert not (tmp_path / "cold").exists() and days(tmp_path / "hot") >= DUE  # moved nothing
    human = cli("archive", str(path), "--now", NOW.isoformat())
    assert human.returncode == 0, human.stderr
    assert "table feat: 5 partitions (1,000 rows) moved to cold tables" in human.stdout
    checked = cli("verify", str(path))
    assert checked.returncode == 0, checked.stderr
    assert f"table feat: {len(want):,} rows verified in 10 partitions" in checked.stdout
