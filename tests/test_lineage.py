"""OpenLineage export of a real ledger (datamove/commands/lineage.py).

The ledger is made by datamove itself on a small local tree: a clean run, a run
in which one object fails for real (a destination *file* stands where the
object's directory must go, which stops root too), and a key rotation of the
encrypted dataset. Every exported event is validated against the OpenLineage
2-0-2 JSON Schemas in ``tests/data/openlineage`` (copied from the OpenLineage
repository, see SOURCE.md there; a missing copy fails the tests, it never skips
them) and every facet against the schema its ``_schemaURL`` names, datamove's own
facets included. The checksums digest is recomputed here from the Delta table
with pyarrow, following the documented recipe, not the exporter's code.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from datamove import api
from datamove.age import X25519Identity, format_identity_file
from datamove.commands.lineage import (
    CORE_SCHEMA_ID,
    CUSTOM_FACETS,
    FACETS_SCHEMA,
    FACETS_SCHEMA_ID,
    dataset_name,
    export_openlineage,
    write_openlineage,
)
from datamove.commands.rotate import rotate
from datamove.errors import BadInput
from datamove.ledger.tables import LedgerWriter, ts
from tests.conftest import REPO, write_manifest

SCHEMAS = Path(__file__).resolve().parent / "data" / "openlineage"
DONE = ("copied", "verified", "repaired", "rotated")

# --- schemas -------------------------------------------------------------------------

FORMATS = FormatChecker(formats=())  # our own checks: jsonschema's need optional packages


@FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or str(uuid.UUID(value)) == value


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    rfc3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"
    return bool(re.fullmatch(rfc3339, value)) and \
        datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


@FORMATS.checks("uri", raises=ValueError)
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(re.fullmatch(r"[a-z][a-z0-9+.-]*", parts.scheme)) and " " not in value


@pytest.fixture(scope="module")
def registry() -> Registry:
    """Every OpenLineage schema file keyed by its ``$id``, plus datamove's facets."""
    assert (SCHEMAS / "OpenLineage.json").is_file(), (
        f"OpenLineage JSON Schemas not found at {SCHEMAS}: restore tests/data/openlineage "
        "from git (see its SOURCE.md)")
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(
            contents, default_specification=DRAFT202012)))
    resources.append((FACETS_SCHEMA_ID, Resource.from_contents(FACETS_SCHEMA)))
    return Registry().with_resources(resources)


def validate(instance: Any, ref: str, registry: Registry) -> None:
    Draft202012Validator({"$ref": ref}, registry=registry,
                         format_checker=FORMATS).validate(instance)


