"""Quick commands: ``datamove copy``, ``sync`` (``--delete``, ``--max-delete``) and ``check``
without a manifest, as an rclone user runs them: verified, recorded in the ledger and
the audit log, deletions only after every copy verified."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import cli, last_json, make_tree, write_manifest


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def state(tmp_path: Path) -> dict[str, str]:
    """Every test keeps the per-user ledger inside its own directory."""
    return {"XDG_STATE_HOME": str(tmp_path / "state"), "DATAMOVE_LEDGER": ""}


def ledger_rows(ledger: Path) -> list[dict]:
    from deltalake import DeltaTable

    return DeltaTable(str(ledger / "objects")).to_pyarrow_table().to_pylist()


def audit_events(ledger: Path, action: str) -> list[dict]:
    """The audit log's events of one action (what `datamove audit show --action` lists)."""
    from datamove.audit.query import show
    from datamove.ledger.tables import Ledger

    return [json.loads(text) for text in show(Ledger(str(ledger)), action=action).events]


def audit_verifies(tmp_path: Path, ledger: Path, *pubkey: str) -> None:
    manifest = write_manifest(tmp_path / "audit.yaml", [
        {"name": "x", "source": {"url": str(tmp_path / "nowhere")},
         "destination": {"url": str(tmp_path / "nowhere2")}}], name="quick", ledger=str(ledger))
    verified = cli("audit", "verify", str(manifest), "--json",
                   *(("--pubkey", pubkey[0]) if pubkey else ()))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert last_json(verified.stdout)["exit_code"] == 0


def test_copy_uses_the_per_user_ledger_and_a_rerun_copies_nothing(tmp_path):
    make_tree(tmp_path / "src", {"a.txt": b"a", "n/b.bin": b"b" * 1000})
    make_tree(tmp_path / "dst", {"only-here": b"keep"})
    first = cli("copy", "src", "dst", "--json", cwd=tmp_path, env=state(tmp_path))
    assert first.returncode == 0, first.stderr
    summary = last_json(first.stdout)
    [(name, counts)] = summary["datasets"].items()
    assert name.startswith("quick-") and counts["copied"] == 2
    assert tree(tmp_path / "dst") == {"a.txt": b"a", "n/b.bin": b"b" * 1000,
                                      "only-here": b"keep"}  # copy never deletes
    ledger = tmp_path / "state" / "datamove" / "ledger"
    assert {r["key"] for r in ledger_rows(ledger) if r["status"] == "copied"} == \
        {"a.txt", "n/b.bin"}

    again = cli("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--json",
                env=state(tmp_path))  # absolute paths: the same pair, the same dataset
    assert again.returncode == 0, again.stderr
    assert last_json(again.stdout)["datasets"][name]["copied"] == 0
    assert last_json(again.stdout)["datasets"][name]["skipped"] == 2


