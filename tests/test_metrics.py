"""``--metrics-file``: a Prometheus text file that node_exporter's textfile collector reads.

Parsed with prometheus_client's own text parser, as a scrape would read it.
"""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from datamove.pipeline import metrics
from datamove.pipeline.march import Action, PlanItem
from datamove.pipeline.progress import Progress
from datamove.pipeline.transfer import ObjectResult
from datamove.stores.base import Entry
from tests.conftest import cli
from tests.test_ops_logging import make_source, make_source_with_a_blocked_object, manifest_for


def samples(path) -> dict[tuple[str, frozenset], float]:
    """``{(name, labels): value}`` of every sample in the file."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    [hit] = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls]
    return hit


def test_a_run_writes_counts_bytes_and_its_end(tmp_path):
    make_source(tmp_path / "src", 40, size=250)
    manifest = manifest_for(tmp_path)
    prom = tmp_path / "textfile" / "datamove.prom"
    prom.parent.mkdir()
    result = cli("run", manifest, "--metrics-file", str(prom))
    assert result.returncode == 0, result.stderr
    found = samples(prom)
    run = {"command": "run", "manifest": manifest}
    assert value(found, "datamove_objects", dataset="raw", outcome="copied", **run) == 40
    assert value(found, "datamove_bytes", dataset="raw", outcome="copied", **run) == 40 * 250
    assert value(found, "datamove_failures", dataset="raw", **run) == 0
    assert value(found, "datamove_run_exit_code", **run) == 0
    assert value(found, "datamove_run_in_progress", **run) == 0
    assert value(found, "datamove_duration_seconds", dataset="raw", **run) > 0
    assert value(found, "datamove_throughput_bytes_per_second", dataset="raw", **run) > 0
    ended = value(found, "datamove_run_end_timestamp_seconds", **run)
    assert abs(ended - time.time()) < 60
    assert list(prom.parent.iterdir()) == [prom]  # no temporary file left beside it

    rerun = cli("run", manifest, "--metrics-file", str(prom))
    assert rerun.returncode == 0, rerun.stderr
    again = samples(prom)
    assert value(again, "datamove_objects", dataset="raw", outcome="skipped", **run) == 40
    assert value(again, "datamove_objects", dataset="raw", outcome="copied", **run) == 0


def test_failures_and_errors_reach_the_file(tmp_path):
    make_source_with_a_blocked_object(tmp_path)
    manifest = manifest_for(tmp_path)
    prom = tmp_path / "m.prom"
    assert cli("run", manifest, "--metrics-file", str(prom)).returncode == 1
    found = samples(prom)
    assert value(found, "datamove_failures", dataset="raw") == 1
    assert value(found, "datamove_objects", dataset="raw", outcome="copied") == 3
    assert value(found, "datamove_run_exit_code") == 1

    # bad input ends the command before any run: the file still says so (exit 2)
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nname: x\ndatasets: 3\n")
    assert cli("run", str(broken), "--metrics-file", str(prom)).returncode == 2
    assert value(samples(prom), "datamove_run_exit_code", manifest=str(broken)) == 2


def test_the_file_is_rewritten_while_a_run_goes_on(tmp_path):
    prom = tmp_path / "live.prom"
    progress = Progress(stats_every=0.05,
                        observers=[metrics.observer(str(prom), "run", "m.yaml")])
    with progress:
        for i in range(3):
            progress.planned(PlanItem(Action.copy, f"k{i}", Entry(f"k{i}", 10), None, "new"),
                             "raw")
        progress.done(ObjectResult(dataset="raw", key="k0", action="copy", status="copied",
                                   size=10, seconds=0.01))
        deadline = time.monotonic() + 10
        while not prom.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        found = samples(prom)
    assert value(found, "datamove_run_in_progress") == 1
    assert value(found, "datamove_run_planned_objects") == 3
    assert value(found, "datamove_objects", dataset="raw", outcome="copied") == 1
    assert ("datamove_run_exit_code", frozenset({("command", "run"),
                                                  ("manifest", "m.yaml")})) not in found


def test_quick_commands_share_the_options(tmp_path):
    """copy/sync/check take the same logging, stats and metrics options as run."""
    make_source(tmp_path / "src", 12)
    prom = tmp_path / "quick.prom"
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    copied = cli("copy", src, dst, "--ledger", str(tmp_path / "ledger"), "-v",
                 "--log-format", "json", "--metrics-file", str(prom))
    assert copied.returncode == 0, copied.stderr
    assert value(samples(prom), "datamove_objects", command="copy", outcome="copied") == 12
    assert sum('"status": "copied"' in line for line in copied.stderr.splitlines()) == 12
    checked = cli("check", src, dst, "--ledger", str(tmp_path / "ledger"),
                  "--metrics-file", str(prom))
    assert checked.returncode == 0, checked.stderr
    assert value(samples(prom), "datamove_objects", command="check", outcome="matched") == 12
