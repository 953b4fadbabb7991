"""Lifecycle rules: which tier an object belongs in, and when.

A dataset's ``lifecycle`` rules (docs/MANIFEST.md, "Lifecycle") each say "after
this age, move to that tier". The age counts from when datamove copied the
object (``since: copied``, the default) or from the source's modification time
(``since: modified``). Tiers are storage classes changed in place (S3, GCS) or a
cold location, any fsspec URL, for stores without classes.

This module holds the pure part: durations, the tiers each store knows with
their minimum storage durations and object sizes, and which rule is due. Moving
objects is ``commands/archive.py``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhdw])\s*$")


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``2w``, ``30m``, ``45s`` (one number and one unit)."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"must be a duration such as 90d, 12h, 2w, 30m or 45s; got {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Tier:
    """A storage class and what the store charges for leaving or filling it early."""

    name: str
    min_days: int = 0  # billed for at least this long, even if moved or deleted sooner
    min_size: int = 0  # billed as at least this many bytes
    needs_restore: bool = False  # unreadable until an archive restore completes
    rank: int = 0  # colder is higher; moving to a warmer class is not a lifecycle step


S3_TIERS = {t.name: t for t in (
    Tier("STANDARD", rank=0),
    Tier("INTELLIGENT_TIERING", rank=1),
    Tier("STANDARD_IA", min_days=30, min_size=128 * 1024, rank=2),
    Tier("ONEZONE_IA", min_days=30, min_size=128 * 1024, rank=2),
    Tier("GLACIER_IR", min_days=90, min_size=128 * 1024, rank=3),
    Tier("GLACIER", min_days=90, needs_restore=True, rank=4),
    Tier("DEEP_ARCHIVE", min_days=180, needs_restore=True, rank=5),
)}
GCS_TIERS = {t.name: t for t in (
    Tier("STANDARD", rank=0),
    Tier("NEARLINE", min_days=30, rank=1),
    Tier("COLDLINE", min_days=90, rank=2),
    Tier("ARCHIVE", min_days=365, rank=3),
)}


def needs_restore(storage_class: str | None) -> bool:
    """Objects in this class cannot be read until an archive restore completes."""
    tier = S3_TIERS.get(storage_class or "")
    return tier is not None and tier.needs_restore


class RuleLike(Protocol):
    after: timedelta
    since: str  # "copied" | "modified"


def due(rules: Sequence[RuleLike], copied_at: datetime | None, modified_at: datetime | None,
        now: datetime) -> int | None:
    """The index of the rule an object is due for, or None.

    The due rule is the one with the longest ``after`` the object has passed (so
    with 30d → STANDARD_IA and 90d → GLACIER, a 100-day-old object goes straight
    to GLACIER).
    """
    best: int | None = None
    for i, rule in enumerate(rules):
        start = copied_at if rule.since == "copied" else modified_at
        if start is None or now - start < rule.after:
            continue
        if best is None or rule.after >= rules[best].after:
            best = i
    return best


def small_object_warning(tier: Tier, size: int) -> str | None:
    """Why moving this object to ``tier`` may cost more than it saves, or None."""
    if tier.min_size and size < tier.min_size:
        return (f"{size} bytes is under {tier.name}'s minimum billable size of "
                f"{tier.min_size // 1024} KiB: it is charged as {tier.min_size // 1024} KiB")
    return None


def minimum_duration_warning(previous: Tier | None, held_for: timedelta) -> str | None:
    """Leaving a class before its minimum storage duration is billed as if it stayed."""
    if previous is None or not previous.min_days:
        return None
    if held_for < timedelta(days=previous.min_days):
        return (f"leaves {previous.name} after {held_for.days} days, before its minimum "
                f"storage duration of {previous.min_days} days (charged as if it stayed)")
    return None
