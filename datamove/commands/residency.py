"""Where the copies live: ``datamove audit residency MANIFEST``.

For every object the ledger says is done, the region its copy lives in, judged
against the policies' ``regions`` rules that select its dataset. The region of
a copy is what its store says now (S3 GetBucketLocation, asked once per bucket;
see regions.py), else the region declared when it was copied (the ledger's
``region`` column). A copy outside every region a rule allows is a violation,
named with the rule; a copy whose region cannot be told is a violation too,
since residency that cannot be shown is not residency.

The copies are found from the ledger, not by listing the stores: an object
copied to a destination the manifest no longer names still counts, under the
URL it was written to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import pyarrow.compute as pc

from datamove.ledger.tables import DELETED, DONE_STATUSES, OBJECTS
from datamove.manifest.model import Manifest
from datamove.pipeline.jobs import ledger_of
from datamove.policy.regions import RegionFacts, discover, matches_any
from datamove.policy.rules import Rule, find_policy_files, load_policies
from datamove.stores.core import Location

EXIT_OK, EXIT_VIOLATIONS = 0, 1


@dataclass(frozen=True)
class CopyResidency:
    """One object's copy: where it is and what the rules say about it."""

    dataset: str
    key: str
    destination_url: str
    region: str | None
    how: str  # where the region came from
    violations: tuple[str, ...]  # ids of the rules it breaks
    checked: tuple[str, ...]  # ids of the regions rules that judged it


@dataclass
class ResidencyReport:
    manifest: str
    copies: list[CopyResidency] = field(default_factory=list)

    @property
    def violations(self) -> list[CopyResidency]:
        return [c for c in self.copies if c.violations]

    @property
    def exit_code(self) -> int:
        return EXIT_VIOLATIONS if self.violations else EXIT_OK

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per dataset: copies per region, and how many break a rule."""
        out: dict[str, dict[str, Any]] = {}
        for copy in self.copies:
            ds = out.setdefault(copy.dataset, {"copies": 0, "regions": Counter(),
                                               "violations": 0, "rules": set()})
            ds["copies"] += 1
            ds["regions"][copy.region or "unknown"] += 1
            ds["violations"] += bool(copy.violations)
            ds["rules"].update(copy.checked)
        return {name: {**ds, "regions": dict(ds["regions"]), "rules": sorted(ds["rules"])}
                for name, ds in out.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "datasets": self.summary(),
                "copies": [asdict(c) for c in self.copies],
                "violations": len(self.violations), "exit_code": self.exit_code}

    def render(self, out: TextIO) -> None:
        out.write(f"residency of manifest {self.manifest}\n")
        for name, ds in self.summary().items():
            regions = ", ".join(f"{r}: {n:,}" for r, n in sorted(ds["regions"].items()))
            rules = ", ".join(ds["rules"]) or "no regions rule selects it"
            out.write(f"\n{name}: {ds['copies']:,} copies ({regions}); rules: {rules}; "
                      f"{ds['violations']:,} outside the allowed regions\n")
        for copy in self.copies:
            verdict = ("VIOLATES " + ", ".join(copy.violations) if copy.violations
                       else "ok" if copy.checked else "unchecked")
            out.write(f"  {copy.dataset}/{copy.key}  {copy.region or 'unknown'} "
                      f"[{copy.how}]  {verdict}\n")
        out.write(f"\n{len(self.violations):,} of {len(self.copies):,} copies outside the "
                  f"allowed regions (exit {self.exit_code})\n")


def residency(manifest: Manifest, policies: list[str] | None = None, *,
              datasets: list[str] | None = None) -> ResidencyReport:
    """Every recorded copy of the manifest's datasets, with its region and verdict."""
    rules = load_policies(find_policy_files(manifest, policies))
    ledger = ledger_of(manifest)
    report = ResidencyReport(manifest.name)
    if ledger.table(OBJECTS) is None:
        return report
    regions = _RegionCache()
    for spec in manifest.datasets:
        if datasets and spec.name not in datasets:
            continue
        applying = [r for r in rules if r.spec.require.regions is not None
                    and r.spec.match.selects(spec)]
        options = spec.destination.options  # how to reach the store (endpoint, ...)
        for row in _latest_copies(ledger, spec.name):
            facts = regions.of(row["destination_url"], row["region"], options)
            report.copies.append(_judge(spec.name, row, facts, applying))
    return report


def _judge(dataset: str, row: dict[str, Any], facts: RegionFacts,
           rules: list[Rule]) -> CopyResidency:
    region = facts.effective
    broken = tuple(r.spec.id for r in rules
                   if region is None or not matches_any(region, r.spec.require.regions or []))
    return CopyResidency(dataset, row["key"], row["destination_url"], region, facts.how,
                         broken, tuple(r.spec.id for r in rules))


def _latest_copies(ledger: Any, dataset: str) -> Iterator[dict[str, Any]]:
    """The latest done row per key of ``dataset``, any destination, key order; none for
    a key whose latest row is ``deleted`` (``sync --delete``: no copy is left)."""
    where = (pc.field("dataset") == dataset) & \
        pc.field("status").isin([*DONE_STATUSES, DELETED])
    rows = ledger.objects(where, ["key", "destination_url", "region", "recorded_at",
                                  "status"])
    rows = rows.sort_by([("key", "ascending"), ("recorded_at", "descending")])
    previous = None
    for batch in rows.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            if row["key"] != previous:
                previous = row["key"]
                if row["status"] != DELETED:
                    yield row


class _RegionCache:
    """Discover each bucket (or local root) once; copies share their store's answer."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str | None], RegionFacts] = {}

    def of(self, url: str, declared: str | None, options: dict[str, Any]) -> RegionFacts:
        scheme, _, rest = url.partition("://")
        root = f"{scheme}://{rest.split('/', 1)[0]}/" if rest else "/"
        if (root, declared) not in self._found:
            location = Location.of(root, options if rest else None, declared)
            self._found[root, declared] = discover(location)
        return self._found[root, declared]
