"""Planning at ten million objects: time and peak memory, no files on disk.

A synthetic store (scheme ``synth://``, a :class:`~datamove.stores.base.Backend`
registered inside the measuring process) lists ``N`` objects in key order,
generated on the fly; the source and the destination list the same objects. A
ledger of ``N`` rows, one ``copied`` row per object, is written straight to the
Delta ``objects`` table with pyarrow in batches of a million rows, in a scrambled
key order (``i * P mod N``), so the plan's external sort does real work. Every
object is then "recorded and unchanged": the plan skips them all.

Each figure is taken in a fresh Python process (started through a forking shell,
so ``ru_maxrss`` is its own; VmHWM from /proc/self/status is read too):

* ``plan N``: ``api.plan`` on a manifest with one dataset ``synth://src-N`` →
  ``synth://dst-N``: the preflight, the ledger's latest rows per key
  (``Ledger.latest_done``: a streamed scan through datamove/extsort.py), the merge
  of source listing × destination listing × ledger rows, and the report; what
  ``datamove plan`` does, less the CLI's argument parsing and printing.
* ``run N`` (the no-op rerun): ``api.run`` on the same manifest: the ledger lock, the
  audit check, the run's start row, the embedded Dask cluster started, the plan,
  every object skipped on the driver, the end row, compaction and the audit
  checkpoint; what ``datamove run`` does, less the CLI. No object is read or
  written: the synthetic store has no bytes, and a no-op rerun reads none.
* ``latest N`` and ``old N`` (optional, ``--old N``): the ledger's latest rows alone,
  streamed through the external sort (``Ledger.latest_done``) and by the algorithm
  it replaced (the whole dataset read with ``scan`` and sorted in memory), timed
  and measured the same way, for the A/B.

Usage:
    /work/main/.venv/bin/python benchmarks/plan_scale.py [--objects 10000000]
        [--rerun-objects 1000000] [--old 1000000] [--work DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from datamove.stores.base import Backend, Entry, Location  # noqa: E402

MTIME = 1_700_000_000.0
SCRAMBLE = 7_919  # a prime: i * P mod N visits every i when N is not a multiple of it
LEDGER_BATCH = 1_000_000


def key_of(i: int) -> str:
    return f"shard-{i // 10_000:05d}/object-{i:09d}.bin"


def size_of(i: int) -> int:
    return 1 + i % 4_096


class SynthBackend(Backend):
    """``synth://<side>-<N>``: N objects, generated in key order; no bytes."""

    name = "synth"
    atomic_temp_names = False  # nothing to sweep after a run

    def list(self, location: Location, on_link: Callable[[str], None] | None = None
             ) -> Iterator[Entry]:
        count = int(location.root.rsplit("-", 1)[1])
        for i in range(count):
            yield Entry(key_of(i), size_of(i), MTIME)


def register_synth() -> None:
    import fsspec

    from datamove.stores.base import register

    # The manifest accepts a URL whose scheme fsspec knows; datamove's registry serves it.
    fsspec.register_implementation("synth", "fsspec.implementations.memory.MemoryFileSystem",
                                   clobber=True)
    register("synth", f"{__name__}:SynthBackend")


def manifest_for(work: Path, n: int) -> Path:
    path = work / f"plan-{n}.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1, "name": f"plan-scale-{n}", "ledger": str(work / f"ledger-{n}"),
        "datasets": [{"name": "synth", "source": {"url": f"synth://src-{n}"},
                      "destination": {"url": f"synth://dst-{n}"}, "verify": "checksum"}],
    }, sort_keys=False))
    return path


