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
``connection_timeout``/``read_timeout`` for adlfs) wins over these. Each
backend applies them in its ``client_options`` (s3.py, gcs.py, azure.py).
"""

from __future__ import annotations

CONNECT_TIMEOUT = 10
"""Seconds to open a connection."""

READ_TIMEOUT = 30
"""Seconds without a byte from the store before a read fails (and is retried)."""

S3_ATTEMPTS = 3
"""botocore's attempts per request (standard mode: backoff with jitter, at most 20 s)."""

AZURE_BACKOFF = (1, 2)
"""Azure's first back-off and its growth base, in seconds (the SDK's: 15 and 3)."""
