"""A damaged ledger, a ledger behind its audit log, a disk that fills up (docs/FORMAT.md,
"A damaged ledger").

* Real damage to the files of a migrated dataset's ledger (a data file deleted, cut
  short or overwritten; a commit deleted, cut short or emptied; the checkpoint
  deleted or cut short; the whole log deleted): every command that reads the
  ledger exits 2 with one line naming the table, the damage and what to do, no
  traceback, and writes nothing.
* The ledger's last commits, or its whole tables, gone while the audit log beside
  it remembers the runs: writing commands refuse (exit 2) before recording
  anything, until the operator restores the tables or accepts the loss.
* A disk that fills up mid-run (a real tmpfs in a mount namespace) and a file size
  limit (RLIMIT_FSIZE): exit 2, one message, an intact ledger, and a next run that
  records what the failed one copied without copying it again.

Commands run in this process through click's runner, except where a process
boundary is the point (a namespace, a resource limit).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from deltalake import DeltaTable

from datamove import cli as commands
from datamove.cli.lifecycle import archive, restore
from tests.conftest import AWS_ENV, last_json, require_tool, write_manifest
from tests.lifecycle_helpers import make_source

DATASET = {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"},
           "lifecycle": [{"after": "3650d", "location": {"url": "cold/"}}]}
OBJECTS = Path(".datamove/ledger/objects")
RUNS = Path(".datamove/ledger/runs")


def cli(command, *args: str, code: int | None = 0) -> Result:  # type: ignore[no-untyped-def]
    """One datamove command in this process; checks its exit code unless ``code`` is None.
    (Commands are invoked directly: the ``datamove`` group's logging set-up would bind
    the runner's short-lived stderr.)"""
    result = CliRunner().invoke(command, list(args), catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime (the lock file aside: every
    writing command takes it, whatever it then does)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and "_locks" not in p.parts}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset after three runs, at ``m/`` (and as it was then, at ``pristine/``).

    The objects table was checkpointed after the first run (as a run's compaction
    does), so its log has a checkpoint and commits after it; ``m/backup/`` holds
    the objects and runs tables as they were before the third run.
    """
    root = tmp_path_factory.mktemp("migrated") / "m"
    make_source(root / "src", 6)
    manifest = str(write_manifest(root / "m.yaml", [DATASET]))
    cli(commands.run, manifest)
    DeltaTable(str(root / OBJECTS)).create_checkpoint()
    for round_ in range(2):
        if round_ == 1:
            for name in (OBJECTS, RUNS):
                shutil.copytree(root / name, root / "backup" / name.name)
        (root / "src" / "part-0001.bin").write_bytes(os.urandom(100 + round_))
        cli(commands.run, manifest)
    shutil.copytree(root, root.parent / "pristine")
    return root


@pytest.fixture
def copy(migrated: Path) -> Path:
    """The migrated dataset as it was, in its place: the ledger's rows name its paths."""
    shutil.rmtree(migrated)
    shutil.copytree(migrated.parent / "pristine", migrated)
    return migrated


def live_data_file(root: Path) -> Path:
    return root / OBJECTS / DeltaTable(str(root / OBJECTS)).file_uris()[0].rsplit("/", 1)[-1]


def commit(root: Path, version: int) -> Path:
    return root / OBJECTS / "_delta_log" / f"{version:020d}.json"


def checkpoint(root: Path) -> Path:
    [found] = (root / OBJECTS / "_delta_log").glob("*.checkpoint.parquet")
    return found


def newest_commit(root: Path) -> int:
    return DeltaTable(str(root / OBJECTS)).version()


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def truncate(path: Path, size: int | None = None) -> None:
    os.truncate(path, path.stat().st_size // 2 if size is None else size)


# damage name → (what it does to the ledger under root, what the message must say)
DAMAGE = {
    "data file deleted": (lambda r: live_data_file(r).unlink(),
                          "1 data file its log lists is missing (part-"),
    "data file cut short": (lambda r: truncate(live_data_file(r)),
                            "1 data file cut short or changed (part-"),
    "data file overwritten": (lambda r: overwrite(live_data_file(r), 4, b"\xff" * 64),
                              "cannot be read ("),
    "commit deleted (a gap)": (lambda r: commit(r, newest_commit(r) - 1).unlink(),
                               "its log has a gap: commit "),
    "commit cut short": (lambda r: truncate(commit(r, newest_commit(r) - 1)),
                         ".json is cut short or corrupt"),
    "commit emptied": (lambda r: truncate(commit(r, newest_commit(r) - 1), 0),
                       ".json is empty"),
    "checkpoint cut short": (lambda r: truncate(checkpoint(r)),
                             ".checkpoint.parquet cannot be read"),
    "checkpoint deleted": (lambda r: checkpoint(r).unlink(),
                           ".checkpoint.parquet is missing"),
    "whole log deleted": (lambda r: shutil.rmtree(r / OBJECTS / "_delta_log"),
                          "but its log (_delta_log) is missing or empty"),
}


def readers(root: Path) -> list[tuple[object, list[str]]]:
    """Every command that reads the ledger, with its arguments after the manifest."""
    return [(commands.plan, []), (commands.status, []), (commands.history, []),
            (commands.show, ["part-0001.bin"]), (commands.verify, []), (commands.run, []),
            (archive, ["--dry-run"]), (archive, ["--now", "2099-01-01"]),
            (restore, ["--dataset", "d", "--to", str(root.parent / "restored")]),
            (commands.audit_export, ["--format", "openlineage"])]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_command_says_what_is_damaged_and_exits_2(copy, damage):
    do, said = DAMAGE[damage]
    do(copy)
    before = files_of(copy)
    inside_a_file = damage == "data file overwritten"  # seen only where rows are read
    for command, args in readers(copy):
        if inside_a_file and command is commands.history:
            continue  # history reads objects rows only for interrupted runs
        result = cli(command, str(copy / "m.yaml"), *args, code=None)
        name = f"{command.name} {' '.join(args)}"
        assert result.exit_code == 2, (name, result.stdout, result.stderr)
        [line] = result.stderr.splitlines()
        assert line.startswith(f"datamove: error: ledger table {copy / OBJECTS} is damaged: "), \
            (name, line)
        assert said in line and "Restore the ledger directory from a backup" in line, (name, line)
        assert "Traceback" not in result.stdout + result.stderr
        after = files_of(copy)
        if inside_a_file and args != ["--dry-run"] and command in (commands.run, archive):
            # Read after the command's start row (history: interrupted); nothing else.
            added = {k for k in after if k not in before}
            assert {k for k in before if after.get(k) != before[k]} == set(), name
            assert all(k.startswith((str(RUNS), ".datamove/ledger/audit")) for k in added)
            before = after
        assert after == before, name
    assert not (copy.parent / "restored").exists()


def test_damage_to_the_runs_table_is_named_too(copy):
    (copy / RUNS / DeltaTable(str(copy / RUNS)).file_uris()[0].rsplit("/", 1)[-1]).unlink()
    for command in (commands.history, commands.status, commands.run):
        [line] = cli(command, str(copy / "m.yaml"), code=2).stderr.splitlines()
        assert f"ledger table {copy / RUNS} is damaged: 1 data file" in line


def test_damage_to_a_ledger_on_s3_is_named_too(tmp_path, moto_server, monkeypatch):
    """The same checks through delta-rs' object store: a data file and a commit
    deleted from a ledger in a bucket (moto_server)."""
    client, bucket = moto_server.client(), moto_server.new_bucket()
    make_source(tmp_path / "src", 3)
    manifest = str(write_manifest(
        tmp_path / "m.yaml", [{**DATASET, "lifecycle": []}], ledger=f"s3://{bucket}/ledger",
        ledger_options={"endpoint_url": moto_server.endpoint}))
    for name, value in AWS_ENV.items():  # the tests' credentials for moto (as run_cli's)
        monkeypatch.setenv(name, value)
    for _ in range(3):
        (tmp_path / "src" / "part-0001.bin").write_bytes(os.urandom(200))
        cli(commands.run, manifest)
    keys = [o["Key"] for o in client.list_objects_v2(
        Bucket=bucket, Prefix="ledger/objects/")["Contents"]]
    data = sorted(k for k in keys if k.endswith(".parquet") and "_delta_log" not in k)
    client.delete_object(Bucket=bucket, Key=data[0])
    [line] = cli(commands.status, manifest, code=2).stderr.splitlines()
    assert f"ledger table s3://{bucket}/ledger/objects is damaged: 1 data file its log " \
           "lists is missing" in line
    client.delete_object(Bucket=bucket, Key=f"ledger/objects/_delta_log/{2:020d}.json")
    [line] = cli(commands.run, manifest, code=2).stderr.splitlines()
    assert f"ledger table s3://{bucket}/ledger/objects is damaged: its log has a gap: " \
           "commits 2..2 are missing between 1 and 3" in line


# --- a ledger behind its audit log -------------------------------------------------------


def run_ids(root: Path) -> list[str]:
    """The manifest's runs, oldest first, as `datamove history` shows them."""
    runs = last_json(cli(commands.history, str(root / "m.yaml"), "--json").stdout)["runs"]
    return [r["run_id"] for r in reversed(runs)]


def test_a_ledger_restored_from_an_older_backup_is_refused(copy):
    last = run_ids(copy)[-1]
    for name in (OBJECTS, RUNS):  # the tables as they were before the last run
        shutil.rmtree(copy / name)
        shutil.copytree(copy / "backup" / name.name, copy / name)
    before = files_of(copy)
    for command, args in ((commands.run, []), (archive, ["--now", "2099-01-01"])):
        [line] = cli(command, str(copy / "m.yaml"), *args, code=2).stderr.splitlines()
        assert f"lost records the audit log vouches for: run {last} finished at " in line
        assert "but the runs table has no end row for it" in line
        assert "Nothing was written" in line and f"DATAMOVE_ACCEPT_LEDGER_LOSS={last}" in line
        assert files_of(copy) == before


def test_a_ledger_that_lost_its_last_objects_commit_is_refused(copy):
    last = run_ids(copy)[-1]
    commit(copy, newest_commit(copy)).unlink()  # the last run's only objects commit
    before = files_of(copy)
    [line] = cli(commands.run, str(copy / "m.yaml"), code=2).stderr.splitlines()
    assert f"run {last} finished at " in line
    assert "but the objects table holds 0 of its 1 commits" in line
    assert files_of(copy) == before


def test_vanished_tables_are_refused_until_the_loss_is_accepted_once(copy, monkeypatch):
    ids = run_ids(copy)
    manifest = str(copy / "m.yaml")
    shutil.rmtree(copy / OBJECTS)
    shutil.rmtree(copy / RUNS)
    before = files_of(copy)
    [line] = cli(commands.run, manifest, code=2).stderr.splitlines()
    assert f"run {ids[-1]} finished at " in line and "(2 older runs lost records too)" in line
    monkeypatch.setenv("DATAMOVE_ACCEPT_LEDGER_LOSS", ids[0])  # not the newest: refused
    cli(commands.run, manifest, code=2)
    assert files_of(copy) == before and not (copy / OBJECTS).exists()

    monkeypatch.setenv("DATAMOVE_ACCEPT_LEDGER_LOSS", ids[-1])
    went_on = last_json(cli(commands.run, manifest, "--json").stdout)["datasets"]["d"]
    assert (went_on["copied"], went_on["verified"]) == (0, 6)  # verified and recorded again
    monkeypatch.delenv("DATAMOVE_ACCEPT_LEDGER_LOSS")
    again = last_json(cli(commands.run, manifest, "--json").stdout)["datasets"]["d"]
    assert again["skipped"] == 6  # accepted once, not asked again

    history = last_json(cli(commands.history, manifest, "--json").stdout)["runs"]
    lost = {r["run_id"]: r for r in history if r["state"] == "lost"}
    assert sorted(lost) == sorted(ids)
    assert lost[ids[0]]["copied"] == 6 and lost[ids[0]]["counts_from"] == "audit log"
    accepting = history[1]["run_id"]
    assert f"run {accepting} went on without them" in lost[ids[-1]]["lost"]
    human = cli(commands.history, manifest).stdout
    assert f"lost {ids[-1]}: the ledger lost its records" in human


# --- a disk that fills up; a write the system refuses ------------------------------------


def test_a_disk_that_fills_up_mid_run_stops_with_one_message_and_loses_nothing(tmp_path):
    """The destination and the ledger on a 4 MiB tmpfs, 6 MiB to copy: the copies fill
    it, then the ledger cannot take the run's rows. After the disk grows, the next
    run records the copies that landed instead of copying them again."""
    unshare = require_tool("unshare")
    if subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode != 0:
        message = "cannot make a mount namespace (unshare -rm) to mount a small tmpfs"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"f{i:02d}.bin").write_bytes(os.urandom(512 * 1024))
    disk = tmp_path / "disk"
    disk.mkdir()
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(src) + "/"},
         "destination": {"url": str(disk / "dst") + "/"}}], ledger=str(disk / "ledger"))
    out = tmp_path / "out"
    out.mkdir()
    datamove = f"{sys.executable} -m datamove.cli"
    script = f"""
        mount -t tmpfs -o size=4m tmpfs {disk} || exit 9
        {datamove} run {manifest} --json >{out}/1.out 2>{out}/1.err; echo $? >{out}/1.rc
        ls {disk}/dst >{out}/landed
        mount -o remount,size=64m {disk} || exit 9
        {datamove} run {manifest} --json >{out}/2.out 2>{out}/2.err; echo $? >{out}/2.rc
        {datamove} status {manifest} --json >{out}/3.out 2>{out}/3.err
    """
    subprocess.run([unshare, "-rm", "sh", "-c", script], check=True, timeout=300,
                   env={**os.environ, **AWS_ENV})
    first = (out / "1.err").read_text()
    assert (out / "1.rc").read_text().strip() == "2", first
    *refused, line = first.splitlines()
    # Copies that met the full disk first failed with the disk's own error, and the
    # first of them stopped the dataset (breaker.py): a few warnings, not one per object.
    assert len(refused) <= 8, first
    assert all("failed" in r and "No space left on device" in r for r in refused), first
    # Whichever table's commit meets the full disk first (objects and audit rows are
    # both committed every second) is the one named.
    assert re.search(rf"ledger table {re.escape(str(disk / 'ledger'))}/(objects|audit|runs) "
                     "cannot be written: no space left", line), line
    assert "free space on the disk that holds it" in line
    assert "Nothing of this commit was recorded and the ledger is intact" in line
    landed = (out / "landed").read_text().split()
    assert 0 < len(landed) < 12

    assert (out / "2.rc").read_text().strip() == "0", (out / "2.err").read_text()
    second = last_json((out / "2.out").read_text())["datasets"]["d"]
    assert second["verified"] == len(landed) and second["copied"] == 12 - len(landed)
    status = last_json((out / "3.out").read_text())["datasets"]["d"]
    assert (status["done"], status["pending"]) == (12, 0)


