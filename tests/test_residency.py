"""Residency on real buckets (moto_server) created in different regions.

* A manifest that declares the wrong region for its destination bucket is
  refused before anything moves (exit 3), by the built-in rule.
* ``audit residency`` lists every recorded copy with the region its bucket is in,
  and flags the copies outside the regions a policy allows, naming the rule;
  copies in an allowed region pass.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from datamove import api
from datamove.commands.residency import residency
from tests.conftest import MotoServer, cli, s3_location, write_manifest

EU_ONLY = """\
version: 1
rules:
  - id: eu-only
    description: copies stay in the EU
    severity: deny
    match: {classification: [pii]}
    require: {regions: [eu-*]}
"""


def regional_bucket(server: MotoServer, region: str) -> str:
    name = f"b-{region}-{uuid.uuid4().hex[:8]}"
    server.client().create_bucket(Bucket=name,
                                  CreateBucketConfiguration={"LocationConstraint": region})
    return name


def source_tree(root: Path) -> Path:
    for i in range(3):
        (root / "src" / f"r{i}.csv").parent.mkdir(parents=True, exist_ok=True)
        (root / "src" / f"r{i}.csv").write_bytes(b"id,name\n%d,x\n" % i)
    return root / "src"


def test_a_wrong_declared_region_is_refused_before_anything_moves(tmp_path, moto_server):
    bucket = regional_bucket(moto_server, "us-west-2")
    source_tree(tmp_path)
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "crm", "source": {"url": "src/"},
         "destination": {**s3_location(moto_server, bucket, "crm/"),
                         "region": "eu-central-1"}}])
    result = cli("run", str(manifest), "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    error = json.loads(result.stdout.strip().splitlines()[-1])["error"]
    assert "region-declared-mismatch: dataset crm" in error
    assert "declared region eu-central-1 but the destination is in us-west-2" in error
    assert "Contents" not in moto_server.client().list_objects_v2(Bucket=bucket)


def test_residency_flags_copies_outside_the_allowed_regions(tmp_path, moto_server):
    eu = regional_bucket(moto_server, "eu-central-1")
    us = regional_bucket(moto_server, "us-west-2")
    source_tree(tmp_path)
    datasets = [
        {"name": "eu-crm", "source": {"url": "src/"}, "classification": "pii",
         "destination": {**s3_location(moto_server, eu, "crm/"), "region": "eu-central-1"}},
        {"name": "us-crm", "source": {"url": "src/"}, "classification": "pii",
         "destination": s3_location(moto_server, us, "crm/")},
        {"name": "public", "source": {"url": "src/"},
         "destination": s3_location(moto_server, us, "public/")},
    ]
    manifest = write_manifest(tmp_path / "m.yaml", datasets)
    assert api.run(api.load_manifest(manifest)).exit_code == 0  # no policy yet
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "eu.yaml").write_text(EU_ONLY)

    report = residency(api.load_manifest(manifest))
    assert report.exit_code == 1
    by_dataset = report.summary()
    assert by_dataset["eu-crm"]["regions"] == {"eu-central-1": 3}
    assert by_dataset["eu-crm"]["violations"] == 0
    assert by_dataset["us-crm"]["regions"] == {"us-west-2": 3}
    assert by_dataset["us-crm"]["violations"] == 3
    assert by_dataset["public"]["rules"] == [] and by_dataset["public"]["violations"] == 0
    flagged = {(c.dataset, c.key, c.violations) for c in report.violations}
    assert flagged == {("us-crm", f"r{i}.csv", ("eu-only",)) for i in range(3)}
    assert all(c.how == "s3 GetBucketLocation" for c in report.copies)

    # The same through the CLI, as an auditor runs it.
    result = cli("audit", "residency", str(manifest), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["violations"] == 3
    # And a run now is refused for the dataset that would break the rule.
    refused = cli("run", str(manifest), "--json")
    assert refused.returncode == 3
    assert "eu-only: dataset us-crm" in json.loads(refused.stdout.strip().splitlines()[-1])[
        "error"]
