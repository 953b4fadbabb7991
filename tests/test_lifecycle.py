"""Lifecycle rules: durations, which rule is due, manifest checks at file:line, and
`datamove schedule` (next runs, crontab line)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from datamove.commands.schedule import schedule
from datamove.errors import BadInput, ManifestError
from datamove.manifest.model import LifecycleRule, load_manifest
from datamove.tiers import (
    S3_TIERS,
    due,
    minimum_duration_warning,
    parse_duration,
    small_object_warning,
)
from tests.conftest import cli, write_manifest


@pytest.mark.parametrize("text, seconds", [
    ("90d", 90 * 86400), ("12h", 43200), ("2w", 14 * 86400), ("30m", 1800), ("45s", 45),
    (" 7d ", 7 * 86400)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["90", "d", "1.5d", "-3d", "3 days", "", "3y"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(text)


def test_due_picks_the_longest_age_passed():
    rules = [LifecycleRule(after="30d", tier="STANDARD_IA"),
             LifecycleRule(after="90d", tier="GLACIER"),
             LifecycleRule(after="10d", since="modified", tier="STANDARD_IA")]
    now = datetime(2027, 6, 1, tzinfo=UTC)
    copied = now - timedelta(days=40)
    assert due(rules, copied, None, now) == 0
    assert due(rules, now - timedelta(days=100), None, now) == 1
    assert due(rules, now - timedelta(days=5), now - timedelta(days=11), now) == 2
    assert due(rules, now - timedelta(days=5), None, now) is None
    assert due(rules, None, None, now) is None


def test_charges_are_explained():
    assert "128 KiB" in small_object_warning(S3_TIERS["STANDARD_IA"], 1000)
    assert small_object_warning(S3_TIERS["GLACIER"], 1000) is None
    assert small_object_warning(S3_TIERS["STANDARD_IA"], 200_000) is None
    warning = minimum_duration_warning(S3_TIERS["GLACIER"], timedelta(days=20))
    assert "90 days" in warning and "20 days" in warning
    assert minimum_duration_warning(S3_TIERS["GLACIER"], timedelta(days=95)) is None


BAD_RULES = [
    ({"after": "30d"}, "give either tier"),
    ({"after": "30d", "tier": "GLACIER", "location": {"url": "/cold"}}, "give either tier"),
    ({"after": "30q", "tier": "GLACIER"}, "must be a duration"),
    ({"after": "30d", "tier": "COLDLINE"}, "unknown s3 storage class 'COLDLINE'"),
    ({"after": "30d", "tier": "GLACIER", "since": "created"}, "since"),
    ({"after": "30d", "tier": "GLACIER", "column": "day"}, "only applies to datasets with"),
    ({"after": "30d", "location": {"url": "s3://b/dst/old/"}}, "inside the destination"),
    ({"after": "30d", "location": {"url": "nope://x/"}}, "unknown storage scheme"),
    ({"after": "30d", "location": {"url": "s3://c/x/", "storage_class": "GLACIERX"}},
     "unknown S3 storage class 'GLACIERX'"),
    ({"after": "30d", "location": {"url": "/cold", "storage_class": "GLACIER"}},
     "only S3 cold locations have a storage class"),
]


@pytest.mark.parametrize("rule, message", BAD_RULES)
def test_bad_rules_are_reported_at_their_line(tmp_path, rule, message):
    path = write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": {"url": str(tmp_path)}, "destination": {"url": "s3://b/dst/"},
        "lifecycle": [rule]}])
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    text = str(err.value)
    assert message in text and "datasets[0].lifecycle[0]" in text
    assert f"{path}:" in text


def test_rules_must_get_colder_and_local_stores_need_a_location(tmp_path):
    path = write_manifest(tmp_path / "m.yaml", [
        {"name": "s3", "source": {"url": str(tmp_path)}, "destination": {"url": "s3://b/x/"},
         "lifecycle": [{"after": "30d", "tier": "GLACIER"},
                       {"after": "90d", "tier": "STANDARD_IA"},
                       {"after": "30d", "tier": "DEEP_ARCHIVE"}]},
        {"name": "local", "source": {"url": str(tmp_path / "a")},
         "destination": {"url": str(tmp_path / "b")},
         "lifecycle": [{"after": "30d", "tier": "GLACIER"}]}])
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    text = str(err.value)
    assert "warmer STANDARD_IA" in text
    assert "is the same age as lifecycle[0]" in text
    assert "local stores have no storage classes" in text


def test_schedule_lists_next_runs_and_a_crontab_line(tmp_path):
    path = write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": {"url": str(tmp_path / "a")},
        "destination": {"url": str(tmp_path / "b")}}], schedule="30 2 * * 1")
    result = schedule(load_manifest(path), count=3,
                      after=datetime(2027, 3, 3, 12, 0, tzinfo=UTC))  # a Wednesday
    assert [t.isoformat() for t in result.next_runs] == [
        "2027-03-08T02:30:00+00:00", "2027-03-15T02:30:00+00:00", "2027-03-22T02:30:00+00:00"]
    assert result.crontab.startswith("30 2 * * 1 cd ")
    assert f" archive {path}" in result.crontab
    printed = cli("schedule", str(path), "--json")
    assert printed.returncode == 0 and '"crontab"' in printed.stdout


def test_schedule_errors(tmp_path):
    path = write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": {"url": str(tmp_path / "a")},
        "destination": {"url": str(tmp_path / "b")}}])
    with pytest.raises(BadInput, match="has no schedule"):
        schedule(load_manifest(path))
    assert cli("schedule", str(path)).returncode == 2
    bad = write_manifest(tmp_path / "bad.yaml", [{
        "name": "d", "source": {"url": str(tmp_path / "a")},
        "destination": {"url": str(tmp_path / "b")}}], schedule="every day")
    result = cli("schedule", str(bad))
    assert result.returncode == 2 and "must be a cron expression" in result.stderr


def test_archive_bad_input_is_exit_2(tmp_path):
    path = write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": {"url": str(tmp_path / "a")},
        "destination": {"url": str(tmp_path / "b")},
        "lifecycle": [{"after": "1d", "location": {"url": str(tmp_path / "cold")}}]}],
        ledger=str(tmp_path / "ledger"))
    bad_time = cli("archive", str(path), "--now", "next tuesday")
    assert bad_time.returncode == 2 and "ISO 8601" in bad_time.stderr
    empty = cli("archive", str(path))
    assert empty.returncode == 2 and "run `datamove run` first" in empty.stderr
    assert not (tmp_path / "cold").exists() and not (tmp_path / "ledger").exists()


def test_one_cold_location_per_dataset_and_no_class_change_after_it(tmp_path):
    path = write_manifest(tmp_path / "m.yaml", [{
        "name": "d", "source": {"url": str(tmp_path)}, "destination": {"url": "s3://b/x/"},
        "lifecycle": [{"after": "30d", "location": {"url": "s3://cold/a/", "format": "delta"}},
                      {"after": "60d", "location": {"url": "/cold/b"}},
                      {"after": "90d", "tier": "GLACIER"},
                      ]}])
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    text = str(err.value)
    assert "lifecycle[0].location.format: does not apply to a cold location" in text
    assert "lifecycle[1].location: one cold location per dataset" in text
    assert "lifecycle[2].tier: comes after the move to lifecycle[0]'s cold location" in text
    since = write_manifest(tmp_path / "since.yaml", [{
        "name": "d", "source": {"url": str(tmp_path)}, "destination": {"url": "s3://b/x/"},
        "lifecycle": [{"after": "120d", "tier": "DEEP_ARCHIVE", "since": "created"}]}])
    with pytest.raises(ManifestError, match=r"lifecycle\[0\]\.since: must be copied"):
        load_manifest(since)
