"""The price table: the one shipped with datamove, with the user's files merged on.

``prices.yaml`` beside this module holds public list prices (its header says
from where and as of when). A user's file has the same shape and names only
what it changes: each file is merged onto the table before it, key by key, so
``{providers: {s3: {regions: {us-east-1: {egress_internet: 0.05}}}}}`` changes
one figure and keeps the rest. Files are merged in the order given (the
manifest's ``prices:``, then ``--prices``: docs/COST.md).

Every problem names the file, the line and the entry, and all of them are
reported at once (exit 2), like a manifest's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from datamove.errors import BadInput, ManifestError
from datamove.manifest.checks import S3_STORAGE_CLASSES
from datamove.manifest.yaml_source import (
    compose,
    construct,
    dotted,
    finish,
    index_lines,
    line_for,
    read_limited,
    shown_value,
    yaml_error,
)
from datamove.redact import Path_
from datamove.tiers import GCS_TIERS

SHIPPED = "datamove/cost/prices.yaml"
"""How the shipped table is named in messages."""

PROVIDERS = ("s3", "gcs", "azure", "local", "sftp", "fsspec")
"""Store backends by name (stores/base.py); a price file prices these."""

AZURE_TIERS = ("Hot", "Cool", "Cold", "Archive")
_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "s3": S3_STORAGE_CLASSES, "gcs": tuple(GCS_TIERS), "azure": AZURE_TIERS}

ANY_REGION = "*"

_PRICE = "price"  # a number >= 0 in the table's currency
_DAYS = "days"  # a whole number >= 0
_TEXT = "text"
_CLASS_FIELDS = {"storage": _PRICE, "write": _PRICE, "read": _PRICE, "retrieval": _PRICE,
                 "monitoring": _PRICE, "min_object_kb": _PRICE, "overhead_kb": _PRICE,
                 "min_days": _DAYS}
_CLASS_REQUIRED = ("storage", "write", "read")
_REGION_FIELDS = {"egress_internet": _PRICE, "inter_region": _PRICE, "classes": "classes"}
_PROVIDER_FIELDS = {"default_region": _TEXT, "default_class": _TEXT, "regions": "regions"}
_TOP_FIELDS = {"as_of": _TEXT, "currency": _TEXT, "providers": "providers"}


class PriceFileError(BadInput):
    """A price file that cannot be read or used; ``problems`` lists each one."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        header = (f"{path}: invalid price file ({len(problems)} "
                  f"problem{'s' * (len(problems) != 1)}); see docs/COST.md")
        super().__init__("\n".join([header, *(f"  {p}" for p in problems)]))


@dataclass(frozen=True)
class ClassPrice:
    """What one storage class costs in one region (units: prices.yaml's header)."""

    storage: float  # per GB-month
    write: float  # per 1,000 PUT/COPY/POST/LIST (and multipart) requests
    read: float  # per 1,000 GET requests
    retrieval: float = 0.0  # per GB read back
    monitoring: float = 0.0  # per 1,000 objects a month (S3 Intelligent-Tiering)
    min_object_kb: float = 0.0  # billed as at least this size
    overhead_kb: float = 0.0  # billed on top of each object (S3 Glacier index data)
    min_days: int = 0  # billed for at least this long


@dataclass(frozen=True)
class RegionPrice:
    egress_internet: float  # per GB out to the internet (or another provider)
    inter_region: float  # per GB to another region of the same provider
    classes: dict[str, ClassPrice]


@dataclass(frozen=True)
class ProviderPrice:
    default_region: str
    default_class: str
    regions: dict[str, RegionPrice]  # lower-case names; "*" for any other region

    def region(self, name: str) -> RegionPrice | None:
        """The prices of region ``name`` (case ignored), else the "*" entry, else None."""
        return self.regions.get(name.lower()) or self.regions.get(ANY_REGION)


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    currency: str
    providers: dict[str, ProviderPrice]
    files: tuple[str, ...]  # what was merged, in order: the shipped table first

    def provider(self, name: str) -> ProviderPrice | None:
        return self.providers.get(name)


