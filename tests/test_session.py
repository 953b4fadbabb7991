"""The run session (pipeline/session.py): the drifts between the commands' own
openings are gone. Archive and restore write with the manifest's ``engine.fsync``,
restore records its start and end the way a run does, archive reports policy
warnings as a run does, and a run that dies half-way releases the lock and
records no end."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from datamove import api
from datamove.commands.archive import archive
from datamove.commands.restore import restore
from datamove.ledger.lock import ledger_lock
from datamove.pipeline.progress import Progress
from tests.conftest import write_manifest
from tests.lifecycle_helpers import audit_events, make_source

LATER = datetime.now(UTC) + timedelta(days=400)  # every object copied now is due then


def cold_manifest(tmp_path: Path, *, fsync: bool = False, threads: int = 2) -> Path:
    ds = {"name": "logs", "source": {"url": str(tmp_path / "src") + "/"},
          "destination": {"url": str(tmp_path / "hot") + "/"},
          "lifecycle": [{"after": "7d", "location": {"url": str(tmp_path / "cold") + "/"}}]}
    return write_manifest(tmp_path / "m.yaml", [ds], ledger=str(tmp_path / "ledger"),
                          engine={"threads": threads, "fsync": fsync})


@pytest.fixture
def fsynced(monkeypatch) -> list[str]:
    """The paths os.fsync is called on from now (the embedded engine's workers are
    threads of this process); the real fsync still runs."""
    paths: list[str] = []
    real = os.fsync

    def traced(fd: int) -> None:
        with contextlib.suppress(OSError):
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", traced)
    return paths


def under(paths: list[str], root: Path) -> list[str]:
    return [p for p in paths if p == str(root) or p.startswith(str(root) + os.sep)]


@pytest.mark.parametrize("fsync", [True, False])
def test_archive_writes_its_cold_copies_with_the_manifests_fsync(tmp_path, fsynced, fsync):
    make_source(tmp_path / "src", 3)
    manifest = api.load_manifest(str(cold_manifest(tmp_path, fsync=fsync)))
    assert api.run(manifest).exit_code == 0
    fsynced.clear()
    report = archive(manifest, at=LATER)
    assert report.exit_code == 0, report.to_json()
    assert report.datasets["logs"].counts["moved"] == 3
    cold = under(fsynced, tmp_path / "cold")
    assert len(cold) >= 3 if fsync else cold == []


@pytest.mark.parametrize("fsync", [True, False])
def test_restore_writes_with_the_manifests_fsync(tmp_path, fsynced, fsync):
    files = make_source(tmp_path / "src", 3)
    manifest = api.load_manifest(str(cold_manifest(tmp_path, fsync=fsync)))
    assert api.run(manifest).exit_code == 0
    fsynced.clear()
    report = restore(manifest, "logs", str(tmp_path / "back") + "/")
    assert report.exit_code == 0, report.to_json()
    for key, data in files.items():
        assert (tmp_path / "back" / key).read_bytes() == data
    back = under(fsynced, tmp_path / "back")
    assert len(back) >= 3 if fsync else back == []


def test_restore_records_its_start_and_end_as_a_run_does(tmp_path):
    make_source(tmp_path / "src", 3)
    manifest = api.load_manifest(str(cold_manifest(tmp_path)))
    assert api.run(manifest).exit_code == 0
    assert restore(manifest, "logs", str(tmp_path / "back") + "/").exit_code == 0

    starts = {e["details"]["command"]: e["details"] for e in
              audit_events(tmp_path / "ledger", "run.start")}
    assert set(starts["run"]) <= set(starts["restore"])  # the engine too
    assert starts["restore"]["engine"] == starts["run"]["engine"]
    assert (starts["restore"]["to"], starts["restore"]["prefix"]) == (
        str(tmp_path / "back") + "/", "")
    ends = audit_events(tmp_path / "ledger", "run.end")
    assert [sorted(e["details"]) for e in ends] == [["counts", "exit_code"]] * 2
    assert ends[-1]["details"] == {"exit_code": 0, "counts": {"logs": {"restored": 3}}}


def test_archive_reports_policy_warnings_as_a_run_does(tmp_path):
    make_source(tmp_path / "src", 2)
    manifest = api.load_manifest(str(cold_manifest(tmp_path)))
    policies = tmp_path / "policies.yaml"
    policies.write_text(yaml.safe_dump({"version": 1, "rules": [
        {"id": "owned", "description": "every dataset names its owner", "severity": "warn",
         "require": {"tags": ["owner"]}}]}))
    ran = api.run(manifest, policies=[str(policies)])
    archived = archive(manifest, at=LATER, policies=[str(policies)])
    assert ran.exit_code == archived.exit_code == 0
    assert ran.policy_warnings and archived.policy_warnings == ran.policy_warnings
    assert "owned" in archived.policy_warnings[0]


class CtrlCAfter(Progress):
    """Ctrl-C as Python delivers it without the CLI's handler: a KeyboardInterrupt in
    the driver's main thread, here after ``count`` objects were settled."""

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def done(self, result) -> None:
        super().done(result)
        self.count -= 1
        if self.count == 0:
            raise KeyboardInterrupt


def test_a_run_that_dies_half_way_records_no_end_and_releases_the_lock(tmp_path):
    files = make_source(tmp_path / "src", 6)
    manifest = api.load_manifest(str(cold_manifest(tmp_path, threads=1)))
    with pytest.raises(KeyboardInterrupt):
        api.run(manifest, progress=CtrlCAfter(3))

    runs = DeltaTable(str(tmp_path / "ledger" / "runs")).to_pyarrow_table().to_pylist()
    assert [r["event"] for r in runs] == ["start"]  # no end: it did not finish
    assert not (tmp_path / "ledger" / "audit").exists() or \
        not audit_events(tmp_path / "ledger", "run.end")
    with ledger_lock(str(tmp_path / "ledger"), command="probe", wait=1):
        pass  # released: another writer gets it at once

    report = api.run(manifest)
    assert report.exit_code == 0, report.to_json()
    counts = report.datasets["logs"].counts
    assert counts["copied"] + counts["skipped"] + counts.get("verified", 0) == len(files)
    for key, data in files.items():
        assert (tmp_path / "hot" / key).read_bytes() == data
