"""Secrets in text: find credentials in manifest data, and scrub them from messages.

Two jobs, one list of patterns. The manifest loader refuses inline credentials
(``find_secrets``) and scrubs every message it prints (``scrub``); anything else
that echoes user text can scrub it the same way. Patterns cover what users paste
by mistake: cloud keys, age secret keys, PEM keys, Azure connection strings,
passwords in URLs and signed query parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

Path_ = tuple[str | int, ...]

# Option keys that carry credentials in fsspec backends (s3fs: key/secret/token,
# adlfs: account_key/sas_token/connection_string/client_secret, gcsfs: token, s3fs
# s3_additional_kwargs: SSECustomerKey, ...). They belong in the environment or the
# provider chain, never in a manifest that gets committed. Names are compared after
# camelCase and '-' are folded to snake_case ("SSECustomerKey" -> "sse_customer_key").
_SECRET_KEY_RE = re.compile(
    r"(^|_)(key|secret|token|password|passwd|passphrase|credential|credentials|"
    r"sas|signature|connection_string|private)(_|$)"
)
# Names the rule above would catch that hold no secret.
_NOT_SECRET_KEYS = {"region_name", "key_prefix", "signature_version", "kms_key_id",
                    "ssekms_key_id", "sse_kms_key_id"}
# gcsfs `token` also selects an authentication mode by name; those words are not secrets.
_TOKEN_MODES = {"anon", "google_default", "cloud", "cache", "browser"}
_SECRET_VALUE_RES = [
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a PEM private key"),
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+"), "an age secret key"),
    (re.compile(r"PRIVATE\+KEY\+[^+\s]+\+[0-9a-f]{8}\+"), "an audit signing key"),
    (re.compile(r"AccountKey=|SharedAccessSignature=", re.IGNORECASE), "an Azure credential"),
]
_SECRET_QUERY_PARAMS = {"sig", "signature", "x-amz-signature", "x-amz-credential",
                        "x-amz-security-token", "x-goog-signature", "x-goog-credential",
                        "token", "access_token", "sv", "password", "api_key", "apikey"}
# scheme://user:password@host — judged on the raw text, so odd schemes cannot hide it.
_URL_PASSWORD_RE = re.compile(r"^[^:/?#]+://[^/?#@\s]*:[^/?#@\s]*@")
# Last line of defence: whatever a message echoes, these never reach the user.
_SCRUB_RES = [
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "<redacted>"),
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+", re.IGNORECASE), "<redacted>"),
    (re.compile(r"PRIVATE\+KEY\+[^+\s]+\+[0-9a-f]{8}\+\S+"), "<redacted>"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*", re.DOTALL), "<redacted>"),
    (re.compile(r"((?:AccountKey|SharedAccessSignature)=)[^;\s'\"]+", re.IGNORECASE),
     r"\1<redacted>"),
    (re.compile(r"(://[^/?#@\s:]*:)[^/?#@\s]*@"), r"\1<redacted>@"),
    (re.compile(r"([?&](?:" + "|".join(re.escape(k) for k in sorted(_SECRET_QUERY_PARAMS))
                + r")=)[^&\s'\"]+", re.IGNORECASE), r"\1<redacted>"),
]

def scrub(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by <redacted>."""
    for pattern, replacement in _SCRUB_RES:
        text = pattern.sub(replacement, text)
    return text


def _walk(value: Any, path: Path_) -> Iterator[tuple[Path_, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i))


def _secret_key_name(name: str, value: Any) -> bool:
    """Is ``name`` (an option key) one that carries a credential?"""
    if value is None or isinstance(value, bool):
        return False  # `token: null`, `anon: true`: nothing secret in it
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    snake = snake.replace("-", "_").lower()
    if snake in _NOT_SECRET_KEYS:
        return False
    if snake == "token" and isinstance(value, str) and value in _TOKEN_MODES:
        return False
    return bool(_SECRET_KEY_RE.search(snake))


def _secret_value_kind(text: str) -> str | None:
    for pattern, what in _SECRET_VALUE_RES:
        if pattern.search(text):
            return what
    return None


def find_secrets(data: dict[str, Any]) -> Iterator[tuple[Path_, str]]:
    """Inline credentials are refused wherever they appear; the value is never echoed."""
    advice = ("inline secrets are refused; supply credentials through the environment or "
              "the store's standard provider chain (docs/MANIFEST.md, \"Credentials\")")
    for path, value in _walk(data, ()):
        if isinstance(value, dict):
            for key in value:
                what = _secret_value_kind(key) if isinstance(key, str) else None
                if what:
                    yield (*path, key), f"the key contains {what}; {advice}"
        if not path:
            continue
        name = path[-1]
        in_options = any(isinstance(p, str) and (p == "options" or p.endswith("_options"))
                         for p in path)
        if in_options and isinstance(name, str) and _secret_key_name(name, value):
            yield path, f"looks like a credential ({name!r}); {advice}"
            continue
        if isinstance(value, str):
            what = _secret_value_kind(value)
            if what:
                yield path, f"contains {what}; {advice}"
            elif "://" in value:  # url, ledger, scheduler, endpoint_url, ...
                yield from ((path, f"{m}; {advice}") for m in _url_secret_problems(value))


def _url_secret_problems(url: str) -> Iterator[str]:
    if _URL_PASSWORD_RE.search(url):
        yield "the URL embeds a password"
    query = url.split("?", 1)[1].split("#", 1)[0] if "?" in url else ""
    for key, _ in parse_qsl(query, keep_blank_values=True):
        if key.lower() in _SECRET_QUERY_PARAMS:
            yield f"the URL carries a signed or secret query parameter ({key!r})"

