"""Rows per second: datamove's verified Delta load against a plain ``write_deltalake``.

Both sides start from the same Parquet files and end with the same Delta table:

* **plain**: ``pyarrow.dataset`` reads the files (its default batches) and
  ``write_deltalake`` writes them (one streaming call, partitioned the same
  way, delta-rs's default writer settings): what a user would write by hand;
* **same encodings**: the same call, with the writer properties datamove
  chooses from the source footers (no dictionary for the columns the source
  writer gave up one for; tabular_encoding.py): the write without datamove's
  verification;
* **datamove**: ``tabular.load`` (schema pass, units and app transactions, the
  source digest of every row) and the verification (the table read back and
  hashed per partition, compared with the source).

Each side runs ``--repeat`` times into a fresh table, alternating; the medians
are compared. The issue's budget: overhead against plain at most 30%, i.e.
datamove's rows/s at least 1/1.3 of plain's. Against "same encodings" the
difference is the cost of verifying alone.

    .venv/bin/python benchmarks/bench_tabular.py [--rows 1000000] [--repeat 5]
        [--unique-strings] [--csv] [--json]

``--csv`` writes the same rows as CSV files (both sides then parse CSV; the
encodings come from the first batch, as in datamove).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datamove.stores.core import KeyFilter, Location
from datamove.tabular.dataset import Table, TableJob, compare, load, stored_digests
from datamove.tabular.encoding import distinct_columns, plain_columns, writer_properties

SIDES = ("plain", "same encodings", "datamove")


def make_source(folder: Path, rows: int, files: int, unique_strings: bool = False) -> None:
    """A feature table: an id, 8 float features, an int and a string category, a day
    (and with ``unique_strings`` a 36-character unique key, as a UUID column would be)."""
    per = rows // files
    for f in range(files):
        start = f * per
        ids = pa.array(range(start, start + per), pa.int64())
        columns = {"id": ids}
        for k in range(8):
            columns[f"f{k}"] = pc.random(per)
        columns["bucket"] = pc.bit_wise_and(ids, pa.scalar(63, pa.int64()))
        columns["category"] = pa.array([f"cat-{i % 37}" for i in range(start, start + per)])
        columns["day"] = pa.array([date(2024, 1, 1) + timedelta(days=i % 30)
                                   for i in range(start, start + per)])
        if unique_strings:
            columns["key"] = pa.array([f"{i * 2654435761 % 2**64:032x}-{i:03x}"[:36]
                                       for i in range(start, start + per)])
        pq.write_table(pa.table(columns), folder / f"part-{f:03d}.parquet")


def to_csv(folder: Path) -> None:
    """Every Parquet file of ``folder`` rewritten as CSV (the Parquet files removed)."""
    import pyarrow.csv as pcsv

    for path in sorted(folder.glob("*.parquet")):
        pcsv.write_csv(pq.read_table(path), path.with_suffix(".csv"))
        path.unlink()


def plain(source: Path, out: Path, *, same_encodings: bool = False) -> tuple[float, float]:
    from deltalake import write_deltalake

    started, cpu = time.perf_counter(), time.process_time()
    csv = next(source.glob("*.csv"), None) is not None
    dataset = pads.dataset(str(source), format="csv" if csv else "parquet")
    reader = dataset.scanner().to_reader()
    properties = None
    if same_encodings and csv:  # the evidence datamove uses: the first batch
        first = reader.read_next_batch()
        properties = writer_properties(set(distinct_columns(first)) - {"day"})
        reader = pa.RecordBatchReader.from_batches(
            reader.schema, itertools.chain([first], reader))
    elif same_encodings:  # the footer reads are part of the time, as in datamove
        plain_set = {c for f in dataset.get_fragments()
                     for c in plain_columns(f.metadata, dataset.schema)}
        properties = writer_properties(plain_set - {"day"})
    write_deltalake(str(out), reader, partition_by=["day"], mode="append",
                    writer_properties=properties)
    return time.perf_counter() - started, time.process_time() - cpu


def same_encodings(source: Path, out: Path) -> tuple[float, float]:
    return plain(source, out, same_encodings=True)


def datamove(source: Path, out: Path) -> tuple[float, float]:
    job = TableJob(name="bench", source=Location.of(str(source)), source_format=None,
                   key_filter=KeyFilter((), ()), table=Table(Location.of(str(out))),
                   partition_by=("day",), schema_mode="strict")
    started, cpu = time.perf_counter(), time.process_time()
    loaded = load(job, run_id="bench")
    stored, _ = stored_digests(job)
    outcomes = compare(loaded.source, stored)
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    assert all(o.status == "ok" for o in outcomes), "verification failed"
    return elapsed, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--unique-strings", action="store_true",
                        help="add a column of unique 36-character strings")
    parser.add_argument("--csv", action="store_true", help="CSV source files, not Parquet")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-tabular-"))
    try:
        source = work / "src"
        source.mkdir()
        make_source(source, args.rows, args.files, args.unique_strings)
        if args.csv:
            to_csv(source)
        times: dict[str, list[float]] = {name: [] for name in SIDES}
        cpus: dict[str, list[float]] = {name: [] for name in SIDES}
        for i in range(args.repeat + 1):  # the first round warms caches and is dropped
            for name, fn in zip(SIDES, (plain, same_encodings, datamove), strict=True):
                out = work / f"{name.replace(' ', '-')}-{i}"
                seconds, cpu = fn(source, out)
                shutil.rmtree(out)
                if i:
                    times[name].append(seconds)
                    cpus[name].append(cpu)
        rows = (args.rows // args.files) * args.files
        med = {name: statistics.median(v) for name, v in times.items()}
        rate = {name: rows / med[name] for name in med}
        overhead = med["datamove"] / med["plain"] - 1
        cpu_med = {name: statistics.median(v) for name, v in cpus.items()}
        cpu_overhead = cpu_med["datamove"] / cpu_med["plain"] - 1
        verifying = med["datamove"] / med["same encodings"] - 1
        result = {"rows": rows, "files": args.files, "repeat": args.repeat,
                  "unique_strings": args.unique_strings, "csv": args.csv,
                  "seconds": med, "cpu_seconds": cpu_med, "rows_per_second": rate,
                  "overhead": overhead, "cpu_overhead": cpu_overhead,
                  "overhead_vs_same_encodings": verifying,
                  "budget": 0.30, "within_budget": overhead <= 0.30}
        if args.json:
            print(json.dumps(result))
        else:
            kind = "CSV" if args.csv else "Parquet"
            print(f"{rows:,} rows, {args.files} {kind} files, median of {args.repeat}"
                  + (", with a unique string column" if args.unique_strings else ""))
            for name in SIDES:
                print(f"  {name:14s} {med[name]:6.2f} s  {rate[name]:>12,.0f} rows/s  "
                      f"CPU {cpu_med[name]:5.2f} s")
            print(f"  overhead vs plain  {overhead:+.0%} wall, {cpu_overhead:+.0%} CPU "
                  f"(budget +30%): {'within' if overhead <= 0.30 else 'OVER'}")
            print(f"  verifying, vs the same encodings  {verifying:+.0%} wall")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
