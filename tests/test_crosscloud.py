"""Cross-cloud: one manifest moving S3 → GCS and GCS → Azure, run and verified by the CLI.

The real ``datamove`` command in a subprocess, against moto_server, the GCS
emulator and Azurite at once. The second dataset reads what the first wrote,
so GCS is a destination and a source in the same run. Credentials come only
from the environment: the manifest holds endpoints and the anonymous-token mode,
and no account key reaches the output or the ledger. One ``datamove run`` does
both hops: a dataset whose source is another's destination waits for it
(pipeline/jobs.stages). A flipped byte in Azure
makes ``datamove verify`` exit 1 and name the object; ``run --reverify``
repairs it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from datamove.ledger.tables import Ledger

from .conftest import AZURITE_KEY, cli, write_manifest

PART = 5 * 1024 * 1024
FILES = {"weights/model.bin": PART + 123, "weights/config.json": 777, "README": 0,
         "a-c": 10, "a/b": 11, "ünïcode/名前.txt": 12}


def test_s3_to_gcs_to_azure_run_and_verify(tmp_path: Path, moto_server, gcs_emulator,
                                           azurite) -> None:
    rng = random.Random(42)
    bucket = moto_server.new_bucket()
    client = moto_server.client()
    data = {key: rng.randbytes(size) for key, size in FILES.items()}
    for key, body in data.items():
        client.put_object(Bucket=bucket, Key=f"raw/{key}", Body=body)
    gcs_bucket = gcs_emulator.new_bucket()
    container = azurite.new_container()
    manifest = write_manifest(tmp_path / "crosscloud.yaml", [
        {"name": "s3-to-gcs", "source": {"url": f"s3://{bucket}/raw/",
                                         "options": {"endpoint_url": moto_server.endpoint}},
         "destination": gcs_emulator.location(gcs_bucket, "landing/"), "verify": "checksum"},
        {"name": "gcs-to-azure", "source": gcs_emulator.location(gcs_bucket, "landing/"),
         "destination": azurite.location(container, "mirror/"), "verify": "full"},
    ], engine={"threads": 4, "part_size": PART})

    # One run, both hops: the second dataset reads the first one's output, so it is
    # planned only once the first one's copies are done.
    run = cli("run", str(manifest), "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr + run.stdout
    copied = json.loads(run.stdout.strip().splitlines()[-1])["datasets"]
    assert copied["s3-to-gcs"]["copied"] == len(FILES)
    assert copied["gcs-to-azure"]["copied"] == len(FILES)
    verify = cli("verify", str(manifest), "--json", cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr + verify.stdout
    report = json.loads(verify.stdout.strip().splitlines()[-1])
    assert report["datasets"]["s3-to-gcs"]["matched"] == len(FILES)
    assert report["datasets"]["gcs-to-azure"]["matched"] == len(FILES)

    azure_fs = azurite.fs()
    azure_fs.invalidate_cache()
    for key, body in data.items():
        assert azure_fs.cat(f"{container}/mirror/{key}") == body, key
    rows = Ledger(str(tmp_path / ".datamove" / "ledger")).objects().to_pylist()
    natives = {(r["dataset"], r["key"]): r["native_checksum"] for r in rows}
    assert all(natives[("s3-to-gcs", k)].startswith("crc32c:") for k in FILES)
    assert natives[("gcs-to-azure", "weights/config.json")].startswith("md5:")
    for output in (run.stdout, run.stderr, verify.stdout,
                   verify.stderr, manifest.read_text()):
        assert AZURITE_KEY not in output and "AccountKey" not in output

    # One flipped byte at the end of the chain.
    tampered = bytearray(data["weights/model.bin"])
    tampered[PART + 1] ^= 0xFF
    azure_fs.pipe(f"{container}/mirror/weights/model.bin", bytes(tampered))
    bad = cli("verify", str(manifest), "--json", cwd=tmp_path)
    assert bad.returncode == 1, bad.stderr + bad.stdout
    problems = json.loads(bad.stdout.strip().splitlines()[-1])["problems"]
    assert [(p["dataset"], p["key"], p["status"]) for p in problems] == [
        ("gcs-to-azure", "weights/model.bin", "differs")]
    repaired = cli("run", str(manifest), "--reverify", "--json", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr + repaired.stdout
    assert cli("verify", str(manifest), cwd=tmp_path).returncode == 0


def test_the_example_manifest_loads() -> None:
    """manifests/crosscloud.yaml is valid, holds no secret, and chains the hops."""
    from datamove.manifest.model import load_manifest

    manifest = load_manifest(Path(__file__).parent.parent / "manifests" / "crosscloud.yaml")
    hops = [(d.source.url.split(":")[0], d.destination.url.split(":")[0])
            for d in manifest.datasets]
    assert hops == [("s3", "gs"), ("gs", "az")]
    assert manifest.datasets[0].destination.storage_class == "NEARLINE"
    assert manifest.datasets[1].source.url == manifest.datasets[0].destination.url
