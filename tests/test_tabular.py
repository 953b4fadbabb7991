"""Tabular datasets end to end: load into Delta, verify, ledger and audit, readers, S3,
bounded memory, a kill -9 mid-load, and the encryption refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from datamove.api import run, verify
from datamove.manifest.model import load_manifest
from datamove.tabular import dataset as tabular
from tests.conftest import AWS_ENV, REPO, cli, s3_location, write_manifest
from tests.tabular_fixtures import (
    delta_rows,
    duckdb_ids,
    features,
    ids,
    manifest,
    polars_ids,
    write_csv,
    write_jsonl,
    write_parquet_files,
)


def table_manifest(tmp: Path, **destination: object) -> Path:
    dst = {"url": str(tmp / "out" / "feat"), "partition_by": ["day"], **destination}
    return write_manifest(tmp / "m.yaml", [manifest(tmp, tmp / "src", dst)],
                          ledger=str(tmp / "ledger"))


def test_parquet_csv_and_jsonl_land_verified_and_readable(tmp_path: Path) -> None:
    src = write_parquet_files(tmp_path / "src", 2, 2_000)
    csv_rows, json_rows = features(10_000, 300), features(20_000, 200)
    write_csv(tmp_path / "src" / "more.csv", csv_rows)
    write_jsonl(tmp_path / "src" / "z" / "more.jsonl", json_rows)
    everything = pa.concat_tables([src, csv_rows, json_rows])
    m = load_manifest(table_manifest(tmp_path, schema_mode="merge"))

    report = run(m)
    ds = report.to_dict()["datasets"]["feat"]
    assert report.exit_code == 0, report.to_json()
    assert (ds["copied"], ds["rows_loaded"], ds["rows_verified"], ds["partitions"]) == \
        (4, 4_500, 4_500, 5)
    assert ds["commits"] == 1  # small files share one commit
    uri = str(tmp_path / "out" / "feat")
    assert ids(delta_rows(uri)) == ids(everything)
    assert polars_ids(uri) == ids(everything)
    assert duckdb_ids(uri) == ids(everything)
    back = delta_rows(uri)
    assert back.column("x").to_pylist()[:3] == everything.sort_by("id").column("x").to_pylist()[:3]

    again = run(m)  # idempotent: nothing appended, everything verified again
    ds = again.to_dict()["datasets"]["feat"]
    assert (again.exit_code, ds["copied"], ds["skipped"], ds["rows_loaded"], ds["commits"]) == \
        (0, 0, 4, 0, 0)
    assert verify(m).exit_code == 0

    from deltalake import DeltaTable
    ledger = DeltaTable(str(tmp_path / "ledger" / "tables")).to_pyarrow_dataset().to_table()
    first = [r for r in ledger.to_pylist() if r["run_id"] == report.run_id]
    assert len(first) == 5 and {r["status"] for r in first} == {"ok"}
    assert sum(r["rows"] for r in first) == 4_500
    assert all(r["digest"] == r["source_digest"] and len(r["digest"]) == 32 for r in first)
    assert json.loads(first[0]["partition"]) == {"day": "2024-01-01"}
    assert {r["table_version"] for r in first} == {0}

    events = audit_events(tmp_path / "ledger")
    actions = [e["action"] for e in events]
    assert actions.count("table.loaded") == 2 and actions.count("table.verified") == 10
    loaded = next(e for e in events if e["action"] == "table.loaded")
    assert loaded["details"]["rows_loaded"] == 4_500
    assert loaded["details"]["table_version"] == 0


def audit_events(ledger: Path) -> list[dict]:
    from deltalake import DeltaTable

    table = DeltaTable(str(ledger / "audit")).to_pyarrow_dataset().to_table()
    return [json.loads(e) for e in table.sort_by("seq").column("event").to_pylist()]


def test_a_damaged_table_fails_verification(tmp_path: Path) -> None:
    from deltalake import DeltaTable, write_deltalake

    write_parquet_files(tmp_path / "src", 1, 1_000)
    m = load_manifest(table_manifest(tmp_path))
    assert run(m).exit_code == 0
    uri = str(tmp_path / "out" / "feat")
    DeltaTable(uri).delete("id = 3")  # a lost row
    write_deltalake(uri, features(7, 1).cast(delta_rows(uri).schema), mode="append")  # a dup
    report = verify(m)
    assert report.exit_code == 1
    statuses = {p.status for p in report.problems}
    assert statuses == {"differs"}
    assert {json.loads(p.key)["day"] for p in report.problems} == {"2024-01-04", "2024-01-03"}
    assert "the table has" in report.problems[0].error
    rerun = run(m)  # a run cannot repair by appending: it fails, it does not hide it
    assert rerun.exit_code == 1 and rerun.to_dict()["datasets"]["feat"]["failed"] == 2


def test_single_file_source_and_unpartitioned_table(tmp_path: Path) -> None:
    write_parquet_files(tmp_path / "src", 1, 500)
    dst = {"url": str(tmp_path / "out" / "feat")}
    write_manifest(tmp_path / "m.yaml", [manifest(tmp_path, tmp_path / "src" / "part-0000.parquet",
                                                  dst)], ledger=str(tmp_path / "ledger"))
    out = cli("run", str(tmp_path / "m.yaml"))
    assert out.returncode == 0, out.stderr
    assert "table feat: 500 rows loaded in 1 commit, 500 rows verified in 1 partition" \
        in out.stdout
    report = run(load_manifest(tmp_path / "m.yaml"))  # the rerun appends nothing
    ds = report.to_dict()["datasets"]["feat"]
    assert (report.exit_code, ds["rows_verified"], ds["partitions"], ds["rows_loaded"]) == \
        (0, 500, 1, 0)


def test_unknown_files_and_missing_source_are_bad_input(tmp_path: Path) -> None:
    write_parquet_files(tmp_path / "src", 1, 10)
    (tmp_path / "src" / "README.md").write_text("hello")
    path = table_manifest(tmp_path)
    out = cli("run", str(path))
    assert out.returncode == 2, out.stderr
    assert "README.md" in out.stderr and "source.format" in out.stderr
    (tmp_path / "src" / "README.md").unlink()
    write_manifest(path, [manifest(tmp_path, tmp_path / "nope", str(tmp_path / "out"))])
    out = cli("run", str(path))
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_encrypted_delta_dataset_is_refused(tmp_path: Path) -> None:
    """Item 5: datamove has no Parquet encryption, so encrypt + format: delta is exit 2."""
    write_parquet_files(tmp_path / "src", 1, 10)
    from datamove.age import X25519Identity

    recipient = X25519Identity.generate().recipient.encode()
    ds = manifest(tmp_path, tmp_path / "src", str(tmp_path / "out"),
                  encrypt={"recipients": [recipient]})
    path = write_manifest(tmp_path / "m.yaml", [ds])
    out = cli("run", str(path))
    assert out.returncode == 2
    assert "format: delta destination cannot be encrypted" in out.stderr
    assert not (tmp_path / "out").exists()


def test_policy_requiring_encryption_denies_a_delta_dataset(tmp_path: Path) -> None:
    write_parquet_files(tmp_path / "src", 1, 10)
    policy = tmp_path / "policies" / "enc.yaml"
    policy.parent.mkdir()
    policy.write_text(POLICY)
    path = write_manifest(tmp_path / "m.yaml",
                          [manifest(tmp_path, tmp_path / "src", str(tmp_path / "out"),
                                    classification="confidential")],
                          ledger=str(tmp_path / "ledger"), policies=[str(policy)])
    out = cli("run", str(path))
    assert out.returncode == 3, out.stdout + out.stderr
    assert "encrypt" in (out.stdout + out.stderr).lower()
    assert not (tmp_path / "out").exists()


POLICY = """\
version: 1
rules:
  - id: confidential-encrypted
    description: confidential data is encrypted at rest
    severity: deny
    match: {classification: [confidential]}
    require: {encryption: true}
