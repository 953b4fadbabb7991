"""Running unattended: stats lines off a terminal, per-object lines, JSON logs, a log file.

Every run here is the in-process CLI (tests/conftest.py ``cli``), whose stderr is
not a terminal, exactly as under cron, CI or Kubernetes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli, run_cli, write_manifest

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
STATS_LINE = re.compile(rf"^{STAMP} INFO datamove\.stats: [\d,]+/[\d,]+ objects, ")


def make_source(root, count: int, size: int = 100) -> dict[str, bytes]:
    files = {f"d{i % 7}/f{i:04d}.bin": bytes([i % 251]) * size for i in range(count)}
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def manifest_for(tmp_path, threads: int = 1, bwlimit: str | None = None):
    """``bwlimit`` stretches a run whose stats lines a test counts: without it a fast
    host copies a few hundred 100 B files within one stats interval."""
    return str(write_manifest(tmp_path / "m.yaml", [
        {"name": "raw", "source": {"url": "src/"}, "destination": {"url": "dst/"}}],
        engine={"threads": threads, **({"bwlimit": bwlimit} if bwlimit else {})}))


def test_a_run_off_a_terminal_prints_timestamped_stats_lines(tmp_path):
    make_source(tmp_path / "src", 400)  # 40,000 B at 40 KiB/s: about 1 s
    result = cli("run", manifest_for(tmp_path, bwlimit="40K"), "--stats", "0.2s")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "datamove.stats" in line]
    assert len(lines) >= 2, result.stderr
    assert all(STATS_LINE.match(line) for line in lines), lines
    assert "400/400 objects" in lines[-1]  # the closing line has the whole run
    assert "elapsed " in lines[-1] and ("ETA " in lines[-1] or "listing" in lines[-1])


def test_stats_lines_are_off_with_stats_0_and_for_short_runs_by_default(tmp_path):
    make_source(tmp_path / "src", 50)
    manifest = manifest_for(tmp_path)
    off = cli("run", manifest, "--stats", "0", "--json")
    assert off.returncode == 0, off.stderr
    assert "datamove.stats" not in off.stderr
    (tmp_path / "src" / "new.bin").write_bytes(b"x")
    default = cli("run", manifest)  # 30 s by default off a terminal: a short run says nothing
    assert default.returncode == 0, default.stderr
    assert "datamove.stats" not in default.stderr
    bad = cli("run", manifest, "--stats", "soon")
    assert bad.returncode == 2 and "--stats" in bad.stderr and "Traceback" not in bad.stderr


def test_json_lines_parse_and_carry_one_event_per_object(tmp_path):
    files = make_source(tmp_path / "src", 120)  # 12,000 B at 20 KiB/s: about 0.6 s
    manifest = manifest_for(tmp_path, threads=2, bwlimit="20K")
    result = cli("run", manifest, "-v", "--log-format", "json", "--stats", "0.2s")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    for record in records:
        assert re.fullmatch(STAMP, record["time"]) and record["level"] and record["logger"]
    objects = [r for r in records if r.get("event") == "object"]
    assert sorted(r["key"] for r in objects) == sorted(files)
    assert {r["status"] for r in objects} == {"copied"}
    first = objects[0]
    assert first["dataset"] == "raw" and first["bytes"] == 100 and first["seconds"] >= 0
    assert first["attempts"] == 1 and first["logger"] == "datamove.objects"
    stats = [r for r in records if r.get("event") == "stats"]
    assert stats and stats[-1]["objects_done"] == stats[-1]["objects_total"] == 120
    assert set(stats[-1]) >= {"bytes_done", "bytes_total", "rate_bytes_per_second",
                              "failed", "skipped", "elapsed_seconds", "eta_seconds", "listing"}

    rerun = cli("run", manifest, "-v", "--log-format", "json")
    skipped = [json.loads(line) for line in rerun.stderr.splitlines() if '"event"' in line]
    assert sorted(r["key"] for r in skipped if r["status"] == "skipped") == sorted(files)


def test_verbose_text_lines_name_each_object_and_the_root_v_counts_too(tmp_path):
    make_source(tmp_path / "src", 5)
    result = cli("-v", "run", manifest_for(tmp_path))
    assert result.returncode == 0, result.stderr
    copied = [line for line in result.stderr.splitlines() if "datamove.objects" in line]
    assert len(copied) == 5, result.stderr
    assert re.match(rf"^{STAMP} INFO datamove\.objects: raw: copied d0/f0000\.bin "
                    r"\(100 B, [\d.]+ s\)$", sorted(copied)[0]), copied


def make_source_with_a_blocked_object(tmp_path) -> None:
    """Three objects that copy and one, ``sub/x``, that fails: a file stands at the
    destination where its directory must be."""
    make_source(tmp_path / "src", 3)
    (tmp_path / "src" / "sub").mkdir()
    (tmp_path / "src" / "sub" / "x").write_bytes(b"payload")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "sub").write_bytes(b"a file where a directory must be")


def test_a_failed_object_is_logged_without_v(tmp_path):
    make_source_with_a_blocked_object(tmp_path)
    result = cli("run", manifest_for(tmp_path))
    assert result.returncode == 1, result.stderr
    [line] = [x for x in result.stderr.splitlines() if "datamove.objects" in x]
    assert re.match(rf"^{STAMP} WARNING datamove\.objects: raw: failed sub/x ", line), line


def test_log_file_gets_the_lines_and_is_appended_to(tmp_path):
    make_source(tmp_path / "src", 30)
    manifest = manifest_for(tmp_path)
    log = tmp_path / "logs" / "datamove.log"
    log.parent.mkdir()
    first = cli("run", manifest, "-v", "--log-file", str(log), "--stats", "0.2s")
    assert first.returncode == 0, first.stderr
    assert "datamove.objects" not in first.stderr
    written = log.read_text().splitlines()
    assert sum("datamove.objects: raw: copied" in line for line in written) == 30
    cli("run", manifest, "-v", "--log-file", str(log))
    assert sum("datamove.objects: raw: skipped" in line
               for line in log.read_text().splitlines()) == 30
    assert len(log.read_text().splitlines()) > len(written)  # appended, not replaced
    bad = cli("run", manifest, "--log-file", str(tmp_path / "missing" / "x.log"), "--json")
    assert bad.returncode == 2 and "--log-file" in bad.stderr
    assert json.loads(bad.stdout.splitlines()[-1])["exit_code"] == 2


def test_no_secret_reaches_the_logs(tmp_path):
    """A credential the environment holds and an AWS key id, both inside object keys:
    per-object lines carry keys, so they must be scrubbed in text and in JSON fields."""
    secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY42"
    key_id = "AKIAIOSFODNN7EXAMPLE"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"export-{secret}.csv").write_bytes(b"a,b\n")
    (tmp_path / "src" / f"keys-{key_id}.txt").write_bytes(b"x")
    manifest = manifest_for(tmp_path)
    env = {"AWS_SECRET_ACCESS_KEY": secret}
    # the first run copies (copied lines), the second finds them up to date (skipped lines)
    for args in (("-v", "--stats", "0.2s"), ("-vv", "--log-format", "json")):
        result = cli("run", manifest, *args, env=env)
        assert result.returncode == 0, result.stderr
        assert "datamove.objects" in result.stderr or '"event": "object"' in result.stderr
        assert secret not in result.stderr and key_id not in result.stderr
        assert "<redacted>" in result.stderr


DASHBOARD_PACKAGES = Path(__file__).resolve().parents[1] / ".ci" / "dashboard"
"""bokeh and its dependencies, installed by .ci/run with ``pip --target``: the
optional ``dashboard`` extra, kept off the test venv because every embedded cluster
would then start a dashboard (about 4 s of imports per process)."""


def test_no_dashboard_is_printed_without_bokeh(tmp_path):
    """bokeh is an optional extra (datamove[dashboard]): without it Dask serves no
    dashboard and nothing is printed."""
    assert importlib.util.find_spec("bokeh") is None, "bokeh is in the test venv"
    make_source(tmp_path / "src", 3)
    result = cli("run", manifest_for(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert "dashboard" not in summary and "dashboard" not in result.stderr


def test_the_dask_dashboard_address_is_printed_when_bokeh_is_installed(tmp_path):
    """With bokeh on the path, a run logs the embedded cluster's dashboard (loopback
    only) and puts it in the JSON summary, and the dashboard answers while the
    engine is open."""
    if not (DASHBOARD_PACKAGES / "bokeh").is_dir():
        message = f"bokeh is not installed in {DASHBOARD_PACKAGES}; .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    make_source(tmp_path / "src", 3)
    env = {"PYTHONPATH": os.pathsep.join([str(DASHBOARD_PACKAGES), str(REPO)])}
    result = run_cli("run", manifest_for(tmp_path), "--json", env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    link = json.loads(result.stdout.splitlines()[-1])["dashboard"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", link), link
    assert re.search(rf"^{STAMP} INFO datamove\.run: Dask dashboard: {re.escape(link)}$",
                     result.stderr, re.M), result.stderr

    served = subprocess.run([sys.executable, "-c", SERVED], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=300)
    assert served.returncode == 0, served.stderr
    assert served.stdout.split() == ["127.0.0.1", "200"], served.stdout


SERVED = """
import urllib.parse, urllib.request
from datamove.pipeline.engine import Engine
with Engine(threads=1) as engine:  # served while the engine is open, on loopback only
    engine.start()  # the embedded cluster starts with the first task, or when asked
    with urllib.request.urlopen(engine.dashboard, timeout=60) as answer:
        print(urllib.parse.urlsplit(engine.dashboard).hostname, answer.status)
"""


def test_restore_logs_each_object_and_counts_its_totals(tmp_path):
    """The writing commands share the options; restore counts what it reads back as
    planned, so its stats lines have a total (not ``5/0 objects``). A run shorter than
    one stats interval prints none, and restore is not throttled by ``bwlimit``: enough
    objects and a short interval that a fast host still ticks (150 at 0.05 s did not)."""
    files = make_source(tmp_path / "src", 600)
    manifest = manifest_for(tmp_path, threads=2)
    assert cli("run", manifest).returncode == 0
    result = cli("restore", manifest, "--dataset", "raw", "--to", str(tmp_path / "back"),
                 "-v", "--log-format", "json", "--stats", "0.01s")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    restored = [r for r in records if r.get("event") == "object"]
    assert sorted(r["key"] for r in restored) == sorted(files)
    assert {r["status"] for r in restored} == {"restored"}
    stats = [r for r in records if r.get("event") == "stats"]
    assert stats and stats[-1]["objects_done"] == stats[-1]["objects_total"] == 600
    assert not stats[-1]["listing"]