def load_prices(files: list[str] | tuple[str, ...] = ()) -> PriceTable:
    """The shipped table with ``files`` merged onto it in order; PriceFileError
    (exit 2) naming file, line and entry for anything wrong."""
    shipped = resources.files("datamove.cost").joinpath("prices.yaml").read_text("utf-8")
    layers = [_read(shipped, SHIPPED)]
    for path in files:
        try:
            raw = read_limited(path)
        except FileNotFoundError:
            raise PriceFileError(path, [f"{path}: file not found; check the path"]) from None
        except OSError as exc:
            raise PriceFileError(path, [f"{path}: cannot read: {exc.strerror}"]) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PriceFileError(path, [f"{path}: not UTF-8 text; save it as UTF-8"]) from None
        layers.append(_read(text, path))
    merged: dict[str, Any] = {}
    origin: dict[Path_, str] = {}  # where each entry was last set: "file:line"
    for data, lines, shown in layers:
        merged = _merge(merged, data, (), lines, shown, origin)
    return _build(merged, origin, tuple(shown for _, _, shown in layers))


def _read(text: str, shown: str) -> tuple[dict[str, Any], dict[Path_, int], str]:
    """One file's data and the line of every entry, its shape checked."""
    try:
        root = compose(text, shown, "a price file")
    except ManifestError as exc:  # size and nesting limits
        raise PriceFileError(shown, exc.problems) from None
    except yaml.YAMLError as exc:
        raise PriceFileError(shown, [yaml_error(exc, shown)]) from None
    if not isinstance(root, yaml.MappingNode):
        raise PriceFileError(shown, [f"{shown}:1: (top level): a price file is a mapping "
                                     "(as_of, currency, providers); see docs/COST.md"])
    try:
        lines, problems = index_lines(root, shown)
        data = construct(root)
    except ManifestError as exc:  # recursive aliases, alias bombs
        raise PriceFileError(shown, exc.problems) from None
    except yaml.YAMLError as exc:  # e.g. a list used as a key, or an unknown tag
        raise PriceFileError(shown, [yaml_error(exc, shown)]) from None
    problems += _shape(data, (), _TOP_FIELDS, lines, shown)
    if problems:
        raise PriceFileError(shown, finish(problems))
    return data, lines, shown


def _shape(value: Any, at: Path_, fields: dict[str, str], lines: dict[Path_, int],
           shown: str) -> list[tuple[int, str]]:
    """Problems with a mapping of ``fields`` (each a kind, or a nested section)."""

    def problem(loc: Path_, what: str) -> tuple[int, str]:
        line = line_for(loc, lines)
        return line, f"{shown}:{line}: {dotted(loc)}: {what}"

    if not isinstance(value, dict):
        return [problem(at, f"must be a mapping, got {shown_value(value)}")]
    out = []
    for key, item in value.items():
        loc = (*at, key)
        kind = fields.get(key)
        if kind is None:
            out.append(problem(loc, f"unknown key; one of {', '.join(fields)}"))
        elif kind == _PRICE and not _is_price(item):
            out.append(problem(loc, f"must be a number of at least 0 (a price in the "
                                    f"table's currency), got {shown_value(item)}"))
        elif kind == _DAYS and not (type(item) is int and item >= 0):
            out.append(problem(loc, f"must be a whole number of days of at least 0, got "
                                    f"{shown_value(item)}"))
        elif kind == _TEXT and not (isinstance(item, str) and item.strip()):
            out.append(problem(loc, f"must be text, got {shown_value(item)}"))
        elif kind in ("providers", "regions", "classes"):
            if not isinstance(item, dict):
                out.append(problem(loc, f"must be a mapping, got {shown_value(item)}"))
                continue
            for name, sub in item.items():
                name_problem = _name_problem(kind, str(name), at)
                if name_problem:
                    out.append(problem((*loc, name), name_problem))
                    continue
                inner = {"providers": _PROVIDER_FIELDS, "regions": _REGION_FIELDS,
                         "classes": _CLASS_FIELDS}[kind]
                out += _shape(sub, (*loc, name), inner, lines, shown)
    return out


