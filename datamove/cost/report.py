"""``datamove plan``'s report: the plan's counts with each dataset's cost estimate.

A :class:`PlanReport` is a :class:`~datamove.pipeline.report.Report` that also
carries a :class:`~datamove.cost.estimate.DatasetCost` per dataset: ``--json``
gives it as each dataset's ``cost``, the text form as a second table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from datamove.cost.estimate import DatasetCost
from datamove.pipeline.report import Report, human_bytes


@dataclass
class PlanReport(Report):
    """A plan's report with cost estimates (docs/COST.md)."""

    costs: dict[str, DatasetCost] = field(default_factory=dict)

    def snapshot_fields(self) -> dict[str, Any]:
        """The typed report (pipeline/results.py) carries the costs: ``--json`` gives
        each as its dataset's ``cost``, the text form the table below."""
        costs = dict(self.costs)
        return {"costs": MappingProxyType(costs),
                "more": lambda console: render_costs(
                    console, {name: cost.to_dict() for name, cost in costs.items()})}


def money(value: float | None, currency: str = "USD") -> str:
    """``$12.34``; small amounts keep four decimals (``<$0.0001`` below that); None
    (no price) is ``n/a``."""
    if value is None:
        return "n/a"
    sign = "$" if currency == "USD" else f"{currency} "
    if value == 0:
        return f"{sign}0"
    if value < 0.0001:
        return f"<{sign}0.0001"
    return f"{sign}{value:,.4f}" if value < 0.01 else f"{sign}{value:,.2f}"


def render_costs(console: Any, costs: dict[str, dict[str, Any]]) -> None:
    """One row per dataset (``cost`` dicts as in ``plan --json``), then a line per
    lifecycle tier, then what has no price and what was assumed."""
    from rich.table import Table

    if not costs:
        return
    first = next(iter(costs.values()))
    currency = first["currency"]
    table = Table(title=f"estimated cost ({currency}, list prices as of "
                        f"{first['prices_as_of']}; docs/COST.md)", title_justify="left")
    for column in ("dataset", "objects", "bytes", "storage/month", "requests", "egress",
                   "total"):
        if column == "dataset":  # a long name folds; figures and headings stay whole
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for name, cost in costs.items():
        table.add_row(name, f"{cost['objects_to_copy']:,}", human_bytes(cost["bytes_to_copy"]),
                      money(cost["storage_monthly"], currency),
                      money(cost["requests"]["cost"], currency),
                      money(cost["egress"]["cost"], currency),
                      money(cost["total"], currency))
    console.print(table)
    for name, cost in costs.items():
        console.print(f"dataset {name}: {_where(cost['destination'])}"
                      f"{_egress(cost['egress'])}", markup=False, highlight=False)
        for tier in cost["tiers"]:
            held = f", billed at least {tier['min_days']} days" if tier["min_days"] else ""
            console.print(f"dataset {name}: after {tier['after']} in {_where(tier)}: "
                          f"{money(tier['storage_monthly'], currency)}/month{held}; moving "
                          f"there {money(tier['move'], currency)}",
                          markup=False, highlight=False)
        for line in cost["missing"] + cost["notes"]:
            console.print(f"dataset {name}: {line}", markup=False, highlight=False)
    console.print("total = requests + retrieval + egress of the copy, plus its first month "
                  "of storage; estimates from list prices, override them with --prices FILE",
                  markup=False, highlight=False)


def _where(side: dict[str, Any]) -> str:
    """``s3 us-east-1 STANDARD_IA``; a local disk is just ``local disk``."""
    region = "" if side["region"] == "*" else f" {side['region']}"
    return f"{side['provider']}{region} {side['class']}"


def _egress(egress: dict[str, Any]) -> str:
    if egress["kind"] == "none":
        return ""
    kind = "to another region" if egress["kind"] == "inter_region" else "out to the internet"
    return f"; {human_bytes(egress['bytes'])} {kind}"
