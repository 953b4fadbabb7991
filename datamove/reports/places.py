"""Which country (or jurisdiction) a cloud region is in, for the residency map.

A reading aid only: the residency *judgement* is on region names, by the
policies' ``regions`` globs (policy/regions.py). Readers of a residency report
think in countries ("did anything leave the EU?"), so the map names the
country of the regions it knows: AWS, Google Cloud and Azure region codes,
and their multi-regions. A region not listed here is shown by name alone.
"""

from __future__ import annotations

_AWS = {
    "us-east-1": "United States", "us-east-2": "United States", "us-west-1": "United States",
    "us-west-2": "United States", "ca-central-1": "Canada", "ca-west-1": "Canada",
    "sa-east-1": "Brazil", "mx-central-1": "Mexico",
    "eu-west-1": "Ireland", "eu-west-2": "United Kingdom", "eu-west-3": "France",
    "eu-central-1": "Germany", "eu-central-2": "Switzerland", "eu-north-1": "Sweden",
    "eu-south-1": "Italy", "eu-south-2": "Spain",
    "ap-northeast-1": "Japan", "ap-northeast-2": "South Korea", "ap-northeast-3": "Japan",
    "ap-southeast-1": "Singapore", "ap-southeast-2": "Australia", "ap-southeast-3": "Indonesia",
    "ap-southeast-4": "Australia", "ap-southeast-5": "Malaysia", "ap-southeast-7": "Thailand",
    "ap-south-1": "India", "ap-south-2": "India", "ap-east-1": "Hong Kong",
    "me-south-1": "Bahrain", "me-central-1": "United Arab Emirates", "il-central-1": "Israel",
    "af-south-1": "South Africa", "cn-north-1": "China", "cn-northwest-1": "China",
}
_GCP = {
    "us": "United States (multi-region)", "eu": "European Union (multi-region)",
    "asia": "Asia (multi-region)", "nam4": "United States", "eur4": "Netherlands and Finland",
    "europe-west1": "Belgium", "europe-west2": "United Kingdom", "europe-west3": "Germany",
    "europe-west4": "Netherlands", "europe-west6": "Switzerland", "europe-west8": "Italy",
    "europe-west9": "France", "europe-west10": "Germany", "europe-west12": "Italy",
    "europe-north1": "Finland", "europe-central2": "Poland", "europe-southwest1": "Spain",
    "northamerica-northeast1": "Canada", "northamerica-northeast2": "Canada",
    "southamerica-east1": "Brazil", "asia-east1": "Taiwan", "asia-east2": "Hong Kong",
    "asia-northeast1": "Japan", "asia-northeast2": "Japan", "asia-northeast3": "South Korea",
    "asia-south1": "India", "asia-south2": "India", "asia-southeast1": "Singapore",
    "asia-southeast2": "Indonesia", "australia-southeast1": "Australia",
    "australia-southeast2": "Australia", "me-west1": "Israel", "me-central1": "Qatar",
    "africa-south1": "South Africa",
}
_AZURE = {
    "westeurope": "Netherlands", "northeurope": "Ireland", "germanywestcentral": "Germany",
    "francecentral": "France", "uksouth": "United Kingdom", "ukwest": "United Kingdom",
    "swedencentral": "Sweden", "switzerlandnorth": "Switzerland", "norwayeast": "Norway",
    "polandcentral": "Poland", "italynorth": "Italy", "spaincentral": "Spain",
    "eastus": "United States", "eastus2": "United States", "westus": "United States",
    "westus2": "United States", "westus3": "United States", "centralus": "United States",
    "canadacentral": "Canada", "brazilsouth": "Brazil", "japaneast": "Japan",
    "australiaeast": "Australia", "southeastasia": "Singapore", "centralindia": "India",
}
_COUNTRIES = {**_AWS, **_GCP, **_AZURE}


def country_of(region: str | None) -> str | None:
    """The country a region code is in, or None when datamove does not know it."""
    if not region:
        return None
    code = region.strip().lower()
    if code in _COUNTRIES:
        return _COUNTRIES[code]
    if code.startswith("us-gov-"):
        return "United States (GovCloud)"
    if code.startswith("us-"):  # the other Google Cloud US regions: us-central1, us-east4, …
        return "United States"
    return None