def test_sync_delete_deletes_only_after_copies_and_records_each_deletion(tmp_path):
    make_tree(tmp_path / "src", {"a.txt": b"new a", "keep/b": b"b"})
    make_tree(tmp_path / "dst", {"a.txt": b"old", "gone.txt": b"stale", "d/old.bin": b"x" * 10,
                                 "skip.log": b"excluded: never deleted"})
    ledger = tmp_path / "ledger"
    keygen = cli("audit", "keygen", "-o", str(tmp_path / "signer"), "--pubkey-out",
                 str(tmp_path / "verifier"))
    assert keygen.returncode == 0, keygen.stderr
    result = cli("sync", "src", "dst", "--delete", "--exclude", "*.log", "--ledger",
                 str(ledger), "--signing-key", str(tmp_path / "signer"), "--json",
                 cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 0, result.stderr
    counts = next(iter(last_json(result.stdout)["datasets"].values()))
    assert counts["copied"] == 2 and counts["deleted"] == 2
    assert counts["bytes_deleted"] == 15
    assert tree(tmp_path / "dst") == {"a.txt": b"new a", "keep/b": b"b",
                                      "skip.log": b"excluded: never deleted"}

    rows = ledger_rows(ledger)
    deleted = {r["key"]: r for r in rows if r["status"] == "deleted"}
    assert set(deleted) == {"gone.txt", "d/old.bin"}
    assert deleted["d/old.bin"]["stored_size"] == 10
    assert deleted["d/old.bin"]["destination_url"].endswith("/dst/d/old.bin")
    # every deletion recorded after every copy of the run
    last_copy = max(r["recorded_at"] for r in rows if r["status"] == "copied")
    assert min(r["recorded_at"] for r in deleted.values()) >= last_copy
    events = audit_events(ledger, "object.deleted")
    assert sorted(e["key"] for e in events) == ["d/old.bin", "gone.txt"]
    audit_verifies(tmp_path, ledger, str(tmp_path / "verifier"))  # signed checkpoints

    rerun = cli("sync", "src", "dst", "--delete", "--exclude", "*.log", "--ledger",
                str(ledger), "--json", cwd=tmp_path, env=state(tmp_path))
    assert rerun.returncode == 0, rerun.stderr
    counts = next(iter(last_json(rerun.stdout)["datasets"].values()))
    assert counts["copied"] == 0 and counts["skipped"] == 2 and counts.get("deleted", 0) == 0


def test_a_deleted_row_ends_the_ledgers_good_copy(tmp_path):
    make_tree(tmp_path / "src", {"a": b"1", "b": b"2"})
    ledger = tmp_path / "ledger"
    args = ("sync", "src", "dst", "--delete", "--ledger", str(ledger), "--json")
    assert cli(*args, cwd=tmp_path, env=state(tmp_path)).returncode == 0
    (tmp_path / "src" / "b").unlink()
    result = cli(*args, cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "dst") == {"a": b"1"}
    from datamove.ledger.tables import Ledger

    [name] = last_json(result.stdout)["datasets"]
    assert [row.key for row in Ledger(str(ledger)).latest_done(name)] == ["a"]
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": name, "source": {"url": "src"}, "destination": {"url": "dst"}}],
        name="quick", ledger=str(ledger))
    residency = cli("audit", "residency", str(manifest), "--json")
    assert residency.returncode == 0, residency.stderr
    assert [c["key"] for c in last_json(residency.stdout)["copies"]] == ["a"]


def test_sync_without_delete_only_copies(tmp_path):
    make_tree(tmp_path / "src", {"a": b"1"})
    make_tree(tmp_path / "dst", {"z": b"only at the destination"})
    result = cli("sync", "src", "dst", "--ledger", "ledger", "--json", cwd=tmp_path,
                 env=state(tmp_path))
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "dst") == {"a": b"1", "z": b"only at the destination"}


