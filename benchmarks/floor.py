"""The floor under small local copies: the system calls alone, with no datamove around them.

For a tree of small files, time in one run:

* ``rclone``: ``rclone copy --transfers 8 --checkers 8 SRC DST`` (the local-small peer;
  ``--checksum`` adds the flag, as for the local-tiny peer);
* ``protocol``: a bare Python loop making exactly the system calls datamove's local
  publish makes per file (open the source, fstat, read; create a private temporary
  with O_EXCL beside the final name, write, fchmod, futimens to the source's mtime,
  read it back and compare its sha256, close; stat the source again; rename into
  place), in ``--processes`` processes over disjoint directories;
* ``protocol+xattr``: the same plus the ``user.datamove.sha256`` extended attribute
  datamove wrote until 2026-12 (docs/FORMAT.md says why it no longer does);
* ``direct``: what rclone 1.60's local backend does instead (create the final name
  and write it, futimens, close, read it back for md5): no temporary, no rename;
* ``protocol+records``: the protocol plus what datamove must keep of every object,
  by datamove's own code: the source listed as its walk lists a directory, a
  ledger row given to its ``LedgerWriter`` and an ``object.copied`` event to its
  ``AuditWriter``, both committed to Delta tables every 2,000 rows or every
  second, as in a run. Each process keeps its own ledger and audit chain and
  nothing crosses a process: no driver, no Dask, no waiting, so it is a floor
  for any design that records each object, however its work is spread;
* ``ledger stack``: pyarrow and deltalake alone, five small appends to a Delta table
  and a read: the memory any run that keeps a Delta Lake ledger starts from;
* ``start``: ``import datamove.api``, the embedded Dask cluster started and closed,
  and the ledger stack's appends: the fixed cost of any ``datamove run``.

The protocol's time plus the start is what no datamove run can beat however
little Python it runs per object; ``protocol+records`` plus the start is what no
run can beat that keeps datamove's ledger and audit log per object; ``direct`` shows
what the atomic publish costs.
Peak RSS is printed for the cases that run as one child process.
Every tool writes a fresh destination, never deleted during the run (ext4 makes
creates slow for ~30 s after mass deletes; README "Caveats").

Usage:
    /work/main/.venv/bin/python benchmarks/floor.py SRC [--processes 2] [--repeat 3] [--checksum]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

# benchmarks/run.py (warm: rclone drops the pages it copied; compile_bytecode: as installed)
from run import compile_bytecode, measure, warm

# Imported before the pool forks: their import is in "start", not in each timed process.
from datamove.audit import AuditLog
from datamove.ledger.tables import Ledger, LedgerWriter
from datamove.manifest.model import VerifyMode
from datamove.pipeline.auditing import record_result
from datamove.pipeline.jobs import ledger_row
from datamove.pipeline.march import Action, DatasetJob, PlanItem
from datamove.pipeline.transfer import ObjectResult
from datamove.stores.core import Entry, KeyFilter, Location
from datamove.stores.local import _local_child

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "floor"
XATTR = "user.datamove.sha256"
READ = 1 << 20


def files_by_directory(src: Path) -> dict[str, list[str]]:
    """Regular files by directory; symbolic links left out, as datamove's and rclone's
    defaults leave them (the protocol opens with O_NOFOLLOW and would fail on one)."""
    tree: dict[str, list[str]] = {}
    for directory, _, names in os.walk(src):
        tree[os.path.relpath(directory, src)] = sorted(
            n for n in names if not os.path.islink(os.path.join(directory, n)))
    return tree


def publish(args: tuple[str, str, str, dict[str, list[str]]]) -> int:
    """One process's share: every file of its directories, by the named protocol."""
    kind, src, dst, tree = args
    records = None
    if kind == "protocol+records":
        records = Records(f"{dst}.ledger-{os.getpid()}", src, dst)
    count = 0
    for directory, names in tree.items():
        if records is not None:
            names = records.listed(directory)
        os.makedirs(os.path.join(dst, directory), exist_ok=True)
        dir_fd = os.open(os.path.join(dst, directory), os.O_RDONLY | os.O_DIRECTORY)
        for name in names:
            source = os.path.join(src, directory, name)
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
            mtime = os.fstat(fd).st_mtime_ns
            data = os.read(fd, READ)
            os.close(fd)
            if kind == "direct":
                digest = hashlib.md5(data).digest()
                out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
                os.write(out, data)
                os.utime(out, ns=(mtime, mtime))
                os.close(out)
                back = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
                assert hashlib.md5(os.read(back, READ)).digest() == digest
                os.close(back)
            else:
                digest = hashlib.sha256(data).digest()
                temp = f"{name}.partial"
                out = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                              dir_fd=dir_fd)
                os.write(out, data)
                if kind == "protocol+xattr":
                    os.setxattr(out, XATTR, digest.hex().encode())
                os.fchmod(out, 0o644)
                os.utime(out, ns=(mtime, mtime))
                assert hashlib.sha256(os.pread(out, READ, 0)).digest() == digest
                os.close(out)
                os.stat(source, follow_symlinks=False)
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                if records is not None:
                    records.copied(name, digest.hex())
            count += 1
        os.close(dir_fd)
    if records is not None:
        records.close()
    return count


