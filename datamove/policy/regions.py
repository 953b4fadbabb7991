"""Where a location's bytes live: the declared region, and the one the store reports.

Residency rules are only as good as the region they are checked against. A
manifest may *declare* a region (``LocationSpec.region``), but a declaration is
a claim, and a typo or a stale manifest would make a residency policy pass for
data that lands elsewhere. So the region is also *discovered* from the store
whenever it can be:

- S3 (and S3-compatible stores): ``GetBucketLocation`` through the location's
  own s3fs client, so credentials and endpoint come from the same provider chain
  the copy uses. An empty ``LocationConstraint`` means us-east-1 and the legacy
  ``EU`` means eu-west-1 (AWS's documented meanings).
- GCS: the bucket resource's ``location`` through gcsfs (``EUROPE-WEST4``, or a
  multi-region such as ``EU``), answered in lower case.
- Azure Blob: the blob API has no call that names an account's region (the
  account's ``location`` is an Azure Resource Manager property, which needs a
  subscription and management credentials a data mover should not hold), so
  the region is *declared* (``region:`` in the manifest) and reported as not
  confirmed; docs/BACKENDS.md.
- Local paths (and ``memory://``, which lives in this process): the host's
  region from ``DATAMOVE_LOCAL_REGION``, else unknown. A disk has no API to
  ask, so the operator configures it once per host; without it, a declared
  region is used as declared (and said to be unconfirmed).

Anything else, or a discovery that fails (a missing bucket, no permission for
GetBucketLocation), leaves the region *unknown*; the reason is kept in
``RegionFacts.source`` so a policy decision can say why. The judgements and
their wording live here too (``declaration_check``, ``residency_check``);
policy/rules.py turns them into decisions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fnmatch import fnmatchcase

from datamove.manifest.model import Manifest
from datamove.stores.core import Location, describe

LOCAL_REGION_ENV = "DATAMOVE_LOCAL_REGION"
DECLARED = "declared"
"""``RegionFacts.source`` when nothing was discovered (discovery not attempted)."""

_NO_REGION_API = {"azure": ("unknown: Azure Blob has no API that names an account's region "
                             "(it is an Azure Resource Manager property); declare region: in "
                             "the manifest")}


@dataclass(frozen=True)
class RegionFacts:
    """What is known about one location's region, and how it was learnt.

    ``source`` says where ``discovered`` came from (``s3 GetBucketLocation``,
    ``gcs bucket location``, ``env DATAMOVE_LOCAL_REGION``, ...), or, when
    ``discovered`` is None, why nothing was (``unknown: ...``) or that discovery
    was not attempted (``declared``).
    """

    declared: str | None
    discovered: str | None
    source: str

    @classmethod
    def declared_only(cls, region: str | None) -> RegionFacts:
        """Facts for a location nobody asked the store about (tests, offline checks)."""
        return cls(declared=region, discovered=None, source=DECLARED)

    @property
    def effective(self) -> str | None:
        """The region residency rules judge: what the store says beats a claim."""
        return self.discovered or self.declared

    @property
    def how(self) -> str:
        """Where ``effective`` came from, for explanations."""
        if self.discovered or not self.declared:
            return self.source
        if self.source == DECLARED:
            return DECLARED
        return f"declared, not confirmed: {self.source.removeprefix('unknown: ')}"

    @property
    def mismatch(self) -> bool:
        """A declaration the store contradicts. Case is ignored: GCS answers in
        upper case (``EUROPE-WEST4``) what a manifest writes in lower case."""
        return bool(self.declared and self.discovered
                    and self.declared.strip().lower() != self.discovered.strip().lower())

    def declaration_check(self, side: str) -> tuple[bool, str] | None:
        """Is the declared region where the store says the location is? None when
        there is nothing to compare (no declaration, or nothing discovered)."""
        if not (self.declared and self.discovered):
            return None
        if self.mismatch:
            return False, (f"declared region {self.declared} but the {side} is in "
                           f"{self.discovered} [{self.source}]; correct {side}.region, or "
                           f"choose a {side} in {self.declared}")
        return True, f"declared region {self.declared} [{self.source}]"

    def residency_check(self, allowed: list[str]) -> tuple[bool, str]:
        """Is the effective region one of the ``allowed`` globs? Unknown is not."""
        region = self.effective
        if region is None:
            why = "" if self.source == DECLARED else f"; {self.source.removeprefix('unknown: ')}"
            return False, f"region unknown (declare it or make it discoverable){why}"
        ok = matches_any(region, allowed)
        return ok, (f"destination region {region} is {'' if ok else 'not '}allowed "
                    f"(allowed: {', '.join(allowed)}) [{self.how}]")


def matches_any(value: str, patterns: list[str]) -> bool:
    """fnmatch globs, ignoring case: region names (GCS answers upper case) and the
    labels policies select on are not case-sensitive facts."""
    return any(fnmatchcase(value.lower(), p.lower()) for p in patterns)


def discover(location: Location) -> RegionFacts:
    """Ask the store where ``location`` is; never raises for a store that will not say.

    A failure to discover is a fact about the location, not an error of the
    check: the policy decides what an unknown region means (a ``regions:`` rule
    is violated; a declared region is then used as is).
    """
    declared = location.region
    backend = location.backend
    if backend.region_is_host:
        region, source = local_region()
        return RegionFacts(declared, region, source)
    what = backend.region_source
    if what is None:
        return RegionFacts(declared, None, _NO_REGION_API.get(
            backend.name, f"unknown: datamove cannot discover the region of {location.protocol}://"))
    try:
        region = backend.region(location)
    except Exception as exc:  # the store's own words, minus anything signed
        return RegionFacts(declared, None, f"unknown: {what} failed: {describe(exc)}")
    return RegionFacts(declared, region, what if region else
                       f"unknown: the {backend.name.upper()} bucket has no location")


def local_region() -> tuple[str | None, str]:
    """The host's region for local paths and where that came from (None: unknown)."""
    configured = os.environ.get(LOCAL_REGION_ENV, "").strip()
    if configured:
        return configured, f"env {LOCAL_REGION_ENV}"
    return None, (f"unknown: a local path has no discoverable region; set {LOCAL_REGION_ENV} "
                  "on this host")


