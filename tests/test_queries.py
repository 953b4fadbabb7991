"""`datamove status`, `history` and `show`: real runs into tmp_path, queried via the CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
from click.testing import CliRunner, Result

from datamove import cli as commands
from datamove.cli.lifecycle import archive
from datamove.ledger.tables import Ledger, LedgerWriter
from tests.conftest import cli, last_json, make_tree, write_manifest
from tests.lifecycle_helpers import make_source


def one_dataset(tmp_path: Path, files: dict[str, bytes], **extra: object) -> Path:
    make_tree(tmp_path / "src", files)
    return write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}, **extra}])


def query(*args: str, code: int = 0) -> dict:
    """Run a query command with --json; check its exit code; return the JSON."""
    result = cli(*args, "--json")
    assert result.returncode == code, (result.stdout, result.stderr)
    summary = last_json(result.stdout)
    assert summary["exit_code"] == code
    return summary


def run_ok(manifest: Path, code: int = 0) -> dict:
    result = cli("run", str(manifest), "--json")
    assert result.returncode == code, result.stderr
    return last_json(result.stdout)


def invoke(command, *args: str, code: int = 0) -> Result:  # type: ignore[no-untyped-def]
    """One datamove command in this process (click's runner); checks its exit code.

    Commands are invoked directly, not through the ``datamove`` group, whose
    logging set-up would bind the runner's short-lived stderr."""
    result = CliRunner().invoke(command, list(args), catch_exceptions=False)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def counts(summary: dict, dataset: str = "d") -> tuple[int, int, int, int]:
    ds = summary["datasets"][dataset]
    return ds["done"], ds["pending"], ds["failed"], ds["deleted_at_source"]


FILES = {"a.txt": b"alpha", "n/b.bin": b"b" * 1000, "n/c": b"ccc"}


def test_status_before_any_run_is_all_pending_and_touches_nothing(tmp_path):
    manifest = one_dataset(tmp_path, FILES)
    summary = query("status", str(manifest))
    assert counts(summary) == (0, 3, 0, 0)
    ds = summary["datasets"]["d"]
    assert ds["bytes_pending"] == 1008 and ds["bytes_done"] == 0
    assert ds["pending_reasons"] == {"new": 3}
    assert summary["ledger_exists"] is False
    assert "no runs recorded yet" in summary["notice"]
    assert "datamove run" in summary["notice"] and str(manifest) in summary["notice"]

    human = cli("status", str(manifest))
    assert human.returncode == 0, human.stderr
    assert "status: 0 done, 3 pending, 0 failed, 0 deleted at source" in human.stdout
    assert "no runs recorded yet at" in human.stdout

    history = query("history", str(manifest))
    assert history["runs"] == [] and history["total"] == 0
    assert "no runs recorded yet" in history["notice"]
    show = cli("show", str(manifest), "a.txt")
    assert show.returncode == 1
    assert "a.txt: not recorded" in show.stderr and "no runs recorded yet" in show.stderr
    # Read-only: no ledger and no destination were created.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml", "src"]


def test_status_after_run_modification_deletion_and_lost_ledger(tmp_path):
    manifest = one_dataset(tmp_path, FILES)
    run_ok(manifest)
    summary = query("status", str(manifest))
    assert counts(summary) == (3, 0, 0, 0)
    assert summary["datasets"]["d"]["bytes_done"] == 1008
    assert summary["ledger_exists"] is True and summary["notice"] is None

    (tmp_path / "src/a.txt").write_bytes(b"alpha, longer now")
    (tmp_path / "src/n/c").unlink()
    summary = query("status", str(manifest))
    assert counts(summary) == (1, 1, 0, 1)
    ds = summary["datasets"]["d"]
    assert ds["pending_reasons"] == {"source changed since it was recorded": 1}
    assert ds["bytes_pending"] == len(b"alpha, longer now")
    assert ds["bytes_deleted_at_source"] == 3
    human = cli("status", str(manifest))
    assert "status: 1 done, 1 pending, 0 failed, 1 deleted at source" in human.stdout
    assert "1 source changed since it was recorded" in human.stdout

    run_ok(manifest)
    assert counts(query("status", str(manifest))) == (2, 0, 0, 1)

    # Copies present at the destination but not in the ledger are pending: a run
    # verifies and records them rather than trusting the listing.
    shutil.rmtree(tmp_path / ".datamove")
    summary = query("status", str(manifest))
    assert counts(summary) == (0, 2, 0, 0)
    assert summary["datasets"]["d"]["pending_reasons"] == {
        "not in the ledger: verify and record": 2}


def test_status_counts_failed_objects_until_they_succeed(tmp_path):
    manifest = one_dataset(tmp_path, FILES)
    (tmp_path / "dst/n/b.bin").mkdir(parents=True)  # a directory where a file must go
    run_ok(manifest, code=1)
    summary = query("status", str(manifest))
    assert counts(summary) == (2, 0, 1, 0)
    ds = summary["datasets"]["d"]
    assert ds["bytes_failed"] == 1000
    [failure] = ds["failures"]
    assert failure["key"] == "n/b.bin" and "IsADirectoryError" in failure["error"]
    runs = query("history", str(manifest))["runs"]
    assert failure["run_id"] == runs[0]["run_id"]
    human = cli("status", str(manifest))
    assert "status: 2 done, 0 pending, 1 failed" in human.stdout
    assert "failed d/n/b.bin" in human.stdout and "IsADirectoryError" in human.stdout

    # A new pending object sorts after the failed one and stays pending, not failed.
    make_tree(tmp_path / "src", {"z-new": b"zz"})
    assert counts(query("status", str(manifest))) == (2, 1, 1, 0)

    # Only the latest row counts: once the copy succeeds the old failure is history.
    (tmp_path / "dst/n/b.bin").rmdir()
    run_ok(manifest)
    summary = query("status", str(manifest))
    assert counts(summary) == (4, 0, 0, 0)
    assert summary["datasets"]["d"]["failures"] == []
    # Changed again: pending, although one of its earlier rows says failed.
    (tmp_path / "src/n/b.bin").write_bytes(b"B" * 999)
    assert counts(query("status", str(manifest))) == (3, 1, 0, 0)


def test_status_per_dataset_and_full_verify_counts_done(tmp_path):
    make_tree(tmp_path / "one", {"x": b"1", "y": b"22"})
    make_tree(tmp_path / "two", {"w": b"333"})
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "one", "source": {"url": "one/"}, "destination": {"url": "out1/"},
         "verify": "full"},
        {"name": "two", "source": {"url": "two/"}, "destination": {"url": "out2/"}}])
    run_ok(manifest)
    make_tree(tmp_path / "two", {"v": b"4444"})
    summary = query("status", str(manifest))
    # verify: full re-reads done objects on every run; they are still done.
    assert counts(summary, "one") == (2, 0, 0, 0)
    assert summary["datasets"]["one"]["reverified_each_run"] is True
    assert counts(summary, "two") == (1, 1, 0, 0)
    assert summary["totals"]["done"] == 3 and summary["totals"]["pending"] == 1

    only = query("status", str(manifest), "--dataset", "two")
    assert list(only["datasets"]) == ["two"]
    bad = query("status", str(manifest), "--dataset", "nope", code=2)
    assert "no dataset named 'nope'" in bad["error"]


