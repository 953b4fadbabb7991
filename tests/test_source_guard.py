"""A copy is published only if its source did not change while it was read.

* A local file rewritten in place (same size) by another process during a run
  fails with ``source changed during copy``: nothing at the destination, the
  ledger says failed, exit 1; the other objects are copied.
* On every store, an object rewritten (same size) after it was listed fails the
  same way instead of being stored under the listed version's identity.
* The guard itself: an in-place write, a replacement by rename, a removal.
* S3 reads stay pinned to the ETag seen at open (If-Match): a change mid-read
  fails the read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from datamove import api
from datamove.errors import SourceChanged
from datamove.manifest.model import VerifyMode, load_manifest
from datamove.pipeline.march import Action, DatasetJob, PlanItem
from datamove.pipeline.transfer import TransferSettings, process_item
from datamove.stores.core import PARTIAL_MARKER, KeyFilter, Location, list_entries, open_read
from datamove.stores.source_guard import SourceGuard
from tests.backends import KINDS, backend_of
from tests.conftest import write_manifest
from tests.lifecycle_helpers import object_rows

MiB = 1024 * 1024

REWRITER = """
import os, random, sys, time
path, stop_after = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_WRONLY)
size = os.fstat(fd).st_size
rng = random.Random(1)
print("rewriting", flush=True)
end = time.monotonic() + stop_after
while time.monotonic() < end:  # same size, new bytes, all the time
    os.pwrite(fd, rng.randbytes(4096), rng.randrange(0, size - 4096))
"""


def test_a_file_rewritten_in_place_during_a_run_is_not_published(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "busy.bin").write_bytes(os.urandom(32 * MiB))
    (src / "quiet.bin").write_bytes(b"steady")
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(src)}, "destination": {"url": str(dst)},
         "verify": "checksum"}]))
    writer = subprocess.Popen([sys.executable, "-c", REWRITER, str(src / "busy.bin"), "120"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "rewriting\n"
        report = api.run(manifest)
    finally:
        writer.kill()
        writer.wait()
    assert report.exit_code == 1
    assert [(p.key, p.status) for p in report.problems] == [("busy.bin", "failed")]
    assert "source changed during copy" in report.problems[0].error
    assert sorted(p.name for p in dst.iterdir()) == ["quiet.bin"]  # no partial left either
    rows = {r["key"]: r for r in object_rows(tmp_path / ".datamove" / "ledger")}
    assert rows["busy.bin"]["status"] == "failed" and rows["quiet.bin"]["status"] == "copied"
    assert "source changed" in rows["busy.bin"]["error"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_object_rewritten_after_listing_fails_and_nothing_is_published(
        tmp_path, request, kind):
    source = backend_of(request, kind, tmp_path, prefix="guard/")
    original = os.urandom(300_000)
    source.put("obj.bin", original)
    (entry,) = list(list_entries(source.loc))
    time.sleep(1.1)  # stores that only keep seconds still see a new modification time
    source.tamper("obj.bin", at=1234)  # same size, rewritten through the store's client
    dst = tmp_path / "dst"
    job = DatasetJob("d", source.loc, Location.of(str(dst)), KeyFilter(), VerifyMode.checksum)
    result = process_item(job, PlanItem(Action.copy, entry.key, entry, None, "new"),
                          TransferSettings(retries=2, backoff_base=0.01))
    assert result.status == "failed", result
    assert "source changed during copy" in (result.error or "")
    assert not dst.exists() or list(dst.iterdir()) == []


def test_guard_sees_in_place_writes_renames_and_removals(tmp_path):
    location = Location.of(str(tmp_path))
    path = tmp_path / "f.bin"

    def guarded() -> tuple[SourceGuard, object]:
        path.write_bytes(b"a" * 10_000)
        (entry,) = [e for e in list_entries(location) if e.key == "f.bin"]
        reader = open_read(location, "f.bin")
        return SourceGuard(location, entry, reader), reader

    guard, reader = guarded()
    reader.read()
    guard.confirm(10_000)  # unchanged: fine
    reader.close()

    guard, reader = guarded()
    with open(path, "r+b") as f:  # same size, same second, other bytes
        f.write(b"b")
    with pytest.raises(SourceChanged, match="written while it was read"):
        guard.confirm(10_000)
    reader.close()

    guard, reader = guarded()
    (tmp_path / "new").write_bytes(b"c" * 10_000)
    os.replace(tmp_path / "new", path)
    with pytest.raises(SourceChanged, match="replaced while it was read"):
        guard.confirm(10_000)
    reader.close()

    guard, reader = guarded()
    path.unlink()
    with pytest.raises(SourceChanged, match="removed"):
        guard.confirm(10_000)
    reader.close()


def test_s3_reads_are_pinned_to_the_etag_seen_at_open(moto_server):
    bucket = moto_server.new_bucket()
    client = moto_server.client()
    client.put_object(Bucket=bucket, Key="p/big.bin", Body=os.urandom(12 * MiB))
    location = Location.of(f"s3://{bucket}/p/", {"endpoint_url": moto_server.endpoint})
    reader = open_read(location, "big.bin")
    reader.read(MiB)
    client.put_object(Bucket=bucket, Key="p/big.bin", Body=os.urandom(12 * MiB))
    with pytest.raises(OSError):
        reader.read()
    reader.close()


def test_nothing_partial_is_left_by_a_refused_copy(tmp_path):
    """The writer was opened before the change was seen: its temporary file goes."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(MiB))
    (entry,) = list(list_entries(Location.of(str(src))))
    with open(src / "f.bin", "r+b") as f:
        f.write(b"x")
    job = DatasetJob("d", Location.of(str(src)), Location.of(str(dst)), KeyFilter(),
                     VerifyMode.size)
    result = process_item(job, PlanItem(Action.copy, entry.key, entry, None, "new"),
                          TransferSettings(retries=0))
    assert result.status == "failed" and "source changed" in (result.error or "")
    assert [p for p in dst.rglob("*") if PARTIAL_MARKER in p.name or p.is_file()] == []
