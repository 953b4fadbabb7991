"""Where datamove's time goes on an encrypted local → local copy: cProfile of a run.

cProfile sees only the thread it is enabled in, and datamove's copies run in the
embedded Dask cluster's worker threads, not in the main thread; a plain
``python -m cProfile -m datamove.cli run`` therefore shows the driver waiting. This
script wraps the Dask task (``datamove.commands.copy.run_batch``) so that every task is profiled
in the thread that runs it, profiles the driver (main thread) separately, and prints
both: the workers' totals by own time (``tottime``) and by cumulative time, then the
driver's. The manifest is the benchmark's (same data, ``verify: checksum``, encrypted
for a fresh age key) with ``engine.threads: 1``, so the profile is one core's work.

Usage:
    /work/main/.venv/bin/python benchmarks/profile_enc.py [--kind small|large] [--quick]
        [--top 30]
Run it on a quiet machine, after benchmarks/run.py has built the data (it reuses
.work/data/). Output goes to stdout and .work/profile/<kind>-{workers,driver}.prof;
the previous .work/profile/ is moved to .work/trash/, which run.py empties.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from report import FULL, QUICK

import datamove.api as api
import datamove.commands.copy as copy_command
from datamove.pipeline.transfer import Batch, ObjectResult, run_batch

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
OUT = WORK / "profile"

_lock = threading.Lock()
_task_profiles: list[cProfile.Profile] = []


def profiled_run_batch(batch: Batch) -> list[ObjectResult]:
    """run_batch, profiled in whichever worker thread runs it."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        return run_batch(batch)
    finally:
        prof.disable()
        with _lock:
            _task_profiles.append(prof)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["small", "large"], default="small")
    parser.add_argument("--quick", action="store_true", help="the --quick data set")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    profile = QUICK if args.quick else FULL
    src = WORK / "data" / profile.name / args.kind
    if not src.is_dir():
        sys.exit(f"{src} is missing: run benchmarks/run.py (--quick) first to build it")

    if OUT.exists():  # renamed, not deleted: see run.discard (ext4 after mass deletes)
        (WORK / "trash").mkdir(parents=True, exist_ok=True)
        OUT.rename(WORK / "trash" / f"profile-{time.monotonic_ns()}")
    OUT.mkdir(parents=True)
    identity, recipients = OUT / "identity.txt", OUT / "recipients.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipients.write_text(subprocess.run(["age-keygen", "-y", str(identity)], check=True,
                                         capture_output=True, text=True).stdout)
    manifest = OUT / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({
        "version": 1, "name": "profile-enc", "ledger": str(OUT / "ledger"),
        "keys": {"recipients_file": str(recipients)}, "engine": {"threads": 1},
        "datasets": [{"name": "data", "source": {"url": f"{src}/"},
                      "destination": {"url": f"{OUT / 'dst'}/"}, "verify": "checksum",
                      "encrypt": True}],
    }, sort_keys=False))

    # Dask pickles the task function; one defined in __main__ goes by value (with its
    # lock), so submit this module's function as an importable one, by reference.
    import profile_enc as me

    copy_command.run_batch = me.profiled_run_batch  # type: ignore[attr-defined]  # what execute submits
    task_profiles = me._task_profiles
    driver = cProfile.Profile()
    started, cpu = time.perf_counter(), time.process_time()
    driver.enable()
    report = api.run(api.load_manifest(str(manifest)))
    driver.disable()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    counts = report.dataset("data").counts
    print(f"{args.kind} ({profile.name}): {counts['copied']} copied, {wall:.2f} s wall, "
          f"{cpu:.2f} s CPU (whole process, profiler overhead included), "
          f"{len(task_profiles)} tasks")

    workers = pstats.Stats(task_profiles[0])
    for prof in task_profiles[1:]:
        workers.add(prof)
    workers.dump_stats(OUT / f"{args.kind}-workers.prof")
    driver.dump_stats(OUT / f"{args.kind}-driver.prof")
    for title, stats, key in (("workers, by own time", workers, "tottime"),
                              ("workers, by cumulative time", workers, "cumulative"),
                              ("driver (main thread), by cumulative time",
                               pstats.Stats(driver), "cumulative")):
        text = io.StringIO()
        stats.stream = text  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(args.top)
        body = text.getvalue()
        print(f"\n=== {title} ===\n" + body[body.find("   ncalls"):])


if __name__ == "__main__":
    main()
