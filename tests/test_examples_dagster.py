"""examples/dagster_datamove.py runs in Dagster, in-process: a clean run materializes
with datamove's counts as metadata; a run with a failed object fails the step.

Dagster comes from the ``examples`` extra (.ci/run installs it); off CI the test
is skipped when it is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import yaml

if not os.environ.get("CI"):
    pytest.importorskip("dagster")

import dagster as dg

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dagster_datamove.py"


def example():
    spec = importlib.util.spec_from_file_location("dagster_datamove", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def manifest(tmp_path: Path, src: Path, dst: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1, "name": "dagster", "ledger": str(tmp_path / "ledger"),
        "datasets": [{"name": "d", "source": {"url": str(src)},
                      "destination": {"url": str(dst)}}]}))
    return path


def materialize(path: Path) -> dg.ExecuteInProcessResult:
    # Dagster's default: an ephemeral in-memory instance (a test instance with SQLite
    # storage costs ~15 s of migrations).
    return dg.materialize(
        [example().datamove_copy], raise_on_error=False,
        run_config={"ops": {"datamove_copy": {"config": {"manifest": str(path)}}}})


def test_the_dagster_asset_copies_and_fails_the_step_on_failed_objects(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(b"x" * 10)
    path = manifest(tmp_path, src, dst)

    result = materialize(path)
    assert result.success
    [materialization] = result.asset_materializations_for_node("datamove_copy")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert (meta["copied"], meta["failed"], meta["exit_code"], meta["bytes_copied"]) == \
        (3, 0, 0, 30)
    assert sorted(p.name for p in dst.iterdir()) == ["f0", "f1", "f2"]

    # A directory where one copy must go: that object fails, so the step fails.
    (src / "blocked").write_bytes(b"never")
    (dst / "blocked").mkdir()
    (dst / "blocked" / "inside").write_bytes(b"in the way")
    result = materialize(path)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.event_specific_data.error)
    assert "exit code 1" in text and "d/blocked" in text
