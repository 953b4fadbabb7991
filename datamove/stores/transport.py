"""In-transit security: which settings would send data or signatures in clear text.

Object stores are reached over TLS unless a manifest (or the environment) says
otherwise: an ``http://`` endpoint, or certificate checks turned off. On the
loopback interface that is harmless and is how every emulator runs (moto,
Azurite, the GCS emulator). Towards any other host it exposes the bytes, the
request signatures and, with plain HTTP, session tokens to the network. So
such settings are refused unless the manifest opts in explicitly with
``allow_insecure: true`` beside them (docs/MANIFEST.md, "Insecure transport"),
and nothing here ever enables plain HTTP on the user's behalf.

The same holds for a Dask scheduler: tasks and results travel between datamove,
the scheduler and its workers as pickles, so a ``tcp://`` scheduler on another
host is refused unless the manifest's ``engine`` says ``allow_insecure: true``
(``clear_text_scheduler``); ``tls://`` is the encrypted alternative.

Used by manifest/checks.py (refusal at validation), ledger.storage_options
(whether delta-rs may speak plain HTTP) and pipeline/engine.py (the scheduler
the run attaches to, ``--scheduler`` included).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from datamove.redact import Path_

OPT_IN = "allow_insecure"
_DOC = 'docs/MANIFEST.md, "Insecure transport"'

_LOCAL_SCHEMES = {"file", "local", "memory"}
_CLEAR_SCHEMES = {"http", "ftp"}  # schemes that carry everything in clear text
# Option names (folded to snake_case) that switch TLS off when false...
_TLS_ON_NAMES = {"verify", "use_ssl", "ssl", "verify_ssl", "ssl_verify", "connection_verify",
                 "check_hostname", "verify_certificate", "tls"}
# ...and those that switch it off when true.
_TLS_OFF_NAMES = {"allow_http", "aws_allow_http", "azure_allow_http", "google_allow_http",
                  "allow_invalid_certificates", "aws_allow_invalid_certificates",
                  "insecure", "insecure_skip_verify", "skip_verify", "disable_ssl",
                  "skip_tls_verify"}
# Dask comm schemes without encryption (tls:// has it; inproc:// stays in one process).
_CLEAR_SCHEDULER_SCHEMES = {"tcp", "ucx"}
_FALSE_WORDS = {"false", "no", "off", "0"}
_TRUE_WORDS = {"true", "yes", "on", "1"}
# Environment variables that give a store its endpoint when the options do not.
_ENDPOINT_ENV = {"s3": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
                 "gs": ("STORAGE_EMULATOR_HOST",)}
_AZURE_SCHEMES = {"az", "abfs", "abfss", "adl"}
# Schemes whose URL names a bucket or container, not the host requests go to.
_BUCKET_SCHEMES = {"s3", "s3a", "gs", "gcs", *_AZURE_SCHEMES}


def is_loopback(host: str | None) -> bool:
    """Is ``host`` this machine's loopback interface (127.0.0.0/8, ::1, localhost)?

    Judged on the name as written, never by resolving it: a name that merely
    resolves to 127.0.0.1 today may not tomorrow.
    """
    if not host:
        return False
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def host_of(url: str) -> str | None:
    """The host a URL names, or None when it names none (or cannot be parsed)."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def clear_text_url(url: Any) -> bool:
    """Does ``url`` (any value) name a clear-text scheme such as http://?"""
    return isinstance(url, str) and url.split("://", 1)[0].lower() in _CLEAR_SCHEMES \
        and "://" in url


def plain_http_allowed(endpoint: str, options: Mapping[str, Any]) -> bool:
    """May a client speak plain HTTP to ``endpoint``? Only to loopback, or opted in."""
    return is_loopback(host_of(endpoint)) or opted_in(options)


def opted_in(options: Mapping[str, Any]) -> bool:
    """Did these options accept clear text explicitly (``allow_insecure: true``, a boolean)?"""
    return options.get(OPT_IN) is True


def clear_text_scheduler(address: str | None) -> str | None:
    """Why attaching to the Dask scheduler at ``address`` would be clear text to
    another host, or None (no address, loopback, ``tls://``, ``inproc://``).

    What crosses that connection: every task (locations, keys, the run token) and
    every result (sizes, checksums) as pickles. On a clear-text path anyone can
    read them, and rewrite them: a task is code the workers run with their store
    credentials, a result is what the driver unpickles and records as verified.
    """
    if not address or "://" not in address:
        return None
    scheme = address.split("://", 1)[0].lower()
    host = host_of(address)
    if scheme not in _CLEAR_SCHEDULER_SCHEMES or is_loopback(host):
        return None
    return (f"is clear-text {scheme}:// to {host}, which is not this machine: tasks and "
            f"results would cross the network unencrypted and unauthenticated; use a "
            f"tls:// address (Dask's TLS settings, docs/SCALE-OUT.md), or if the network "
            f"to that host is trusted, set {OPT_IN}: true in the manifest's engine "
            f"section ({_DOC})")


