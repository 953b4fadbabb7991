"""Scale-out: datamove's throughput on an existing Dask cluster of 1 worker and of 2.

Two clusters are started from the ``dask`` command line, as a user would (a
``dask scheduler`` on a loopback port it picks, written to its ``--scheduler-file``,
and ``dask worker`` processes with ``--nthreads`` threads each, no nanny): one with
one worker, one with two. ``datamove run --scheduler tcp://...`` then copies the
same data with each, and with the embedded default (no ``--scheduler``) for
reference, the three taking turns for ``--repeat`` rounds so a burst of other work
on the host hits all of them. Every run starts from an empty destination and
ledger and must report ``exit_code: 0`` with every object copied; its destination
is then checked (names and sizes). Prints medians as objects/s and MB/s and the
ratio 2 workers / 1 worker (of the medians, and the median of the per-round
ratios); writes ``benchmarks/.work/scaleout/results.json``.

Usage:
    /work/main/.venv/bin/python benchmarks/scaleout.py [--count 2000] [--size-kib 256]
        [--threads 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "scaleout"
BIN = Path(sys.executable).parent


@contextlib.contextmanager
def dask_cluster(name: str, workers: int, threads: int) -> Iterator[str]:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes; yields the address.
    The workers import datamove from this checkout (PYTHONPATH), as a cluster's workers
    import the datamove installed in their image."""
    from distributed import Client

    home = WORK / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes: list[subprocess.Popen[bytes]] = []

    def start(log: str, *args: str) -> None:
        with open(home / f"{log}.log", "wb") as out:
            processes.append(subprocess.Popen([str(BIN / "dask"), *args], env=env, cwd=home,
                                              stdout=out, stderr=subprocess.STDOUT))

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0",
              "--no-dashboard", "--scheduler-file", str(home / "scheduler.json"))
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                address = json.loads((home / "scheduler.json").read_text())["address"]
                break
            if time.monotonic() > deadline or processes[0].poll() is not None:
                raise SystemExit(f"{name}: the dask scheduler did not start; see {home}")
            time.sleep(0.05)
        for i in range(workers):
            start(f"w{i}", "worker", address, "--name", f"w{i}", "--nthreads", str(threads),
                  "--no-nanny", "--no-dashboard", "--host", "127.0.0.1")
        with Client(address, set_as_default=False, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def make_data(root: Path, count: int, size: int) -> None:
    """``count`` objects of ``size`` bytes in 20 directories, built once (seeded)."""
    stamp = root.with_name(root.name + ".complete")
    if stamp.exists() and stamp.read_text() == f"{count} {size}":
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(17)
    for i in range(count):
        folder = root / f"d{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}.bin").write_bytes(rng.randbytes(size))
    stamp.write_text(f"{count} {size}")


def run_once(label: str, scheduler: str | None, src: Path, count: int, size: int,
             threads: int) -> tuple[float, float]:
    """One ``datamove run`` from empty, checked: its wall seconds (the process, start-up
    included) and the run's own (its report: planning, copies, ledger, audit)."""
    out = WORK / "out" / label
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    manifest = out / "m.yaml"
    manifest.write_text(yaml.safe_dump({
        "version": 1, "name": f"scaleout-{label}", "ledger": str(out / "ledger"),
        "engine": {"threads": threads},
        "datasets": [{"name": "d", "source": {"url": str(src)},
                      "destination": {"url": str(out / "dst")}}]}))
    args = [str(BIN / "datamove"), "run", str(manifest), "--json", "--no-progress"]
    if scheduler:
        args += ["--scheduler", scheduler]
    began = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, env={
        **os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{label}: exit {done.returncode}: {done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["datasets"]["d"]["copied"] != count:
        raise SystemExit(f"{label}: copied {report['datasets']['d']['copied']} of {count}")
    sizes = [p.stat().st_size for p in (out / "dst").rglob("*.bin")]
    if len(sizes) != count or set(sizes) != {size}:
        raise SystemExit(f"{label}: the destination holds {len(sizes)} objects, not {count}")
    return seconds, float(report["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size-kib", type=int, default=256)
    parser.add_argument("--threads", type=int, default=4,
                        help="threads per dask worker (the embedded run gets 2x: the "
                             "2-worker cluster's total)")
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    size = opts.size_kib * 1024
    src = WORK / "data" / f"{opts.count}x{opts.size_kib}k"
    make_data(src, opts.count, size)
    times: dict[str, list[float]] = {"1 worker": [], "2 workers": [], "embedded": []}
    runs: dict[str, list[float]] = {label: [] for label in times}
    with dask_cluster("one", 1, opts.threads) as one, \
            dask_cluster("two", 2, opts.threads) as two:
        where = {"1 worker": one, "2 workers": two, "embedded": None}
        for round_ in range(opts.repeat):
            for label, scheduler in where.items():  # taking turns
                # engine.threads: the window on a cluster (2x threads in flight); the
                # embedded run's threads.
                wall, run = run_once(label.replace(" ", "-"), scheduler, src, opts.count,
                                     size, 2 * opts.threads)
                times[label].append(wall)
                runs[label].append(run)
                print(f"round {round_ + 1} {label}: {wall:.2f} s wall, {run:.2f} s run",
                      flush=True)
    total_mb = opts.count * size / 1e6
    results = {"count": opts.count, "size": size, "threads_per_worker": opts.threads,
               "repeat": opts.repeat, "cpus": os.cpu_count(), "wall": times, "run": runs,
               "medians": {}}
    print(f"\n{opts.count} x {opts.size_kib} KiB local -> local, medians of {opts.repeat}, "
          f"{os.cpu_count()} CPUs; wall = the datamove process, run = its report's seconds")
    print(f"{'engine':<12} {'wall s':>8} {'run s':>8} {'objects/s':>10} {'MB/s':>8}")
    for label in times:
        wall, run = statistics.median(times[label]), statistics.median(runs[label])
        results["medians"][label] = {"wall": wall, "run": run}
        print(f"{label:<12} {wall:8.2f} {run:8.2f} {opts.count / wall:10.0f} "
              f"{total_mb / wall:8.1f}")
    for kind, table in (("wall", times), ("run", runs)):
        ratio = statistics.median(table["1 worker"]) / statistics.median(table["2 workers"])
        # The same ratio within each round (the two ran back to back), then its median:
        # less exposed to a burst of other work on a shared host than a ratio of medians.
        paired = statistics.median(one / two for one, two in
                                   zip(table["1 worker"], table["2 workers"], strict=True))
        results[f"throughput_ratio_2_over_1_{kind}"] = ratio
        results[f"paired_ratio_2_over_1_{kind}"] = paired
        print(f"throughput 2 workers / 1 worker ({kind}): {ratio:.2f}x of the medians, "
              f"{paired:.2f}x the median of the per-round ratios")
    (WORK / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
