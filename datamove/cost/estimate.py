"""A dataset's cost estimate: the plan's counts priced by the price table.

Pure arithmetic on a :class:`~datamove.cost.counts.CopyCounter` and a
:class:`~datamove.cost.table.PriceTable`; nothing here talks to a store. What
is counted, and what is not, is in docs/COST.md. A figure the table has no
price for is None and named in ``missing`` ("no price for ..."): an estimate
says what it does not know rather than guess it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datamove.cost.counts import GB, KIB, CopyCounter, list_requests
from datamove.cost.table import ClassPrice, PriceTable, RegionPrice


@dataclass(frozen=True)
class Side:
    """A place data is priced at: a provider (a store backend's name), its
    region and storage class (None: the table's defaults), and for a local
    disk the host's region (DATAMOVE_LOCAL_REGION), which makes a transfer from
    a store in the same region free."""

    provider: str
    region: str | None = None
    storage_class: str | None = None
    region_from: str = "declared"  # declared | discovered | unknown
    host_region: str | None = None


@dataclass(frozen=True)
class Tier:
    """Where a lifecycle rule moves a dataset's objects: a class changed in place,
    or a cold location (``moved``: the objects travel there)."""

    after: str  # "30d"
    side: Side
    moved: bool = False
    url: str | None = None  # the cold location, when the objects move there


@dataclass
class Priced:
    """A side's prices, or why there are none."""

    side: Side
    region: str
    prices: ClassPrice | None
    region_prices: RegionPrice | None
    missing: str | None
    note: str | None = None

    @property
    def storage_class(self) -> str:
        return self.side.storage_class or ""


def price_side(table: PriceTable, side: Side) -> Priced:
    """The prices of ``side``: its class in its region. An unknown region is
    priced as the provider's default region (and said so); a named region or
    class the table lacks is missing."""
    provider = table.provider(side.provider)
    if provider is None:
        return Priced(side, side.region or "?", None, None,
                      f"no price for {side.provider} (add it with --prices)")
    note = None
    region = side.region
    if side.provider == "local":
        region = provider.default_region
    elif region is None:
        region = provider.default_region
        note = (f"{side.provider} region unknown: priced as {region}, the table's default "
                "(declare region: to price it exactly)")
    storage_class = side.storage_class or provider.default_class
    side = Side(side.provider, region, storage_class, side.region_from, side.host_region)
    prices = provider.region(region)
    if prices is None:
        return Priced(side, region, None, None,
                      f"no price for {side.provider} region {region}", note)
    figures = prices.classes.get(storage_class)
    if figures is None:
        return Priced(side, region, None, prices,
                      f"no price for {side.provider} {storage_class} in {region}", note)
    return Priced(side, region, figures, prices, None, note)


def transfer_kind(source: Priced, destination: Priced) -> str:
    """What moving bytes from ``source`` to ``destination`` is billed as:
    ``none`` (from a disk, or within a region), ``inter_region`` (between regions
    of one provider) or ``internet`` (to another provider, or to a disk outside
    the source's region)."""
    src, dst = source.side, destination.side
    if src.provider == "local":
        return "none"
    if dst.provider == "local":
        host = (dst.host_region or "").lower()
        return "none" if host and host == source.region.lower() else "internet"
    if src.provider == dst.provider:
        same = source.region.lower() == destination.region.lower()
        return "none" if same else "inter_region"
    return "internet"


def monthly_storage(prices: ClassPrice, counts: CopyCounter) -> float:
    """A month of the dataset's objects in a class: bytes as billed (small objects
    raised to the class's minimum size, index data added), plus monitoring."""
    minimum = int(prices.min_object_kb * KIB)
    billed = counts.held_bytes + counts.shortfall.get(minimum, 0) if minimum else \
        counts.held_bytes
    billed += counts.held_objects * prices.overhead_kb * KIB
    return billed / GB * prices.storage + counts.monitored_objects / 1000 * prices.monitoring


def _per_1000(requests: int, price: float) -> float:
    return requests / 1000 * price


@dataclass
class DatasetCost:
    """One dataset's estimate; ``to_dict`` is its ``cost`` in ``plan --json``."""

    currency: str
    as_of: str
    objects: int
    bytes: int
    stored_bytes: int
    destination: dict[str, Any]
    storage_monthly: float | None
    requests: dict[str, Any]
    retrieval: float | None
    egress: dict[str, Any]
    one_time: float | None
    total: float | None
    tiers: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency, "prices_as_of": self.as_of,
            "objects_to_copy": self.objects, "bytes_to_copy": self.bytes,
            "stored_bytes": self.stored_bytes, "destination": self.destination,
            "storage_monthly": _money(self.storage_monthly),
            "requests": {k: _money(v) if k == "cost" else v for k, v in self.requests.items()},
            "retrieval": _money(self.retrieval),
            "egress": {k: _money(v) if k == "cost" else v for k, v in self.egress.items()},
            "one_time": _money(self.one_time), "total": _money(self.total),
            "tiers": [{k: _money(v) if k in ("storage_monthly", "move") else v
                       for k, v in t.items()} for t in self.tiers],
            "missing": self.missing, "notes": self.notes,
        }


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _sum(*parts: float | None) -> float | None:
    return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)