class Records:
    """datamove's per-object records in one process: its listing, ledger rows and
    audit events, by its own code (``protocol+records``): the walk's ``_local_child``,
    the driver's ``ledger_row`` and ``record_result``, a ``LedgerWriter`` and an
    ``AuditWriter``."""

    def __init__(self, ledger_url: str, src: str, dst: str):
        self.src, self.run_id = src, f"floor-{os.getpid()}"
        self.job = DatasetJob("data", Location.of(src), Location.of(dst), KeyFilter(),
                              VerifyMode.checksum)
        self.ledger = LedgerWriter(Ledger(ledger_url), self.run_id)
        self.audit = AuditLog(ledger_url, origin_name="floor").writer(self.run_id)
        self.listing: dict[str, Entry] = {}

    def listed(self, directory: str) -> list[str]:
        """The directory's file names, listed as datamove's walk lists a directory
        (``stores/local.py``: a scandir, one stat per entry, sorted by key)."""
        prefix = "" if directory == "." else f"{directory}/"
        with os.scandir(os.path.join(self.src, directory)) as it:
            children = [_local_child(e, "skip", None, prefix) for e in it]
        self.listing = {name: entry for name, _, entry in filter(None, children)
                        if entry is not None}
        return sorted(self.listing, key=lambda name: self.listing[name].key)

    def copied(self, name: str, sha256: str) -> None:
        """The ledger row and audit event of one copy, as the driver makes them."""
        entry = self.listing[name]
        item = PlanItem(Action.copy, entry.key, entry, None, "new")
        result = ObjectResult(
            dataset="data", key=entry.key, action="copy", status="copied", size=entry.size,
            sha256=sha256, destination_url=self.job.destination.url_of(entry.key),
            bytes_written=entry.size, stored_size=entry.size, stored_sha256=sha256)
        self.ledger.add(ledger_row(self.job, item, result, self.run_id))
        record_result(self.audit, self.job, result)

    def close(self) -> None:
        self.ledger.flush()
        self.audit.flush()


def timed_protocol(kind: str, src: Path, processes: int) -> float:
    tree = files_by_directory(src)
    shares: list[dict[str, list[str]]] = [{} for _ in range(processes)]
    for i, directory in enumerate(sorted(tree)):
        shares[i % processes][directory] = tree[directory]
    dst = WORK / f"{kind}-{time.time_ns()}"
    started = time.perf_counter()
    with Pool(processes) as pool:
        pool.map(publish, [(kind, str(src), str(dst), share) for share in shares])
    return time.perf_counter() - started


PEAKS: dict[str, float] = {}
"""Peak RSS (MiB) of each case that ran as a child process, the largest seen."""