def test_history_lists_runs_newest_first_and_shows_interrupted(tmp_path):
    manifest = one_dataset(tmp_path, FILES)
    first = run_ok(manifest)
    (tmp_path / "src/a.txt").write_bytes(b"changed!")
    second = run_ok(manifest)

    # A run killed after committing one batch: a start row, objects rows, no end row.
    ledger = Ledger(str(tmp_path / ".datamove/ledger"))
    killed = LedgerWriter(ledger, "29990101T000000Z-deadbeef")
    later = datetime.now(UTC) + timedelta(seconds=5)
    killed.run_event("start", command="run", manifest_name="test", engine="embedded (2 threads)",
                     started_at=later)
    killed.add({"dataset": "d", "key": "n/c", "run_id": killed.run_id, "status": "copied",
                "size": 3, "recorded_at": later})
    killed.add({"dataset": "d", "key": "n/b.bin", "run_id": killed.run_id, "status": "failed",
                "size": 1000, "recorded_at": later})
    killed.flush()
    other = LedgerWriter(ledger, "20000101T000000Z-0ther000")
    other.run_event("start", command="run", manifest_name="another-manifest",
                    started_at=later + timedelta(seconds=1))

    summary = query("history", str(manifest))
    runs = summary["runs"]
    assert [r["run_id"] for r in runs] == [killed.run_id, second["run_id"], first["run_id"]]
    assert summary["total"] == 3
    assert runs[0]["state"] == "interrupted" and runs[0]["ended"] is None
    assert runs[0]["exit_code"] is None and runs[0]["counts_from"] == "objects rows"
    assert (runs[0]["copied"], runs[0]["failed"]) == (1, 1)
    assert (runs[1]["copied"], runs[1]["skipped"], runs[1]["exit_code"]) == (1, 2, 0)
    assert (runs[2]["copied"], runs[2]["bytes_copied"]) == (3, 1008)
    assert runs[2]["state"] == "ended" and runs[2]["counts_from"] == "end row"
    assert runs[2]["started"] < runs[2]["ended"] < runs[1]["started"]
    assert runs[2]["user"] and runs[2]["host"] and runs[2]["engine"].startswith("embedded")
    assert runs[2]["datasets"]["d"]["copied"] == 3

    limited = query("history", str(manifest), "--limit", "1")
    assert [r["run_id"] for r in limited["runs"]] == [killed.run_id]
    assert limited["total"] == 3
    everything = query("history", str(manifest), "--all-manifests")
    assert everything["runs"][0]["run_id"] == other.run_id and everything["total"] == 4

    human = cli("history", str(manifest), env={"COLUMNS": "200"})
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    order = [next(i for i, line in enumerate(lines) if run_id in line)
             for run_id in (killed.run_id, second["run_id"], first["run_id"])]
    assert order == sorted(order)
    assert "interrupted" in lines[order[0]] and "1*" in lines[order[0]]
    assert "interrupted" not in lines[order[2]]
    assert "history: 3 of 3 runs" in human.stdout


