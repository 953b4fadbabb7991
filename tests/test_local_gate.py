"""Small local-to-local batches take turns in a worker process (pipeline/local_gate.py);
large objects and other stores do not wait; a stopped run does not wait either.
The mount table lookup behind it (stores/mounts.py) is checked against findmnt."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
import yaml

from datamove.manifest.model import parse_manifest
from datamove.pipeline import cancel, local_gate
from datamove.pipeline.march import DatasetJob, plan_dataset
from datamove.pipeline.transfer import Batch, ObjectResult, TransferSettings, run_items
from datamove.stores import mounts


def _job(tmp_path, sizes: list[int], destination: str | None = None) -> Batch:
    src = tmp_path / "src"
    src.mkdir(parents=True)
    for i, size in enumerate(sizes):
        (src / f"f{i}").write_bytes(b"x" * size)
    doc = {"version": 1, "name": "g", "datasets": [{
        "name": "d", "source": {"url": str(src)},
        "destination": {"url": destination or str(tmp_path / "dst")}}]}
    job = DatasetJob.from_spec(parse_manifest(yaml.safe_dump(doc), "g.yaml").datasets[0])
    items = tuple(plan_dataset(job))
    assert len(items) == len(sizes)
    return Batch(job, items, TransferSettings())


def _overlap(batches: list[Batch]) -> int:
    """Run the batches on as many threads at once; the most objects in progress at
    one moment, across them."""
    lock, busy, most = threading.Lock(), [0], [0]

    def one(item) -> ObjectResult:
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.02)
        with lock:
            busy[0] -= 1
        return ObjectResult(dataset="d", key=item.key, action="copy", status="copied",
                            size=item.size)

    results: list[list[ObjectResult]] = []
    threads = [threading.Thread(target=lambda b=b: results.append(run_items(b, one)))
               for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(r) for r in results) == sorted(len(b.items) for b in batches)
    return most[0]


def test_small_local_batches_take_turns(tmp_path):
    if not mounts.on_local_disk(str(tmp_path)):
        kind = mounts.filesystem_type(str(tmp_path))
        pytest.fail(f"{tmp_path} is not on a local disk here ({kind})")
    batches = [_job(tmp_path / str(n), [100] * 5) for n in range(4)]
    assert _overlap(batches) == 1


def test_large_objects_do_not_wait(tmp_path):
    sizes = [100, local_gate.SMALL_OBJECT + 1]  # one large object: not a small batch
    assert _overlap([_job(tmp_path / str(n), sizes) for n in range(3)]) > 1


def test_object_store_batches_do_not_wait(tmp_path):
    batches = [_job(tmp_path / str(n), [100] * 3, destination=f"memory://gate/{n}/")
               for n in range(3)]
    assert _overlap(batches) > 1


def test_a_stopped_run_does_not_wait_for_the_gate(tmp_path):
    batch = _job(tmp_path, [100] * 3)
    batch = Batch(batch.job, batch.items, TransferSettings(run_token="gatetest"))
    out: list[list[ObjectResult]] = []
    with cancel.Switch("gatetest") as flags, local_gate.held("other", "x"):
        worker = threading.Thread(target=lambda: out.append(run_items(batch, pytest.fail)))
        worker.start()
        time.sleep(0.2)
        assert worker.is_alive()  # waiting for the gate this thread holds
        stopped = time.monotonic()
        flags.stop()
        worker.join(timeout=5)
        assert not worker.is_alive()
        assert time.monotonic() - stopped < 1.0
    assert out == [[]]  # nothing started, nothing reported


def test_filesystem_type_matches_findmnt(tmp_path):
    findmnt = shutil.which("findmnt")
    if findmnt is None:
        pytest.fail("findmnt (util-linux) is missing")
    for path in (str(tmp_path), "/proc", "/"):
        expected = subprocess.run([findmnt, "-n", "-o", "FSTYPE", "--target", path],
                                  capture_output=True, text=True, check=True).stdout.strip()
        assert mounts.filesystem_type(path) == expected


def test_network_mounts_are_not_local_disks(tmp_path, monkeypatch):
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 0:21 / / rw - ext4 /dev/vda rw\n"
        "30 22 0:40 / /mnt/nfs rw - nfs4 server:/export rw\n"
        "31 30 0:41 / /mnt/nfs/scratch rw - tmpfs tmpfs rw\n"
        "32 22 0:42 / /mnt/my\\040share rw shared:1 - fuse.sshfs host:/ rw\n")
    monkeypatch.setattr(mounts, "MOUNTINFO", str(table))
    mounts._mounts.cache_clear()
    try:
        assert mounts.filesystem_type("/mnt/nfs/data/x") == "nfs4"
        assert mounts.filesystem_type("/mnt/nfs/scratch/y") == "tmpfs"  # the deepest mount
        assert mounts.filesystem_type("/mnt/nfsother") == "ext4"  # not under /mnt/nfs
        assert mounts.filesystem_type("/mnt/my share/a") == "fuse.sshfs"
        assert not mounts.on_local_disk("/mnt/nfs/data")
        assert not mounts.on_local_disk("/mnt/my share/a")
        assert mounts.on_local_disk("/srv/data")
        monkeypatch.setattr(mounts, "MOUNTINFO", str(tmp_path / "absent"))
        mounts._mounts.cache_clear()
        assert mounts.filesystem_type("/srv") is None  # not Linux: no gate, threads as before
        assert not mounts.on_local_disk("/srv")
    finally:
        mounts._mounts.cache_clear()
