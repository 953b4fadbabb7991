"""Memory is bounded: copying a 200 MiB object grows the process's peak RSS by far less
than the object's size, local → local, local → S3 (a real moto_server), and
encrypted with a decrypting verification.

The measurement runs in a fresh Python process: it imports datamove, runs a warm-up
copy of a tiny dataset (so the Dask cluster, s3fs and every import are in the
baseline), reads ``ru_maxrss``, copies the 200 MiB object through ``api.run`` and
reads ``ru_maxrss`` again. ``ru_maxrss`` is inherited across ``execve``, so the
script is started through a forking shell and checks that it did not inherit a
peak; it also measures VmHWM (reset to the current RSS after the warm-up, via
/proc/self/clear_refs), which counts this copy's peak alone. A control run that
reads the object whole proves both gauges see a 200 MiB allocation.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from datamove.age import AgeDecryptor, X25519Identity, format_identity_file
from tests.conftest import AWS_ENV, REPO, s3_location, write_manifest

MiB = 1024 * 1024
BIG = 200 * MiB
LIMIT_MIB = 100

SCRIPT = r"""
import json, resource, sys

from datamove import api

def ru_maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

def status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)

# ru_maxrss survives execve: a process started by a big parent starts with the
# parent's peak. VmHWM belongs to this process's own address space.
inherited = ru_maxrss_mib() - status_mib("VmHWM")
manifest = api.load_manifest(sys.argv[1])
mode = sys.argv[2]
warm = api.run(manifest, datasets=["warm"])
baseline = ru_maxrss_mib()
rss_before = status_mib("VmRSS")
try:  # reset VmHWM to the current RSS: the peak below is this copy's alone
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    hwm_reset = True
except OSError:
    hwm_reset = False
if mode == "copy":
    report = api.run(manifest, datasets=["big"])
    exit_code, datasets = report.exit_code, report.to_dict()["datasets"]
else:  # control: what the gauges show for an object held whole in memory
    with open(sys.argv[3], "rb") as f:
        held = f.read()
    exit_code, datasets = 0, {"held": len(held)}
print(json.dumps({
    "warm_exit": warm.exit_code, "inherited_mib": inherited,
    "baseline_mib": baseline, "peak_mib": ru_maxrss_mib(),
    "growth_mib": ru_maxrss_mib() - baseline,
    "hwm_growth_mib": status_mib("VmHWM") - rss_before if hwm_reset else None,
    "exit_code": exit_code, "datasets": datasets}))
"""


def write_random(path: Path, size: int, seed: int) -> str:
    """``size`` seeded random bytes in 1 MiB chunks; returns their sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            chunk = rng.randbytes(MiB)
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def stream_sha(chunks) -> str:  # type: ignore[no-untyped-def]
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory-sources")
    big_sha = write_random(root / "big" / "model.bin", BIG, seed=200)
    (root / "warm").mkdir()
    (root / "warm" / "tiny.bin").write_bytes(b"warm-up")
    yield root, big_sha
    (root / "big" / "model.bin").unlink()


def measure(manifest: Path, tmp_path: Path, mode: str = "copy", *extra: str) -> dict:
    script = tmp_path / "measure.py"
    script.write_text(SCRIPT)
    # Through a shell that forks: started directly by this (large) pytest process, the
    # script's ru_maxrss would begin at pytest's own peak and every growth read 0.
    done = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, str(script),
                           str(manifest), mode, *extra],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, **AWS_ENV})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    hwm = result["hwm_growth_mib"]
    print(f"\n{mode}: ru_maxrss baseline {result['baseline_mib']:.1f} MiB, peak "
          f"{result['peak_mib']:.1f} MiB, growth {result['growth_mib']:.1f} MiB; VmHWM growth "
          f"{'n/a' if hwm is None else f'{hwm:.1f} MiB'}")
    assert result["warm_exit"] == 0
    assert result["inherited_mib"] < 20, "ru_maxrss started at another process's peak"
    return result


def assert_bounded(result: dict) -> None:
    assert result["growth_mib"] < LIMIT_MIB
    if result["hwm_growth_mib"] is not None:
        assert result["hwm_growth_mib"] < LIMIT_MIB


