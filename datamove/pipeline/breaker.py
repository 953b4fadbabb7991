"""A per-dataset circuit breaker: stop a dataset whose endpoint is gone.

When a store dies mid-run every object after it fails the same way, each only
after its full round of retries; a run of a million objects would spend days
proving it object by object. The driver watches results instead: ``threshold``
objects in a row of one dataset that failed because their endpoint could not
be reached (refused, reset, timed out, name not resolved: see
connection.connection_endpoint), with no success in between, stop that dataset.
Other failures (a missing object, a checksum that differs) neither count nor
reset the streak; any success resets it. Other datasets go on.

A disk that is full (ENOSPC, EDQUOT: ``error_kind == "space"``) stops its
dataset at the first such failure: every later write to it would fail the same
way, each with its own warning, and a million of them tell an operator nothing
the first did not.
"""

from __future__ import annotations

from collections import Counter

from datamove.pipeline.march import DatasetJob
from datamove.pipeline.transfer import ObjectResult
from datamove.stores.core import Location

DEFAULT_THRESHOLD = 5


class CircuitBreaker:
    """Counts connection failures per dataset; says when a dataset must stop."""

    def __init__(self, threshold: int = DEFAULT_THRESHOLD):
        self.threshold = threshold
        self._streak: Counter[str] = Counter()
        self._endpoint: dict[str, str] = {}
        self.tripped: set[str] = set()

    def observe(self, job: DatasetJob, result: ObjectResult) -> str | None:
        """Account one result; the reason to stop ``job``'s dataset when this one
        trips it (once), else None."""
        name = job.name
        if name in self.tripped:
            return None
        if result.status != "failed":
            self._streak[name] = 0
            return None
        if result.error_kind == "space":
            self.tripped.add(name)
            return (f"stopped at a full disk: no space left to write to {job.destination.url} "
                    f"({result.error}); free space there and run again")
        if result.error_kind != "connection":
            return None
        self._streak[name] += 1
        self._endpoint[name] = result.endpoint or self._endpoint.get(name) or \
            endpoints_of(job)
        if self._streak[name] < self.threshold:
            return None
        self.tripped.add(name)
        return (f"stopped after {self._streak[name]} consecutive connection failures to "
                f"{self._endpoint[name]}")


def endpoints_of(job: DatasetJob) -> str:
    """The dataset's remote endpoints, when a failure did not name its own."""
    remote = [where for where in (job.source, job.destination) if not where.is_local]
    return " or ".join(endpoint_of(where) for where in remote) or "its stores"


def endpoint_of(location: Location) -> str:
    """A location's endpoint: its ``endpoint_url`` option if set, else its URL."""
    endpoint = dict(location.options).get("endpoint_url")
    return str(endpoint) if endpoint else location.url