def discover_all(locations: list[Location]) -> list[RegionFacts]:
    """``discover`` for many locations, asking each store once per bucket.

    Datasets often share buckets; the region is a property of the bucket, so one
    GetBucketLocation answers for every prefix in it. Declared regions still
    differ per location and are kept per location.
    """
    found: dict[tuple[str, str, str], RegionFacts] = {}
    out = []
    for location in locations:
        if location.backend.region_is_host:
            key = (location.protocol, "", "")
        else:
            # repr: option values may be mappings (client_kwargs), which do not hash.
            key = (location.protocol, location.bucket_and_prefix()[0], repr(location.options))
        if key not in found:
            found[key] = discover(location)
        facts = found[key]
        out.append(RegionFacts(location.region, facts.discovered, facts.source))
    return out


def discover_manifest(manifest: Manifest, datasets: list[str] | None = None,
                      ) -> dict[tuple[str, str], RegionFacts]:
    """Facts for every dataset's source and destination, keyed (name, side), as
    ``policy.evaluate`` takes them; ``datasets`` limits it to the ones named."""
    keys, locations = [], []
    for ds in manifest.datasets:
        if datasets is not None and ds.name not in datasets:
            continue
        for side in ("source", "destination"):
            spec = getattr(ds, side)
            keys.append((ds.name, side))
            locations.append(Location.of(spec.url, spec.options, spec.region))
        for j, rule in enumerate(ds.lifecycle):  # cold locations hold the data too
            if rule.location is not None:
                keys.append((ds.name, f"lifecycle[{j}]"))
                locations.append(Location.of(rule.location.url, rule.location.options,
                                             rule.location.region))
    return dict(zip(keys, discover_all(locations), strict=True))
