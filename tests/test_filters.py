"""Dataset filters (rclone's globs, sizes, ages, files_from) and engine.bwlimit.

Real local stores, the real engine and ledger: what a filter leaves out is neither
copied nor failed, is counted, and never turns an object already copied into one
"deleted at the source"; bwlimit is timed on real copies.
"""

from __future__ import annotations

import os
import random
import threading
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pytest

from datamove import api
from datamove.ledger.tables import Ledger
from datamove.manifest.model import VerifyMode
from datamove.pipeline import cancel, throttle
from datamove.pipeline.engine import Engine
from datamove.pipeline.filters import Filters
from datamove.pipeline.march import Action, DatasetJob, PlanItem
from datamove.pipeline.transfer import TransferSettings, copy_object
from datamove.stores.core import Entry, KeyFilter, Location, glob_to_regex
from datamove.units import parse_size
from tests.conftest import cli, write_manifest

DAY = 86_400


def _tree(root: Path, files: dict[str, bytes], age_days: dict[str, float] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if age_days and key in age_days:
            then = time.time() - age_days[key] * DAY
            os.utime(path, (then, then))
    return root


def _manifest_file(tmp_path: Path, engine: dict | None = None, **dataset: object) -> Path:
    return write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": {"url": str(tmp_path / "src")},
        "destination": {"url": str(tmp_path / "dst")}, **dataset}],
        ledger=str(tmp_path / "ledger"), engine={"threads": 2, **(engine or {})})


def _manifest(tmp_path: Path, engine: dict | None = None, **dataset: object):
    return api.load_manifest(_manifest_file(tmp_path, engine, **dataset))


def _copied(tmp_path: Path) -> list[str]:
    dst = tmp_path / "dst"
    return sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())


# --- globs ----------------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "matches", "rejects"), [
    # no leading '/': the key's tail, at a segment boundary
    ("raw/*.csv", ["raw/a.csv", "x/y/raw/a.csv"], ["raw/s/a.csv", "xraw/a.csv"]),
    ("file.jpg", ["file.jpg", "d/file.jpg"], ["afile.jpg", "file.jpg/x"]),
    # a leading '/': anchored at the dataset root
    ("/raw/*.csv", ["raw/a.csv"], ["x/raw/a.csv"]),
    ("/*.jpg", ["a.jpg"], ["x/a.jpg"]),
    # {a,b} alternatives, nested, with '/' inside
    ("*.{jpg,png}", ["a.jpg", "d/b.png"], ["a.gif", "a.jpgx"]),
    ("{a,b/{c,d}}/*", ["a/x", "b/c/x", "q/b/d/x"], ["b/x", "c/x"]),
    # escapes make a character literal
    (r"\*.txt", ["*.txt"], ["a.txt"]),
    (r"\{a\}", ["{a}"], ["a"]),
    # a trailing '/': the directory and everything under it
    ("tmp/", ["tmp/a", "x/tmp/b/c"], ["tmp", "atmp/x"]),
    ("/tmp/", ["tmp/a"], ["x/tmp/a"]),
    # ** crosses '/', * and ? do not; **/ may match no directory at all
    ("a/**/b", ["a/b", "a/x/y/b", "z/a/x/b"], ["a/xb"]),
    ("**/*.jpg", ["a.jpg", "x/y/a.jpg"], ["a.jpeg"]),
    ("img?.png", ["img1.png"], ["img/.png", "img10.png"]),
    ("[!.]*", ["a", "d/b"], [".h", "d/.h"]),
])
def test_globs_have_rclones_meaning(pattern, matches, rejects):
    regex = glob_to_regex(pattern)
    for key in matches:
        assert regex.match(key), (pattern, key)
    for key in rejects:
        assert not regex.match(key), (pattern, key)


