"""pipeline/breaker.py: which failures stop a dataset, and when."""

from __future__ import annotations

import errno

from datamove.manifest.model import VerifyMode
from datamove.pipeline.breaker import CircuitBreaker
from datamove.pipeline.march import Action, DatasetJob, PlanItem
from datamove.pipeline.transfer import (
    Batch,
    ObjectResult,
    TransferSettings,
    process_item,
    run_items,
)
from datamove.stores.core import Entry, KeyFilter, Location


def job(tmp_path) -> DatasetJob:
    return DatasetJob("d", Location.of(str(tmp_path / "src")), Location.of(str(tmp_path / "dst")),
                      KeyFilter(), VerifyMode.checksum)


def failed(kind: str | None, error: str = "boom") -> ObjectResult:
    return ObjectResult(dataset="d", key="k", action="copy", status="failed", size=1,
                        error=error, error_kind=kind, endpoint="http://127.0.0.1:9")


def test_a_full_disk_stops_the_dataset_at_the_first_object(tmp_path):
    breaker = CircuitBreaker(threshold=5)
    reason = breaker.observe(job(tmp_path), failed("space", "[Errno 28] No space left on device"))
    assert reason == (f"stopped at a full disk: no space left to write to {tmp_path / 'dst'} "
                      "([Errno 28] No "
                      "space left on device); free space there and run again")
    assert breaker.tripped == {"d"}
    assert breaker.observe(job(tmp_path), failed("space")) is None  # said once


def test_connection_failures_stop_it_after_the_threshold_and_others_never(tmp_path):
    breaker = CircuitBreaker(threshold=3)
    for _ in range(10):
        assert breaker.observe(job(tmp_path), failed(None)) is None
    assert [breaker.observe(job(tmp_path), failed("connection")) for _ in range(3)][-1] == \
        "stopped after 3 consecutive connection failures to http://127.0.0.1:9"


def test_an_out_of_space_error_is_classified_and_not_retried(tmp_path):
    attempts = []

    def full_disk(*_: object) -> ObjectResult:
        attempts.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    item = PlanItem(Action.copy, "k", Entry("k", 1, 0.0), None, "new")
    result = process_item(job(tmp_path), item, TransferSettings(backoff_base=0), full_disk)
    assert (result.status, result.error_kind, len(attempts)) == ("failed", "space", 1)
    assert "No space left on device" in (result.error or "")


def test_a_task_stops_at_the_first_object_refused_for_lack_of_space(tmp_path):
    """The rest of the batch goes back to the driver, which finds the dataset stopped
    and counts it as not attempted, instead of failing every object one by one."""
    items = tuple(PlanItem(Action.copy, f"k{i}", Entry(f"k{i}", 1, 0.0), None, "new")
                  for i in range(5))
    tried = []

    def one(item: PlanItem) -> ObjectResult:
        tried.append(item.key)
        return failed("space" if item.key == "k1" else None, "no space")

    results = run_items(Batch(job(tmp_path), items, TransferSettings(task_seconds=60)), one)
    assert tried == ["k0", "k1"] and len(results) == 2