def facets_of(event: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(where, key, facet) for every facet in an event."""
    out = [("run", k, f) for k, f in event["run"].get("facets", {}).items()]
    out += [("job", k, f) for k, f in event["job"].get("facets", {}).items()]
    for side in ("inputs", "outputs"):
        for ds in event.get(side, []):
            for group in ("facets", "inputFacets", "outputFacets"):
                out += [(f"{side}.{group}", k, f) for k, f in ds.get(group, {}).items()]
    return out


# --- a real ledger -------------------------------------------------------------------

def fingerprint_of(identity: X25519Identity) -> str:
    return "sha256:" + hashlib.sha256(str(identity.recipient).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    """Three runs: clean, one failed object, a key rotation; and their export."""
    root = tmp_path_factory.mktemp("lineage")
    for key, data in {"plain/a.txt": b"alpha", "plain/sub/b.bin": bytes(range(256)) * 40,
                      "plain/ünï/ç.txt": b"unicode key", "sealed/s1.txt": b"secret one",
                      "sealed/s2.txt": b"secret two"}.items():
        (root / "src" / key).parent.mkdir(parents=True, exist_ok=True)
        (root / "src" / key).write_bytes(data)
    old, new = X25519Identity.generate(), X25519Identity.generate()
    (root / "old.key").write_text(format_identity_file(old))
    (root / "new.pub").write_text(f"{new.recipient}\n")
    path = write_manifest(root / "m.yaml", [
        {"name": "plain", "source": {"url": "./src/plain/"},
         "destination": {"url": "./dst/plain/", "region": "eu-central-1"},
         "tags": {"owner": "team:data-platform"}},
        {"name": "sealed", "source": {"url": "./src/sealed/"},
         "destination": {"url": "./dst/sealed/"},
         "encrypt": {"recipients": [str(old.recipient)], "identity": {"file": "old.key"}}},
    ], name="lineage-test", engine={"threads": 2, "retries": 0})
    manifest = api.load_manifest(path)

    first = api.run(manifest)
    assert first.exit_code == 0
    # A real fault, root or not: the object's directory is a file at the destination.
    (root / "src/plain/blocked").mkdir()
    (root / "src/plain/blocked/x.txt").write_bytes(b"cannot land")
    (root / "src/plain/new.txt").write_bytes(b"second run")
    (root / "dst/plain/blocked").write_bytes(b"in the way")
    second = api.run(manifest)
    assert second.exit_code == 1 and second.datasets["plain"].counts["failed"] == 1
    third = rotate(manifest, str(root / "new.pub"))
    assert third.exit_code == 0 and third.datasets["sealed"].counts["rotated"] == 2

    out = io.StringIO()
    count = write_openlineage(manifest, out)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert count == len(events)
    return {"root": root, "manifest": manifest, "runs": [first, second, third],
            "old": old, "new": new, "events": events, "text": out.getvalue()}


def original_id(event: dict[str, Any]) -> str:
    return event["run"]["facets"]["datamove_run"]["runId"]


def output(event: dict[str, Any], path: Path) -> dict[str, Any]:
    [found] = [o for o in event["outputs"] if o["name"] == str(path)]
    return found


# --- tests ---------------------------------------------------------------------------

def test_every_event_and_facet_validates_against_the_openlineage_schemas(world, registry):
    Draft202012Validator.check_schema(FACETS_SCHEMA)
    standard_ids = {json.loads(p.read_text())["$id"] for p in SCHEMAS.glob("*.json")}
    checked = set()
    for event in world["events"]:
        validate(event, CORE_SCHEMA_ID, registry)  # the whole spec: oneOf the event kinds
        validate(event, event["schemaURL"], registry)  # …and RunEvent itself
        for where, key, facet in facets_of(event):
            base = facet["_schemaURL"].split("#", 1)[0]
            if key in CUSTOM_FACETS:
                assert key.startswith("datamove_") and base == FACETS_SCHEMA_ID, (where, key)
            else:  # a standard facet: under the key its own schema file declares
                assert base in standard_ids, (where, key, base)
                assert key in registry.contents(base)["properties"], (where, key)
                validate({key: facet}, base, registry)
            validate(facet, facet["_schemaURL"], registry)
            checked.add(key)
    assert checked == {"jobType", "processing_engine", "errorMessage", "dataSource",
                       "ownership", "outputStatistics", *CUSTOM_FACETS}


def test_a_bad_event_is_caught_by_the_same_validation(world, registry):
    """The validation above has teeth: a non-UUID runId and a facet missing a field fail."""
    import jsonschema

    event = json.loads(json.dumps(world["events"][0]))
    event["run"]["runId"] = original_id(event)
    with pytest.raises(jsonschema.ValidationError):
        validate(event, CORE_SCHEMA_ID, registry)
    facet = dict(world["events"][1]["run"]["facets"]["datamove_run"])
    del facet["command"]
    with pytest.raises(jsonschema.ValidationError):
        validate(facet, facet["_schemaURL"], registry)


def test_one_start_and_one_end_per_run_in_time_order(world):
    events = world["events"]
    first, second, third = (r.run_id for r in world["runs"])
    assert [(original_id(e), e["eventType"]) for e in events] == [
        (first, "START"), (first, "COMPLETE"), (second, "START"), (second, "FAIL"),
        (third, "START"), (third, "COMPLETE")]
    times = [datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00")) for e in events]
    assert times == sorted(times)
    assert [e["job"]["name"] for e in events] == ["run"] * 4 + ["rotate"] * 2
    assert {e["job"]["namespace"] for e in events} == {"datamove://lineage-test"}
    assert events[-1]["job"]["facets"]["jobType"]["jobType"] == "KEY_ROTATION"
    assert events[0]["job"]["facets"]["jobType"]["integration"] == "DATAMOVE"
    assert all(e["run"]["facets"]["processing_engine"]["name"] == "datamove" for e in events)
    assert [e["run"]["facets"]["datamove_run"].get("exitCode") for e in events] == [
        None, 0, None, 1, None, 0]


def test_run_ids_are_uuids_stable_across_exports(world):
    events = world["events"]
    for event in events:
        assert event["run"]["runId"] == str(
            uuid.uuid5(uuid.NAMESPACE_URL, "datamove:" + original_id(event)))
    assert len({e["run"]["runId"] for e in events}) == 3
    again = io.StringIO()
    assert write_openlineage(world["manifest"], again) == len(events)
    assert again.getvalue() == world["text"]  # byte for byte: nothing depends on "now"


def test_failed_run_carries_its_error_and_counts(world):
    root = world["root"]
    fail = world["events"][3]
    message = fail["run"]["facets"]["errorMessage"]["message"]
    assert fail["run"]["facets"]["errorMessage"]["programmingLanguage"] == "PYTHON"
    assert "1 object failed (plain: 1)" in message
    assert "plain/blocked/x.txt: NotADirectoryError" in message
    plain = output(fail, root / "dst/plain")
    assert plain["outputFacets"]["outputStatistics"] == {
        **plain["outputFacets"]["outputStatistics"], "rowCount": 1, "fileCount": 1,
        "size": len(b"second run")}
    checks = plain["outputFacets"]["datamove_checksums"]
    assert checks["statusCounts"] == {"copied": 1, "failed": 1}
    assert (checks["objects"], checks["bytes"]) == (1, len(b"second run"))
    # Nothing of the sealed dataset changed: listed, with no rows and the empty digest.
    sealed = output(fail, root / "dst/sealed")
    assert sealed["outputFacets"]["datamove_checksums"]["digest"] == \
        "sha256:" + hashlib.sha256(b"").hexdigest()
    assert "datamove_encryption" not in sealed["facets"]
    assert "errorMessage" not in world["events"][1]["run"]["facets"]


def test_checksums_facet_recomputed_from_the_ledger_with_pyarrow(world):
    objects = DeltaTable(str(world["root"] / ".datamove/ledger/objects")).to_pyarrow_dataset()
    compared = 0
    for event in world["events"]:
        if event["eventType"] == "START":
            assert all("outputFacets" not in o for o in event["outputs"])
            continue
        run_id = original_id(event)
        for out in event["outputs"]:
            name = Path(out["name"]).name  # the tree names each destination after its dataset
            rows = objects.to_table(
                filter=(pc.field("run_id") == run_id) & (pc.field("dataset") == name),
                columns=["key", "status", "size", "sha256", "stored_sha256", "stored_size"],
                use_threads=False).to_pylist()
            done = [r for r in rows if r["status"] in DONE]
            triples = sorted(((r["key"], r["sha256"], r["stored_sha256"]) for r in done),
                             key=lambda t: (t[0], t[1] or "", t[2] or ""))
            lines = "".join(json.dumps(list(t), ensure_ascii=False, separators=(",", ":"))
                            + "\n" for t in triples)
            facet = out["outputFacets"]["datamove_checksums"]
            assert facet["digest"] == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
            assert facet["objects"] == len(done)
            assert facet["bytes"] == sum(r["size"] for r in done)
            assert facet["storedBytes"] == sum(r["stored_size"] for r in done)
            statuses: dict[str, int] = {}
            for r in rows:
                statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            assert facet["statusCounts"] == statuses
            compared += bool(done)
    assert compared == 4  # plain and sealed in run 1, plain in run 2, sealed in the rotation
    first_plain = output(world["events"][1], world["root"] / "dst/plain")
    assert first_plain["outputFacets"]["datamove_checksums"]["objects"] == 3  # ünï/ç.txt too


def test_encryption_facet_follows_the_keys(world):
    root, old, new = world["root"], world["old"], world["new"]
    first = output(world["events"][1], root / "dst/sealed")["facets"]["datamove_encryption"]
    assert first["encrypted"] is True
    assert first["keyFingerprints"] == [fingerprint_of(old)]
    assert first["previousKeyFingerprints"] == []
    rotation = world["events"][5]
    after = output(rotation, root / "dst/sealed")["facets"]["datamove_encryption"]
    assert after == {**after, "encrypted": True, "keyFingerprints": [fingerprint_of(new)],
                     "previousKeyFingerprints": [fingerprint_of(old)]}
    stats = output(rotation, root / "dst/sealed")["outputFacets"]["outputStatistics"]
    assert stats["rowCount"] == 2 and stats["size"] > len(b"secret one") + len(b"secret two")
    plain = output(world["events"][1], root / "dst/plain")["facets"]["datamove_encryption"]
    assert plain["encrypted"] is False and plain["keyFingerprints"] == []


def test_datasets_are_named_by_location_with_owner_and_residency(world):
    root = world["root"]
    host = f"file://{socket.gethostname()}"
    start, complete, rotation = world["events"][0], world["events"][1], world["events"][5]
    assert [(i["namespace"], i["name"]) for i in start["inputs"]] == [
        (host, str(root / "src/plain")), (host, str(root / "src/sealed"))]
    assert [(o["namespace"], o["name"]) for o in complete["outputs"]] == [
        (host, str(root / "dst/plain")), (host, str(root / "dst/sealed"))]
    # A rotation reads and rewrites the destination.
    assert [i["name"] for i in rotation["inputs"]] == [str(root / "dst/sealed")]
    assert [o["name"] for o in rotation["outputs"]] == [str(root / "dst/sealed")]
    plain = output(complete, root / "dst/plain")["facets"]
    assert plain["ownership"]["owners"] == [{"name": "team:data-platform"}]
    assert plain["dataSource"]["uri"] == host
    assert plain["datamove_residency"]["declaredRegion"] == "eu-central-1"
    sealed = output(complete, root / "dst/sealed")["facets"]
    assert "ownership" not in sealed
    assert sealed["datamove_residency"] == {**sealed["datamove_residency"],
                                            "declaredRegion": None, "storageClasses": []}
    assert "ownership" in start["inputs"][0]["facets"]


def test_dataset_names_follow_openlineage_naming():
    assert dataset_name("s3://bucket/data/x/", "h") == ("s3://bucket", "data/x")
    assert dataset_name("s3a://bucket/", "h") == ("s3://bucket", "/")
    assert dataset_name("gcs://b/p", "h") == ("gs://b", "p")
    assert dataset_name("file:///srv/data/", "host1") == ("file://host1", "/srv/data")
    assert dataset_name("/srv/data", "host1") == ("file://host1", "/srv/data")
    assert dataset_name("memory://scratch/x", "h") == ("memory://scratch", "x")


def test_interrupted_run_gets_start_only_and_run_ids_select(tmp_path, registry):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/one.txt").write_bytes(b"one")
    manifest = api.load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "./src/"}, "destination": {"url": "./dst/"}}]))
    done = api.run(manifest)
    # A run that was killed after its start row: written by datamove's own writer.
    killed = "20991231T000000Z-0000dead"
    writer = LedgerWriter(api.ledger_of(manifest), killed)
    writer.run_event("start", command="run", manifest_name=manifest.name,
                     manifest_sha256=manifest.sha256, engine="embedded (1 thread)",
                     started_at=ts(4102358400.0))
    events = list(export_openlineage(manifest))
    assert [(original_id(e), e["eventType"]) for e in events] == [
        (done.run_id, "START"), (done.run_id, "COMPLETE"), (killed, "START")]
    assert events[-1]["eventTime"] == "2099-12-31T00:00:00.000000Z"
    assert events[-1]["inputs"] == [] and events[-1]["outputs"] == []  # nothing committed
    for event in events:
        validate(event, CORE_SCHEMA_ID, registry)
    only = list(export_openlineage(manifest, run_ids=[killed]))
    assert [(original_id(e), e["eventType"]) for e in only] == [(killed, "START")]
    with pytest.raises(BadInput, match="no run 2000"):
        list(export_openlineage(manifest, run_ids=["2000-nope"]))


def test_empty_ledger_exports_nothing(tmp_path):
    manifest = api.load_manifest(write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "./src/"}, "destination": {"url": "./dst/"}}]))
    out = io.StringIO()
    assert write_openlineage(manifest, out) == 0 and out.getvalue() == ""


def test_published_facet_schema_matches_the_code():
    """docs/openlineage/datamove-facets.json is what the facets' _schemaURL points to."""
    published = json.loads((REPO / "docs/openlineage/datamove-facets.json").read_text())
    assert published == FACETS_SCHEMA