@pytest.mark.parametrize(("pattern", "says"), [
    ("a{b", "'{' without its '}'"), ("a}b", "'}' without its '{'"),
    ("x\\", "lone '\\'"), ("[z-a]", "not a valid pattern"),
])
def test_malformed_globs_are_refused(pattern, says):
    with pytest.raises(ValueError, match=None) as caught:
        glob_to_regex(pattern)
    assert says in str(caught.value)


# --- sizes and ages ---------------------------------------------------------------------

def test_sizes_and_ages_choose_what_is_planned_and_copied(tmp_path):
    _tree(tmp_path / "src", {"tiny": b"t" * 10, "old": b"o" * 2048, "new": b"n" * 2048,
                             "big": b"b" * 20_000, "d/new2": b"m" * 4096},
          age_days={"old": 30, "new": 1, "d/new2": 0.5, "tiny": 1, "big": 1})
    m = _manifest(tmp_path, min_size="1K", max_size="16K", max_age="7d")

    planned = api.plan(m).datasets["d"]
    assert (planned.counts["copy"], planned.counts["filtered"]) == (2, 3)
    assert planned.bytes["filtered"] == 10 + 2048 + 20_000

    report = api.run(m)
    assert report.exit_code == 0
    counts = report.datasets["d"].counts
    assert (counts["copied"], counts["filtered"], counts["failed"]) == (2, 3, 0)
    assert _copied(tmp_path) == ["d/new2", "new"]
    assert "3 objects (21.5 KiB) filtered out" in report_text(report)

    older = _manifest(tmp_path, min_age="7d")  # only what is at least a week old
    assert api.run(older).datasets["d"].counts["copied"] == 1
    assert _copied(tmp_path) == ["d/new2", "new", "old"]


def report_text(report) -> str:
    import io

    out = io.StringIO()
    report.render(out)
    return out.getvalue()


def test_a_filter_never_makes_a_copied_object_look_deleted(tmp_path):
    """Objects copied before a filter was added, or that left it later (grew past
    max_size), are no extras, are not re-copied, and their ledger rows stay."""
    src = _tree(tmp_path / "src", {"small": b"s" * 100, "large": b"L" * 5000})
    assert api.run(_manifest(tmp_path)).datasets["d"].counts["copied"] == 2
    ledger = Ledger(str(tmp_path / "ledger"))
    rows_before = ledger.objects().num_rows

    m = _manifest(tmp_path, max_size="1K")
    (src / "small").write_bytes(b"S" * 3000)  # grew out of the filter
    planned = api.plan(m).datasets["d"]
    assert (planned.counts["extra"], planned.counts["copy"], planned.counts["filtered"]) == \
        (0, 0, 2)
    checked = api.verify(m)
    assert checked.exit_code == 0 and checked.datasets["d"].counts["extra"] == 0
    ran = api.run(m)
    assert ran.exit_code == 0 and ran.datasets["d"].counts["copied"] == 0
    assert ledger.objects().num_rows == rows_before  # nothing recorded, nothing "deleted"
    assert (tmp_path / "dst" / "small").read_bytes() == b"s" * 100  # left as it was

    (src / "large").unlink()  # gone from the source, and outside the filter: not an extra
    assert api.plan(m).datasets["d"].counts["extra"] == 0
    assert api.plan(_manifest(tmp_path)).datasets["d"].counts["extra"] == 1  # unfiltered: is


def test_globs_are_counted_as_filtered_on_both_sides(tmp_path):
    _tree(tmp_path / "src", {"a.jpg": b"a", "x/b.png": b"bb", "x/c.txt": b"ccc",
                             "tmp/d.jpg": b"dddd"})
    _tree(tmp_path / "dst", {"old.txt": b"only at the destination, outside the globs"})
    m = _manifest(tmp_path, include=["*.{jpg,png}"], exclude=["/tmp/"])
    planned = api.plan(m).datasets["d"]
    assert (planned.counts["copy"], planned.counts["filtered"], planned.counts["extra"]) == \
        (2, 2, 0)
    assert planned.bytes["filtered"] == 3 + 4


