"""What a connection failure is, and how long one has lasted.

A store that cannot be reached (refused, reset, timed out, a name that does not
resolve) fails differently from one that answers "no": retrying the object
will not help once the endpoint is gone, and the driver's circuit breaker
(breaker.py) stops a dataset after a run of them. The exception types come
from several libraries (botocore, aiohttp under s3fs/gcsfs/adlfs, azure-core,
fsspec), often wrapped in one another, so they are recognised by name along
the chain of causes.
"""

from __future__ import annotations

import re
import socket
import threading
import time

_CONNECTION_ERRORS = {
    # botocore
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionClosedError", "ProxyConnectionError",
    # aiohttp (gcsfs, adlfs, aiobotocore underneath)
    "ClientConnectorError", "ClientConnectionError", "ServerDisconnectedError",
    "ServerTimeoutError", "ClientOSError", "ConnectionTimeoutError", "SocketTimeoutError",
    # azure-core; fsspec
    "ServiceRequestError", "ServiceResponseError", "FSTimeoutError",
}


def connection_endpoint(exc: BaseException) -> str | None:
    """If ``exc`` (or what it was raised from) says the store could not be reached
    (refused, reset, timed out, name not resolved), the endpoint, as
    ``scheme://host:port`` or ``host:port`` when known, else ""; None for any
    other failure. The circuit breaker counts these (pipeline/session.py, settle)."""
    seen: set[int] = set()
    endpoint, found = "", False
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {k.__name__ for k in type(current).__mro__}
        if isinstance(current, ConnectionError | TimeoutError | socket.gaierror) or \
                names & _CONNECTION_ERRORS:
            found = True
            endpoint = endpoint or _endpoint_of(current)
        current = current.__cause__ or \
            (None if current.__suppress_context__ else current.__context__)
    return endpoint if found else None


def _endpoint_of(exc: BaseException) -> str:
    url = (getattr(exc, "kwargs", None) or {}).get("endpoint_url")
    if isinstance(url, str):
        match = re.match(r"[a-z][a-z0-9+.-]*://[^/\s\"']+", url)
        if match:
            return match.group(0)
    host, port = getattr(exc, "host", None), getattr(exc, "port", None)
    if isinstance(host, str) and host:
        return f"{host}:{port}" if port else host
    match = re.search(r"https?://[^/\s\"']+", str(exc))
    return match.group(0) if match else ""


class Outages:
    """Since when, in this process, no attempt of a dataset has reached its endpoint.

    An object's retries ride out a short outage. When the endpoint is gone for
    good they only delay the news: every object in flight spends its whole
    round of retries (each attempt itself retried inside botocore or gcsfs)
    before failing, and the driver's circuit breaker (breaker.py) sees nothing
    until then. So once a dataset's attempts have failed to connect for
    ``TransferSettings.dead_after`` seconds without one success in between,
    its connection failures are no longer retried: objects fail at their next
    attempt and the breaker stops the dataset within seconds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}

    def failed(self, key: str) -> float:
        """Count a connection failure; seconds since the outage began."""
        now = time.monotonic()
        with self._lock:
            return now - self._since.setdefault(key, now)

    def ended(self, key: str) -> None:
        if key in self._since:
            with self._lock:
                self._since.pop(key, None)


OUTAGES = Outages()