def estimate(counts: CopyCounter, table: PriceTable, source: Side, destination: Side,
             tiers: list[Tier] | tuple[Tier, ...] = ()) -> DatasetCost:
    """Price one dataset's plan.

    - storage: a month of everything the destination holds once the run is done
      (copied and already up to date), in the destination's class;
    - requests: the copy's writes at the destination, GETs and listings at the
      source, listings (and ``verify: full`` read-backs) at the destination;
    - retrieval: reading copies back from a class that charges for it;
    - egress: the bytes read from the source, when they leave its region;
    - one_time = requests + retrieval + egress; total = one_time + storage (the
      copy and its first month);
    - tiers: for each lifecycle rule, a month in the class (or cold location) it
      moves the objects to, and the one-time cost of moving them.
    """
    src, dst = price_side(table, source), price_side(table, destination)
    missing = [p.missing for p in (src, dst) if p.missing]
    notes = [p.note for p in (src, dst) if p.note]
    src_list = _list_price(table, src)
    storage = monthly_storage(dst.prices, counts) if dst.prices else None
    writes = (_per_1000(counts.write_requests, dst.prices.write) if dst.prices else None)
    reads = (_per_1000(counts.source_reads, src.prices.read) if src.prices else None)
    src_lists = list_requests(src.side.provider, counts.source_keys)
    dst_lists = list_requests(dst.side.provider, counts.destination_keys)
    lists = _sum(_per_1000(src_lists, src_list) if src_list is not None else None,
                 _per_1000(dst_lists, _list_price(table, dst) or 0.0) if dst.prices else None)
    dst_reads = (_per_1000(counts.destination_reads, dst.prices.read) if dst.prices else None)
    request_cost = _sum(writes, reads, lists, dst_reads)
    retrieval = (counts.destination_read_bytes / GB * dst.prices.retrieval
                 if dst.prices else None)
    kind = transfer_kind(src, dst)
    egress = _egress(src, kind, counts.source_read_bytes)
    one_time = _sum(request_cost, retrieval, egress)
    priced_tiers = [_tier(table, counts, dst, tier, missing) for tier in tiers]
    return DatasetCost(
        currency=table.currency, as_of=table.as_of, objects=counts.copy_objects,
        bytes=counts.copy_bytes, stored_bytes=counts.held_bytes,
        destination={"provider": dst.side.provider, "region": dst.region,
                     "class": dst.storage_class, "region_from": dst.side.region_from},
        storage_monthly=storage,
        requests={"destination_writes": counts.write_requests,
                  "source_reads": counts.source_reads, "source_lists": src_lists,
                  "destination_lists": dst_lists,
                  "destination_reads": counts.destination_reads, "cost": request_cost},
        retrieval=retrieval,
        egress={"bytes": counts.source_read_bytes if kind != "none" else 0, "kind": kind,
                "cost": egress},
        one_time=one_time, total=_sum(one_time, storage), tiers=priced_tiers,
        missing=list(dict.fromkeys(missing)), notes=list(dict.fromkeys(notes)))


def _list_price(table: PriceTable, priced: Priced) -> float | None:
    """Listing requests are billed at the bucket's standard write price, whatever
    class the objects are in."""
    if priced.region_prices is None:
        return None
    provider = table.provider(priced.side.provider)
    default = provider.default_class if provider else ""
    figures = priced.region_prices.classes.get(default) or priced.prices
    return figures.write if figures else None


def _egress(source: Priced, kind: str, size: int) -> float | None:
    if kind == "none":
        return 0.0
    if source.region_prices is None:
        return None
    rate = (source.region_prices.inter_region if kind == "inter_region"
            else source.region_prices.egress_internet)
    return size / GB * rate


def _tier(table: PriceTable, counts: CopyCounter, current: Priced, tier: Tier,
          missing: list[str]) -> dict[str, Any]:
    """A lifecycle rule's target: a month there, and moving every object once
    (a write per object in the target class, reading them out of the current
    class, and the transfer when a cold location is elsewhere)."""
    side = tier.side
    if not tier.moved:  # a class changed in place: same store and region
        side = Side(current.side.provider, current.region, side.storage_class,
                    current.side.region_from, current.side.host_region)
    target = price_side(table, side)
    if target.missing:
        missing.append(target.missing)
    storage = monthly_storage(target.prices, counts) if target.prices else None
    move: float | None = None
    if target.prices:
        move = _per_1000(counts.held_objects, target.prices.write)
        if tier.moved:
            read = current.prices
            move = _sum(move, (_per_1000(counts.held_objects, read.read)
                               + counts.held_bytes / GB * read.retrieval) if read else None,
                        _egress(current, transfer_kind(current, target), counts.held_bytes))
    return {"after": tier.after, "provider": target.side.provider, "region": target.region,
            "class": target.storage_class, "location": tier.url,
            "storage_monthly": storage, "move": move,
            "min_days": target.prices.min_days if target.prices else None}