def test_age_filters_need_a_modification_time():
    filters = Filters(max_age=__import__("datetime").timedelta(days=7))
    now = time.time()
    assert filters.reason_out(Entry("k", 1, None), None, None, False, now) == \
        "modification time unknown (min_age/max_age)"
    assert filters.reason_out(Entry("k", 1, now - 8 * DAY), None, None, False, now) == \
        "older than max_age"
    assert filters.reason_out(Entry("k", 1, now - 6 * DAY), None, None, False, now) is None


# --- files_from -------------------------------------------------------------------------

def test_files_from_copies_the_listed_keys_and_reports_the_missing(tmp_path):
    _tree(tmp_path / "src", {"a": b"a", "b": b"b", "dir/c": b"c", "é/d": b"d", "z": b"z"})
    _tree(tmp_path / "dst", {"q": b"only at the destination, not listed"})
    (tmp_path / "keys.txt").write_text(
        "# what to copy\n\n   dir/c  \n/a\né/d\nmissing/key\na\r\n", encoding="utf-8")
    m = _manifest(tmp_path, files_from="keys.txt")  # relative to the manifest

    planned = api.plan(m).datasets["d"]
    assert (planned.counts["copy"], planned.counts["extra"]) == (3, 0)
    report = api.run(m)
    assert report.exit_code == 0
    counts = report.datasets["d"].counts
    assert (counts["copied"], counts["filtered"], counts["not_at_source"]) == (3, 2, 1)
    assert report.warnings == ["dataset d: 'missing/key' is in files_from but not at the source"]
    assert _copied(tmp_path) == ["a", "dir/c", "q", "é/d"]


def test_files_from_is_sorted_in_bounded_memory(tmp_path):
    """Keys in any order, repeated, not ASCII: the stream is the listings' order
    (UTF-8 bytes), each key once, and far more keys than are held at once."""
    rng = random.Random(18)
    keys = [f"{rng.choice(['a', 'Z', 'é', '日本', 'a-b', 'a/b'])}/{i:06d}" for i in range(30_000)]
    lines = keys + rng.sample(keys, 1_500)
    rng.shuffle(lines)
    path = tmp_path / "keys.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    tracemalloc.start()
    arrow_before = pa.total_allocated_bytes()
    arrow_peak = 0
    got = []
    try:
        for n, listed in enumerate(Filters(files_from=str(path)).listed(memory_rows=1_000)):
            got.append(listed.key)
            if n % 1_000 == 0:
                arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_before)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == sorted(set(keys), key=lambda k: k.encode())
    # Beside the test's own list of the keys (``got``, 2.2 MB), the stream held 0.6 MB
    # at its peak; reading the keys into a set and sorting them there takes 3.7 MB.
    assert peak - _size_of(got) < 1.5 * 1024 * 1024, peak
    assert arrow_peak < 2 * 1024 * 1024, arrow_peak


def _size_of(strings: list[str]) -> int:
    import sys

    return sys.getsizeof(strings) + sum(sys.getsizeof(s) for s in strings)


def test_a_files_from_that_is_not_utf8_is_bad_input(tmp_path):
    _tree(tmp_path / "src", {"a": b"a"})
    (tmp_path / "keys.txt").write_bytes(b"a\nb\xff\n")
    result = cli("run", str(_manifest_file(tmp_path, files_from="keys.txt")))
    assert result.returncode == 2, result.stderr
    assert f"dataset d: files_from {tmp_path / 'keys.txt'}:2: not UTF-8 text (byte 0xff)" \
        in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "dst").exists() or _copied(tmp_path) == []


# --- bwlimit ----------------------------------------------------------------------------

