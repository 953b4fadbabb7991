"""Cost estimates of ``datamove plan`` (docs/COST.md): the shipped price table, the
user's overrides and their precedence, bad price files, the arithmetic on a known
plan (every expected figure computed here from the table, by hand), and ``plan
--json`` on a local → S3 (moto) manifest with a storage class and a lifecycle rule.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from datamove.cost.counts import (
    GB,
    KIB,
    MIB,
    CopyCounter,
    read_requests,
    stored_size,
    write_requests,
)
from datamove.cost.estimate import Side, Tier, estimate
from datamove.cost.table import PriceFileError, load_prices
from datamove.manifest.checks import S3_STORAGE_CLASSES
from datamove.tiers import GCS_TIERS
from tests.conftest import cli, last_json, s3_location, write_manifest

# --- the shipped table ---------------------------------------------------------------


def test_the_shipped_table_prices_every_class_each_store_writes() -> None:
    table = load_prices()
    s3 = table.provider("s3").region("us-east-1").classes
    assert set(S3_STORAGE_CLASSES) - set(s3) == {"REDUCED_REDUNDANCY"}  # deprecated class
    assert set(table.provider("gcs").region("us-central1").classes) == set(GCS_TIERS)
    assert set(table.provider("azure").region("eastus").classes) == {
        "Hot", "Cool", "Cold", "Archive"}
    assert table.provider("local").region("anywhere").classes["disk"].storage == 0
    assert table.as_of and table.currency == "USD"
    # Colder is cheaper to keep and dearer to read, in every priced region.
    for name, provider in table.providers.items():
        for region in provider.regions.values():
            classes = list(region.classes.values())
            if name == "local":
                continue
            storage = [c.storage for c in classes]
            assert storage == sorted(storage, reverse=True), name
            assert all(c.min_days in (0, 30, 90, 180, 365) for c in classes)
    text = (Path(__file__).parent.parent / "datamove/cost/prices.yaml").read_text()
    assert "list price" in text and "as of" in text and "ESTIMATES" in text


def test_the_price_table_ships_with_the_package() -> None:
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"datamove.cost" = ["prices.yaml"]' in pyproject


# --- arithmetic -----------------------------------------------------------------------


def test_request_counts_follow_the_writers() -> None:
    part = 16 * MIB
    assert write_requests("s3", 100, part) == 1  # one PutObject
    assert write_requests("s3", part - 1, part) == 1
    assert write_requests("s3", part, part) == 3  # create + 1 part + complete
    assert write_requests("s3", 40 * MIB, part) == 3 + 2
    # 200 GiB in 16 MiB parts would be 12,800 parts: S3 allows 10,000, so the
    # writer grows the part to 21 MiB (20.48 rounded up to a MiB).
    assert write_requests("s3", 200 * GB, part) == math.ceil(200 * GB / (21 * MIB)) + 2
    assert write_requests("gcs", part, part) == 1  # one upload up to a part
    assert write_requests("gcs", 40 * MIB, part) == 1 + 3  # session + chunks
    assert write_requests("azure", 40 * MIB, part) == 3 + 1  # blocks + block list
    assert write_requests("local", 40 * MIB, part) == 1
    assert read_requests(0) == 1 and read_requests(4 * MIB) == 1
    assert read_requests(4 * MIB + 1) == 2
    # age: header estimate, nonce, one 16-byte tag per started 64 KiB chunk
    assert stored_size(100_000, encrypted=True) == 100_000 + 256 + 16 + 2 * 16
    assert stored_size(0, encrypted=True) == 256 + 16 + 16
    assert stored_size(100_000, encrypted=False) == 100_000


def test_a_known_plan_is_priced_by_hand() -> None:
    """S3 us-east-1 → S3 eu-central-1 STANDARD_IA, verify: full, then GLACIER after 90d."""
    table = load_prices()
    part = 16 * MIB
    counter = CopyCounter(destination="s3", part_size=part, verify_full=True,
                          min_sizes=(128 * KIB,))
    small, mid, big, current = 100 * KIB, 10 * MIB, 40 * MIB, 1 * MIB
    for size in (small, mid, big):
        counter.add("copy", size, at_source=True, at_destination=False)
    counter.add("skip", current, at_source=True, at_destination=True)
    counter.add("extra", 5 * MIB, at_source=False, at_destination=True)

    cost = estimate(counter, table, Side("s3", "us-east-1"),
                    Side("s3", "eu-central-1", "STANDARD_IA"),
                    [Tier("90d", Side("", storage_class="GLACIER"))]).to_dict()

    src = table.provider("s3").region("us-east-1")
    dst = table.provider("s3").region("eu-central-1")
    ia, glacier = dst.classes["STANDARD_IA"], dst.classes["GLACIER"]
    copied = small + mid + big
    held = copied + current
    # storage: the 100 KiB object is billed as 128 KiB
    storage = (held + (128 - 100) * KIB) / GB * ia.storage
    # writes: 2 PutObjects, and 40 MiB = create + 3 parts + complete
    writes = (1 + 1 + 5) / 1000 * ia.write
    # GETs at the source: 4 MiB blocks: 1 + 3 + 10
    gets = 14 / 1000 * src.classes["STANDARD"].read
    # one listing page on each side, at each bucket's STANDARD write price
    lists = 1 / 1000 * src.classes["STANDARD"].write + 1 / 1000 * dst.classes["STANDARD"].write
    # verify: full reads every copy back: GETs and the IA retrieval fee
    readback = 14 / 1000 * ia.read
    retrieval = copied / GB * ia.retrieval
    egress = copied / GB * src.inter_region  # leaves us-east-1 for another AWS region
    one_time = writes + gets + lists + readback + retrieval + egress

    assert cost["objects_to_copy"] == 3 and cost["bytes_to_copy"] == copied
    assert cost["stored_bytes"] == held
    assert cost["destination"] == {"provider": "s3", "region": "eu-central-1",
                                   "class": "STANDARD_IA", "region_from": "declared"}
    assert cost["requests"]["destination_writes"] == 7
    assert cost["requests"]["source_reads"] == 14
    assert cost["requests"]["destination_reads"] == 14
    assert (cost["requests"]["source_lists"], cost["requests"]["destination_lists"]) == (1, 1)
    assert cost["storage_monthly"] == pytest.approx(storage, abs=1e-6)
    assert cost["requests"]["cost"] == pytest.approx(writes + gets + lists + readback, abs=1e-6)
    assert cost["retrieval"] == pytest.approx(retrieval, abs=1e-6)
    assert cost["egress"] == {"bytes": copied, "kind": "inter_region",
                              "cost": pytest.approx(egress, abs=1e-6)}
    assert cost["one_time"] == pytest.approx(one_time, abs=1e-6)
    assert cost["total"] == pytest.approx(one_time + storage, abs=1e-6)
    [tier] = cost["tiers"]
    # GLACIER bills 40 KB of index data per object and has no minimum size
    assert tier["storage_monthly"] == pytest.approx(
        (held + 4 * 40 * KIB) / GB * glacier.storage, abs=1e-6)
    assert tier["move"] == pytest.approx(4 / 1000 * glacier.write, abs=1e-6)
    assert (tier["class"], tier["region"], tier["min_days"]) == ("GLACIER", "eu-central-1", 90)
    assert cost["missing"] == [] and cost["notes"] == []


def test_transfers_are_priced_by_where_the_bytes_go() -> None:
    table = load_prices()
    counter = CopyCounter(destination="gcs", part_size=16 * MIB)
    counter.add("copy", 3 * GB, at_source=True, at_destination=False)
    s3 = table.provider("s3").region("us-east-1")

    to_gcs = estimate(counter, table, Side("s3", "us-east-1"), Side("gcs", "us-central1"))
    assert to_gcs.egress == {"bytes": 3 * GB, "kind": "internet",
                             "cost": pytest.approx(3 * s3.egress_internet)}
    same_region = estimate(counter, table, Side("s3", "us-east-1"), Side("s3", "us-east-1"))
    assert same_region.egress["kind"] == "none" and same_region.egress["cost"] == 0
    to_disk = estimate(counter, table, Side("s3", "us-east-1"), Side("local"))
    assert to_disk.egress["kind"] == "internet"
    assert to_disk.storage_monthly == 0
    # a host in the bucket's region (DATAMOVE_LOCAL_REGION) reads it without egress
    in_region = estimate(counter, table, Side("s3", "us-east-1"),
                         Side("local", host_region="us-east-1"))
    assert in_region.egress["kind"] == "none"
    from_disk = estimate(counter, table, Side("local"), Side("s3", "eu-west-1"))
    assert from_disk.egress["kind"] == "none"


def test_a_move_to_a_cold_location_is_priced_there_and_on_the_way() -> None:
    """S3 us-east-1 STANDARD → after 1y, a GCS ARCHIVE bucket: a month there, and
    moving: a write per object there, GETs here, and the bytes out to the internet."""
    table = load_prices()
    counter = CopyCounter(destination="s3", part_size=16 * MIB)
    for _ in range(10):
        counter.add("copy", 100 * MIB, at_source=True, at_destination=False)
    cold = Side("gcs", "europe-west4", "ARCHIVE")

    cost = estimate(counter, table, Side("local"), Side("s3", "us-east-1"),
                    [Tier("365d", cold, moved=True, url="gs://cold/x/")]).to_dict()

    s3 = table.provider("s3").region("us-east-1")
    archive = table.provider("gcs").region("europe-west4").classes["ARCHIVE"]
    [tier] = cost["tiers"]
    assert tier["location"] == "gs://cold/x/" and tier["min_days"] == 365
    assert tier["storage_monthly"] == pytest.approx(1000 * MIB / GB * archive.storage,
                                                    abs=1e-6)
    assert tier["move"] == pytest.approx(
        10 / 1000 * archive.write + 10 / 1000 * s3.classes["STANDARD"].read
        + 1000 * MIB / GB * s3.egress_internet, abs=1e-6)


def test_what_the_table_lacks_is_named_not_guessed() -> None:
    table = load_prices()
    counter = CopyCounter(destination="s3", part_size=16 * MIB)
    counter.add("copy", GB, at_source=True, at_destination=False)

    far = estimate(counter, table, Side("local"), Side("s3", "ap-south-2"))
    assert far.storage_monthly is None and far.total is None
    assert far.missing == ["no price for s3 region ap-south-2"]
    sftp = estimate(counter, table, Side("local"), Side("sftp"))
    assert sftp.total is None and sftp.missing[0].startswith("no price for sftp")
    # An unknown region is priced as the table's default, and said so.
    unknown = estimate(counter, table, Side("local"), Side("s3", None, region_from="unknown"))
    assert unknown.storage_monthly == pytest.approx(
        table.provider("s3").region("us-east-1").classes["STANDARD"].storage)
    assert "region unknown: priced as us-east-1" in unknown.notes[0]


def test_the_counter_holds_counts_not_the_listing() -> None:
    counter = CopyCounter(destination="s3", part_size=16 * MIB, min_sizes=(128 * KIB,))
    for i in range(200_000):
        counter.add("copy" if i % 2 else "skip", i % (256 * KIB), True, bool(i % 2 == 0))
    assert counter.held_objects == 200_000 and counter.copy_objects == 100_000
    assert list(counter.shortfall) == [128 * KIB]  # one total per minimum size
    assert all(isinstance(v, int) for v in vars(counter).values()
               if not isinstance(v, (str, tuple, dict)))


# --- overrides ------------------------------------------------------------------------


def test_a_price_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("providers:\n  s3:\n    regions:\n      us-east-1:\n"
                    "        classes:\n          STANDARD: {storage: 0.5}\n"
                    "      ap-south-1:\n        egress_internet: 0.1093\n"
                    "        inter_region: 0.086\n        classes:\n"
                    "          STANDARD: {storage: 0.025, write: 0.005, read: 0.0004}\n")
    shipped = load_prices()
    table = load_prices([str(mine)])
    east = table.provider("s3").region("us-east-1")
    assert east.classes["STANDARD"].storage == 0.5
    assert east.classes["STANDARD"].write == shipped.provider("s3").region(
        "us-east-1").classes["STANDARD"].write
    # us-west-2 shares us-east-1's figures in the shipped file (a YAML alias): it keeps them
    assert table.provider("s3").region("us-west-2").classes["STANDARD"].storage == 0.023
    assert table.provider("s3").region("ap-south-1").classes["STANDARD"].storage == 0.025
    assert table.files == ("datamove/cost/prices.yaml", str(mine))


def local_plan(tmp_path: Path, **top: object) -> Path:
    (tmp_path / "src").mkdir(parents=True)
    (tmp_path / "src" / "a.bin").write_bytes(b"x" * 3000)
    return write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": "./src/"}, "destination": {"url": "./dst/"}}], **top)


def disk_price(path: Path, storage: float) -> Path:
    path.write_text('providers:\n  local:\n    regions:\n      "*":\n        classes:\n'
                    f"          disk: {{storage: {storage}}}\n")
    return path


def test_manifest_prices_then_the_option_win_in_that_order(tmp_path: Path) -> None:
    disk_price(tmp_path / "team.yaml", 2.0)
    disk_price(tmp_path / "today.yaml", 3.0)
    manifest = local_plan(tmp_path, prices="team.yaml")  # relative to the manifest

    shipped = last_json(cli("plan", str(local_plan(tmp_path / "x")), "--json").stdout)
    by_manifest = last_json(cli("plan", str(manifest), "--json").stdout)
    by_option = last_json(cli("plan", str(manifest), "--json", "--prices",
                              str(tmp_path / "today.yaml")).stdout)

    assert shipped["datasets"]["d"]["cost"]["storage_monthly"] == 0
    assert by_manifest["datasets"]["d"]["cost"]["storage_monthly"] == pytest.approx(
        3000 / GB * 2.0, abs=1e-6)
    assert by_option["datasets"]["d"]["cost"]["storage_monthly"] == pytest.approx(
        3000 / GB * 3.0, abs=1e-6)


def test_the_example_price_file_in_the_docs_loads(tmp_path: Path) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "COST.md").read_text()
    [example] = [b for b in re.findall(r"```yaml\n(.*?)```", docs, re.DOTALL)
                 if "providers:" in b]
    (tmp_path / "prices.yaml").write_text(example)
    table = load_prices([str(tmp_path / "prices.yaml")])
    assert table.provider("s3").region("us-east-1").classes["STANDARD"].storage == 0.021
    assert table.provider("sftp").region("anywhere").classes["disk"].storage == 0.005


BAD_FILES = [
    ("providers:\n  s3:\n    regions:\n      us-east-1:\n        classes:\n"
     "          STANDARD: {storage: cheap}\n",
     "{f}:6: providers.s3.regions.us-east-1.classes.STANDARD.storage: must be a number of "
     "at least 0 (a price in the table's currency), got 'cheap'"),
    ("providers:\n  s3:\n    regions:\n      us-east-1:\n        classes:\n"
     "          STANDARD: {storage: -1}\n",
     "{f}:6: providers.s3.regions.us-east-1.classes.STANDARD.storage: must be a number of "
     "at least 0"),
    ("providers:\n  aws:\n    default_region: us-east-1\n",
     "{f}:2: providers.aws: unknown provider 'aws'; one of s3, gcs, azure, local"),
    ("providers:\n  s3:\n    regions:\n      us-east-1:\n        classes:\n"
     "          STANDARD-IA: {storage: 0.01}\n",
     "{f}:6: providers.s3.regions.us-east-1.classes.STANDARD-IA: unknown s3 storage class "
     "'STANDARD-IA'; one of STANDARD, STANDARD_IA"),
    ("providers:\n  s3:\n    regions:\n      us-east-1:\n        classes:\n"
     "          STANDARD: {storage: 0.01, price: 2}\n",
     "{f}:6: providers.s3.regions.us-east-1.classes.STANDARD.price: unknown key; one of "
     "storage, write, read"),
    ("providers:\n  s3:\n    regions:\n      ap-south-1:\n        egress_internet: 0.1\n"
     "        inter_region: 0.08\n        classes:\n          STANDARD: {storage: 0.025}\n",
     "{f}:8: providers.s3.regions.ap-south-1.classes.STANDARD: missing write, read (a class "
     "needs storage, write and read)"),
    ("providers:\n  s3:\n    default_class: STANDARD_IAX\n",
     "{f}:3: providers.s3.default_class: 'STANDARD_IAX' is not priced in its default region"),
    ("providers: [s3\n", "{f}:2:1: YAML syntax error"),
    ("- s3\n", "{f}:1: (top level): a price file is a mapping"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_a_bad_price_file_is_refused_naming_file_line_and_entry(
        tmp_path: Path, text: str, expected: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(PriceFileError) as caught:
        load_prices([str(bad)])
    assert expected.format(f=bad) in str(caught.value)
    assert str(caught.value).startswith(f"{bad}: invalid price file")


def test_the_cli_refuses_a_bad_or_missing_price_file_with_exit_2(tmp_path: Path) -> None:
    manifest = local_plan(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  gcs:\n    regions:\n      us-central1:\n"
                   "        egress_internet: lots\n")

    refused = cli("plan", str(manifest), "--prices", str(bad))
    missing = cli("plan", str(local_plan(tmp_path / "m2", prices="nowhere.yaml")), "--json")

    assert refused.returncode == 2
    assert (f"{bad}:5: providers.gcs.regions.us-central1.egress_internet: must be a number "
            "of at least 0") in refused.stderr
    assert "Traceback" not in refused.stderr
    assert missing.returncode == 2
    assert f"{tmp_path / 'm2' / 'nowhere.yaml'}: file not found" in missing.stderr
    assert last_json(missing.stdout)["exit_code"] == 2
    assert not (tmp_path / "dst").exists()


# --- plan on a real store --------------------------------------------------------------


def test_plan_json_prices_a_local_to_s3_copy_with_a_class_and_a_lifecycle_rule(
        tmp_path: Path, moto_server) -> None:
    source = tmp_path / "src"
    source.mkdir()
    sizes = {"small.bin": 10 * KIB, "big.bin": 20 * MIB + 5}
    for name, size in sizes.items():
        (source / name).write_bytes(b"\0" * size)
    bucket = moto_server.new_bucket()
    destination = {**s3_location(moto_server, bucket), "storage_class": "STANDARD_IA"}
    manifest = write_manifest(tmp_path / "m.yaml", [
        {"name": "d", "source": {"url": str(source)}, "destination": destination,
         "lifecycle": [{"after": "90d", "tier": "GLACIER"}]}])

    result = cli("plan", str(manifest), "--json")

    assert result.returncode == 0, result.stderr
    cost = last_json(result.stdout)["datasets"]["d"]["cost"]
    table = load_prices().provider("s3").region("us-east-1")
    ia, glacier = table.classes["STANDARD_IA"], table.classes["GLACIER"]
    total = sum(sizes.values())
    assert cost["destination"] == {"provider": "s3", "region": "us-east-1",
                                   "class": "STANDARD_IA", "region_from": "discovered"}
    assert (cost["objects_to_copy"], cost["bytes_to_copy"]) == (2, total)
    # 10 KiB is billed as IA's 128 KiB minimum
    storage = (total + 118 * KIB) / GB * ia.storage
    assert cost["storage_monthly"] == pytest.approx(storage, abs=1e-6)
    # 10 KiB: one PutObject; 20 MiB + 5 in 16 MiB parts: create + 2 parts + complete
    assert cost["requests"]["destination_writes"] == 1 + 4
    requests = 5 / 1000 * ia.write + 1 / 1000 * table.classes["STANDARD"].write  # + its list
    assert cost["requests"]["cost"] == pytest.approx(requests, abs=1e-6)
    assert cost["egress"] == {"bytes": 0, "kind": "none", "cost": 0.0}  # from a local disk
    assert cost["total"] == pytest.approx(requests + storage, abs=1e-6)
    [tier] = cost["tiers"]
    assert (tier["after"], tier["class"], tier["min_days"]) == ("90d", "GLACIER", 90)
    assert tier["storage_monthly"] == pytest.approx(
        (total + 2 * 40 * KIB) / GB * glacier.storage, abs=1e-6)
    assert cost["missing"] == []

    text = cli("plan", str(manifest))
    assert text.returncode == 0, text.stderr
    assert "estimated cost (USD, list prices as of" in text.stdout
    assert "dataset d: s3 us-east-1 STANDARD_IA" in text.stdout
    assert "dataset d: after 90d in s3 us-east-1 GLACIER: <$0.0001/month" in text.stdout
    assert "billed at least 90 days" in text.stdout
