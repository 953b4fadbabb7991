"""The datamove command as a user runs it: exit codes, JSON, errors, reruns, quickstart."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from deltalake import DeltaTable

from datamove import __version__
from tests.conftest import (
    REPO,
    cli,
    last_json,
    make_tree,
    require_tool,
    run_cli,
    s3_location,
    write_manifest,
)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_run_twice_copies_nothing_the_second_time(tmp_path):
    make_tree(tmp_path / "src", {"a.txt": b"a", "n/b.bin": b"b" * 1000, "empty": b""})
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}])
    first = cli("run", str(manifest), "--json")
    assert first.returncode == 0, first.stderr
    summary = last_json(first.stdout)
    assert summary["exit_code"] == 0
    assert summary["datasets"]["d"]["copied"] == 3
    assert summary["datasets"]["d"]["bytes_copied"] == 1001
    assert (tmp_path / "dst/n/b.bin").read_bytes() == b"b" * 1000

    second = cli("run", str(manifest))
    assert second.returncode == 0, second.stderr
    assert "nothing to copy: 3 objects up to date" in second.stdout
    again = last_json(cli("run", str(manifest), "--json").stdout)
    assert again["datasets"]["d"]["copied"] == 0
    assert again["datasets"]["d"]["skipped"] == 3


def test_plan_and_dry_run_copy_nothing(tmp_path):
    make_tree(tmp_path / "src", {"a": b"12345", "b": b"67"})
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}])
    for args in (("plan", str(manifest), "--json"), ("run", str(manifest), "--dry-run", "--json")):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        summary = last_json(result.stdout)
        assert summary["datasets"]["d"]["copy"] == 2
        assert summary["datasets"]["d"]["bytes_copy"] == 7
    assert not (tmp_path / "dst").exists()
    human = cli("plan", str(manifest))
    assert "plan: 2 to copy, 0 up to date" in human.stdout


def test_verify_reports_missing_extra_and_differing(tmp_path):
    make_tree(tmp_path / "src", {"same": b"x" * 10, "changed": b"original", "gone": b"g"})
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"},
         "verify": "checksum"}])
    assert cli("run", str(manifest)).returncode == 0
    clean = cli("verify", str(manifest), "--json")
    assert clean.returncode == 0 and last_json(clean.stdout)["datasets"]["d"]["matched"] == 3

    data = bytearray((tmp_path / "dst/changed").read_bytes())
    data[3] ^= 0x01  # a flipped bit, same size
    (tmp_path / "dst/changed").write_bytes(bytes(data))
    (tmp_path / "dst/gone").unlink()
    (tmp_path / "dst/extra").write_bytes(b"e")
    result = cli("verify", str(manifest), "--json")
    assert result.returncode == 1
    summary = last_json(result.stdout)
    counts = summary["datasets"]["d"]
    found = (counts["matched"], counts["differs"], counts["missing"], counts["extra"])
    assert found == (1, 1, 1, 1)
    statuses = {p["key"]: p["status"] for p in summary["problems"]}
    assert statuses == {"changed": "differs", "gone": "missing", "extra": "extra"}
    human = cli("verify", str(manifest))
    assert "differs d/changed" in human.stdout and human.returncode == 1


def test_run_with_full_verify_reports_and_repairs_a_corrupted_byte(tmp_path):
    make_tree(tmp_path / "src", {"weights.bin": os.urandom(300_000), "ok": b"fine"})
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"},
         "verify": "full"}])
    assert cli("run", str(manifest)).returncode == 0
    target = tmp_path / "dst/weights.bin"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[150_000] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # looks untouched to a lister

    result = cli("run", str(manifest), "--json")
    summary = last_json(result.stdout)
    assert summary["datasets"]["d"]["repaired"] == 1
    assert summary["datasets"]["d"]["verified"] == 1
    problem = summary["problems"][0]
    assert problem["key"] == "weights.bin" and problem["status"] == "repaired"
    assert "differ" in problem["error"]
    assert target.read_bytes() == (tmp_path / "src/weights.bin").read_bytes()


BAD_MANIFESTS = [
    ("version: 1\nname: x\ndatasets: [\n", "YAML syntax error"),
    ("version: 1\nname: x\ndatasets:\n  - name: d\n    source: {url: a/}\n", "destination"),
    ("version: 1\nname: x\nsurprise: 1\ndatasets: []\n", "surprise: unknown key"),
    ("version: 1\nname: x\ndatasets:\n  - name: d\n    source: {url: a/}\n"
     "    destination: {url: 's3://b/p', options: {secret: hunter2}}\n", "credential"),
]


@pytest.mark.parametrize(("text", "phrase"), BAD_MANIFESTS)
def test_bad_manifest_exit_2_and_nothing_touched(tmp_path, text, phrase):
    (tmp_path / "a").mkdir()
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(text)
    result = cli("run", str(manifest), "--json")
    assert result.returncode == 2
    assert phrase in result.stderr
    assert "bad.yaml:" in result.stderr
    assert last_json(result.stdout)["exit_code"] == 2
    assert "hunter2" not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "bad.yaml"]


def test_missing_source_is_a_clear_error(tmp_path):
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "nowhere/"}, "destination": {"url": "dst/"}}])
    result = cli("run", str(manifest))
    assert result.returncode == 2
    assert "nowhere" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "dst").exists()


def test_unreachable_s3_endpoint_is_a_clear_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/f").write_bytes(b"1")
    dead = {"url": "s3://bucket/p/", "options": {"endpoint_url": "http://127.0.0.1:9"}}
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": dead}])
    result = cli("run", str(manifest), env={"AWS_MAX_ATTEMPTS": "1"}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "s3://bucket/p/" in result.stderr and "cannot be reached" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_bucket_is_a_clear_error(tmp_path, moto_server):
    (tmp_path / "src").mkdir()
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": s3_location(moto_server, "no-such-bucket-here"),
         "destination": {"url": "dst/"}}])
    result = cli("run", str(manifest))
    assert result.returncode == 2
    assert "no-such-bucket-here" in result.stderr and "does not exist" in result.stderr


def test_unknown_dataset_name_is_bad_input(tmp_path):
    (tmp_path / "src").mkdir()
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}])
    result = cli("run", str(manifest), "--dataset", "nope")
    assert result.returncode == 2
    assert "no dataset named 'nope'" in result.stderr


def test_unreachable_scheduler_is_bad_input(tmp_path):
    (tmp_path / "src").mkdir()
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "src/"}, "destination": {"url": "dst/"}}])
    result = cli("run", str(manifest), "--scheduler", "tcp://127.0.0.1:9", timeout=120)
    assert result.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr


def test_quickstart_runs_offline_from_a_copy_of_the_repo(tmp_path):
    """The README's first command, minus the venv: a generated key, the shipped
    manifest and sample data; the models land encrypted, readable by `age`."""
    shutil.copytree(REPO / "manifests", tmp_path / "manifests",
                    ignore=shutil.ignore_patterns("quickstart.key", "quickstart.pub"))
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    for _ in range(2):  # --keep: the second call keeps the key and prints the same recipient
        keygen = run_cli("keys", "generate", "--keep", "-o", "manifests/quickstart.key",
                         cwd=tmp_path)
        assert keygen.returncode == 0, keygen.stderr
        assert keygen.stdout.startswith("age1")
        if (tmp_path / "manifests/quickstart.pub").exists():
            assert (tmp_path / "manifests/quickstart.pub").read_text() == keygen.stdout
        (tmp_path / "manifests/quickstart.pub").write_text(keygen.stdout)
    result = run_cli("run", "manifests/quickstart.yaml", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    copied = sum(ds["copied"] for ds in summary["datasets"].values())
    shipped = sum(1 for p in (tmp_path / "examples/sample-data").rglob("*") if p.is_file())
    assert copied == shipped > 0
    rerun = last_json(run_cli("run", "manifests/quickstart.yaml", "--json", cwd=tmp_path).stdout)
    assert sum(ds["copied"] for ds in rerun["datasets"].values()) == 0
    check = run_cli("verify", "manifests/quickstart.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout
    models = tmp_path / "examples/sample-data/models"
    for source in (p for p in models.rglob("*") if p.is_file()):
        stored = tmp_path / ".datamove/quickstart/models" / f"{source.relative_to(models)}.age"
        opened = subprocess.run([require_tool("age"), "-d", "-i",
                                 str(tmp_path / "manifests/quickstart.key"), str(stored)],
                                capture_output=True, check=True)
        assert opened.stdout == source.read_bytes()


def test_a_policy_denial_stops_the_run_before_anything_moves(tmp_path):
    make_tree(tmp_path / "src", {"customers.csv": b"id,name\n1,Ada\n"})
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "customers", "source": {"url": "src/"}, "destination": {"url": "dst/"},
         "classification": "pii", "tags": {"owner": "crm"}}])
    shipped = str(REPO / "policies" / "eu-pii.yaml")
    result = cli("run", str(manifest), "--json", "--policies", shipped)
    assert result.returncode == 3, result.stdout + result.stderr
    summary = last_json(result.stdout)
    assert summary["exit_code"] == 3
    assert "refused by policy" in summary["error"]
    assert "eu-pii-encrypted: dataset customers" in summary["error"]
    assert not (tmp_path / "dst").exists()
    ledger = tmp_path / ".datamove" / "ledger"
    assert not (ledger / "objects").exists()  # nothing ran; the decision is recorded:
    events = DeltaTable(str(ledger / "audit")).to_pyarrow_table().to_pylist()
    actions = [e["action"] for e in sorted(events, key=lambda e: e["seq"])]
    assert actions[0] == "audit.init" and actions[-1] == "run.refused"
    assert "policy.decision" in actions and "run.start" not in actions
    check = cli("policy", "check", str(manifest), "--policies", shipped, "--json")
    assert check.returncode == 3
    decisions = last_json(check.stdout)["decisions"]
    violated = {d["rule_id"] for d in decisions if d["outcome"] == "violated"}
    assert violated == {"eu-pii-encrypted", "eu-pii-residency", "eu-pii-accountable"}
    assert "eu-pii-verified" in {d["rule_id"] for d in decisions if d["outcome"] == "satisfied"}
    [tags] = [d for d in decisions if d["rule_id"] == "eu-pii-accountable" and d["outcome"]
              == "violated"]
    assert "cost_center" in tags["reason"]


def test_policy_warnings_are_reported_and_the_run_goes_on(tmp_path):
    make_tree(tmp_path / "src", {"model.bin": b"w" * 100})
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "owners.yaml").write_text(
        "version: 1\nrules:\n  - id: owner-tag\n    description: every dataset has an owner\n"
        "    severity: warn\n    require: {tags: [owner]}\n")
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "weights", "source": {"url": "src/"}, "destination": {"url": "dst/"}}])
    result = cli("run", str(manifest), "--json")  # policies/ beside the manifest
    assert result.returncode == 0, result.stdout + result.stderr
    summary = last_json(result.stdout)
    assert summary["datasets"]["weights"]["copied"] == 1
    [warning] = summary["policy_warnings"]
    assert warning.startswith("owner-tag: dataset weights: datasets[0].tags")
