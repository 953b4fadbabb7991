"""Region discovery against real stores, and the built-in rule that refuses a
declared region the store contradicts.

S3 buckets are created on moto_server in different regions (never with an
explicit us-east-1 constraint, which S3 refuses: us-east-1 is the absence of one).
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest

from datamove.errors import PolicyRefused
from datamove.manifest.model import load_manifest
from datamove.policy.regions import RegionFacts, discover, discover_all, discover_manifest
from datamove.policy.rules import REGION_MISMATCH, check
from datamove.stores.core import Location

from .conftest import GcsEmulator, MotoServer, s3_location, write_manifest

S3 = "s3 GetBucketLocation"


def bucket_in(server: MotoServer, region: str | None) -> str:
    """A new bucket in ``region`` (None: us-east-1, the bucket without a constraint)."""
    name = f"r-{uuid.uuid4().hex[:12]}"
    if region is None:
        server.client().create_bucket(Bucket=name)
    else:
        server.client().create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


def s3(server: MotoServer, bucket: str, region: str | None = None) -> Location:
    return Location.of(f"s3://{bucket}/data/", {"endpoint_url": server.endpoint}, region)


@pytest.mark.parametrize(("constraint", "region"), [
    ("eu-central-1", "eu-central-1"),
    ("us-west-2", "us-west-2"),
    ("ap-southeast-2", "ap-southeast-2"),
    (None, "us-east-1"),      # no LocationConstraint: us-east-1
    ("EU", "eu-west-1"),      # the legacy name of eu-west-1
])
def test_discovery_returns_each_buckets_region(moto_server: MotoServer, constraint: str | None,
                                               region: str) -> None:
    bucket = bucket_in(moto_server, constraint)
    assert discover(s3(moto_server, bucket)) == RegionFacts(None, region, S3)
    facts = discover(s3(moto_server, bucket, region="xx-declared-1"))
    assert (facts.declared, facts.discovered, facts.effective) == (
        "xx-declared-1", region, region)
    assert facts.mismatch


def test_a_bucket_that_cannot_be_asked_leaves_the_region_unknown(
        moto_server: MotoServer) -> None:
    facts = discover(s3(moto_server, "no-such-bucket-here", region="eu-west-1"))
    assert facts.discovered is None and facts.declared == "eu-west-1"
    assert facts.source.startswith(f"unknown: {S3} failed: FileNotFoundError"), facts.source
    assert facts.effective == "eu-west-1" and not facts.mismatch
    assert facts.how.startswith(f"declared, not confirmed: {S3} failed: ")


def test_each_location_keeps_its_declaration_when_a_bucket_is_asked_once(
        moto_server: MotoServer) -> None:
    bucket = bucket_in(moto_server, "eu-north-1")
    found = discover_all([s3(moto_server, bucket, "eu-north-1"),
                          Location.of(f"s3://{bucket}/other/", {"endpoint_url":
                                                                 moto_server.endpoint}),
                          s3(moto_server, bucket, "eu-west-3")])
    assert found == [RegionFacts("eu-north-1", "eu-north-1", S3),
                     RegionFacts(None, "eu-north-1", S3),
                     RegionFacts("eu-west-3", "eu-north-1", S3)]


def test_local_paths_are_in_the_configured_host_region(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAMOVE_LOCAL_REGION", raising=False)
    here = Location.of(str(tmp_path), region="eu-central-1")
    assert discover(here) == RegionFacts(
        "eu-central-1", None,
        "unknown: a local path has no discoverable region; set DATAMOVE_LOCAL_REGION on this host")
    assert discover(here).effective == "eu-central-1"  # the declaration stands, unconfirmed
    monkeypatch.setenv("DATAMOVE_LOCAL_REGION", "eu-central-1")
    assert discover(here) == RegionFacts("eu-central-1", "eu-central-1",
                                         "env DATAMOVE_LOCAL_REGION")
    assert discover(Location.of("memory://scratch/")).discovered == "eu-central-1"


def test_azure_regions_are_declared_not_discovered() -> None:
    """The blob API has no call that names an account's region: the declaration
    stands, said to be unconfirmed, and nothing is asked of the store."""
    facts = discover(Location.of("az://container/data/", region="westeurope"))
    assert facts.declared == "westeurope" and facts.discovered is None
    assert facts.source.startswith("unknown: Azure Blob has no API that names an account's "
                                   "region")
    assert facts.effective == "westeurope"
    assert facts.how.startswith("declared, not confirmed: Azure Blob has no API")
    assert facts.residency_check(["westeurope"])[0]
    assert not discover(Location.of("az://container/data/")).residency_check(["*"])[0]


def test_gcs_bucket_location_is_discovered(gcs_emulator: GcsEmulator) -> None:
    """The emulator creates every bucket in US (it ignores ``location`` on create,
    which real GCS honours), and lets a PATCH set the location (which real GCS
    refuses): enough to prove discovery reads the bucket resource and judges it."""
    bucket = gcs_emulator.new_bucket()
    declared_eu = Location.of(f"gs://{bucket}/data/", gcs_emulator.options, "europe-west4")
    facts = discover(declared_eu)
    assert facts == RegionFacts("europe-west4", "us", "gcs bucket location")
    assert facts.mismatch and facts.declaration_check("destination")[0] is False
    gcs_emulator.fs().call("PATCH", "b/{}", bucket, json={"location": "EUROPE-WEST4"})
    facts = discover(declared_eu)
    assert facts == RegionFacts("europe-west4", "europe-west4", "gcs bucket location")
    assert not facts.mismatch and facts.residency_check(["europe-*"])[0]
    # Datasets sharing the bucket ask once; each keeps its own declaration.
    other = Location.of(f"gs://{bucket}/other/", gcs_emulator.options, "us")
    assert [f.discovered for f in discover_all([declared_eu, other])] == ["europe-west4"] * 2
    assert discover_all([declared_eu, other])[1].mismatch


def test_a_missing_gcs_bucket_leaves_the_region_unknown(gcs_emulator: GcsEmulator) -> None:
    facts = discover(Location.of("gs://no-such-bucket-anywhere/x/", gcs_emulator.options,
                                 "europe-west4"))
    assert facts.discovered is None and facts.effective == "europe-west4"
    assert facts.source.startswith("unknown: gcs bucket location failed: FileNotFoundError")


# --- the built-in rule, end to end -----------------------------------------------------

@pytest.fixture
def buckets(moto_server: MotoServer) -> dict[str, str]:
    return {region: bucket_in(moto_server, region) for region in ("eu-central-1", "us-west-2")}


def test_a_wrongly_declared_bucket_region_is_denied(
        tmp_path: Path, moto_server: MotoServer, buckets: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAMOVE_LOCAL_REGION", "eu-central-1")
    monkeypatch.delenv("DATAMOVE_POLICIES", raising=False)
    right = {**s3_location(moto_server, buckets["eu-central-1"]), "region": "eu-central-1"}
    wrong = {**s3_location(moto_server, buckets["us-west-2"]), "region": "eu-west-1"}
    path = write_manifest(tmp_path / "m.yaml", [
        {"name": "good", "source": {"url": "./src/", "region": "eu-central-1"},
         "destination": right},
        {"name": "claims-eu", "source": {"url": "./src/"}, "destination": wrong}])
    manifest = load_manifest(path)
    assert discover_manifest(manifest) == {
        ("good", "source"): RegionFacts("eu-central-1", "eu-central-1",
                                        "env DATAMOVE_LOCAL_REGION"),
        ("good", "destination"): RegionFacts("eu-central-1", "eu-central-1", S3),
        ("claims-eu", "source"): RegionFacts(None, "eu-central-1", "env DATAMOVE_LOCAL_REGION"),
        ("claims-eu", "destination"): RegionFacts("eu-west-1", "us-west-2", S3)}

    report = check(manifest)  # no policy files at all: the built-in rule still applies
    assert report.files == [] and report.exit_code == 3
    assert [(d.dataset, d.field, d.outcome) for d in report.decisions] == [
        ("good", "datasets[0].source.region", "satisfied"),
        ("good", "datasets[0].destination.region", "satisfied"),
        ("claims-eu", "datasets[1].destination.region", "violated")]
    (denied,) = report.denied
    assert (denied.rule_id, denied.severity, denied.reason) == (
        REGION_MISMATCH, "deny",
        f"declared region eu-west-1 but the destination is in us-west-2 [{S3}]; correct "
        "destination.region, or choose a destination in eu-west-1")
    with pytest.raises(PolicyRefused, match="region-declared-mismatch: dataset claims-eu"):
        report.raise_if_denied()
    assert check(manifest, datasets=["good"]).exit_code == 0


def test_residency_rules_judge_the_discovered_region(
        tmp_path: Path, moto_server: MotoServer, buckets: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAMOVE_LOCAL_REGION", raising=False)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "eu.yaml").write_text(
        "version: 1\nrules:\n  - id: eu-only\n    description: EU only\n    severity: deny\n"
        "    require: {regions: [eu-*]}\n")
    path = write_manifest(tmp_path / "m.yaml", [
        {"name": "eu", "source": {"url": "./a/"},
         "destination": s3_location(moto_server, buckets["eu-central-1"])},
        {"name": "us", "source": {"url": "./b/"},
         "destination": s3_location(moto_server, buckets["us-west-2"])},
        {"name": "gone", "source": {"url": "./c/"},
         "destination": s3_location(moto_server, "no-such-bucket-here")}])
    report = check(load_manifest(path))  # policies/ beside the manifest
    assert [(d.dataset, d.outcome, d.reason) for d in report.decisions] == [
        ("eu", "satisfied", f"destination region eu-central-1 is allowed (allowed: eu-*) [{S3}]"),
        ("us", "violated", f"destination region us-west-2 is not allowed (allowed: eu-*) [{S3}]"),
        ("gone", "violated", "region unknown (declare it or make it discoverable); "
                             f"{S3} failed: FileNotFoundError: The specified bucket does not "
                             "exist")]
    out = io.StringIO()
    report.render(out)
    assert "DENY  eu-only  dataset us  datasets[1].destination.region\n" in out.getvalue()
    # Offline, only declarations count: nothing declared, nothing known.
    offline = check(load_manifest(path), discover=False)
    assert [d.outcome for d in offline.decisions] == ["violated"] * 3
