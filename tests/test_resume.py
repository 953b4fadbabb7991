"""Crash-safe resume and idempotent reruns, with faults injected for real.

1. The driver (``datamove run`` in a subprocess) is killed with SIGKILL at 10
   moments of one migration, local → local and local → S3 (moto_server), each
   chosen from the run's observed progress (its start row in the ledger, or a
   seeded random number of objects it published), so that every kill lands on a
   live run with work left, whatever the machine's speed; each time the
   migration is resumed, then a last run completes it. Then: every object is at
   the destination with the source's sha256; nothing temporary is left (no
   partial file, no open multipart upload); no object was written again once it
   was complete: neither per the ledger (rows, with the Delta version that
   committed each) nor per the store itself (local: the inode, mtime and ctime
   of a published file never change; S3: bucket versioning shows one version
   per key); exactly one done row per object.
2. A Dask worker *process* is killed while it has a copy open: the run still
   completes, and everything verifies.
3. A rerun after a completed run reads nothing and copies nothing (the plan
   comes from the ledger); a changed source object is copied again with a new
   row; a deleted one is reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from datamove import api
from datamove.ledger.tables import DONE_STATUSES, OBJECTS, Ledger
from datamove.manifest.model import load_manifest
from datamove.pipeline import transfer
from datamove.pipeline.march import DatasetJob, plan_dataset
from datamove.stores.core import PARTIAL_MARKER
from tests.conftest import AWS_ENV, file_sha, s3_location, write_manifest

MiB = 1024 * 1024
PART = 5 * MiB
MIN_KILLS = 10
# Kill moments are seeded; set DATAMOVE_FAULT_SEED to explore other schedules.
SEED = int(os.environ.get("DATAMOVE_FAULT_SEED", 20240611))


# --- source trees --------------------------------------------------------------------

_POOL = random.Random(SEED).randbytes(4 * MiB)


def fill(path: Path, size: int, index: int, rng: random.Random) -> str:
    """Unique bytes for object ``index`` (a header, then pool bytes from a random
    offset, repeated): cheap to make, different per object. Returns the sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        header = hashlib.sha256(f"{SEED}:{index}".encode()).digest()[:min(32, size)]
        f.write(header)
        digest.update(header)
        left -= len(header)
        while left:
            start = rng.randrange(len(_POOL) - MiB)
            chunk = _POOL[start:start + min(MiB, left)]
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


@dataclass
class Tree:
    root: Path
    objects: dict[str, tuple[int, str]] = field(default_factory=dict)  # key → size, sha256

    @property
    def total_bytes(self) -> int:
        return sum(size for size, _ in self.objects.values())


@pytest.fixture(scope="module")
def shared_objects(tmp_path_factory):
    """~400 objects of 0..2 MiB and four of 8..20 MiB (multipart on S3), made once."""
    root = tmp_path_factory.mktemp("shared")
    rng = random.Random(SEED)
    objects = {}
    for i in range(400):
        size = 0 if i % 37 == 0 else rng.randint(1, 2 * MiB)
        key = f"mid/d{i % 9}/f{i:04d}.bin"
        objects[key] = (size, fill(root / key, size, i, rng))
    for i, mib in enumerate((8, 12, 16, 20)):  # spread over the key order
        key = f"mid/d{2 * i + 1}/big{i}.bin"
        objects[key] = (mib * MiB, fill(root / key, mib * MiB, 1000 + i, rng))
    return Tree(root, objects)


def make_tree(root: Path, shared: Tree, *, mid: int, tiny: int, seed: int,
              multipart: int = 0) -> Tree:
    """Hard links to ``mid`` of the shared mid-size objects and all the big ones,
    plus ``tiny`` new files of 0..32 KiB (many objects: many ledger rows) and
    ``multipart`` of 6..9 MiB (two parts each on S3), spread over the key order."""
    tree = Tree(root)
    mids = sorted(k for k in shared.objects if "/f" in k)[:mid]
    for key in mids + [k for k in shared.objects if "/big" in k]:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        os.link(shared.root / key, root / key)
        tree.objects[key] = shared.objects[key]
    rng = random.Random(seed)
    for i in range(tiny):
        key = f"tiny/t{i % 23:02d}/o{i:05d}"
        size = rng.randint(0, 32 * 1024)
        tree.objects[key] = (size, fill(root / key, size, 5000 + i, rng))
    for i in range(multipart):
        key = f"mid/d{i % 9}/m{i:02d}.bin"
        size = rng.randint(6 * MiB, 9 * MiB)
        tree.objects[key] = (size, fill(root / key, size, 9000 + i, rng))
    return tree