def test_max_delete_refuses_and_deletes_nothing(tmp_path):
    make_tree(tmp_path / "src", {"a": b"1"})
    make_tree(tmp_path / "dst", {"x": b"x", "y": b"y", "z": b"z"})
    ledger = tmp_path / "ledger"
    result = cli("sync", "src", "dst", "--delete", "--max-delete", "2", "--ledger", str(ledger),
                 "--json", cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 3, result.stdout + result.stderr
    summary = last_json(result.stdout)
    assert summary["exit_code"] == 3
    assert "--max-delete 2: 3 objects would be deleted" in summary["refused"][0]
    assert tree(tmp_path / "dst") == {"a": b"1", "x": b"x", "y": b"y", "z": b"z"}
    assert not [r for r in ledger_rows(ledger) if r["status"] == "deleted"]
    [refusal] = audit_events(ledger, "delete.refused")
    assert refusal["details"]["would_delete"] == 3 and refusal["details"]["max_delete"] == 2

    human = cli("sync", "src", "dst", "--delete", "--max-delete", "2", "--ledger", str(ledger),
                cwd=tmp_path, env=state(tmp_path))
    assert human.returncode == 3
    assert "refused --max-delete 2" in human.stdout

    allowed = cli("sync", "src", "dst", "--delete", "--max-delete", "3", "--ledger",
                  str(ledger), "--json", cwd=tmp_path, env=state(tmp_path))
    assert allowed.returncode == 0, allowed.stderr
    assert tree(tmp_path / "dst") == {"a": b"1"}


def test_a_source_that_lists_nothing_deletes_nothing_without_max_delete(tmp_path):
    """An object store answers a mistyped prefix with an empty listing: sync --delete
    from a source with no object (within the filters) would empty the destination,
    so it is refused (exit 3) unless --max-delete allows it."""
    (tmp_path / "empty").mkdir()
    make_tree(tmp_path / "dst", {"x": b"x", "y": b"y"})
    make_tree(tmp_path / "src", {"keep.bin": b"1"})
    ledger = tmp_path / "ledger"
    dry = cli("sync", "empty", "dst", "--delete", "--dry-run", "--ledger", str(ledger),
              cwd=tmp_path, env=state(tmp_path))
    assert dry.returncode == 0 and "without --max-delete a real sync deletes nothing" in \
        dry.stdout, dry.stdout
    result = cli("sync", "empty", "dst", "--delete", "--ledger", str(ledger), "--json",
                 cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "the source listed no object, so 2 objects would be deleted" in \
        last_json(result.stdout)["refused"][0]
    assert tree(tmp_path / "dst") == {"x": b"x", "y": b"y"}
    [refusal] = audit_events(ledger, "delete.refused")
    assert refusal["details"]["reason"] == "empty source"

    # Filters that leave nothing at the source count as nothing listed, too.
    filtered = cli("sync", "src", "dst", "--include", "x*", "--delete", "--ledger",
                   str(ledger), cwd=tmp_path, env=state(tmp_path))
    assert filtered.returncode == 3 and tree(tmp_path / "dst") == {"x": b"x", "y": b"y"}

    allowed = cli("sync", "empty", "dst", "--delete", "--max-delete", "2", "--ledger",
                  str(ledger), cwd=tmp_path, env=state(tmp_path))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert tree(tmp_path / "dst") == {}


def test_a_destination_linked_into_the_source_is_refused(tmp_path):
    """DST a symbolic link to a directory inside SRC: the overlap checks resolve links,
    so sync --delete cannot delete source files through it (it did: ``sub/a`` of the
    source was an "extra" of the destination)."""
    make_tree(tmp_path / "src", {"sub/a": b"1", "b": b"2"})
    (tmp_path / "dstlink").symlink_to(tmp_path / "src" / "sub")
    result = cli("sync", "src", "dstlink", "--delete", "--ledger", "ledger", cwd=tmp_path,
                 env=state(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "DST: lies inside the source" in result.stderr
    assert tree(tmp_path / "src") == {"sub/a": b"1", "b": b"2"}


def test_dry_run_lists_each_object_and_changes_nothing(tmp_path):
    make_tree(tmp_path / "src", {"a": b"1", "sub/b": b"22"})
    make_tree(tmp_path / "dst", {"old": b"333"})
    before = tree(tmp_path / "dst")
    ledger = tmp_path / "ledger"
    result = cli("sync", "src", "dst", "--delete", "--dry-run", "--max-delete", "0",
                 "--ledger", str(ledger), cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "copy a (1 B, new)" in lines
    assert "copy sub/b (2 B, new)" in lines
    assert "delete old (3 B, only at the destination)" in lines
    assert "1 object would be deleted" in result.stdout
    assert "--max-delete 0 would refuse it" in result.stdout
    assert tree(tmp_path / "dst") == before
    assert not (ledger / "objects").exists()

    copy = cli("copy", "src", "dst", "--dry-run", "--ledger", str(ledger), "--json",
               cwd=tmp_path, env=state(tmp_path))
    assert copy.returncode == 0, copy.stderr
    assert [line for line in copy.stdout.splitlines()[:-1]] == \
        ["copy a (1 B, new)", "copy sub/b (2 B, new)"]  # copy never deletes
    assert last_json(copy.stdout)["datasets"]
    assert tree(tmp_path / "dst") == before


def test_a_failed_copy_means_nothing_is_deleted(tmp_path):
    # A source key with a backslash cannot be mapped under the destination: it fails.
    make_tree(tmp_path / "src", {"good": b"1", "bad\\name": b"2"})
    make_tree(tmp_path / "dst", {"stale": b"s"})
    result = cli("sync", "src", "dst", "--delete", "--ledger", "ledger", "--json",
                 cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 1, result.stderr
    summary = last_json(result.stdout)
    assert any("nothing deleted: 1 object failed" in w for w in summary["warnings"])
    assert tree(tmp_path / "dst") == {"good": b"1", "stale": b"s"}


def test_a_deletion_never_leaves_the_destination_root(tmp_path):
    make_tree(tmp_path / "src", {"a": b"1"})
    make_tree(tmp_path / "dst", {"a": b"1", "x\\y": b"a key with a backslash"})
    make_tree(tmp_path, {"x/y": b"outside-looking twin"})
    result = cli("sync", "src", "dst", "--delete", "--ledger", "ledger", "--json",
                 cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 1, result.stderr
    problems = last_json(result.stdout)["problems"]
    assert [p["key"] for p in problems] == ["x\\y"]
    assert "not deleted" in problems[0]["error"]
    assert (tmp_path / "dst" / "x\\y").exists() and (tmp_path / "x" / "y").exists()


def test_check_reports_both_sides_like_rclone(tmp_path):
    make_tree(tmp_path / "src", {"same": b"s", "changed": b"abc", "missing": b"m"})
    make_tree(tmp_path / "dst", {"same": b"s", "changed": b"abd", "extra": b"e"})
    result = cli("check", "src", "dst", "--ledger", "ledger", cwd=tmp_path,
                 env=state(tmp_path))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert {"- missing", "+ extra", "* changed"} <= set(lines)
    assert "3 differences found" in result.stdout
    assert "1 matching" in result.stdout
    assert tree(tmp_path / "dst") == {"same": b"s", "changed": b"abd", "extra": b"e"}

    (tmp_path / "dst" / "changed").write_bytes(b"abc")
    (tmp_path / "dst" / "missing").write_bytes(b"m")
    (tmp_path / "dst" / "extra").unlink()
    same = cli("check", "src", "dst", "--ledger", "ledger", "--json", cwd=tmp_path,
               env=state(tmp_path))
    assert same.returncode == 0, same.stdout + same.stderr
    assert next(iter(last_json(same.stdout)["datasets"].values()))["matched"] == 3


@pytest.mark.parametrize("args, words", [
    (("copy", "src", "dst", "--transfers", "0"), "--transfers"),
    (("copy", "src", "dst", "--verify", "sometimes"), "--verify"),
    (("sync", "src", "dst", "--max-delete", "3"), "--max-delete limits --delete"),
    (("sync", "src", "dst", "--max-delete", "-1", "--delete"), "--max-delete"),
    (("copy", "src", "nosuch://bucket/x"), "DST"),
    (("copy", "src", "dst", "--src-option", "novalue"), "KEY=VALUE"),
    (("copy", "src", "src/inner"), "DST"),
    (("sync", "src", "dst", "--ledger", "dst/.ledger", "--delete"), "lies inside DST"),
    (("sync", "dst/sub", "dst", "--delete"), "sync --delete would delete the source's own"),
    (("copy", "src"), "DST"),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_bad_arguments_exit_2_and_touch_nothing(tmp_path, args, words):
    make_tree(tmp_path / "src", {"a": b"1"})
    make_tree(tmp_path / "dst", {"z": b"z"})
    result = cli(*args, cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert tree(tmp_path / "dst") == {"z": b"z"}
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "dst" / ".ledger").exists()


def test_verify_choices_are_the_manifests():
    from datamove.cli.quick import VERIFY_MODES
    from datamove.manifest.model import VerifyMode

    assert tuple(mode.value for mode in VerifyMode) == VERIFY_MODES


def test_s3_sync_delete(tmp_path, moto_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint)
    s3.create_bucket(Bucket="mirror")
    s3.put_object(Bucket="mirror", Key="data/stale.bin", Body=b"old")
    s3.put_object(Bucket="mirror", Key="other/untouched", Body=b"outside DST")
    make_tree(tmp_path / "src", {"a.txt": b"a" * 100, "d/b": b"b"})
    ledger = tmp_path / "ledger"
    args = ("sync", "src", "s3://mirror/data/", "--delete", "--dst-option",
            f"endpoint_url={moto_server.endpoint}", "--ledger", str(ledger), "--transfers",
            "2", "--json")
    result = cli(*args, cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 0, result.stderr
    counts = next(iter(last_json(result.stdout)["datasets"].values()))
    assert counts["copied"] == 2 and counts["deleted"] == 1
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="mirror")["Contents"])
    assert keys == ["data/a.txt", "data/d/b", "other/untouched"]
    [row] = [r for r in ledger_rows(ledger) if r["status"] == "deleted"]
    assert row["destination_url"] == "s3://mirror/data/stale.bin"
    audit_verifies(tmp_path, ledger)

    rerun = cli(*args, cwd=tmp_path, env=state(tmp_path))
    assert rerun.returncode == 0, rerun.stderr
    counts = next(iter(last_json(rerun.stdout)["datasets"].values()))
    assert counts["copied"] == 0 and counts["skipped"] == 2 and counts.get("deleted", 0) == 0

    # The endpoint from the environment, as the README says, instead of --dst-option.
    s3.put_object(Bucket="mirror", Key="data/late", Body=b"only at DST")
    check = cli("check", "src", "s3://mirror/data/", "--ledger", str(ledger), cwd=tmp_path,
                env={**state(tmp_path), "AWS_ENDPOINT_URL": moto_server.endpoint})
    assert check.returncode == 1, check.stdout + check.stderr
    assert "+ late" in check.stdout.splitlines()


@pytest.mark.parametrize("command", ["copy", "sync", "check"])
def test_quick_help_loads_no_heavy_module(command):
    from tests.test_cli_startup import startup

    answer = startup.probe(command, "--help")
    assert answer["exit_code"] == 0, answer["output"]
    assert "SRC" in str(answer["output"])
    assert answer["loaded"] == [], answer["loaded"]
    assert "datamove.api" not in answer["datamove"]


def test_the_default_ledger_follows_xdg(tmp_path, monkeypatch):
    from datamove.commands.quick import default_ledger

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv("DATAMOVE_LEDGER", raising=False)
    assert default_ledger() == os.path.join(str(tmp_path), "datamove", "ledger")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_ledger() == os.path.expanduser("~/.local/state/datamove/ledger")
    monkeypatch.setenv("DATAMOVE_LEDGER", "s3://b/ledger")
    assert default_ledger() == "s3://b/ledger"


def test_encrypt_to_stores_age_files_and_sync_deletes_them(tmp_path):
    generated = cli("keys", "generate", "-o", str(tmp_path / "id.key"))
    assert generated.returncode == 0, generated.stderr
    (tmp_path / "recipients.txt").write_text(generated.stdout)
    make_tree(tmp_path / "src", {"a": b"secret a", "b": b"secret b"})
    args = ("sync", "src", "dst", "--recipients-file", "recipients.txt", "--delete", "--ledger",
            "ledger", "--json")
    first = cli(*args, cwd=tmp_path, env=state(tmp_path))
    assert first.returncode == 0, first.stderr
    assert sorted(tree(tmp_path / "dst")) == ["a.age", "b.age"]
    assert b"secret" not in (tmp_path / "dst" / "a.age").read_bytes()
    plain = cli("decrypt", "-i", str(tmp_path / "id.key"), str(tmp_path / "dst" / "a.age"),
                str(tmp_path / "a.out"))
    assert plain.returncode == 0, plain.stderr
    assert (tmp_path / "a.out").read_bytes() == b"secret a"

    (tmp_path / "src" / "b").unlink()
    (tmp_path / "dst" / "not-ours").write_bytes(b"no .age suffix: not this dataset's")
    second = cli(*args, cwd=tmp_path, env=state(tmp_path))
    assert second.returncode == 0, second.stderr
    assert next(iter(last_json(second.stdout)["datasets"].values()))["deleted"] == 1
    assert sorted(tree(tmp_path / "dst")) == ["a.age", "not-ours"]
    check = cli("check", "src", "dst", "--recipients-file", "recipients.txt", "--ledger", "ledger",
                cwd=tmp_path, env=state(tmp_path))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no differences found" in check.stdout


def test_filters_decide_what_is_copied_and_what_sync_may_delete(tmp_path):
    make_tree(tmp_path / "src", {"small": b"s" * 10, "big": b"b" * 5000, "old": b"o" * 10})
    month_ago = os.path.getmtime(tmp_path / "src" / "old") - 30 * 86400
    os.utime(tmp_path / "src" / "old", (month_ago, month_ago))
    make_tree(tmp_path / "dst", {"dst-small-only": b"x" * 10, "dst-big-only": b"y" * 5000})
    result = cli("sync", "src", "dst", "--delete", "--max-size", "1K", "--max-age", "7d",
                 "--bwlimit", "1M", "--ledger", "ledger", "--json", cwd=tmp_path,
                 env=state(tmp_path))
    assert result.returncode == 0, result.stderr
    counts = next(iter(last_json(result.stdout)["datasets"].values()))
    assert counts["copied"] == 1 and counts["deleted"] == 1
    # big (size) and old (age) are filtered out; so is dst-big-only, which stays
    assert tree(tmp_path / "dst") == {"small": b"s" * 10, "dst-big-only": b"y" * 5000}

    older = cli("copy", "src", "older", "--min-age", "7d", "--min-size", "5B", "--ledger",
                "ledger", "--json", cwd=tmp_path, env=state(tmp_path))
    assert older.returncode == 0, older.stderr
    assert tree(tmp_path / "older") == {"old": b"o" * 10}

    (tmp_path / "list.txt").write_text("big\n# a comment\n")
    listed = cli("copy", "src", "listed", "--files-from", "list.txt", "--ledger", "ledger",
                 "--dry-run", cwd=tmp_path, env=state(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert [line for line in listed.stdout.splitlines() if line.startswith("copy ")] == \
        ["copy big (4.9 KiB, new)"]
    assert not (tmp_path / "listed").exists()


@pytest.mark.parametrize("flag, value, words", [
    ("--min-size", "100", "--min-size: needs a unit"),
    ("--max-age", "soon", "--max-age: must be a duration"),
    ("--bwlimit", "fast", "--bwlimit"),
    ("--files-from", "missing.txt", "--files-from: cannot read"),
])
def test_bad_filter_values_name_the_flag(tmp_path, flag, value, words):
    make_tree(tmp_path / "src", {"a": b"1"})
    result = cli("copy", "src", "dst", flag, value, cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr and "datasets[0]" not in result.stderr
    assert not (tmp_path / "dst").exists() and not (tmp_path / "state").exists()


def test_api_sync_never_deletes_the_ledger_or_a_source_inside_the_destination(tmp_path):
    # The quick commands refuse both layouts; a manifest given to api.sync is held too.
    from datamove import api

    make_tree(tmp_path / "dst", {"sub/a": b"the source", "stale": b"s"})
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "dst/sub"}, "destination": {"url": "dst"}}],
        ledger="dst/.ledger")
    report = api.sync(api.load_manifest(manifest), delete=True)
    assert report.exit_code == 0, report.to_dict()
    assert report.dataset("d").counts["deleted"] == 1
    assert any("left in place" in w for w in report.warnings)
    assert (tmp_path / "dst" / "sub" / "a").read_bytes() == b"the source"
    assert (tmp_path / "dst" / "a").read_bytes() == b"the source"
    assert not (tmp_path / "dst" / "stale").exists()
    assert (tmp_path / "dst" / ".ledger" / "objects" / "_delta_log").is_dir()


def test_extras_wait_on_disk_not_in_memory(tmp_path):
    """5,000 objects to delete (1.8 MB as a list of plan items) hold about 30 KB while
    they wait, and come back in order: memory does not grow with the count."""
    import tracemalloc

    from datamove.manifest.model import DatasetSpec
    from datamove.pipeline.march import Action, DatasetJob, PlanItem
    from datamove.pipeline.mirror import Extras
    from datamove.stores.core import Entry

    job = DatasetJob.from_spec(DatasetSpec.model_validate(
        {"name": "d", "source": {"url": str(tmp_path / "src")},
         "destination": {"url": str(tmp_path / "dst")}}))
    extras = Extras(job, str(tmp_path / "ledger"))
    count = 5_000
    tracemalloc.start()
    try:
        for n in range(count):
            key = f"dir{n // 1000:04d}/object-{n:07d}.bin"
            extras.add(PlanItem(Action.extra, key, None, Entry(key, n), "only at the destination"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert extras.count == count and extras.bytes == count * (count - 1) // 2
    assert peak < 300_000, f"{peak:,} bytes held while keeping {count:,} extras"
    seen = 0
    for n, item in enumerate(extras.items()):
        assert item.action == Action.delete and item.size == n
        seen += 1
    assert seen == count
    extras.close()


def test_sync_writes_an_html_report_like_run(tmp_path):
    make_tree(tmp_path / "src", {"a": b"1"})
    make_tree(tmp_path / "dst", {"stale": b"s"})
    result = cli("sync", "src", "dst", "--delete", "--ledger", "ledger", "--report",
                 "sync.html", "--json", cwd=tmp_path, env=state(tmp_path))
    assert result.returncode == 0, result.stderr
    [name] = last_json(result.stdout)["datasets"]
    page = (tmp_path / "sync.html").read_text()
    assert page.startswith("<!DOCTYPE html>") or "<html" in page[:500]
    assert name in page
    bad = cli("copy", "src", "dst2", "--report", "no/such/dir/x.html", "--ledger", "ledger",
              cwd=tmp_path, env=state(tmp_path))
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert not (tmp_path / "dst2").exists()