def test_show_lists_one_object_across_runs_oldest_first(tmp_path):
    manifest = one_dataset(tmp_path, FILES)
    first = run_ok(manifest)
    (tmp_path / "src/a.txt").write_bytes(b"alpha, second version")
    second = run_ok(manifest)
    assert second["datasets"]["d"]["copied"] == 1

    summary = query("show", str(manifest), "a.txt")
    rows = summary["rows"]
    assert [r["run_id"] for r in rows] == [first["run_id"], second["run_id"]]
    assert [r["status"] for r in rows] == ["copied", "copied"]
    assert [r["sha256"] for r in rows] == [hashlib.sha256(b"alpha").hexdigest(),
                                           hashlib.sha256(b"alpha, second version").hexdigest()]
    assert [r["size"] for r in rows] == [5, 21]
    assert rows[0]["recorded_at"] < rows[1]["recorded_at"]
    assert rows[1]["destination_url"] == str(tmp_path / "dst/a.txt")
    assert rows[1]["verify_result"] == "ok" and rows[1]["attempts"] == 1
    # every column of the objects table is there
    ledger = Ledger(str(tmp_path / ".datamove/ledger"))
    assert list(rows[0]) == ledger.objects(pc.field("key") == "a.txt").schema.names
    assert summary["datasets_searched"] == ["d"]

    by_url = query("show", str(manifest), str(tmp_path / "dst/a.txt"))
    assert [r["run_id"] for r in by_url["rows"]] == [first["run_id"], second["run_id"]]

    human = cli("show", str(manifest), "a.txt")
    assert human.returncode == 0, human.stderr
    out = human.stdout
    assert out.index(first["run_id"]) < out.index(second["run_id"])
    assert "#2 d/a.txt" in out and hashlib.sha256(b"alpha").hexdigest() in out
    assert "source_mtime" in out and "recorded_at" in out