# --- destinations, observed from outside datamove -------------------------------------

class LocalDest:
    """A local destination, observed with plain os calls."""

    def __init__(self, root: Path):
        self.root = root

    def published(self) -> dict[str, tuple[int, int, int, int]]:
        """key → (inode, size, mtime_ns, ctime_ns) of every non-temporary file:
        a rewrite (os.replace of a new copy) changes the inode."""
        out = {}
        for directory, _, names in os.walk(self.root):
            for name in names:
                if PARTIAL_MARKER in name:
                    continue
                path = Path(directory) / name
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    key = path.relative_to(self.root).as_posix()
                    out[key] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return out

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def temporaries(self) -> list[str]:
        return [str(Path(d) / n) for d, _, names in os.walk(self.root) for n in names
                if PARTIAL_MARKER in n]

    def sha256(self, key: str) -> str:
        return file_sha(self.root / key)

    def versions(self) -> dict[str, int]:
        return {}  # a local disk keeps one version; rewrites show in published()

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class S3Dest:
    """An S3 destination on moto_server, in a bucket with versioning enabled, so
    every completed write of a key is kept and can be counted."""

    def __init__(self, server: Any, prefix: str = "data/"):
        self.client = server.client()
        self.bucket = server.new_bucket()
        self.prefix = prefix
        self.client.put_bucket_versioning(Bucket=self.bucket,
                                          VersioningConfiguration={"Status": "Enabled"})

    def _versions(self) -> list[dict]:
        out = []
        for page in self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=self.prefix):
            out += page.get("Versions", [])
            out += [{**m, "DeleteMarker": True} for m in page.get("DeleteMarkers", [])]
        return out

    def published(self) -> dict[str, tuple[str, int]]:
        """key → (version id, size) of the current version of every object."""
        return {v["Key"][len(self.prefix):]: (v["VersionId"], v.get("Size", -1))
                for v in self._versions() if v.get("IsLatest")}

    def exists(self, key: str) -> bool:
        """One HEAD request: cheap enough to poll while the run keeps the store busy
        (a listing of the bucket under load takes seconds)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
                return False
            raise
        return True

    def versions(self) -> dict[str, int]:
        """key → how many times it was written (versions, delete markers included)."""
        return Counter(v["Key"][len(self.prefix):] for v in self._versions())

    def temporaries(self) -> list[str]:
        uploads = []
        for page in self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket):
            uploads += [f"upload {u['Key']} {u['UploadId']}" for u in page.get("Uploads", [])]
        keys = [v["Key"] for v in self._versions() if PARTIAL_MARKER in v["Key"]]
        return uploads + keys

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        while chunk := body.read(MiB):
            digest.update(chunk)
        return digest.hexdigest()

    def cleanup(self) -> None:
        """moto keeps everything in memory: give it back."""
        for page in self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket):
            for u in page.get("Uploads", []):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"],
                                                   UploadId=u["UploadId"])
        versions = self._versions()
        for i in range(0, len(versions), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [
                {"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions[i:i + 1000]]})


# --- the driver, killed -----------------------------------------------------------------

def start(manifest: Path, log_dir: Path, name: str, *extra: str) -> subprocess.Popen[bytes]:
    with open(log_dir / f"{name}.out", "wb") as out, open(log_dir / f"{name}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "datamove.cli", "run", str(manifest), "--no-progress",
             *extra], stdout=out, stderr=err, env={**os.environ, **AWS_ENV},
            cwd=manifest.parent)


@dataclass
class Round:
    """One run of the migration and the SIGKILL that ended it."""

    trigger: str  # "start": its start row is in the ledger; "published": see target
    target: int  # "published": k, the kill waited for the k-th missing key to be published
    unrecorded_at_start: int  # objects without a done row in the ledger: its work
    unpublished_at_start: int  # objects not yet at the destination
    stopped_after_s: float  # from the launch to the kill's moment (its SIGSTOP)
    unrecorded_at_kill: int  # objects still without a done row: > 0, work remained
    unpublished_at_kill: int  # objects still missing at the destination (may be 0)
    new_objects: int  # published at the destination during this round
    temporaries_at_kill: int  # new partial files / open uploads the killed process left
    rows_committed: int  # ledger rows this run committed before it died


def ledger_rows(ledger_dir: Path) -> int:
    table = Ledger(str(ledger_dir)).table(OBJECTS)
    return 0 if table is None else table.count()


def started_runs(ledger_dir: Path) -> int:
    """How many runs have their start row in the ledger."""
    runs = Ledger(str(ledger_dir)).runs().column("event").to_pylist()
    return runs.count("start")


def log_entries(table_dir: Path) -> int:
    """Files in a Delta table's _delta_log: changes whenever the table commits
    (cheap to poll; the table itself is read only when this moved)."""
    with contextlib.suppress(FileNotFoundError):
        return len(os.listdir(table_dir / "_delta_log"))
    return -1


def start_row_committed(ledger_dir: Path) -> Callable[[], bool]:
    """A trigger: true once a run more than now has its start row in the ledger."""
    starts, runs_dir = started_runs(ledger_dir), ledger_dir / "runs"
    last = [log_entries(runs_dir)]

    def reached() -> bool:
        now = log_entries(runs_dir)
        if now == last[0]:
            return False
        last[0] = now
        return started_runs(ledger_dir) > starts

    return reached


def published(dest: LocalDest | S3Dest, key: str) -> Callable[[], bool]:
    """A trigger: true once ``key`` is at the destination."""
    return lambda: dest.exists(key)


def wait_and_stop(proc: subprocess.Popen[bytes], reached: Callable[[], bool], what: str,
                  timeout: float = 300) -> None:
    """Poll ``reached()`` until it is true, then freeze the run with SIGSTOP.

    The run is frozen, not killed, so that the test can check, with nothing
    moving, that the process was still running and that work remained; the
    SIGKILL that follows ends it at exactly that point of its execution. A run
    that ends before its trigger fails the test: a kill must interrupt a run."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the run ended by itself (exit {proc.returncode}) before its kill "
                        f"trigger ({what}): kills must land while work remains")
        if reached():
            os.kill(proc.pid, signal.SIGSTOP)
            if proc.poll() is not None:  # ended between the last check and the stop
                pytest.fail(f"the run ended (exit {proc.returncode}) just as its kill "
                            f"trigger ({what}) fired: kills must land while work remains")
            return
        if time.monotonic() > deadline:
            pytest.fail(f"kill trigger ({what}) not reached in {timeout:.0f} s")
        time.sleep(0.005)