def _copy_once(tmp_path: Path, name: str, size: int, bwlimit: int | None) -> float:
    src = _tree(tmp_path / f"src-{name}", {"blob": os.urandom(size)})
    job = DatasetJob("d", Location.of(str(src)), Location.of(str(tmp_path / f"dst-{name}")),
                     KeyFilter(), VerifyMode.size)
    entry = Entry("blob", size, (src / "blob").stat().st_mtime)
    settings = TransferSettings(run_token=f"bw{name}", bwlimit=bwlimit)
    started = time.monotonic()
    result = copy_object(job, PlanItem(Action.copy, "blob", entry, None, "new"), settings)
    assert result.status == "copied" and result.size == size
    return time.monotonic() - started


def test_bwlimit_limits_a_copy_and_no_limit_costs_nothing(tmp_path):
    mib = 1024 * 1024
    _copy_once(tmp_path, "warm", 1024, None)  # the first copy in a process pays for imports
    limited = _copy_once(tmp_path, "limited", 2 * mib, mib)  # 2 MiB at 1 MiB/s
    free = _copy_once(tmp_path, "free", 2 * mib, None)
    assert limited >= 1.7, limited
    assert free < 0.5, free
    assert not any(token in ("bwfree", "bwwarm") for token, _ in throttle._buckets)


def test_bwlimit_from_the_manifest_reaches_the_workers(tmp_path):
    _tree(tmp_path / "src", {"blob": os.urandom(2 * 1024 * 1024)})
    started = time.monotonic()
    report = api.run(_manifest(tmp_path, engine={"bwlimit": "1M"}))
    seconds = time.monotonic() - started
    assert report.exit_code == 0 and report.datasets["d"].counts["copied"] == 1
    token = report.run_id.rsplit("-", 1)[-1]
    assert (token, 1024 * 1024) in throttle._buckets  # the embedded cluster: one share
    assert seconds >= 1.7, seconds


def test_one_bucket_is_shared_by_a_processs_threads():
    bucket = throttle.TokenBucket(4 * 1024 * 1024)
    chunk = 256 * 1024

    def reader() -> None:
        for _ in range(8):  # 2 MiB each
            bucket.take(chunk)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= 0.9  # 4 MiB at 4 MiB/s, not 2 MiB/s each


def test_a_throttled_read_stops_when_the_run_stops():
    bucket = throttle.TokenBucket(1024 * 1024)
    with cancel.Switch("bwstop") as switch:
        threading.Timer(0.2, switch.stop).start()
        started = time.monotonic()
        with pytest.raises(cancel.Cancelled):
            bucket.take(10 * 1024 * 1024, "bwstop", "d")  # ten seconds' worth
        assert time.monotonic() - started < 1.0


def test_bwlimit_is_split_among_worker_processes():
    assert throttle.share(10 * 1024 * 1024, 4) == 2_621_440
    assert throttle.share(None, 4) is None
    assert throttle.share(3, 8) == 1
    assert Engine(threads=8).worker_processes == 1  # threads of one process share one bucket
    assert Engine(threads=4, processes=2).worker_processes == 2


# --- units --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "size"), [
    (4096, 4096), ("4096B", 4096), ("1K", 1024), ("10M", 10 * 1024**2), ("10m", 10 * 1024**2),
    ("1.5GiB", 3 * 1024**3 // 2), ("1.5G", 3 * 1024**3 // 2), ("2Mi", 2 * 1024**2),
    ("500KB", 500_000), ("1MB", 1_000_000), ("1T", 1024**4), (" 3 MiB ", 3 * 1024**2),
])
def test_sizes_are_read_as_rclone_writes_them(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(("value", "says"), [
    ("100", "needs a unit"), ("10X", "must be a size such as"), (-1, "must not be negative"),
    (True, "must be a size"), (1.5, "must be a size"), ("M", "must be a size"),
])
def test_sizes_that_mean_nothing_are_refused(value, says):
    with pytest.raises(ValueError) as caught:
        parse_size(value)
    assert says in str(caught.value)