def _name_problem(kind: str, name: str, at: Path_) -> str | None:
    if kind == "providers" and name not in PROVIDERS:
        return f"unknown provider {name!r}; one of {', '.join(PROVIDERS)}"
    if kind == "classes":
        provider = str(at[1]) if len(at) > 1 else ""
        known = _CLASS_NAMES.get(provider)
        if known is not None and name not in known:
            return f"unknown {provider} storage class {name!r}; one of {', '.join(known)}"
    return None


def _is_price(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _merge(base: dict[str, Any], over: dict[str, Any], at: Path_, lines: dict[Path_, int],
           shown: str, origin: dict[Path_, str]) -> dict[str, Any]:
    """``over`` merged onto ``base`` into a new mapping (YAML aliases share
    mappings, which must not change together)."""
    out = dict(base)
    for key, value in over.items():
        loc = (*at, key)
        origin[loc] = f"{shown}:{line_for(loc, lines)}"
        if isinstance(value, dict):
            below = out.get(key) if isinstance(out.get(key), dict) else {}
            out[key] = _merge(below, value, loc, lines, shown, origin)
        else:
            out[key] = value
    return out


def _build(data: dict[str, Any], origin: dict[Path_, str], files: tuple[str, ...],
           ) -> PriceTable:
    """The merged table, checked complete: what a new entry lacks is named where
    the entry was written."""
    problems: list[str] = []

    def missing(loc: Path_, what: str) -> None:
        where = origin.get(loc) or origin.get(loc[:-1]) or files[-1]
        problems.append(f"{where}: {dotted(loc)}: {what}")

    providers: dict[str, ProviderPrice] = {}
    for name, spec in (data.get("providers") or {}).items():
        regions: dict[str, RegionPrice] = {}
        for region_name, region in (spec.get("regions") or {}).items():
            loc = ("providers", name, "regions", region_name)
            classes = {}
            for class_name, figures in (region.get("classes") or {}).items():
                absent = [f for f in _CLASS_REQUIRED if f not in figures]
                if absent:
                    missing((*loc, "classes", class_name),
                            f"missing {', '.join(absent)} (a class needs storage, write and "
                            "read)")
                    continue
                classes[class_name] = ClassPrice(**figures)
            absent = [f for f in ("egress_internet", "inter_region") if f not in region]
            if absent:
                missing(loc, f"missing {', '.join(absent)} (a region needs egress_internet "
                             "and inter_region)")
                continue
            if not classes and not region.get("classes"):
                missing(loc, "has no classes")
                continue
            regions[str(region_name).lower()] = RegionPrice(
                float(region["egress_internet"]), float(region["inter_region"]), classes)
        loc = ("providers", name)
        absent = [f for f in ("default_region", "default_class") if f not in spec]
        if absent:
            missing(loc, f"missing {', '.join(absent)}")
            continue
        provider = ProviderPrice(spec["default_region"], spec["default_class"], regions)
        default = provider.region(provider.default_region)
        if default is None:
            missing((*loc, "default_region"),
                    f"{provider.default_region!r} is not one of its regions")
        elif provider.default_class not in default.classes:
            missing((*loc, "default_class"),
                    f"{provider.default_class!r} is not priced in its default region "
                    f"{provider.default_region}")
        providers[name] = provider
    if problems:
        raise PriceFileError(files[-1] if len(files) > 1 else SHIPPED, problems)
    return PriceTable(str(data.get("as_of", "")), str(data.get("currency", "USD")),
                      providers, files)