def test_a_ledger_write_the_system_refuses_is_not_retried_and_says_why(tmp_path):
    """RLIMIT_FSIZE (64 KiB) makes the first big ledger commit fail with EFBIG:
    not retried (a retry cannot help), one message, exit 2; without the limit the
    next run records what the first copied instead of copying it again."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(600):
        (src / f"object-with-a-name-long-enough-to-make-rows-wide-{i:04d}.bin").write_bytes(
            os.urandom(100))
    manifest = str(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}]))

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    started = time.monotonic()
    failed = subprocess.run([sys.executable, "-m", "datamove.cli", "run", manifest],
                            capture_output=True, text=True, timeout=300, preexec_fn=limited,
                            env={**os.environ, **AWS_ENV})
    took = time.monotonic() - started
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    # delta-rs (object_store 0.13) also prints a Rust panic line when a write fails
    # mid-file; ours is the one line of datamove's own.
    [line] = [x for x in failed.stderr.splitlines() if x.startswith("datamove:")]
    assert "cannot be written: file too large" in line and "ulimit -f" in line
    assert took < 60  # five retries with backoff would add 11 s per commit
    copied = len(list((tmp_path / "dst").iterdir()))
    assert copied > 0

    rerun = cli(commands.run, manifest, "--json")
    counts = last_json(rerun.stdout)["datasets"]["d"]
    assert counts["copied"] == 600 - copied
    assert counts["verified"] + counts["skipped"] == copied
