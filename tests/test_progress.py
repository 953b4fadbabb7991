"""The progress accountant: counts never go backwards, a moving-average rate, an ETA only
once the listing is complete, and the live display built from it."""

from __future__ import annotations

import io
import itertools
import time

from rich.console import Console

from datamove import api
from datamove.pipeline.events import stats_text
from datamove.pipeline.march import Action, PlanItem
from datamove.pipeline.progress import Progress, Snapshot, TerminalProgress, render
from datamove.pipeline.transfer import LIVE_BYTES, ObjectResult
from datamove.stores.base import Entry
from tests.test_ops_logging import make_source, manifest_for


def item(key: str, size: int) -> PlanItem:
    return PlanItem(Action.copy, key, Entry(key, size), None, "new")


def result(key: str, size: int, status: str = "copied") -> ObjectResult:
    return ObjectResult(dataset="raw", key=key, action="copy", status=status, size=size)


def test_bytes_never_go_backwards_when_an_object_finishes_or_a_read_is_retried():
    progress = Progress()
    progress.planned(item("a", 1000), "raw")
    LIVE_BYTES.add(600)  # a worker thread has copied 600 bytes of "a"
    try:
        assert progress.bytes_so_far == 600
        LIVE_BYTES.add(-600)  # the attempt failed and is retried from byte 0
        assert progress.bytes_so_far == 600
        LIVE_BYTES.add(300)
        assert progress.bytes_so_far == 600
        LIVE_BYTES.add(700)
        assert progress.bytes_so_far == 1000
        LIVE_BYTES.add(-1000)  # finished: the worker drops it before the driver counts it
        assert progress.bytes_so_far == 1000
    finally:
        LIVE_BYTES.value = 0
    progress.done(result("a", 1000))
    assert progress.bytes_so_far == 1000 and progress.done_objects == 1


def test_a_real_run_reports_counts_that_only_grow(tmp_path):
    make_source(tmp_path / "src", 150, size=20_000)
    seen: list[Snapshot] = []
    progress = Progress(stats_every=0.02, observers=[seen.append])
    report = api.run(api.load_manifest(manifest_for(tmp_path, threads=2)), progress=progress)
    assert report.exit_code == 0
    assert len(seen) >= 3
    for before, after in itertools.pairwise(seen):
        assert after.objects_done >= before.objects_done
        assert after.bytes_done >= before.bytes_done
        assert after.objects_total >= before.objects_total
    last = seen[-1]
    assert last.objects_done == last.objects_total == 150
    assert last.bytes_done == last.bytes_total == 150 * 20_000
    assert not last.listing and last.eta == 0
    [raw] = last.datasets
    assert raw.outcomes["copied"] == 150 and raw.seconds > 0


def test_the_rate_is_a_moving_average_not_since_the_start():
    progress = Progress()
    progress.window = 0.3
    for i in range(10):
        progress.planned(item(f"k{i}", 1_000_000), "raw")
        progress.done(result(f"k{i}", 1_000_000))
    busy = progress.rate
    assert busy > 0
    time.sleep(0.5)  # a stall: nothing finishes
    progress.rate  # noqa: B018 - a sample, as the display takes four times a second
    time.sleep(0.4)
    assert progress.rate == 0
    since_start = progress.bytes_so_far / (time.monotonic() - progress.started)
    assert since_start > 1_000_000  # what the old display showed during a stall


def test_no_eta_while_listing_then_one_from_the_rate():
    progress = Progress()
    progress.started -= 5  # as if the run had been going for five seconds
    progress._samples[0] = (progress.started, 0, 0)
    for i in range(4):
        progress.planned(item(f"k{i}", 100), "raw")
    progress.done(result("k0", 100))
    listing = progress.snapshot()
    assert listing.listing and listing.eta is None
    assert "listing, 4 found so far" in stats_text(listing)
    progress.listing_done()
    listed = progress.snapshot()
    assert not listed.listing and listed.eta is not None and listed.eta > 0
    assert "ETA " in stats_text(listed)
    for i in range(1, 4):
        progress.done(result(f"k{i}", 100, "failed" if i == 3 else "copied"))
    done = progress.snapshot()
    assert done.eta == 0 and done.failed == 1 and done.objects_done == 4


def test_the_terminal_display_shows_a_bar_per_dataset_rate_elapsed_and_eta():
    progress = TerminalProgress()
    for name in ("raw", "logs"):
        for i in range(3):
            progress.planned(item(f"{name}{i}", 2048), name)
    progress.skipped_item("logs", item("old", 10))
    progress.done(result("raw0", 2048))
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(render(progress.snapshot()))
    text = out.getvalue()
    assert "raw" in text and "logs" in text and "1 up to date" in text
    assert "1/3" in text and "listing, 6 found so far" in text and "elapsed" in text
    progress.listing_done()
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(render(progress.snapshot()))
    assert "ETA" in out.getvalue() and "/s" in out.getvalue()


def test_a_terminal_gets_the_live_display_and_no_stats_lines(tmp_path):
    """stderr a terminal (a pseudo-terminal here): the bars and the total line are
    drawn, and no stats line is logged unless --stats asks for one."""
    import os
    import pty
    import select
    import subprocess
    import sys

    from tests.conftest import AWS_ENV

    make_source(tmp_path / "src", 400, size=5000)
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "datamove.cli", "run", manifest_for(tmp_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
            env={**os.environ, **AWS_ENV, "COLUMNS": "160", "TERM": "xterm"})
    finally:
        os.close(slave)
    screen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, screen.decode(errors="replace")[-2000:]
    text = screen.decode(errors="replace")
    assert "raw" in text and "total" in text and "elapsed" in text, text[-2000:]
    assert "datamove.stats" not in text
    assert b"copied 400" in out