def timed(name: str, argv: list[str], env: dict[str, str] | None = None) -> float:
    """Run a child to completion (run.measure): its wall time; its peak RSS goes into
    PEAKS. Its output is in .work/floor/logs/<name>.out|.err."""
    wall, _cpu, rss, code = measure(argv, WORK / "logs" / name, env or dict(os.environ))
    if code != 0:
        raise RuntimeError(f"{name}: exit {code}: {' '.join(argv)}")
    PEAKS[name] = max(PEAKS.get(name, 0.0), rss)
    return wall


LEDGER_STACK = ("import sys, pyarrow as pa\n"
                "from deltalake import DeltaTable, write_deltalake\n"
                "rows = pa.table({'key': [str(i) for i in range(1000)],"
                " 'size': list(range(1000))})\n"
                "for _ in range(5): write_deltalake(sys.argv[1], rows, mode='append')\n"
                "assert DeltaTable(sys.argv[1]).to_pyarrow_table().num_rows == 5000\n"
                "import os; os._exit(0)\n")
"""The Delta Lake ledger's libraries alone: five small appends and a read, no datamove.
(``os._exit``: a bare script like this one aborts in its teardown, "terminate called
without an active exception", from the libraries' native threads.)"""

START = ("import datamove.api\n"
         "from distributed import Client, LocalCluster\n"
         "with LocalCluster(processes=False, n_workers=1, threads_per_worker=8,"
         " dashboard_address=None) as c, Client(c): pass\n" + LEDGER_STACK)
"""What every run does besides copying: import datamove, start and stop the embedded
cluster, write and read a Delta table."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checksum", action="store_true",
                        help="rclone copy --checksum: the peer of local-tiny and local-large")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    rclone_env = {**os.environ, "RCLONE_CONFIG": "/dev/null"}
    rclone_flags = ["--checksum"] if args.checksum else []
    cases = {
        "rclone": lambda: timed("rclone", ["rclone", "copy", *rclone_flags, "--transfers", "8",
                                           "--checkers", "8", str(args.src),
                                           str(WORK / f"rclone-{time.time_ns()}")], rclone_env),
        "protocol": lambda: timed_protocol("protocol", args.src, args.processes),
        "protocol+xattr": lambda: timed_protocol("protocol+xattr", args.src, args.processes),
        "direct": lambda: timed_protocol("direct", args.src, args.processes),
        "protocol+records": lambda: timed_protocol("protocol+records", args.src,
                                                   args.processes),
        "start": lambda: timed("start", [sys.executable, "-c", START,
                                         str(WORK / f"delta-{time.time_ns()}")]),
        "ledger stack": lambda: timed("ledger stack", [sys.executable, "-c", LEDGER_STACK,
                                                       str(WORK / f"delta-{time.time_ns()}")]),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):  # the tools take turns, so drift hits them all
        for name, case in cases.items():
            os.sync()  # the last case's dirty pages are not written back during this one
            warm(args.src)
            times[name].append(case())
    rclone = statistics.median(times["rclone"])
    files = sum(len(names) for names in files_by_directory(args.src).values())
    print(f"{files} files from {args.src}, {args.processes} processes, rclone copy "
          f"{' '.join(rclone_flags) or '(no flags)'}, "
          f"{args.repeat} runs each (median; all runs)")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"{name:16} {median:7.2f} s  {median / rclone:5.2f}× rclone   "
              + " ".join(f"{t:.2f}" for t in runs))
    floor = statistics.median(times["protocol"]) + statistics.median(times["start"])
    print(f"{'floor':16} {floor:7.2f} s  {floor / rclone:5.2f}× rclone   "
          "(protocol + start: no datamove run can be faster)")
    kept = statistics.median(times["protocol+records"]) + statistics.median(times["start"])
    print(f"{'floor+records':16} {kept:7.2f} s  {kept / rclone:5.2f}× rclone   "
          "(protocol+records + start: nor a run that records each object)")
    print("peak RSS: " + ", ".join(f"{name} {mib:.0f} MiB ({mib / PEAKS['rclone']:.2f}× rclone)"
                                   for name, mib in PEAKS.items()))


if __name__ == "__main__":
    main()
