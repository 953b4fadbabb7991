"""Schema drift under schema_mode strict and merge: added, removed, retyped and
nullable columns, each judged before a row is written."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamove.api import run
from datamove.manifest.model import load_manifest
from tests.conftest import write_manifest
from tests.tabular_fixtures import delta_rows, features, manifest


def setup(tmp: Path, mode: str | None, first: pa.Table, second: pa.Table) -> Path:
    (tmp / "src").mkdir()
    pq.write_table(first, tmp / "src" / "a.parquet")
    pq.write_table(second, tmp / "src" / "b.parquet")
    dst = {"url": str(tmp / "out"), "partition_by": ["day"]}
    if mode:
        dst["schema_mode"] = mode
    return write_manifest(tmp / "m.yaml", [manifest(tmp, tmp / "src", dst)],
                          ledger=str(tmp / "ledger"))


BASE = features(0, 100)
MORE = features(100, 100)
DRIFT = {
    "added": MORE.append_column("extra", pa.array([1.5] * 100)),
    "removed": MORE.drop_columns(["cat"]),
    "retyped": MORE.set_column(0, "id", MORE.column("id").cast(pa.int32())),
    "incompatible": MORE.set_column(1, "x", MORE.column("x").cast(pa.string())),
}


@pytest.mark.parametrize("drift", sorted(DRIFT))
@pytest.mark.parametrize("mode", [None, "strict"])
def test_strict_refuses_any_drift_and_writes_nothing(tmp_path: Path, drift: str,
                                                     mode: str | None) -> None:
    """strict is the default: the drifted file is named with its column and types."""
    report = run(load_manifest(setup(tmp_path, mode, BASE, DRIFT[drift])))
    assert report.exit_code == 1
    error = report.problems[0].error
    assert "b.parquet" in error and "strict" in error
    column = {"added": "extra", "removed": "cat", "retyped": "id", "incompatible": "x"}[drift]
    assert repr(column) in error
    if drift in ("retyped", "incompatible"):
        assert "the table has" in error
    assert not (tmp_path / "out").exists()  # nothing written, not even the good file


def test_merge_adds_columns_and_fills_missing_ones(tmp_path: Path) -> None:
    third = features(200, 50).drop_columns(["cat"])
    path = setup(tmp_path, "merge", BASE, DRIFT["added"])
    pq.write_table(third, tmp_path / "src" / "c.parquet")
    report = run(load_manifest(path))
    assert report.exit_code == 0, report.to_json()
    back = delta_rows(str(tmp_path / "out"))
    assert back.num_rows == 250
    assert back.schema.field("extra").type == pa.float64()
    extra = dict(zip(back.column("id").to_pylist(), back.column("extra").to_pylist(),
                     strict=True))
    assert extra[0] is None and extra[150] == 1.5 and extra[220] is None
    cats = dict(zip(back.column("id").to_pylist(), back.column("cat").to_pylist(), strict=True))
    assert cats[220] is None and cats[5] == "c5"


def test_merge_casts_numbers_only_when_every_value_fits(tmp_path: Path) -> None:
    narrow = BASE.set_column(0, "id", BASE.column("id").cast(pa.int32()))
    assert run(load_manifest(setup(tmp_path, "merge", narrow, MORE))).exit_code == 0
    back = delta_rows(str(tmp_path / "out"))
    assert back.schema.field("id").type == pa.int32() and back.num_rows == 200

    big = features(3_000_000_000, 5)  # ids beyond int32: refused, value-checked
    pq.write_table(big, tmp_path / "src" / "c.parquet")
    report = run(load_manifest(tmp_path / "m.yaml"))
    assert report.exit_code == 1
    assert "c.parquet" in report.problems[0].error and "'id'" in report.problems[0].error
    assert delta_rows(str(tmp_path / "out")).num_rows == 200  # nothing of c.parquet


def test_merge_refuses_incompatible_types(tmp_path: Path) -> None:
    report = run(load_manifest(setup(tmp_path, "merge", BASE, DRIFT["incompatible"])))
    assert report.exit_code == 1
    assert "'x' is string but the table has double" in report.problems[0].error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ["strict", "merge"])
def test_nullability(tmp_path: Path, mode: str) -> None:
    """A NOT NULL source column loads into the (nullable) table; nulls into a NOT NULL
    column of an existing table are refused in both modes."""
    from deltalake import write_deltalake

    required = BASE.cast(pa.schema([f.with_nullable(f.name != "x") for f in BASE.schema]))
    with_nulls = MORE.set_column(1, "x", pa.array([None] * 100, pa.float64()))
    path = setup(tmp_path, mode, required, MORE)
    assert run(load_manifest(path)).exit_code == 0

    other = tmp_path / "strict-table"
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.float64(), nullable=False),
                        pa.field("cat", pa.string()), pa.field("day", pa.date32())])
    write_deltalake(str(other), BASE.cast(schema), partition_by=["day"])
    pq.write_table(with_nulls, tmp_path / "src" / "b.parquet")
    write_manifest(path, [manifest(tmp_path, tmp_path / "src",
                                   {"url": str(other), "partition_by": ["day"],
                                    "schema_mode": mode})], ledger=str(tmp_path / "ledger"))
    report = run(load_manifest(path))
    assert report.exit_code == 1
    assert "NOT NULL" in report.problems[0].error and "'x'" in report.problems[0].error


def test_partition_column_missing_and_partitioning_mismatch(tmp_path: Path) -> None:
    report = run(load_manifest(setup(tmp_path, "merge", BASE, MORE.drop_columns(["day"]))))
    assert report.exit_code == 1
    assert "no partition column 'day'" in report.problems[0].error

    write_manifest(tmp_path / "m.yaml", [manifest(tmp_path, tmp_path / "src",
                                                  {"url": str(tmp_path / "t2")})],
                   ledger=str(tmp_path / "ledger"))
    (tmp_path / "src" / "b.parquet").unlink()
    assert run(load_manifest(tmp_path / "m.yaml")).exit_code == 0
    write_manifest(tmp_path / "m.yaml", [manifest(tmp_path, tmp_path / "src",
                                                  {"url": str(tmp_path / "t2"),
                                                   "partition_by": ["day"]})],
                   ledger=str(tmp_path / "ledger"))
    report = run(load_manifest(tmp_path / "m.yaml"))
    assert report.exit_code == 1 and "partitioned by []" in report.problems[0].error
