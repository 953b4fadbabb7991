"""Opening the ledger and planning after many recorded runs.

Records ``--runs`` small runs (default 1,000) into a fresh local ledger the way
``datamove run`` does (a start row, the objects rows built by ``pipeline.jobs.ledger_row``,
one flush, an end row: three Delta commits per run, each with its app
transaction), then times what the next run pays before it copies anything:

* opening the ``objects`` table,
* ``Ledger.latest_done`` for the dataset (every recorded row, key-sorted),
* the plan: the merge of source listing × destination listing × ledger, all
  objects "recorded and unchanged",
* ``api.plan`` end to end (preflight, open, plan), as ``datamove plan`` runs it,

first on the tables as the runs left them (no compaction: the worst case, e.g.
runs killed before their end), then after ``Ledger.compact()`` (what every
completed ``datamove run`` calls at its end), which merges the small files and
writes a checkpoint. No timing is asserted; the figures are printed (and written
to ``--out`` as JSON).

Usage:
    /work/main/.venv/bin/python benchmarks/ledger_runs.py [--runs 1000]
        [--objects-per-run 1] [--repeat 5] [--work DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from datamove import api
from datamove.ledger.tables import OBJECTS, RUNS, Ledger, LedgerWriter, ts
from datamove.pipeline.jobs import ledger_row
from datamove.pipeline.march import Action, DatasetJob, PlanItem, plan_dataset
from datamove.pipeline.transfer import ObjectResult
from datamove.stores.core import list_entries

HERE = Path(__file__).resolve().parent


def make_tree(work: Path, n: int) -> tuple[Path, Path]:
    """``n`` small source files and identical destination copies (same mtime)."""
    source, dest = work / "src", work / "dst"
    for i in range(n):
        key = f"p{i % 50:02d}/obj-{i:06d}.bin"
        for root in (source, dest):
            (root / key).parent.mkdir(parents=True, exist_ok=True)
        data = f"object {i}\n".encode() * 16
        (source / key).write_bytes(data)
        (dest / key).write_bytes(data)
        st = (source / key).stat()
        os.utime(dest / key, ns=(st.st_atime_ns, st.st_mtime_ns))
    return source, dest


def record_runs(manifest: Any, runs: int, per_run: int) -> dict[str, float]:
    """Append ``runs`` runs of ``per_run`` objects each, as api.run would."""
    ledger = api.ledger_of(manifest)
    ledger.ensure()
    job = DatasetJob.from_spec(manifest.datasets[0])
    entries = list(list_entries(job.source))
    assert len(entries) >= runs * per_run, "not enough source objects"
    commit_seconds: list[float] = []
    began = time.monotonic()
    for r in range(runs):
        run_id = f"bench-{r:05d}"
        writer = LedgerWriter(ledger, run_id)
        started = time.time()
        t0 = time.monotonic()
        writer.run_event("start", command="run", manifest_name=manifest.name,
                         manifest_sha256=manifest.sha256, engine="benchmark",
                         started_at=ts(started))
        for entry in entries[r * per_run:(r + 1) * per_run]:
            item = PlanItem(Action.copy, entry.key, entry, None, "new")
            result = ObjectResult(dataset=job.name, key=entry.key, action="copy",
                                  status="copied", size=entry.size, sha256="0" * 64,
                                  destination_url=job.destination.url_of(entry.key))
            writer.add(ledger_row(job, item, result, run_id))
        writer.flush()
        writer.run_event("end", command="run", manifest_name=manifest.name,
                         manifest_sha256=manifest.sha256, engine="benchmark",
                         started_at=ts(started), ended_at=ts(time.time()),
                         counts_json=json.dumps({job.name: {"copied": per_run}}), exit_code=0)
        commit_seconds.append(time.monotonic() - t0)
        if (r + 1) % 100 == 0:
            print(f"  recorded {r + 1} runs ({time.monotonic() - began:.1f}s)", flush=True)
    return {"record_total_s": round(time.monotonic() - began, 2),
            "per_run_median_ms": round(1000 * statistics.median(commit_seconds), 1),
            "per_run_last_100_median_ms": round(1000 * statistics.median(commit_seconds[-100:]), 1)}


def table_shape(ledger: Ledger) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in (OBJECTS, RUNS):
        table = ledger.table(name)
        log = Path(ledger.uri(name)) / "_delta_log"
        out[name] = {"version": table.version(), "files": len(table.file_uris()),
                     "rows": table.count(),
                     "log_files": len(list(log.iterdir())),
                     "checkpoint": (log / "_last_checkpoint").exists()}
    return out


def time_planning(manifest: Any, repeat: int) -> dict[str, Any]:
    job = DatasetJob.from_spec(manifest.datasets[0])
    figures: dict[str, list[float]] = {"open_objects_table_s": [], "latest_done_s": [],
                                       "plan_merge_s": [], "api_plan_s": []}
    actions: Counter[str] = Counter()
    recorded = 0
    for _ in range(repeat):
        ledger = api.ledger_of(manifest)  # nothing cached between repeats
        t0 = time.monotonic()
        ledger.table(OBJECTS)
        figures["open_objects_table_s"].append(time.monotonic() - t0)

        t0 = time.monotonic()
        recorded = sum(1 for _ in ledger.latest_done(job.name))
        figures["latest_done_s"].append(time.monotonic() - t0)

        t0 = time.monotonic()
        actions = Counter(i.action.value for i in
                          plan_dataset(job, recorded=ledger.latest_done(job.name)))
        figures["plan_merge_s"].append(time.monotonic() - t0)

        t0 = time.monotonic()
        report = api.plan(manifest)
        figures["api_plan_s"].append(time.monotonic() - t0)
        assert report.datasets[job.name].counts["skip"] == actions["skip"]
    out: dict[str, Any] = {k: round(statistics.median(v), 4) for k, v in figures.items()}
    out["latest_done_rows"] = recorded
    out["plan_actions"] = dict(actions)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--objects-per-run", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "ledger-runs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    objects = args.runs * args.objects_per_run
    source, dest = make_tree(args.work, objects)
    manifest_path = args.work / "m.yaml"
    manifest_path.write_text(yaml.safe_dump({
        "version": 1, "name": "ledger-runs", "ledger": str(args.work / "ledger"),
        "datasets": [{"name": "d", "source": {"url": str(source)},
                      "destination": {"url": str(dest)}}]}))
    manifest = api.load_manifest(manifest_path)

    print(f"recording {args.runs} runs × {args.objects_per_run} object(s) "
          f"into {args.work / 'ledger'}", flush=True)
    results: dict[str, Any] = {"runs": args.runs, "objects_per_run": args.objects_per_run,
                               "objects": objects, "repeat": args.repeat}
    results["recording"] = record_runs(manifest, args.runs, args.objects_per_run)
    ledger = api.ledger_of(manifest)
    results["before_compact"] = {"tables": table_shape(ledger),
                                 **time_planning(manifest, args.repeat)}
    t0 = time.monotonic()
    ledger.compact()
    results["compact_s"] = round(time.monotonic() - t0, 2)
    results["after_compact"] = {"tables": table_shape(ledger),
                                **time_planning(manifest, args.repeat)}

    for phase in ("before_compact", "after_compact"):
        r = results[phase]
        print(f"\n{phase.replace('_', ' ')}: objects table v{r['tables'][OBJECTS]['version']}, "
              f"{r['tables'][OBJECTS]['files']} data files, "
              f"{r['tables'][OBJECTS]['log_files']} log files; runs table "
              f"{r['tables'][RUNS]['files']} data files")
        print(f"  open objects table   {r['open_objects_table_s'] * 1000:8.1f} ms")
        print(f"  latest_done          {r['latest_done_s'] * 1000:8.1f} ms "
              f"({r['latest_done_rows']} rows)")
        print(f"  plan (merge)         {r['plan_merge_s'] * 1000:8.1f} ms {r['plan_actions']}")
        print(f"  api.plan end to end  {r['api_plan_s'] * 1000:8.1f} ms")
    rec = results["recording"]
    print(f"\nrecording: {rec['record_total_s']} s for {args.runs} runs (median "
          f"{rec['per_run_median_ms']} ms per run of 3 commits; last 100: "
          f"{rec['per_run_last_100_median_ms']} ms); compact: {results['compact_s']} s")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
