"""The driver's per-object accounting stays bounded whatever the object count.

A run settles every object on the driver (pipeline/session.py ``settle``): the
report keeps counts per dataset and outcome, the first ``MAX_LISTED_PROBLEMS``
problems and warnings in full, and only counts the rest; the human summary and
the JSON say how many more there were. The other per-object state on the driver
is bounded by construction and documented where it lives: the ledger writer's
and the audit writer's buffers (flushed by count and every second), progress
counters, the engine's window of tasks, the merkle frontier (one hash per set
bit of the log's size).
"""

from __future__ import annotations

import io
import json

from datamove.pipeline.report import MAX_LISTED_PROBLEMS, Report
from datamove.pipeline.transfer import ObjectResult


def test_problems_beyond_the_listed_ones_are_counted_not_kept():
    report = Report("run", "m", "run-1")
    failures = MAX_LISTED_PROBLEMS + 5_000
    for i in range(failures):
        report.record(ObjectResult(dataset="d", key=f"k{i:06d}", action="copy",
                                   status="failed", size=1, error="boom"))
        report.record(ObjectResult(dataset="d", key=f"ok{i:06d}", action="copy",
                                   status="copied", size=2))
        report.warn(f"warning {i}")
    assert len(report.problems) == MAX_LISTED_PROBLEMS
    assert len(report.warnings) == MAX_LISTED_PROBLEMS
    assert report.problems[-1].key == f"k{MAX_LISTED_PROBLEMS - 1:06d}"  # the first ones
    out = json.loads(report.finish().to_json())
    assert out["problem_count"] == failures and len(out["problems"]) == MAX_LISTED_PROBLEMS
    assert out["warning_count"] == failures
    assert out["datasets"]["d"]["failed"] == failures
    assert out["datasets"]["d"]["copied"] == failures
    assert out["datasets"]["d"]["bytes_copied"] == 2 * failures
    assert out["exit_code"] == 1
    text = io.StringIO()
    report.render(text)
    assert f"… and {failures - MAX_LISTED_PROBLEMS:,} more" in text.getvalue()