def kill_loop(manifest: Path, dest: LocalDest | S3Dest, tree: Tree, ledger_dir: Path,
              log_dir: Path, rng: random.Random) -> list[Round]:
    """Start the run and SIGKILL it at a moment chosen from its observed progress,
    MIN_KILLS times; each kill lands on a live run with work left, on any machine.

    Kill moments are not wall-clock guesses (a faster machine, or a calibration
    run slowed by a busy one, used to let runs end before their kill) but events
    seen from outside the process: its start row committed to the ledger (a kill
    during start-up, listing and planning), or the k-th missing object, in the
    key order runs copy in, published at the destination, k drawn from [1, a
    third of what is missing] (a kill mid-copy, usually with writes in flight and
    after ledger commits; the next run also re-verifies what was published but
    not recorded). Polls are one stat or one HEAD request, so the kill follows
    the event by milliseconds on any machine. The run is frozen at that
    moment, checked to be alive with objects neither published nor recorded,
    then killed. Every published object is checked never to change afterwards."""
    others = ["start"] * 2 + ["published"] * (MIN_KILLS - 3)
    triggers = ["published", *rng.sample(others, len(others))]
    rounds: list[Round] = []
    seen: dict[str, Any] = {}
    rewritten: list[str] = []
    for n, trigger in enumerate(triggers):
        recorded = _recorded_keys(ledger_dir)
        before, rows_before = dest.published(), ledger_rows(ledger_dir)
        unpublished = len(set(tree.objects) - set(before))
        assert unpublished > 1, (
            f"round {n}: {unpublished} objects left to copy, too few to interrupt a run")
        temporaries_before = set(dest.temporaries())
        target = 0
        if trigger == "start":
            reached, what = start_row_committed(ledger_dir), "its start row in the ledger"
        else:
            # Runs copy in key order (a bounded window of batches in flight): the
            # target-th missing key is published after about target others.
            target = rng.randint(1, max(1, unpublished // 3))
            watched = sorted(set(tree.objects) - set(before))[target - 1]
            reached = published(dest, watched)
            what = f"missing object {target} ({watched}) published"
        began = time.monotonic()
        proc = start(manifest, log_dir, f"round{n:02d}")
        try:
            wait_and_stop(proc, reached, what)
            # Frozen: the state the SIGKILL will leave, give or take the requests
            # an object store is still answering.
            stopped_after = time.monotonic() - began
            unrecorded_at_kill = len(set(tree.objects) - _recorded_keys(ledger_dir))
            unpublished_at_kill = len(set(tree.objects) - set(dest.published()))
        finally:
            if proc.poll() is None:  # stopped (or, after a failure above, running)
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        assert proc.returncode == -signal.SIGKILL, (
            f"round {n}: exit {proc.returncode}, not killed\n"
            + (log_dir / f"round{n:02d}.err").read_text()[-3000:])
        # Work left = objects not recorded yet. All may be published by then: requests
        # the store was already answering finish while the run is frozen.
        assert unrecorded_at_kill > 0, (
            f"round {n} ({what}): no work left when killed "
            f"(unrecorded {unrecorded_at_kill}, unpublished {unpublished_at_kill})")
        after = dest.published()
        for key, identity in after.items():
            if key in seen and seen[key] != identity:
                rewritten.append(f"round {n}: {key} {seen[key]} → {identity}")
            seen.setdefault(key, identity)
        rounds.append(Round(
            trigger=trigger, target=target,
            unrecorded_at_start=len(set(tree.objects) - recorded),
            unpublished_at_start=unpublished, stopped_after_s=round(stopped_after, 3),
            unrecorded_at_kill=unrecorded_at_kill, unpublished_at_kill=unpublished_at_kill,
            new_objects=len(set(after) - set(before)),
            temporaries_at_kill=len(set(dest.temporaries()) - temporaries_before),
            rows_committed=ledger_rows(ledger_dir) - rows_before))
    assert rewritten == [], "published objects were written again:\n" + "\n".join(rewritten)
    assert len(rounds) == MIN_KILLS
    return rounds


def _recorded_keys(ledger_dir: Path) -> set[str]:
    table = Ledger(str(ledger_dir)).table(OBJECTS)
    if table is None:
        return set()
    rows = table.to_pyarrow_table(columns=["key", "status"]).to_pylist()
    return {r["key"] for r in rows if r["status"] in DONE_STATUSES}


def rows_with_commit_version(table_uri: str) -> list[dict[str, Any]]:
    """Every objects row, with the first table version that contains it (the
    commit that made it durable), by reading each version of the table."""
    from deltalake import DeltaTable

    columns = ["run_id", "key", "status", "sha256", "stored_size", "recorded_at"]
    first: dict[tuple, int] = {}
    rows: dict[tuple, dict[str, Any]] = {}
    for version in range(DeltaTable(table_uri).version() + 1):
        for row in DeltaTable(table_uri, version=version).to_pyarrow_table(
                columns=columns).to_pylist():
            ident = (row["run_id"], row["key"], row["status"], row["recorded_at"])
            if ident not in first:
                first[ident] = version
                rows[ident] = {**row, "version": version}
    return list(rows.values())


def check_invariants(tree: Tree, dest: LocalDest | S3Dest, ledger_dir: Path) -> dict[str, Any]:
    # Every source object at the destination, byte for byte; nothing else there.
    published = dest.published()
    assert sorted(published) == sorted(tree.objects), (
        f"missing: {sorted(set(tree.objects) - set(published))[:10]}, "
        f"unexpected: {sorted(set(published) - set(tree.objects))[:10]}")
    wrong = [k for k, (_, sha) in tree.objects.items() if dest.sha256(k) != sha]
    assert wrong == [], f"{len(wrong)} objects differ from their source: {wrong[:10]}"

    # Nothing temporary left: no partial file, no incomplete multipart upload.
    left = dest.temporaries()
    assert left == [], f"{len(left)} temporary objects left behind: {left[:10]}"

    # Written once: S3 keeps every version of a key (local rewrites were checked
    # round by round: a published file's inode, mtime and ctime never changed).
    writes = dest.versions()
    twice = {k: n for k, n in writes.items() if n != 1}
    assert twice == {}, f"objects written more than once: {dict(list(twice.items())[:10])}"

    # The ledger: one done row per object; never copied after a committed row.
    rows = rows_with_commit_version(str(ledger_dir / OBJECTS))
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_key[row["key"]].append(row)
    assert sorted(by_key) == sorted(tree.objects)
    statuses = Counter(r["status"] for r in rows)
    assert set(statuses) <= {"copied", "verified"}, statuses  # no failed, no repaired
    problems = []
    for key, key_rows in by_key.items():
        done = [r for r in key_rows if r["status"] in DONE_STATUSES]
        if len(done) != 1:
            problems.append(f"{key}: {len(done)} done rows")
        copied = [r for r in key_rows if r["status"] == "copied"]
        if len(copied) > 1:
            problems.append(f"{key}: copied {len(copied)} times")
        for c in copied:
            # Runs are sequential: a done row of another run, committed at an
            # earlier table version, was in the ledger before this run started,
            # so this run had to skip the object, not copy it.
            earlier = [r for r in done if r["run_id"] != c["run_id"]
                       and r["version"] < c["version"]]
            if earlier:
                problems.append(f"{key}: copied by {c['run_id']} (v{c['version']}) after "
                                f"{earlier[0]['run_id']} committed it (v{earlier[0]['version']})")
        size, sha = tree.objects[key]
        for r in done:
            if r["sha256"] != sha or r["stored_size"] != size:
                problems.append(f"{key}: ledger says {r['sha256']} {r['stored_size']}")
    assert problems == [], "\n".join(problems[:20])

    runs = Ledger(str(ledger_dir)).runs().to_pylist()
    started = {r["run_id"] for r in runs if r["event"] == "start"}
    ended = {r["run_id"]: r for r in runs if r["event"] == "end"}
    assert set(ended) <= started
    return {"rows": dict(statuses), "runs_started": len(started), "runs_ended": len(ended),
            "runs_with_rows": len({r["run_id"] for r in rows}),
            "ledger_versions": max(r["version"] for r in rows)}


def fault_test(tmp_path: Path, tree: Tree, label: str, dest: LocalDest | S3Dest,
               destination: dict) -> None:
    """Kill at moments chosen from progress, finish, check."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    engine = {"threads": 4, "batch_objects": 16, "part_size": PART}
    (tmp_path / "main").mkdir()
    main = write_manifest(tmp_path / "main" / "m.yaml", [
        {"name": "d", "source": {"url": str(tree.root)}, "destination": destination,
         "verify": "checksum"}], name=label, engine=engine)
    ledger_dir = tmp_path / "main" / ".datamove" / "ledger"
    began = time.monotonic()
    rounds = kill_loop(main, dest, tree, ledger_dir, log_dir, random.Random(f"{SEED}:{label}"))
    killing = time.monotonic() - began

    final = start(main, log_dir, "final", "--json")
    assert final.wait(300) == 0, (log_dir / "final.err").read_text()[-3000:]
    final_s = time.monotonic() - began - killing
    summary = json.loads((log_dir / "final.out").read_text().strip().splitlines()[-1])
    counts = summary["datasets"]["d"]
    assert counts["failed"] == 0 and summary["exit_code"] == 0

    facts = check_invariants(tree, dest, ledger_dir)
    copying = [r for r in rounds if r.new_objects or r.temporaries_at_kill]
    report = {
        "label": label, "objects": len(tree.objects), "bytes": tree.total_bytes,
        "kills": len(rounds), "kill_rounds_s": round(killing, 2), "final_run_s": round(final_s, 2),
        "kills_at_start_row": sum(1 for r in rounds if r.trigger == "start"),
        "kills_mid_copy": len(copying),
        "kills_with_writes_in_flight": sum(1 for r in rounds if r.temporaries_at_kill),
        "kills_after_a_ledger_commit": sum(1 for r in rounds if r.rows_committed),
        "final_run": {k: counts[k] for k in ("copied", "skipped", "verified")},
        **facts, "rounds": [r.__dict__ for r in rounds],
    }
    print(json.dumps(report))
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))


@pytest.mark.slow
def test_driver_killed_at_random_moments_local(tmp_path, shared_objects):
    tree = make_tree(tmp_path / "src", shared_objects, mid=400, tiny=3000, seed=1)
    dest = tmp_path / "dst"
    fault_test(tmp_path, tree, "kill-local", LocalDest(dest), {"url": str(dest)})


@pytest.mark.slow
def test_driver_killed_at_random_moments_s3(tmp_path, shared_objects, moto_server):
    tree = make_tree(tmp_path / "src", shared_objects, mid=250, tiny=150, seed=2, multipart=8)
    dest = S3Dest(moto_server)
    try:
        fault_test(tmp_path, tree, "kill-s3", dest,
                   s3_location(moto_server, dest.bucket, dest.prefix))
    finally:
        dest.cleanup()


# --- 2. a Dask worker process killed mid-copy -------------------------------------------

@pytest.mark.slow
def test_worker_process_killed_mid_copy_run_completes_and_verifies(tmp_path, shared_objects):
    import psutil
    from distributed import Client, LocalCluster

    tree = make_tree(tmp_path / "src", shared_objects, mid=200, tiny=0, seed=3)
    dest = tmp_path / "dst"
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(tree.root)}, "destination": {"url": str(dest)},
         "verify": "checksum"}], engine={"batch_objects": 4}))

    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        pids = client.run(os.getpid)
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["report"] = api.run(manifest, scheduler=cluster.scheduler_address)
            except BaseException as exc:  # surfaced below
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        victim = open_partial = None
        deadline = time.monotonic() + 60
        while victim is None and thread.is_alive() and time.monotonic() < deadline:
            for pid in pids.values():  # the worker that has a temporary file open
                with contextlib.suppress(psutil.Error):
                    for f in psutil.Process(pid).open_files():
                        if PARTIAL_MARKER in f.path and f.path.startswith(str(dest)):
                            victim, open_partial = pid, f.path
                            break
                if victim:
                    os.kill(victim, signal.SIGKILL)
                    break
            time.sleep(0.002)
        assert victim is not None, "no worker was caught with a copy open"
        thread.join(240)
        assert not thread.is_alive(), "the run did not finish after the worker died"
        assert "error" not in outcome, outcome.get("error")
        report = outcome["report"]
        assert report.exit_code == 0, [p.to_dict() for p in report.problems]
        counts = report.datasets["d"].counts
        assert counts["failed"] == 0
        assert counts["copied"] + counts["verified"] == len(tree.objects)

        # The nanny replaced the dead worker with a new process.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = client.run(os.getpid)
            if len(now) == 2 and victim not in now.values():
                break
            time.sleep(0.2)
        assert len(now) == 2 and victim not in now.values(), now
        assert not psutil.pid_exists(victim) or \
            psutil.Process(victim).status() == psutil.STATUS_ZOMBIE

        check = api.verify(manifest, scheduler=cluster.scheduler_address)
        assert check.exit_code == 0, [p.to_dict() for p in check.problems]
        assert check.datasets["d"].counts["matched"] == len(tree.objects)

    for key, (size, sha) in tree.objects.items():
        assert (dest / key).stat().st_size == size and file_sha(dest / key) == sha, key
    rows = Ledger(str(tmp_path / ".datamove" / "ledger")).objects(
        columns=["key", "status"]).to_pylist()
    done = Counter(r["key"] for r in rows if r["status"] in DONE_STATUSES)
    assert done == dict.fromkeys(tree.objects, 1)
    # The killed worker's temporary file (named with this run's token) must not
    # outlive the run that orphaned it.
    left = LocalDest(dest).temporaries()
    assert left == [], f"left behind by the killed worker ({open_partial}): {left}"


# --- 3. reruns: nothing to do, changed and deleted sources ----------------------------------

def test_rerun_reads_nothing_then_sees_changed_and_deleted_sources(tmp_path, monkeypatch):
    source, dest = tmp_path / "src", tmp_path / "dst"
    rng = random.Random(SEED)
    keys = [f"k/{i:02d}.bin" for i in range(20)]
    for i, key in enumerate(keys):
        fill(source / key, rng.randint(1, 200_000), i, rng)
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(source)}, "destination": {"url": str(dest)}}],
        engine={"threads": 2, "batch_objects": 4}))
    ledger = Ledger(str(tmp_path / ".datamove" / "ledger"))
    job = DatasetJob.from_spec(manifest.datasets[0])

    first = api.run(manifest)
    assert first.exit_code == 0 and first.datasets["d"].counts["copied"] == 20

    opened: list[tuple[str, str]] = []
    real_open = transfer.open_read

    def counting_open(location, key):  # type: ignore[no-untyped-def]
        opened.append((location.url, key))
        return real_open(location, key)

    monkeypatch.setattr(transfer, "open_read", counting_open)

    # Rerun: every object skipped from the ledger, not one byte read.
    reasons = Counter(i.reason for i in plan_dataset(job, recorded=ledger.latest_done("d")))
    assert reasons == {"recorded and unchanged": 20}
    assert api.plan(manifest).datasets["d"].counts["skip"] == 20
    second = api.run(manifest)
    counts = second.datasets["d"].counts
    assert (counts["copied"], counts["verified"], counts["skipped"]) == (0, 0, 20)
    assert opened == []
    assert ledger.objects(columns=["key"]).num_rows == 20

    # Change two objects (one keeps its size), delete one.
    same_size, new_size, deleted = keys[3], keys[7], keys[11]
    old_sha = file_sha(source / same_size)
    size = (source / same_size).stat().st_size
    (source / same_size).write_bytes(bytes(size))  # new content, same size, new mtime
    later = (source / same_size).stat().st_mtime + 10
    os.utime(source / same_size, (later, later))
    (source / new_size).write_bytes(b"a different object")
    (source / deleted).unlink()
    plan = {i.key: (i.action.value, i.reason)
            for i in plan_dataset(job, recorded=ledger.latest_done("d"))}
    assert plan[same_size] == ("copy", "source changed since it was recorded")
    assert plan[new_size] == ("copy", "source changed since it was recorded")
    assert plan[deleted] == ("extra", "deleted at the source since it was copied")
    assert Counter(a for a, _ in plan.values()) == {"skip": 17, "copy": 2, "extra": 1}
    planned = api.plan(manifest).datasets["d"].counts
    assert (planned["copy"], planned["skip"], planned["extra"]) == (2, 17, 1)

    third = api.run(manifest)
    counts = third.datasets["d"].counts
    assert (counts["copied"], counts["skipped"], counts["extra"]) == (2, 17, 1)
    assert third.exit_code == 0
    assert sorted(k for url, k in opened if url == job.source.url) == sorted([same_size,
                                                                             new_size])
    assert (dest / same_size).read_bytes() == bytes(size)
    assert (dest / new_size).read_bytes() == b"a different object"
    assert (dest / deleted).exists()  # reported, never deleted

    rows = ledger.objects(columns=["key", "run_id", "status", "sha256"]).to_pylist()
    history = defaultdict(list)
    for row in rows:
        history[row["key"]].append((row["run_id"], row["sha256"]))
    assert sorted(history[same_size]) == sorted([
        (first.run_id, old_sha), (third.run_id, hashlib.sha256(bytes(size)).hexdigest())])
    assert sorted(history[new_size]) == sorted([
        (first.run_id, history[new_size][0][1] if history[new_size][0][0] == first.run_id
         else history[new_size][1][1]),
        (third.run_id, hashlib.sha256(b"a different object").hexdigest())])
    assert len(history[deleted]) == 1
    assert len(rows) == 22
    latest = {r.key: r for r in ledger.latest_done("d")}
    assert latest[same_size].sha256 == hashlib.sha256(bytes(size)).hexdigest()

    # And the next rerun is quiet again, still reporting the deleted object.
    opened.clear()
    fourth = api.run(manifest).datasets["d"].counts
    assert (fourth["copied"], fourth["skipped"], fourth["extra"]) == (0, 19, 1)
    assert opened == []
