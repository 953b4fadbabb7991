"""Bounded waits for every store client, so a dead endpoint is an error, not a hang.

Left to their defaults the clients wait too long to notice: botocore's legacy
retries spend about ten seconds per request on a refused connection, gcsfs
sends requests with no timeout at all (``requests_timeout=None`` turns
aiohttp's off), and the Azure SDK waits 300 s for a connection and backs off
15, 18 and 24 s. Every object also has datamove's own retries on top
(transfer.process_item), so these multiply. The defaults below keep one
request to seconds when the endpoint is gone (refused, reset, DNS) and to
``READ_TIMEOUT`` per silent read when it stalls. An option the manifest sets
explicitly (``config_kwargs`` for s3fs, ``requests_timeout`` for gcsfs,
``connection_timeout``/``read_timeout`` for adlfs) wins over these.
"""

from __future__ import annotations

from typing import Any

CONNECT_TIMEOUT = 10
"""Seconds to open a connection."""

READ_TIMEOUT = 30
"""Seconds without a byte from the store before a read fails (and is retried)."""

S3_ATTEMPTS = 3
"""botocore's attempts per request (standard mode: backoff with jitter, at most 20 s)."""

AZURE_BACKOFF = (1, 2)
"""Azure's first back-off and its growth base, in seconds (the SDK's: 15 and 3)."""


def client_options(protocol: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (a location's, from the manifest) with bounded-wait defaults added."""
    out = dict(options)
    if protocol in ("s3", "s3a"):
        config = {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT,
                  "retries": {"max_attempts": S3_ATTEMPTS, "mode": "standard"}}
        out["config_kwargs"] = {**config, **dict(options.get("config_kwargs") or {})}
    elif protocol in ("gs", "gcs") and "requests_timeout" not in options:
        import aiohttp

        out["requests_timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT,
                                                        sock_read=READ_TIMEOUT)
    elif protocol in ("az", "abfs", "abfss"):
        out.setdefault("connection_timeout", CONNECT_TIMEOUT)
        out.setdefault("read_timeout", READ_TIMEOUT)
    return out


def bound_azure(fs: Any, options: dict[str, Any]) -> None:
    """adlfs applies its timeouts only to its own calls; stores_azure also calls
    the SDK's service client directly. Give that client's transport and retry
    policy the same bounds (on fsspec's cached instance: idempotent)."""
    client = getattr(fs, "service_client", None)
    config = getattr(client, "_config", None)
    if config is None:
        return
    transport = getattr(config, "transport", None)
    connection = getattr(transport, "connection_config", None)
    if connection is not None:
        connection.timeout = options.get("connection_timeout", CONNECT_TIMEOUT)
        connection.read_timeout = options.get("read_timeout", READ_TIMEOUT)
    retry = getattr(config, "retry_policy", None)
    if retry is not None and hasattr(retry, "initial_backoff"):
        retry.initial_backoff, retry.increment_base = AZURE_BACKOFF