def test_show_unknown_key_exit_1_names_key_and_datasets(tmp_path):
    make_tree(tmp_path / "one", {"dir/model.bin": b"m"})
    make_tree(tmp_path / "two", {"w": b"w"})
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "one", "source": {"url": "one/"}, "destination": {"url": "out1/"}},
        {"name": "two", "source": {"url": "two/"}, "destination": {"url": "out2/"}}])
    run_ok(manifest)
    result = cli("show", str(manifest), "model.bin")
    assert result.returncode == 1
    assert "model.bin: not recorded in the ledger" in result.stderr
    assert "datasets searched: one, two" in result.stderr
    assert "did you mean: one/dir/model.bin" in result.stdout
    summary = query("show", str(manifest), "model.bin", code=1)
    assert summary["rows"] == [] and summary["suggestions"] == ["one/dir/model.bin"]
    # --dataset narrows the search: the key lives in "one", not "two"
    assert query("show", str(manifest), "dir/model.bin", "--dataset", "two",
                 code=1)["datasets_searched"] == ["two"]
    assert len(query("show", str(manifest), "dir/model.bin")["rows"]) == 1
    assert query("show", str(manifest), "w", "--dataset", "nope", code=2)["exit_code"] == 2


def test_queries_on_a_missing_manifest_are_bad_input(tmp_path):
    for args in (("status",), ("history",), ("show", "k")):
        cmd, *rest = args
        result = cli(cmd, str(tmp_path / "absent.yaml"), *rest, "--json")
        assert result.returncode == 2, (cmd, result.stderr)
        assert "absent.yaml" in result.stderr
        assert last_json(result.stdout)["exit_code"] == 2
    assert not os.path.exists(tmp_path / ".datamove")


def test_verify_and_status_count_archived_objects_as_archived_not_missing(tmp_path):
    """docs/LIFECYCLE.md: objects a rule moved to a cold location are counted as
    archived by verify (exit 0) and as done by status, never as missing or pending."""
    files = make_source(tmp_path / "src", 6)
    manifest = str(write_manifest(tmp_path / "m.yaml", [
        {"name": "logs", "source": {"url": "src/"}, "destination": {"url": "hot/"},
         "lifecycle": [{"after": "7d", "location": {"url": "cold/"}}]}]))
    invoke(commands.run, manifest)
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    moved = last_json(invoke(archive, manifest, "--now", later, "--json").stdout)
    assert moved["datasets"]["logs"]["moved"] == 6
    assert not [p for p in (tmp_path / "hot").rglob("*") if p.is_file()]

    verified = last_json(invoke(commands.verify, manifest, "--json").stdout)
    ds = verified["datasets"]["logs"]
    assert (ds["archived"], ds.get("missing", 0), ds["failed"]) == (6, 0, 0), verified
    assert verified["problems"] == [] and verified["exit_code"] == 0
    assert "6 archived" in invoke(commands.verify, manifest).stdout

    summary = last_json(invoke(commands.status, manifest, "--json").stdout)
    assert counts(summary, "logs") == (6, 0, 0, 0)
    assert summary["datasets"]["logs"]["archived"] == 6
    assert summary["totals"]["archived"] == 6
    assert "6 of the done objects are archived" in invoke(commands.status, manifest).stdout

    # A source changed since: the cold copy is of the old version, so it is work again.
    changed = sorted(files)[0]
    (tmp_path / "src" / changed).write_bytes(b"a new version")
    verified = last_json(invoke(commands.verify, manifest, "--json", code=1).stdout)
    assert verified["datasets"]["logs"]["archived"] == 5
    assert [p["key"] for p in verified["problems"]] == [changed]
    summary = last_json(invoke(commands.status, manifest, "--json").stdout)
    assert counts(summary, "logs") == (5, 1, 0, 0)
    assert summary["datasets"]["logs"]["archived"] == 5