def write_ledger(work: Path, n: int) -> dict[str, Any]:
    """``n`` copied rows, one per object, appended in batches of a million rows."""
    from deltalake import WriterProperties, write_deltalake

    from datamove.ledger.tables import OBJECT_SCHEMA, ROW_GROUP_ROWS, Ledger

    root = work / f"ledger-{n}"
    done = root / f"complete-{n}-{ROW_GROUP_ROWS}"
    if done.exists():
        return json.loads(done.read_text())
    if root.exists():
        import shutil

        shutil.rmtree(root)
    began = time.monotonic()
    ledger = Ledger(str(root))
    ledger.ensure()
    base = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    step = SCRAMBLE if n % SCRAMBLE else SCRAMBLE + 2
    for start in range(0, n, LEDGER_BATCH):
        order = range(start, min(n, start + LEDGER_BATCH))
        ids = [(j * step) % n for j in order]
        keys = [key_of(i) for i in ids]
        count = len(ids)
        columns: dict[str, pa.Array] = {
            "dataset": pa.array(["synth"] * count),
            "key": pa.array(keys),
            "run_id": pa.array([f"bench-{start // LEDGER_BATCH:04d}"] * count),
            "status": pa.array(["copied"] * count),
            "source_url": pa.array([f"synth://src-{n}/{k}" for k in keys]),
            "size": pa.array([size_of(i) for i in ids], pa.int64()),
            "source_mtime": pa.array([int(MTIME * 1e6)] * count, pa.int64()).cast(
                OBJECT_SCHEMA.field("source_mtime").type),
            "sha256": pa.array([f"{i:064x}" for i in ids]),
            "destination_url": pa.array([f"synth://dst-{n}/{k}" for k in keys]),
            "stored_size": pa.array([size_of(i) for i in ids], pa.int64()),
            "stored_sha256": pa.array([f"{i:064x}" for i in ids]),
            "encrypted": pa.array([False] * count),
            "verify_mode": pa.array(["checksum"] * count),
            "verify_result": pa.array(["ok"] * count),
            "attempts": pa.array([1] * count, pa.int32()),
            "recorded_at": pa.array([int((base + j) * 1e6) for j in order], pa.int64()).cast(
                OBJECT_SCHEMA.field("recorded_at").type),
        }
        table = pa.table({f.name: columns.get(f.name, pa.nulls(count, f.type))
                          for f in OBJECT_SCHEMA}, schema=OBJECT_SCHEMA)
        write_deltalake(ledger.uri("objects"), table, mode="append",
                        writer_properties=WriterProperties(max_row_group_size=ROW_GROUP_ROWS))
        del table, columns, keys, ids
        print(f"  ledger: {min(n, start + LEDGER_BATCH):,}/{n:,} rows "
              f"({time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
    info = {"rows": n, "seconds": round(time.monotonic() - began, 1),
            "bytes_on_disk": sum(p.stat().st_size for p in root.rglob("*") if p.is_file())}
    done.write_text(json.dumps(info))
    return info


# --- the measuring child ---------------------------------------------------------------

def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def child(mode: str, manifest_path: str) -> None:
    inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - _status_mib("VmHWM")
    register_synth()
    from datamove import api

    manifest = api.load_manifest(manifest_path)
    baseline = _status_mib("VmRSS")
    began = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    out: dict[str, Any] = {"mode": mode}
    if mode == "plan":
        report = api.plan(manifest)
        out["counts"] = dict(report.datasets["synth"].counts)
        out["exit_code"] = report.exit_code
    elif mode == "run":
        report = api.run(manifest)
        out["counts"] = dict(report.datasets["synth"].counts)
        out["exit_code"] = report.exit_code
    elif mode == "old":
        out["rows"] = sum(1 for _ in _old_latest(api.ledger_of(manifest), "synth"))
    elif mode == "latest":
        out["rows"] = sum(1 for _ in api.ledger_of(manifest).latest_done("synth"))
    else:
        raise SystemExit(f"unknown mode {mode}")
    out["seconds"] = round(time.monotonic() - began, 2)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime - cpu, 2)
    out["baseline_rss_mib"] = round(baseline, 1)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["vmhwm_mib"] = round(_status_mib("VmHWM"), 1)
    out["inherited_mib"] = round(inherited, 1)
    print(json.dumps(out), flush=True)


def _old_latest(ledger: Any, dataset: str) -> Iterator[Any]:
    """Ledger.latest before issue 17: the dataset's rows read whole and sorted in memory."""
    import pyarrow.compute as pc

    from datamove.ledger.tables import DONE_STATUSES, _latest_rows

    columns = ["key", "size", "source_mtime", "source_etag", "stored_size", "sha256",
               "stored_sha256", "payload_sha256", "key_fingerprints", "recorded_at",
               "status", "destination_url", "storage_class", "archive_url", "encrypted"]
    where = (pc.field("dataset") == dataset) & pc.field("status").isin(list(DONE_STATUSES))
    rows = ledger.objects(where, columns)
    rows = rows.sort_by([("key", "ascending"), ("recorded_at", "ascending")])
    yield from _latest_rows(rows.to_batches(max_chunksize=10_000))


def measure(mode: str, manifest: Path) -> dict[str, Any]:
    # Through a forking shell: a child started directly by this process would begin
    # with this process's ru_maxrss.
    done = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable,
                           str(Path(__file__).resolve()), "--child", mode, str(manifest)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {mode:4} {manifest.stem}: {result['seconds']:8.1f} s "
          f"({result['cpu_seconds']:.1f} s CPU), peak RSS "
          f"{result['peak_rss_mib']:7.1f} MiB (VmHWM {result['vmhwm_mib']:.1f}, baseline "
          f"{result['baseline_rss_mib']:.1f}) {result.get('counts', result.get('rows'))}",
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10_000_000)
    parser.add_argument("--rerun-objects", type=int, default=1_000_000)
    parser.add_argument("--old", type=int, default=0,
                        help="also measure the old in-memory sort at this many rows")
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "plan_scale")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "MANIFEST"))
    parser.add_argument("--ledger-only", action="store_true",
                        help="only write the ledgers (they are reused by later runs)")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"host": f"{os.cpu_count()} cores, shared", "ledgers": {}}
    plans = [("plan", args.objects), ("run", args.rerun_objects)]
    if args.old:
        plans += [("plan", args.old), ("latest", args.old), ("old", args.old)]
    for mode, n in plans:
        if not n:
            continue
        print(f"{mode} at {n:,} objects", flush=True)
        results["ledgers"][str(n)] = write_ledger(args.work, n)
        if args.ledger_only:
            continue
        results[f"{mode}_{n}"] = measure(mode, manifest_for(args.work, n))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