def _snake(name: str) -> str:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return snake.replace("-", "_").lower()


def _tls_off(name: str, value: Any) -> bool:
    snake = _snake(name)
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if snake in _TLS_ON_NAMES:
        return value is False or (not isinstance(value, bool) and text in _FALSE_WORDS)
    if snake in _TLS_OFF_NAMES:
        return value is True or (not isinstance(value, bool) and text in _TRUE_WORDS)
    return False


def _endpoint_name(name: str) -> bool:
    snake = _snake(name)
    return "endpoint" in snake or snake.endswith(("url", "uri"))


def _walk(value: Any, path: Path_) -> Iterator[tuple[Path_, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "prox" in key.lower():
                continue  # proxies: an http:// proxy still tunnels TLS (CONNECT)
            yield from _walk(item, (*path, key))


def _env_endpoint(scheme: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(endpoint, where it came from) that the environment gives a store, if any."""
    family = "s3" if scheme in ("s3", "s3a") else "gs" if scheme in ("gs", "gcs") else scheme
    for name in _ENDPOINT_ENV.get(family, ()):
        value = environ.get(name, "").strip()
        if value and value != "default":
            if family == "gs" and "://" not in value:
                value = f"http://{value}"  # what gcsfs does with a bare host:port
            return value, name
    if family in _AZURE_SCHEMES:
        conn = dict(part.split("=", 1) for part in
                    environ.get("AZURE_STORAGE_CONNECTION_STRING", "").split(";") if "=" in part)
        if conn.get("BlobEndpoint"):
            return conn["BlobEndpoint"], "the BlobEndpoint of AZURE_STORAGE_CONNECTION_STRING"
        if conn.get("DefaultEndpointsProtocol", "").lower() == "http":
            host = f"{conn.get('AccountName', 'account')}.blob." \
                   f"{conn.get('EndpointSuffix', 'core.windows.net')}"
            return (f"http://{host}",
                    "DefaultEndpointsProtocol=http in AZURE_STORAGE_CONNECTION_STRING")
    return None


def insecure_settings(url: str, options: Mapping[str, Any], at: Path_, options_at: Path_,
                      opt_in_where: str = "this location's options",
                      environ: Mapping[str, str] | None = None,
                      ) -> Iterator[tuple[Path_, str]]:
    """Every setting that would reach a non-loopback host without TLS, as (path, message).

    ``at`` is where the URL is written, ``options_at`` where its options are. A
    location whose options say ``allow_insecure: true`` yields nothing (but a
    malformed opt-in). The environment is consulted for an endpoint the options
    do not give, since the store clients read it too.
    """
    environ = os.environ if environ is None else environ
    trusted = (f"if the network to that host is trusted, set {OPT_IN}: true in {opt_in_where} "
               f"({_DOC})")
    opt_in = options.get(OPT_IN)
    if opt_in is not None and not isinstance(opt_in, bool):
        yield (*options_at, OPT_IN), "must be true or false"
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    if opt_in is True or scheme in _LOCAL_SCHEMES:
        return
    settings = [(p, v) for p, v in _walk(dict(options), options_at)
                if len(p) > len(options_at) and isinstance(p[-1], str)]
    # Every endpoint the location's clients may talk to, with where it is written.
    endpoints: list[tuple[str, Path_, str | None]] = []
    if scheme not in _BUCKET_SCHEMES:
        endpoints.append((url, at, None))  # http://, sftp://, ...: the URL names the host
    endpoints += [(v, p, None) for p, v in settings
                  if _endpoint_name(str(p[-1])) and isinstance(v, str) and "://" in v]
    if not any(p != at for _, p, _ in endpoints):
        found = _env_endpoint(scheme, environ)
        if found:
            endpoints.append((found[0], at, found[1]))
    for endpoint, path, source in endpoints:
        host = host_of(endpoint)
        if clear_text_url(endpoint) and not is_loopback(host):
            what = f"the endpoint from {source} is" if source else "is"
            yield path, (f"{what} plain {endpoint.split('://', 1)[0].lower()}:// to {host}, "
                         f"which is not this machine; use https://, or {trusted}")
    remote = [host_of(e) or e for e, _, _ in endpoints if not is_loopback(host_of(e))]
    if endpoints and not remote:
        return  # only loopback: an emulator or a tunnel
    target = remote[0] if remote else "the store's public endpoint"
    for path, value in settings:
        if _tls_off(str(path[-1]), value):
            yield path, (f"turns TLS or its certificate checks off towards {target}, which "
                         f"is not this machine; remove it (to trust a private CA, give "
                         f"verify: the path of a CA bundle), or {trusted}")