"""


def test_s3_source_and_destination(moto_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import s3fs

    bucket = moto_server.new_bucket()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_server.endpoint})
    local = tmp_path / "local"
    src = write_parquet_files(local, 2, 1_500)
    write_csv(local / "c.csv", features(9_000, 100))
    for f in sorted(local.iterdir()):
        fs.put(str(f), f"{bucket}/raw/{f.name}")
    dst = {**s3_location(moto_server, bucket, "tables/feat"), "partition_by": ["day"],
           "schema_mode": "merge"}
    path = write_manifest(tmp_path / "m.yaml",
                          [manifest(tmp_path, s3_location(moto_server, bucket, "raw/"), dst)],
                          ledger=f"s3://{bucket}/ledger",
                          ledger_options={"endpoint_url": moto_server.endpoint})
    out = cli("run", str(path), "--json")
    assert out.returncode == 0, out.stderr
    ds = json.loads(out.stdout.strip().splitlines()[-1])["datasets"]["feat"]
    assert ds["rows_verified"] == 3_100 and ds["partitions"] == 5
    options = tabular.Table(tabular.Location.of(dst["url"], dst["options"])).options
    want = ids(pa.concat_tables([src, features(9_000, 100)]))
    assert ids(delta_rows(f"s3://{bucket}/tables/feat", options)) == want
    checked = cli("verify", str(path))
    assert checked.returncode == 0
    assert "table feat: 3,100 rows verified in 5 partitions (table version" in checked.stdout
    rerun = cli("run", str(path))  # nothing new: no rows loaded, every row verified
    assert rerun.returncode == 0
    assert "table feat: 0 rows loaded in 0 commits, 3,100 rows verified" in rerun.stdout
    assert "nothing to copy: 3 objects up to date" in rerun.stdout  # files, not partitions


def test_a_million_rows_with_bounded_memory(tmp_path: Path) -> None:
    """1,000,000 rows in 4 files (one commit each: units of 1M rows, files over the group
    size) while a sampler watches RSS: growth stays under 350 MiB (pyarrow and delta-rs
    buffers, not the data, which is ~40 MiB of Parquet and ~60 MiB in Arrow)."""
    import psutil

    write_parquet_files(tmp_path / "src", 4, 250_000, days=20)
    m = load_manifest(table_manifest(tmp_path))
    process = psutil.Process()
    base = process.memory_info().rss
    peak, stop = [base], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        report = run(m)
    finally:
        stop.set()
        sampler.join()
    ds = report.to_dict()["datasets"]["feat"]
    assert report.exit_code == 0, report.to_json()
    assert ds["rows_loaded"] == 1_000_000 and ds["rows_verified"] == 1_000_000
    growth = (peak[0] - base) / 2**20
    print(f"RSS growth loading 1,000,000 rows: {growth:.0f} MiB")
    assert growth < 350, f"RSS grew by {growth:.0f} MiB"


CRASH_SCRIPT = """
import sys
from datamove.tabular import dataset as tabular
tabular.UNIT_ROWS = 10_000
tabular.GROUP_BYTES = 1
from datamove.api import run
from datamove.manifest.model import load_manifest
sys.exit(run(load_manifest(sys.argv[1])).exit_code)
"""


@pytest.mark.parametrize("kill_after_version", [1, 4])
def test_kill_9_mid_load_then_rerun_gives_exactly_the_source(tmp_path: Path,
                                                             kill_after_version: int) -> None:
    """A load of 16 commits (units of 10,000 rows) is killed with SIGKILL once the table
    has a given version; the rerun appends only the missing units."""
    src = write_parquet_files(tmp_path / "src", 4, 40_000)
    path = table_manifest(tmp_path)
    log = tmp_path / "out" / "feat" / "_delta_log"
    env = {**os.environ, **AWS_ENV, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(path)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    target = log / f"{kill_after_version:020d}.json"
    deadline = time.monotonic() + 120
    while not target.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL, "the load finished before it was killed"
    committed = len(list(log.glob("*.json")))
    assert 1 <= committed < 16
    partial = delta_rows(str(tmp_path / "out" / "feat"))
    assert partial.num_rows % 10_000 == 0 and partial.num_rows < 160_000

    rerun = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(path)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    back = delta_rows(str(tmp_path / "out" / "feat"))
    assert back.num_rows == 160_000
    assert ids(back) == ids(src)  # every row exactly once
    assert verify(load_manifest(path)).exit_code == 0
