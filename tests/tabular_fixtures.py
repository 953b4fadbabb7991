"""Data and readers for the tabular tests: feature tables on disk, tables read back."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DAY0 = date(2024, 1, 1)


def features(start: int, n: int, days: int = 5) -> pa.Table:
    """``n`` rows with unique ids from ``start``: ints, floats, a category, a date."""
    ids = pa.array(range(start, start + n), pa.int64())
    return pa.table({
        "id": ids,
        "x": pc.divide(ids.cast(pa.float64()), pa.scalar(7.0)),
        "cat": pa.array([f"c{i % 11}" for i in range(start, start + n)]),
        "day": pa.array([DAY0 + timedelta(days=i % days) for i in range(start, start + n)]),
    })


def write_parquet_files(folder: Path, files: int, rows: int, days: int = 5) -> pa.Table:
    """``files`` Parquet files of ``rows`` rows each; returns all rows."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(files):
        table = features(i * rows, rows, days)
        pq.write_table(table, folder / f"part-{i:04d}.parquet", row_group_size=50_000)
        parts.append(table)
    return pa.concat_tables(parts)


def write_csv(path: Path, table: pa.Table) -> None:
    import pyarrow.csv as pcsv

    path.parent.mkdir(parents=True, exist_ok=True)
    pcsv.write_csv(table, path)


def write_jsonl(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in table.to_pylist():
            f.write(json.dumps({k: (v.isoformat() if isinstance(v, date) else v)
                                for k, v in row.items()}) + "\n")


def delta_rows(uri: str, options: dict[str, str] | None = None) -> pa.Table:
    """A Delta table's rows with delta-rs + pyarrow, sorted by id."""
    from deltalake import DeltaTable

    table = DeltaTable(uri, storage_options=options).to_pyarrow_dataset().to_table(
        use_threads=False)
    return table.sort_by("id")


def ids(table: pa.Table) -> list[int]:
    return sorted(table.column("id").to_pylist())


def polars_ids(uri: str) -> list[int]:
    import polars as pl

    return sorted(pl.read_delta(uri).get_column("id").to_list())


def duckdb_ids(uri: str) -> list[int]:
    """The ids through DuckDB's delta extension (delta-kernel, not delta-rs)."""
    from tests.test_ledger import duckdb_connection

    con = duckdb_connection()
    return sorted(r[0] for r in con.execute(f"SELECT id FROM delta_scan('{uri}')").fetchall())


def manifest(tmp: Path, source: Any, destination: Any, **extra: Any) -> dict[str, Any]:
    """One ``format: delta`` dataset (``source``/``destination``: URL or location dict)."""
    src = source if isinstance(source, dict) else {"url": str(source)}
    dst = destination if isinstance(destination, dict) else {"url": str(destination)}
    dst = {"format": "delta", **dst}
    return {"name": "feat", "source": src, "destination": dst, **extra}