def datasets(root: Path, warm_dest: dict, big_dest: dict) -> list[dict]:
    return [
        {"name": "warm", "source": {"url": str(root / "warm")}, "destination": warm_dest,
         "verify": "checksum"},
        {"name": "big", "source": {"url": str(root / "big")}, "destination": big_dest,
         "verify": "checksum"},
    ]


@pytest.mark.slow
def test_200_mib_local_to_local_in_bounded_memory(tmp_path, sources):
    root, big_sha = sources
    dest = tmp_path / "dest"
    manifest = write_manifest(tmp_path / "m.yaml", datasets(
        root, {"url": str(dest / "warm")}, {"url": str(dest / "big")}), engine={"threads": 2})
    result = measure(manifest, tmp_path)
    assert result["exit_code"] == 0
    assert result["datasets"]["big"]["copied"] == 1
    copied = dest / "big" / "model.bin"
    try:
        with open(copied, "rb") as f:
            assert stream_sha(iter(lambda: f.read(MiB), b"")) == big_sha
        assert_bounded(result)
    finally:
        copied.unlink(missing_ok=True)


@pytest.mark.slow
def test_200_mib_local_to_s3_in_bounded_memory(tmp_path, sources, moto_server):
    root, big_sha = sources
    bucket = moto_server.new_bucket()
    client = moto_server.client()
    manifest = write_manifest(tmp_path / "m.yaml", datasets(
        root, s3_location(moto_server, bucket, "warm/"), s3_location(moto_server, bucket, "big/")),
        engine={"threads": 2})
    try:
        result = measure(manifest, tmp_path)
        assert result["exit_code"] == 0
        assert result["datasets"]["big"]["copied"] == 1
        body = client.get_object(Bucket=bucket, Key="big/model.bin")["Body"]
        assert stream_sha(iter(lambda: body.read(MiB), b"")) == big_sha
        assert_bounded(result)
    finally:  # moto holds objects in memory
        client.delete_object(Bucket=bucket, Key="big/model.bin")


@pytest.mark.slow
def test_the_gauge_sees_an_object_held_whole(tmp_path, sources):
    """Control: the same measurement catches a 200 MiB object read into memory."""
    root, _ = sources
    manifest = write_manifest(tmp_path / "m.yaml", datasets(
        root, {"url": str(tmp_path / "warm")}, {"url": str(tmp_path / "unused")}),
        engine={"threads": 2})
    result = measure(manifest, tmp_path, "control", str(root / "big" / "model.bin"))
    assert result["datasets"]["held"] == BIG
    assert result["growth_mib"] >= 190
    if result["hwm_growth_mib"] is not None:
        assert result["hwm_growth_mib"] >= 190


@pytest.mark.slow
def test_200_mib_encrypted_and_verified_by_decryption_in_bounded_memory(tmp_path, sources):
    """age encryption while copying, then `verify: full` decrypts the stored object."""
    root, big_sha = sources
    identity = X25519Identity.generate()
    (tmp_path / "id.key").write_text(format_identity_file(identity))
    dest = tmp_path / "dest"
    sets = datasets(root, {"url": str(dest / "warm")}, {"url": str(dest / "big")})
    for dataset in sets:
        dataset["verify"] = "full"
        dataset["encrypt"] = {"recipients": [str(identity.recipient)],
                              "identity": {"file": str(tmp_path / "id.key")}}
    manifest = write_manifest(tmp_path / "m.yaml", sets, engine={"threads": 2})
    result = measure(manifest, tmp_path)
    assert result["exit_code"] == 0
    assert result["datasets"]["big"]["copied"] == 1
    stored = dest / "big" / "model.bin.age"
    try:
        decryptor = AgeDecryptor([identity])
        with open(stored, "rb") as f:
            pieces = (b"".join(decryptor.update_chunks(block))
                      for block in iter(lambda: f.read(MiB), b""))
            digest = hashlib.sha256()
            for piece in pieces:
                digest.update(piece)
            digest.update(decryptor.finalize())
        assert digest.hexdigest() == big_sha
        assert_bounded(result)
    finally:
        stored.unlink(missing_ok=True)
