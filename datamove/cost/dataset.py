"""One dataset's cost, counted while ``plan`` streams it: where it is priced, what
it counts, and the estimate at the end.

Where a location is priced: its provider is its store backend; its region is
the declared one, else the one the store reports (policy/regions.py: S3
GetBucketLocation, the GCS bucket's location), else unknown (then priced as the
table's default region, and said so). A local disk is free; the host's region
(DATAMOVE_LOCAL_REGION) only tells whether a copy from a store is a transfer
within that store's region.
"""

from __future__ import annotations

from datamove.cost.counts import KIB, CopyCounter
from datamove.cost.estimate import DatasetCost, Side, Tier, estimate, price_side
from datamove.cost.table import PriceTable
from datamove.manifest.model import DatasetSpec, EngineSpec, LifecycleRule, VerifyMode
from datamove.pipeline.march import DatasetJob, PlanItem
from datamove.policy.regions import discover, local_region
from datamove.stores.core import Location
from datamove.tiers import format_duration


def side_of(location: Location, storage_class: str | None = None) -> Side:
    """How ``location`` is priced: its provider, region (and where that came from)
    and class. Asks the store for its region only when none is declared."""
    provider = location.backend.name
    host = local_region()[0] if location.backend.region_is_host else None
    if location.region:
        return Side(provider, location.region, storage_class, "declared", host)
    if location.backend.region_is_host:
        return Side(provider, None, storage_class, "host", host)
    found = discover(location).discovered
    return Side(provider, found, storage_class, "discovered" if found else "unknown", host)


class DatasetCosting:
    """Counts one dataset's planned objects; ``estimate`` prices them."""

    def __init__(self, job: DatasetJob, spec: DatasetSpec, engine: EngineSpec,
                 table: PriceTable):
        self.table = table
        self.source = side_of(job.source)
        self.destination = side_of(job.destination, job.storage_class)
        self.tiers = [tier_of(rule) for rule in spec.lifecycle]
        min_sizes = set()
        for side in [self.destination] + [t.side for t in self.tiers if t.moved] + [
                Side(self.destination.provider, self.destination.region, t.side.storage_class)
                for t in self.tiers if not t.moved]:
            prices = price_side(table, side).prices
            if prices is not None and prices.min_object_kb:
                min_sizes.add(int(prices.min_object_kb * KIB))
        self.counter = CopyCounter(destination=self.destination.provider,
                                   part_size=engine.part_size,
                                   encrypted=job.encryption is not None,
                                   verify_full=job.verify == VerifyMode.full,
                                   min_sizes=tuple(sorted(min_sizes)))

    def add(self, item: PlanItem) -> None:
        self.counter.add(item.action.value, item.size, item.source is not None,
                         item.destination is not None)

    def estimate(self) -> DatasetCost:
        return estimate(self.counter, self.table, self.source, self.destination, self.tiers)


def tier_of(rule: LifecycleRule) -> Tier:
    """Where a lifecycle rule puts the objects: a class changed in place, or a cold
    location they move to."""
    after = format_duration(rule.after)
    if rule.location is None:
        return Tier(after, Side("", storage_class=rule.tier))
    cold = Location.of(rule.location.url, rule.location.options, rule.location.region)
    return Tier(after, side_of(cold, rule.location.storage_class), moved=True,
                url=rule.location.url)
